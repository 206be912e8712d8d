//! The `herald config` commands, through the real binary.

use std::process::Command;

fn herald(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_herald")).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn config_default_is_a_valid_config() {
    let (ok, text) = herald(&["config", "default"]);
    assert!(ok, "{text}");
    let parsed: herald::config::Config = toml::from_str(&text).unwrap();
    parsed.validate().unwrap();
    assert_eq!(parsed.http.listen.to_string(), "127.0.0.1:8080");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default.toml");
    std::fs::write(&path, &text).unwrap();
    let (ok, report) = herald(&["config", "check", "--config", path.to_str().unwrap()]);
    assert!(ok && report.contains(": ok"), "{report}");
}

#[test]
fn config_check_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[http]\nlisen = \"127.0.0.1:1\"\n", "lisen"),
        ("[backend]\nlog = \"rabbitmq\"\n", "rabbitmq"),
        ("[cluster]\nnode_index = 2\nnode_count = 2\n", "node_index"),
        ("[cluster]\nnode_count = 2\n", "needs backend.log"),
        ("[cluster]\nmode = \"static\"\nnode_count = 2\n", "needs backend.log"),
        ("[backend]\nlog = \"kafka\"\nstore = \"cql\"\n[cluster]\nnode_count = 2\n", "cluster.mode = \"static\""),
        ("[backend]\nlog = \"kafka\"\nkafka_replication = 1\n", "kafka_replication = 1 is below 3"),
        ("[backend]\nlog = \"kafka\"\nstore = \"cql\"\n", "tracking.keys must be set with log = \"kafka\""),
        ("[backend]\nlog = \"kafka\"\nkafka_min_insync_replicas = 1\n", "kafka_min_insync_replicas = 1 is below 2"),
        (
            "[[accounts]]\nid = \"a\"\n[[dkim]]\ndomain = \"a.test\"\nselector = \"s\"\nprivate_key = \"missing.pem\"\naccounts = [\"a\"]\n",
            "missing.pem",
        ),
        ("[[dkim]]\ndomain = \"a.test\"\nselector = \"s\"\nprivate_key = \"k.pem\"\n", "missing field `accounts`"),
        ("[[accounts]]\nid = \"a\"\nfrom_domains = \"some\"\n", "some"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let (ok, report) = herald(&["config", "check", "--config", path.to_str().unwrap()]);
        assert!(!ok, "accepted: {text}");
        assert!(report.contains(needle), "for {text:?} expected {needle:?} in: {report}");
    }
}

#[test]
fn config_check_reads_the_master_keyring() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = "1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n";
    let cases = [
        ("good.keys", key, 0o600, None),
        ("open.keys", key, 0o644, Some("chmod 600")),
        ("short.keys", "1 c2hvcnQ=\n", 0o600, Some("keyring line 1: the key must be 32 bytes")),
        (
            "staged.keys",
            "1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY= open-only\n",
            0o600,
            Some("no key that may seal"),
        ),
        ("missing.keys", "", 0, Some("missing.keys")),
    ];
    for (name, text, mode, problem) in cases {
        let keys = dir.path().join(name);
        if mode != 0 {
            std::fs::write(&keys, text).unwrap();
            std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("[keys]\nmaster_key_file = \"{name}\"\n")).unwrap();
        let (ok, report) = herald(&["config", "check", "--config", path.to_str().unwrap()]);
        match problem {
            None => assert!(ok && report.contains(": ok"), "{name}: {report}"),
            Some(needle) => assert!(!ok && report.contains(needle), "{name}: expected {needle:?} in {report}"),
        }
        assert!(!report.contains("MDEyMzQ1"), "no key material in the report: {report}");
    }
}

#[test]
fn config_check_says_how_nodes_share_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("", "single node (embedded log), owning every partition"),
        ("[backend]\nlog = \"kafka\"\nstore = \"cql\"\n[tracking]\nkeys = [{ id = \"t1\", secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\" }]\n", "Kafka consumer groups"),
        (
            "[backend]\nlog = \"kafka\"\nstore = \"cql\"\nkafka_replication = 1\nkafka_min_insync_replicas = 1\nkafka_allow_weak_durability = true\n[cluster]\nmode = \"static\"\nnode_index = 1\nnode_count = 3\n[tracking]\nkeys = [{ id = \"t1\", secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\" }]\n",
            "static: node 1 of 3",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("ok{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let (ok, report) = herald(&["config", "check", "--config", path.to_str().unwrap()]);
        assert!(ok && report.contains(needle), "for {text:?} expected {needle:?} in: {report}");
    }
}

#[test]
fn the_dev_config_in_the_readme_checks() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/herald.dev.toml");
    let (ok, report) = herald(&["config", "check", "--config", path]);
    assert!(ok, "{report}");
}

#[test]
fn accounts_hash_password_prints_a_verifiable_argon2_hash() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["accounts", "hash-password"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(herald_ingest::smtp::auth::verify_password("s3cret", hash.trim()));
}

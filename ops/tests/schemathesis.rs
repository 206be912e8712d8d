//! schemathesis (PyPI) against a running Herald: cases generated from `/v1/openapi.json`
//! for every route, customer routes with an account key and `/v1/admin` with an operator
//! key; no server error and no reply that violates the document. Prints the case counts.

mod support;

use support::herald::{config, start, Backends, KEY};

const OPERATOR: &str = "schemathesis-operator-key-1";

/// Runs `st run` on the document with `key`, over the paths `filter` selects; returns
/// (passed, summary, generated cases).
async fn schemathesis(base: &str, key: &str, filter: [&str; 2]) -> (bool, String, u64) {
    let url = format!("{base}/v1/openapi.json");
    let header = format!("Authorization: Bearer {key}");
    let args = [
        "run",
        &url,
        "-H",
        &header,
        filter[0],
        filter[1],
        "-c",
        "not_a_server_error,response_schema_conformance",
        "-n",
        "10",
        "-w",
        "2",
        "--phases",
        "examples,fuzzing",
        "--seed",
        "16",
    ];
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        tokio::process::Command::new("st").args(args).env("NO_COLOR", "1").kill_on_drop(true).output(),
    )
    .await
    .expect("schemathesis within 5 minutes")
    .expect("schemathesis (`st`) is installed: ops/scripts/install-peers.sh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let generated = text
        .lines()
        .filter(|l| l.contains(" generated, "))
        .find_map(|l| l.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    (out.status.success(), text, generated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let dir = tempfile::tempdir().unwrap();
    let mut c =
        config(&dir.path().join("data"), support::free_port(), support::free_port(), Backends::Embedded, vec![]);
    c.admin.operator_keys = vec![format!("ops={OPERATOR}")];
    let h = start(c).await;
    let (ok, text, customer) = schemathesis(&h.base, KEY, ["--exclude-path-regex", "^/v1/admin"]).await;
    assert!(ok, "customer routes:\n{text}");
    let (ok, text, admin) = schemathesis(&h.base, OPERATOR, ["--include-path-regex", "^/v1/admin"]).await;
    assert!(ok, "admin routes:\n{text}");
    println!("schemathesis: {customer} customer cases, {admin} admin cases, 0 failures");
    assert!(customer > 50 && admin > 50, "cases were generated: {customer}, {admin}");
    h.stop().await;
}

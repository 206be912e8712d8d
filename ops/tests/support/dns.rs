//! Knot DNS serving test zones on a free loopback port, as a real authoritative server.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Knot {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

/// One zone: its origin and its records in zone-file syntax (names relative to origin).
pub struct Zone {
    pub origin: String,
    pub records: Vec<String>,
}

/// Splits a long TXT value into quoted 255-octet strings.
pub fn txt(value: &str) -> String {
    value.as_bytes().chunks(250).map(|c| format!("\"{}\"", std::str::from_utf8(c).unwrap())).collect::<Vec<_>>().join(" ")
}

impl Knot {
    pub fn start(zones: &[Zone]) -> Knot {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let mut conf = format!(
            "server:\n  rundir: \"{d}\"\n  listen: 127.0.0.1@{port}\ndatabase:\n  storage: \"{d}\"\nzone:\n",
            d = dir.path().display()
        );
        for z in zones {
            let file: PathBuf = dir.path().join(format!("{}.zone", z.origin));
            let mut text = format!(
                "$ORIGIN {o}.\n$TTL 60\n@ SOA ns.{o}. hostmaster.{o}. 1 60 60 600 60\n@ NS ns.{o}.\nns A 127.0.0.1\n",
                o = z.origin
            );
            for r in &z.records {
                text.push_str(r);
                text.push('\n');
            }
            std::fs::write(&file, text).unwrap();
            conf.push_str(&format!("  - domain: {}\n    file: \"{}\"\n", z.origin, file.display()));
        }
        let conf_path = dir.path().join("knot.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut child = Command::new("knotd")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("knotd (ops/scripts/install-peers.sh installs Knot)");
        // Ready when it answers the first zone's SOA over TCP.
        let first = format!("{}.", zones[0].origin);
        for _ in 0..100 {
            let out = Command::new("kdig")
                .args(["@127.0.0.1", "-p", &port.to_string(), "+tcp", "+short", &first, "SOA"])
                .output();
            if out.is_ok_and(|o| !o.stdout.is_empty()) {
                return Knot { port, child, _dir: dir };
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("knotd did not start on port {port}");
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

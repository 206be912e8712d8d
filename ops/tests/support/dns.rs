//! Knot DNS serving test zones on a free loopback port, as a real authoritative server.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Knot {
    pub ip: String,
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
    conf: PathBuf,
    serial: std::sync::atomic::AtomicU32,
}

/// One zone: its origin and its records in zone-file syntax (names relative to origin).
pub struct Zone {
    pub origin: String,
    pub records: Vec<String>,
}

/// Splits a long TXT value into quoted 255-octet strings.
pub fn txt(value: &str) -> String {
    value
        .as_bytes()
        .chunks(250)
        .map(|c| format!("\"{}\"", std::str::from_utf8(c).unwrap()))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Knot {
    pub fn start(zones: &[Zone]) -> Knot {
        // A free port can be taken by another test before knotd binds it: then another port.
        let mut why = String::new();
        for _ in 0..3 {
            match Knot::try_start_on("127.0.0.1", super::free_port(), zones) {
                Ok(knot) => return knot,
                Err(e) => why = e,
            }
        }
        panic!("{why}");
    }

    /// Listens on `ip@port` (a loopback address of the test's own, port 53, lets a libc
    /// stub resolver in a private mount namespace use it).
    pub fn start_on(ip: &str, port: u16, zones: &[Zone]) -> Knot {
        Knot::try_start_on(ip, port, zones).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts knotd and waits (up to 30 s) until it answers; why not, if it exits or never does.
    fn try_start_on(ip: &str, port: u16, zones: &[Zone]) -> Result<Knot, String> {
        let dir = tempfile::tempdir().unwrap();
        let mut conf = format!(
            "server:\n  rundir: \"{d}\"\n  listen: {ip}@{port}\ndatabase:\n  storage: \"{d}\"\nzone:\n",
            d = dir.path().display()
        );
        for z in zones {
            let file: PathBuf = dir.path().join(format!("{}.zone", z.origin));
            std::fs::write(&file, zone_text(z, 1)).unwrap();
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
        for _ in 0..300 {
            let out = Command::new("kdig")
                .args([&format!("@{ip}"), "-p", &port.to_string(), "+tcp", "+short", &first, "SOA"])
                .output();
            if out.is_ok_and(|o| !o.stdout.is_empty()) {
                return Ok(Knot { ip: ip.to_owned(), port, child, _dir: dir, conf: conf_path, serial: 1.into() });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("knotd exited ({status}) before answering on port {port}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("knotd did not start on port {port}"))
    }
}

fn zone_text(z: &Zone, serial: u32) -> String {
    let mut text = format!(
        "$ORIGIN {o}.\n$TTL 60\n@ SOA ns.{o}. hostmaster.{o}. {serial} 60 60 600 60\n@ NS ns.{o}.\nns A 127.0.0.1\n",
        o = z.origin
    );
    for r in &z.records {
        text.push_str(r);
        text.push('\n');
    }
    text
}

impl Knot {
    /// Rewrites one zone (started with [`Knot::start`]) and reloads it; returns once the
    /// new serial is served.
    pub fn replace(&self, zone: &Zone) {
        let serial = self.serial.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let file = self._dir.path().join(format!("{}.zone", zone.origin));
        std::fs::write(&file, zone_text(zone, serial)).unwrap();
        let out = Command::new("knotc")
            .arg("-c")
            .arg(&self.conf)
            .args(["zone-reload", &zone.origin])
            .output()
            .expect("knotc");
        assert!(out.status.success(), "knotc zone-reload: {}", String::from_utf8_lossy(&out.stderr));
        let origin = format!("{}.", zone.origin);
        for _ in 0..100 {
            let out = Command::new("kdig")
                .args([&format!("@{}", self.ip), "-p", &self.port.to_string(), "+tcp", "+short", &origin, "SOA"])
                .output();
            if out.is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout).split_whitespace().nth(2) == Some(&serial.to_string())
            }) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("knot did not serve serial {serial} of {}", zone.origin);
    }
}

impl Knot {
    /// Knot's configuration file (for `knotc -c`).
    pub fn conf_path(&self) -> &std::path::Path {
        &self.conf
    }

    /// The file a zone started with [`Knot::start`] is served from.
    pub fn zone_file(&self, origin: &str) -> PathBuf {
        self._dir.path().join(format!("{origin}.zone"))
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

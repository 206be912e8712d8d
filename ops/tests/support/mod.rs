//! Real peers for Herald's end-to-end tests: an authoritative DNS server (Knot, as a
//! process), a scripted SMTP sink (in-test, on loopback), DKIM keys (openssl) and an
//! independent DKIM verifier (dkimpy). Each test gets its own instances on free ports.
#![allow(dead_code)]

pub mod dns;
pub mod herald;
pub mod node;
pub mod postfix;
pub mod sink;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

/// A loopback port free now, for a server a test configures. It is picked below the kernel's
/// ephemeral range (`ip_local_port_range`), where `bind(0)` and outgoing connections (to
/// Kafka, Cassandra, between tests' clients) never take it in the meantime, at random so
/// tests running at once rarely pick the same one.
pub fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let below = low.saturating_sub(12_000).max(1024)..low.saturating_sub(1000).max(1025);
    for _ in 0..1000 {
        let port = rand::random_range(below.clone());
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A self-signed certificate for `localhost` written under `dir`: (certificate, key) PEM paths.
pub fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// A DKIM key made with openssl: the PKCS#8 PEM file and the DNS TXT value.
pub struct DkimKey {
    pub pem_path: std::path::PathBuf,
    pub txt: String,
}

/// `algorithm`: "rsa" (2048 bits) or "ed25519".
pub fn dkim_key(dir: &Path, name: &str, algorithm: &str) -> DkimKey {
    let pem_path = dir.join(format!("{name}.pem"));
    let mut gen = Command::new("openssl");
    gen.args(["genpkey", "-out"]).arg(&pem_path);
    match algorithm {
        "rsa" => gen.args(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
        "ed25519" => gen.args(["-algorithm", "ed25519"]),
        other => panic!("unknown algorithm {other}"),
    };
    assert!(gen.output().expect("openssl").status.success(), "openssl genpkey failed");
    let out =
        Command::new("openssl").args(["pkey", "-pubout", "-outform", "DER", "-in"]).arg(&pem_path).output().unwrap();
    assert!(out.status.success());
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let txt = match algorithm {
        "rsa" => format!("v=DKIM1; k=rsa; p={}", b64.encode(&out.stdout)),
        _ => format!("v=DKIM1; k=ed25519; p={}", b64.encode(&out.stdout[out.stdout.len() - 32..])),
    };
    DkimKey { pem_path, txt }
}

/// Runs dkimpy on `message`, resolving through `dns_port`. Returns its report.
pub fn dkim_verify(message: &[u8], dns_port: u16) -> Result<String, String> {
    dkim_verify_zones(message, dns_port, &[])
}

/// Like [`dkim_verify`], sending questions under each `(zone, port)` to that server, so
/// a CNAME is followed from one authoritative server into another's zone.
pub fn dkim_verify_zones(message: &[u8], dns_port: u16, zones: &[(&str, u16)]) -> Result<String, String> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), message).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dkim_verify.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["127.0.0.1", &dns_port.to_string()])
        .arg(file.path())
        .args(zones.iter().map(|(z, p)| format!("{z}=127.0.0.1:{p}")))
        .output()
        .expect("python3 with dkimpy (ops/scripts/install-peers.sh installs it)");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(report)
    } else {
        Err(report)
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    until(secs, what, || {
        let checked = check();
        async move { checked.await.ok_or("") }
    })
    .await
}

/// Polls `check` every 100 ms until it returns `Ok`, or panics after `secs` with what its
/// last `Err` says (formatted only then), so a wait that times out in CI says where things
/// stood.
pub async fn until<T, E, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(last) => last,
        };
        if std::time::Instant::now() >= deadline {
            let last = last.to_string();
            let sep = if last.is_empty() { "" } else { ": " };
            panic!("timed out after {secs}s waiting for {what}{sep}{last}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

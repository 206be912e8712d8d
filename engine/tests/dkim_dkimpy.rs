//! Differential test of DKIM signing against an independent verifier: a few thousand
//! generated bodies (runs of spaces and tabs, whitespace-only and empty lines anywhere and
//! at the end, no final CRLF, 998-octet lines, 8-bit and UTF-8, quoted-printable soft line
//! breaks) are signed with RSA-SHA256 and Ed25519-SHA256 keys by `delivery::dkim::Signers`,
//! and every signature is verified by dkimpy in one Python process
//! (`tests/dkim/verify_batch.py`). Needs python3 with dkimpy and pynacl
//! (`ops/scripts/install-peers.sh`).

use herald_engine::delivery::dkim::{KeySpec, Signers};
use herald_engine::domains::keys;
use herald_schemas::{KeyAlgorithm, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// Bodies generated per run (each signed twice: RSA and Ed25519).
const BODIES: usize = 1500;

const WORDS: [&str; 8] = ["hello", "world", "Grüße", "日本語", "naïve", "=20", "a=3D1", "."];

fn wsp(rng: &mut StdRng, min: usize) -> Vec<u8> {
    (0..rng.random_range(min..min + 6)).map(|_| if rng.random_bool(0.5) { b' ' } else { b'\t' }).collect()
}

/// One body line (without its line break).
fn line(rng: &mut StdRng) -> Vec<u8> {
    let mut l = Vec::new();
    match rng.random_range(0..10) {
        // whitespace only
        0 | 1 => l.extend(wsp(rng, 1)),
        // empty
        2 => {}
        // a 998-octet line, sometimes ending in whitespace
        3 => {
            let tail = if rng.random_bool(0.5) { wsp(rng, 1) } else { vec![] };
            l.extend(std::iter::repeat_n(b'x', 998 - tail.len().min(998)));
            l.extend(tail);
        }
        // 8-bit bytes that are not UTF-8
        4 => l.extend((0..rng.random_range(1..40)).map(|_| rng.random_range(0x80u8..=0xff))),
        // quoted-printable: soft line break, encoded trailing space
        5 => l.extend_from_slice(if rng.random_bool(0.5) { b"soft break =" } else { b"encoded space=20" }),
        // words separated by runs of spaces and tabs, maybe leading and trailing whitespace
        _ => {
            if rng.random_bool(0.3) {
                l.extend(wsp(rng, 1));
            }
            for i in 0..rng.random_range(1..8) {
                if i > 0 {
                    l.extend(wsp(rng, 1));
                }
                l.extend_from_slice(WORDS[rng.random_range(0..WORDS.len())].as_bytes());
            }
            if rng.random_bool(0.4) {
                l.extend(wsp(rng, 1));
            }
        }
    }
    l
}

fn body(rng: &mut StdRng) -> Vec<u8> {
    let mut b = Vec::new();
    for _ in 0..rng.random_range(0..12) {
        b.extend(line(rng));
        b.extend_from_slice(b"\r\n");
    }
    // The end: trailing empty and whitespace-only lines, and maybe no final CRLF.
    for _ in 0..rng.random_range(0..4) {
        if rng.random_bool(0.5) {
            b.extend(wsp(rng, 1));
        }
        b.extend_from_slice(b"\r\n");
    }
    match rng.random_range(0..4) {
        0 => b.extend(line(rng)),
        1 => b.extend(wsp(rng, 1)),
        _ => {}
    }
    b
}

fn message(i: usize, body: &[u8]) -> Vec<u8> {
    let cte = if body.windows(2).any(|w| w == b"=\r" || w == b"=2") { "quoted-printable" } else { "8bit" };
    let mut m = format!(
        "From: Tester <t@sender.test>\r\nTo: r@example.test\r\nSubject: case  {i}\t of the  corpus\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{i}@sender.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(body);
    m
}

/// Bodies named in issue 9 and RFC 6376's own examples, before the generated ones.
fn fixed_bodies() -> Vec<Vec<u8>> {
    [
        &b"a\r\n   \r\n\t\r\nb\r\n  \r\n \r\n"[..],
        b"",
        b"\r\n",
        b"\r\n\r\n\r\n",
        b" \r\n",
        b" ",
        b"\t\t",
        b"no final line break",
        b"trailing spaces   ",
        b" C \r\nD \t E\r\n\r\n\r\n",
        b"x\r\n \t \r\n\r\n \r\n",
        b"=\r\n",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect()
}

#[test]
fn every_signature_verifies_with_dkimpy() {
    let dir = tempfile::tempdir().unwrap();
    let mut dns = serde_json::Map::new();
    let mut pems = Vec::new();
    for (algorithm, selector) in [(KeyAlgorithm::RsaSha256, "r1"), (KeyAlgorithm::Ed25519Sha256, "e1")] {
        let key = keys::generate(algorithm, 1, Timestamp::now()).unwrap();
        let k = if algorithm == KeyAlgorithm::RsaSha256 { "rsa" } else { "ed25519" };
        dns.insert(
            format!("{selector}._domainkey.sender.test"),
            format!("v=DKIM1; k={k}; p={}", key.key.public_key).into(),
        );
        pems.push((selector, key.pem));
    }
    let specs: Vec<KeySpec> =
        pems.iter().map(|(selector, pem)| KeySpec { domain: "sender.test", selector, pem }).collect();
    let signers = Signers::new(&specs).unwrap();

    let mut rng = StdRng::seed_from_u64(0x6e72_6c64);
    let mut bodies = fixed_bodies();
    bodies.extend((0..BODIES).map(|_| body(&mut rng)));
    let mut batch = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        let (signed, note) = signers.sign(&message(i, b));
        assert_eq!(note.matches("signed d=sender.test").count(), 2, "message {i}: {note}");
        writeln!(batch, "{}", signed.len()).unwrap();
        batch.extend_from_slice(&signed);
    }
    let keys_path = dir.path().join("keys.json");
    std::fs::write(&keys_path, serde_json::to_vec(&dns).unwrap()).unwrap();
    let batch_path = dir.path().join("messages.bin");
    std::fs::write(&batch_path, &batch).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dkim/verify_batch.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&keys_path)
        .arg(&batch_path)
        .output()
        .expect("python3 with dkimpy and pynacl (ops/scripts/install-peers.sh installs them)");
    let report = String::from_utf8_lossy(&out.stdout);
    let expected = format!("checked {} {} 0", bodies.len(), 2 * bodies.len());
    if !out.status.success() || !report.contains(&expected) {
        let shown: Vec<String> = report
            .lines()
            .filter_map(|l| l.strip_prefix("fail "))
            .take(5)
            .map(|l| {
                let i: usize = l.split(' ').next().unwrap().parse().unwrap();
                format!("{l}: body {:?}", String::from_utf8_lossy(&bodies[i]))
            })
            .collect();
        panic!(
            "dkimpy rejected signatures ({}):\n{}\n{}",
            report.lines().last().unwrap_or(""),
            shown.join("\n"),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

//! Differential test of DKIM signing against an independent verifier: a few thousand
//! generated bodies (runs of spaces and tabs, whitespace-only and empty lines anywhere and
//! at the end, no final CRLF, 998-octet lines, 8-bit and UTF-8, quoted-printable soft line
//! breaks) are signed with RSA-SHA256 and Ed25519-SHA256 keys by `delivery::dkim::Signers`,
//! under selectors of every length (so the signature header folds at every position),
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

/// Header fields a message may carry besides From; which ones and their order change the
/// order of the signature's `h=` list, hence where its lines fold and where `b=` ends.
const OPTIONAL_FIELDS: [&str; 11] = [
    "To: r@example.test",
    "Cc: c@example.test",
    "Subject: case  of the\t corpus",
    "Date: Sun, 22 Nov 2026 10:00:00 +0000",
    "Reply-To: reply@sender.test",
    "Sender: s@sender.test",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
    "In-Reply-To: <parent@sender.test>",
    "References: <root@sender.test> <parent@sender.test>",
    "List-Unsubscribe: <https://sender.test/u/1>",
];

fn message(i: usize, body: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let cte = if body.windows(2).any(|w| w == b"=\r" || w == b"=2") { "quoted-printable" } else { "8bit" };
    let mut fields: Vec<String> =
        OPTIONAL_FIELDS.iter().filter(|_| rng.random_bool(0.6)).map(|f| f.to_string()).collect();
    fields.push(format!("Message-ID: <{i}@sender.test>"));
    fields.push(format!("Content-Transfer-Encoding: {cte}"));
    for n in (1..fields.len()).rev() {
        fields.swap(n, rng.random_range(0..=n));
    }
    let mut m = format!("From: Tester <t@sender.test>\r\n{}\r\n\r\n", fields.join("\r\n")).into_bytes();
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
    let rsa = keys::generate(KeyAlgorithm::RsaSha256, 1, Timestamp::now()).unwrap();
    let ed = keys::generate(KeyAlgorithm::Ed25519Sha256, 1, Timestamp::now()).unwrap();
    // Selectors of every length from 1 to 63 octets: the signature header's tags then start
    // at every column, so `b=` ends at every position relative to the header's folding.
    let selectors: Vec<(String, String)> =
        (0..63).map(|n| (format!("r{}", "x".repeat(n)), format!("e{}", "y".repeat(n)))).collect();
    let mut signers = Vec::new();
    for (r, e) in &selectors {
        for (selector, key, k) in [(r, &rsa, "rsa"), (e, &ed, "ed25519")] {
            let txt = format!("v=DKIM1; k={k}; p={}", key.key.public_key);
            dns.insert(format!("{selector}._domainkey.sender.test"), txt.into());
        }
        let specs = [
            KeySpec { domain: "sender.test", selector: r, pem: &rsa.pem },
            KeySpec { domain: "sender.test", selector: e, pem: &ed.pem },
        ];
        signers.push(Signers::new(&specs).unwrap());
    }

    let mut rng = StdRng::seed_from_u64(0x6e72_6c64);
    let mut bodies = fixed_bodies();
    bodies.extend((0..BODIES).map(|_| body(&mut rng)));
    let mut batch = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        let (signed, note) = signers[i % signers.len()].sign(&message(i, b, &mut rng));
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

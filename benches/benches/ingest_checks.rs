//! What the shared message checks (`herald_ingest::message::prepare`) cost per message at
//! ingestion, next to what one RSA-2048 DKIM signature costs at delivery, in the same run:
//! a 5 KB plain message (the common case), the same with trailing whitespace on its lines
//! (the DKIM hashing copy), and a 5 KB HTML message whose body is one long line (re-encoded
//! as quoted-printable).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald_benches::message_5k;
use herald_engine::delivery::dkim::{KeySpec, Signers};
use herald_ingest::message::{prepare, Stamp};
use herald_schemas::Timestamp;
use std::hint::black_box;

fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"))
}

fn checks(c: &mut Criterion) {
    let plain = message_5k();
    let trailing: Vec<u8> = String::from_utf8(plain.clone()).unwrap().replace(".\r\n", ".   \r\n").into_bytes();
    let mut html = b"From: News <news@sender.test>\r\nTo: b@example.org\r\nSubject: Weekly digest\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n".to_vec();
    while html.len() < 5 * 1024 {
        html.extend_from_slice(b"<p>Lorem <b>ipsum</b> dolor sit amet, consectetur adipiscing elit.</p>");
    }
    html.extend_from_slice(b"\r\n");
    let stamp = Stamp { hostname: "mta.herald.test", now: Timestamp::now() };
    let rsa = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let rsa_pem = pem(AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&rsa).unwrap().as_ref());
    let signers = Signers::new(&[KeySpec { domain: "sender.test", selector: "s1", pem: &rsa_pem }]).unwrap();

    let mut g = c.benchmark_group("ingest_checks_5k");
    g.throughput(Throughput::Elements(1));
    assert!(!prepare(plain.clone(), &stamp).unwrap().reencoded);
    g.bench_function("prepare_plain", |b| b.iter(|| prepare(black_box(plain.clone()), &stamp)));
    assert!(prepare(html.clone(), &stamp).unwrap().reencoded);
    g.bench_function("prepare_html_long_line", |b| b.iter(|| prepare(black_box(html.clone()), &stamp)));
    g.bench_function("dkim_rsa2048_plain", |b| b.iter(|| signers.sign(black_box(&plain))));
    g.bench_function("dkim_rsa2048_trailing_whitespace", |b| b.iter(|| signers.sign(black_box(&trailing))));
    g.finish();
}

criterion_group!(benches, checks);
criterion_main!(benches);

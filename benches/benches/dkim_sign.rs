//! DKIM signing of a 5 KB message (relaxed/relaxed) with RSA-2048 and Ed25519 keys,
//! generated here with aws-lc-rs.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::Ed25519KeyPair;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald_benches::message_5k;
use herald_engine::delivery::dkim::{KeySpec, Signers};
use std::hint::black_box;

fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"))
}

fn dkim(c: &mut Criterion) {
    let rsa = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let rsa_pem = pem(AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&rsa).unwrap().as_ref());
    let ed = Ed25519KeyPair::generate().unwrap();
    let ed_pem = pem(ed.to_pkcs8v1().unwrap().as_ref());
    let msg = message_5k();
    let mut g = c.benchmark_group("dkim_sign_5k");
    g.throughput(Throughput::Elements(1));
    for (name, key) in [("rsa2048", &rsa_pem), ("ed25519", &ed_pem)] {
        let signers = Signers::new(&[KeySpec { domain: "sender.test", selector: "s1", pem: key }]).unwrap();
        assert!(signers.sign(&msg).1.starts_with("signed"), "{name} did not sign");
        g.bench_function(name, |b| b.iter(|| signers.sign(black_box(&msg))));
    }
    g.finish();
}

criterion_group!(benches, dkim);
criterion_main!(benches);

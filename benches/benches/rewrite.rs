//! Send-time rewriting of a 20 KB newsletter (`<style>` block, 30 links): the per-body work
//! (parse, CSS inlining, link finding, encoding), the per-recipient work (the token and the
//! copy), and the RSA-2048 DKIM signature of the result that follows it at every send.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald_benches::newsletter_20k;
use herald_engine::delivery::dkim::{KeySpec, Signers};
use herald_engine::rewrite::{token::Keys, Rewriter, Settings};
use herald_schemas::*;
use std::hint::black_box;

fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"))
}

fn message(body: &[u8], n: u64) -> MessageAccepted {
    MessageAccepted {
        account: AccountId("acme".into()),
        message_id: MessageId(format!("{:032x}", 0x0190_f0c4_a1b2_7c3d_8e9f_0000_0000_0000u128 + n as u128)),
        envelope_sender: "bounces@sender.test".into(),
        recipient: format!("reader{n}@example.org"),
        recipient_domain: "example.org".into(),
        options: SendOptions {
            inline_css: true,
            click_tracking: true,
            opens_tracking: true,
            list_unsubscribe: true,
            bounce_tracking: false,
        },
        body: Body::Inline(body.to_vec()),
        accepted_at: Timestamp::now(),
    }
}

fn rewrite(c: &mut Criterion) {
    let body = newsletter_20k();
    assert!((19_000..23_000).contains(&body.len()), "{} bytes", body.len());
    let settings = Settings {
        tracking: true,
        scheme: "https".into(),
        default_host: "t.herald.example".into(),
        rewrite_text: false,
        keys: Keys::new(&[("k1".into(), vec![7; 32])], None).unwrap(),
        cache_bytes: 64 << 20,
    };
    let rewriter = Rewriter::new(settings, None);
    let msg = message(&body, 0);
    let out = rewriter.rewrite(&msg, &body).data.into_owned();
    let links = String::from_utf8_lossy(&out).matches("t.herald.example/c/").count();
    assert_eq!(links, 30, "30 tracked links");
    let rsa = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let rsa_pem = pem(AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&rsa).unwrap().as_ref());
    let signers = Signers::new(&[KeySpec { domain: "sender.test", selector: "s1", pem: &rsa_pem }]).unwrap();
    assert!(signers.sign(&out).1.starts_with("signed"));

    let mut g = c.benchmark_group("rewrite_20k");
    g.throughput(Throughput::Elements(1));
    g.bench_function("per_body", |b| {
        b.iter(|| rewriter.prepare(black_box(&msg), black_box(&body), msg.options, [3; 12]))
    });
    let mut n = 0u64;
    let recipients: Vec<MessageAccepted> = (0..1024).map(|i| message(&body, i)).collect();
    g.bench_function("per_recipient", |b| {
        b.iter(|| {
            n += 1;
            let m = &recipients[(n % 1024) as usize];
            black_box(rewriter.rewrite(m, black_box(&body)).data.len())
        })
    });
    g.bench_function("rsa2048_sign_after", |b| b.iter(|| signers.sign(black_box(&out))));
    g.finish();
}

criterion_group!(benches, rewrite);
criterion_main!(benches);

//! Bounce processing: reading and classifying the DSN corpus (`engine/tests/feedback/`),
//! one classification, and the worker's suppression check at 1,000,000 entries.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald_engine::feedback::classify::Classifier;
use herald_engine::feedback::index::SuppressionIndex;
use herald_engine::feedback::report::{self, Report};
use herald_schemas::{AccountId, BounceAction, Timestamp};
use std::hint::black_box;

fn corpus() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/feedback");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    out.sort();
    out
}

/// What the bounce MX does with a message before the append: read it, classify bounces.
fn read_and_classify(classifier: &Classifier, raw: &[u8]) -> usize {
    match report::read(raw) {
        Report::Bounce(b) => {
            let c =
                classifier.classify(b.code, b.enhanced.as_deref(), &b.diagnostic, b.action == BounceAction::Delayed);
            c.class as usize + 1
        }
        Report::Complaint(c, _) => c.candidates.len(),
        _ => 0,
    }
}

fn feedback(c: &mut Criterion) {
    let classifier = Classifier::shipped();
    let messages = corpus();
    let mut g = c.benchmark_group("feedback");
    g.throughput(Throughput::Elements(messages.len() as u64));
    g.bench_function("read_and_classify_corpus", |b| {
        b.iter(|| messages.iter().map(|m| read_and_classify(&classifier, black_box(m))).sum::<usize>())
    });
    g.throughput(Throughput::Elements(1));
    let text = "The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces.";
    g.bench_function("classify_gmail_line", |b| {
        b.iter(|| classifier.classify(black_box(Some(550)), Some("5.1.1"), black_box(text), false))
    });
    let unknown = "something nobody wrote a rule for, in a long line of text that goes on for a while";
    g.bench_function("classify_unmatched_line", |b| {
        b.iter(|| classifier.classify(black_box(Some(550)), None, black_box(unknown), false))
    });
    g.finish();

    // The worker's check, with 1,000,000 addresses suppressed in one account (and 10,000
    // with an expiry).
    let index = SuppressionIndex::default();
    let account = AccountId("acme".into());
    for i in 0..1_000_000u32 {
        index.insert(&account, &format!("user{i}@example{}.test", i % 1000), None);
    }
    for i in 0..10_000u32 {
        index.insert(&account, &format!("soft{i}@example.test"), Some(Timestamp(i64::MAX)));
    }
    let now = Timestamp::now();
    let mut g = c.benchmark_group("suppression_1m");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u32;
    g.bench_function("check_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % 1_000_000;
            let r = format!("User{i}@Example{}.test", i % 1000);
            assert!(index.is_suppressed(&account, black_box(&r), now));
        })
    });
    g.bench_function("check_miss", |b| {
        b.iter(|| {
            i = (i + 7919) % 1_000_000;
            let r = format!("other{i}@example{}.test", i % 1000);
            assert!(!index.is_suppressed(&account, black_box(&r), now));
        })
    });
    g.bench_function("format_address_only", |b| {
        b.iter(|| {
            i = (i + 7919) % 1_000_000;
            black_box(format!("other{i}@example{}.test", i % 1000))
        })
    });
    g.finish();
}

criterion_group!(benches, feedback);
criterion_main!(benches);

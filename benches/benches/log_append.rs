//! Embedded log appends, fsynced, at batch sizes 1, 64 and 1024 (events/s).
//! Also with 64 concurrent single-event appenders: what group commit gives the REST path.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald_benches::{accepted, message_5k};
use herald_engine::log::{embedded::EmbeddedLog, EventLog, Record};
use std::sync::Arc;

fn records(n: usize, frame: &[u8]) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            topic: "bench".into(),
            partition: (i % 16) as u32,
            key: "example.org".into(),
            value: frame.to_vec(),
        })
        .collect()
}

fn log_append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(&dir.path().join("log.redb"), &["bench".to_owned()], 16).unwrap());
    let frame = herald_schemas::encode(&accepted(message_5k()));
    let mut g = c.benchmark_group("embedded_log_append_5k");
    g.sample_size(20);
    for batch in [1usize, 64, 1024] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &n| {
            b.iter_batched(
                || records(n, &frame),
                |r| rt.block_on(log.append(r)).unwrap(),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.throughput(Throughput::Elements(64));
    g.bench_function("concurrent_64x1", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = (0..64)
                    .map(|_| {
                        let (log, r) = (log.clone(), records(1, &frame));
                        tokio::spawn(async move { log.append(r).await.unwrap() })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, log_append);
criterion_main!(benches);

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald_benches::{accepted, attempted, message_5k};
use std::hint::black_box;

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    for (name, event) in [("message_accepted_5k", accepted(message_5k())), ("delivery_attempted", attempted())] {
        let frame = herald_schemas::encode(&event);
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("encode", name), &event, |b, e| {
            b.iter(|| herald_schemas::encode(black_box(e)))
        });
        g.bench_with_input(BenchmarkId::new("decode", name), &frame, |b, f| {
            b.iter(|| herald_schemas::decode(black_box(f)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);

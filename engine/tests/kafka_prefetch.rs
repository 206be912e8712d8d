//! Consumer prefetch is bounded per partition (issue 10, item 9): eight partitions holding
//! 12 MiB each, one record read from each, and the process grows by far less than the 96
//! MiB librdkafka's default (64 MiB per split queue) would prefetch. Alone in its binary, so
//! the resident size measured is this test's.

use herald_engine::log::kafka::{KafkaLog, KafkaSettings};
use herald_engine::log::{Assignment, EventLog, Record, Topics};
use std::time::Duration;

fn unique(p: &str) -> String {
    format!("{p}-{}", herald_schemas::MessageId::generate())
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_is_bounded_per_partition() {
    let prefix = unique("pre");
    let t = Topics { prefix: prefix.clone(), retry_tiers: 1 };
    let partitions = 8;
    let brokers =
        std::env::var("HERALD_TEST_KAFKA").expect("HERALD_TEST_KAFKA=host:port must name a real Kafka broker");
    let log = KafkaLog::connect(KafkaSettings::single_broker(brokers, partitions), &t.all()).await.unwrap();
    // 12 MiB per partition of 100 KiB records, incompressible (the fetch limits count
    // compressed bytes on the wire).
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    for p in 0..partitions {
        let batch = (0..123)
            .map(|_| Record { topic: t.messages(), partition: p, key: "k.test".into(), value: random(100 << 10) })
            .collect();
        log.append(batch).await.unwrap();
    }
    let before = rss_bytes();
    let assignments: Vec<Assignment> =
        (0..partitions).map(|partition| Assignment { topic: t.messages(), partition }).collect();
    let mut consumers = log.consume(&unique("g"), &assignments).await.unwrap();
    // One record from each, then let librdkafka prefetch what it will.
    for c in &mut consumers {
        assert_eq!(c.poll(1, Duration::from_secs(20)).await.unwrap().len(), 1);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let grown = rss_bytes().saturating_sub(before);
    eprintln!("FIGURE prefetch of 8 partitions holding 12 MiB each: RSS grew {} MiB", grown >> 20);
    // Unbounded (librdkafka's 64 MiB default per queue) it would take all 96 MiB.
    assert!(grown < 64 << 20, "prefetch grew RSS by {} MiB", grown >> 20);
}

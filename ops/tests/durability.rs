//! Crash and stop semantics of the real `herald` binary, on both backends:
//! - `kill -9` again and again while every message cycles through the retry tiers, then
//!   the sink accepts: no retry chain forks, so no recipient gets a message twice
//!   (issue 10, item 1);
//! - SIGTERM while one attempt waits 60 s for its final reply: the stop takes the drain
//!   time, not the SMTP timeout, and after a restart only that unfinished attempt is made
//!   again, none of the finished ones (item 10).

mod support;

/// The scenarios run one at a time: each runs several `herald` processes on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

use std::time::Duration;
use support::dns::{Knot, Zone};
use support::herald::Backends;
use support::node::{arrivals, send, Cluster, Node};
use support::sink::Sink;

const DOMAINS: usize = 8;

fn zones() -> Vec<Zone> {
    (0..DOMAINS)
        .map(|d| Zone { origin: format!("d{d}.test"), records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()] })
        .collect()
}

async fn send_all(base: &str, recipients: &[String]) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for chunk in recipients.chunks(20) {
        let sends = chunk.iter().map(|r| send(&http, base, r));
        for id in futures::future::join_all(sends).await {
            ids.push(id.expect("accepted"));
        }
    }
    ids
}

async fn retry_chains_do_not_fork(backends: Backends, messages: usize, kills: usize) {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&zones());
    let (sink, addr) = Sink::start(0).await;
    sink.defer_all(true);
    let mut cluster = Cluster::new(backends, knot.port, addr.port(), 4);
    cluster.delivery = "retry_initial_secs = 1\nretry_max_delay_secs = 2\nmax_age_secs = 3600\n".into();
    let mut node = Node::start(&cluster, dir.path(), "a").await;
    // The messages topic, the held topic (traffic shaping) and the retry tiers (1 s and
    // 2 s), every partition.
    let delivery_partitions = 4 * 4;
    let recipients: Vec<String> = (0..messages).map(|i| format!("r{i}@d{}.test", i % DOMAINS)).collect();
    send_all(&node.base, &recipients).await;
    for k in 0..kills {
        // Somewhere in the middle of appends and commits: attempts every 1-2 s per message.
        tokio::time::sleep(Duration::from_millis(1200 + 300 * (k as u64 % 4))).await;
        node.kill();
        node.restart().await;
        // With Kafka the dead member keeps its partitions for the session timeout: wait
        // until this one works them all again, so every kill lands mid-work.
        node.wait_owning(&cluster.group("delivery"), delivery_partitions, 60).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    sink.defer_all(false);
    support::eventually(240, "every message at the sink", || async {
        (arrivals(&sink).len() == messages).then_some(())
    })
    .await;
    // A forked chain would deliver its second copy within a retry period or two.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let twice: Vec<(String, usize)> = arrivals(&sink).into_iter().filter(|(_, n)| *n > 1).collect();
    eprintln!(
        "FIGURE retry-chain duplicates after {kills} kill -9 ({backends:?}, {messages} messages): {}",
        twice.len()
    );
    assert!(twice.is_empty(), "recipients delivered more than once after {kills} kill -9: {twice:?}");
    node.stop(Duration::from_secs(40)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_chains_do_not_fork_across_kill_9_embedded() {
    retry_chains_do_not_fork(Backends::Embedded, 400, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_chains_do_not_fork_across_kill_9_kafka_cql() {
    retry_chains_do_not_fork(Backends::KafkaCql, 300, 5).await;
}

async fn sigterm_redoes_only_unfinished(backends: Backends) {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&zones());
    let (sink, addr) = Sink::start(0).await;
    sink.hold_final_reply(Duration::from_secs(60));
    let mut cluster = Cluster::new(backends, knot.port, addr.port(), 4);
    cluster.delivery = "drain_secs = 3\ncommand_timeout_secs = 120\n".into();
    let mut node = Node::start(&cluster, dir.path(), "a").await;
    // The held message first, then others on the same partition (one domain).
    send_all(&node.base, &["hold1@d0.test".to_owned()]).await;
    let others: Vec<String> = (0..40).map(|i| format!("r{i}@d0.test")).collect();
    send_all(&node.base, &others).await;
    support::eventually(60, "the other messages at the sink", || async {
        let got = arrivals(&sink);
        others.iter().all(|r| got.contains_key(r)).then_some(())
    })
    .await;
    let took = node.stop(Duration::from_secs(20)).await;
    eprintln!("FIGURE SIGTERM with a 60 s reply pending ({backends:?}): stopped in {:.1} s", took.as_secs_f64());
    node.restart().await;
    support::eventually(60, "the unfinished message attempted again", || async {
        (arrivals(&sink).get("hold1@d0.test").copied().unwrap_or(0) >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = arrivals(&sink);
    let twice: Vec<&String> = others.iter().filter(|r| got.get(*r).copied().unwrap_or(0) != 1).collect();
    assert!(twice.is_empty(), "finished attempts were made again after SIGTERM: {twice:?}");
    node.stop(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_redoes_only_unfinished_attempts_embedded() {
    sigterm_redoes_only_unfinished(Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_redoes_only_unfinished_attempts_kafka_cql() {
    sigterm_redoes_only_unfinished(Backends::KafkaCql).await;
}

//! `herald replay` rebuilds a projection from the log: messages are sent through a real
//! `herald serve` and delivered to the sink; then
//! - embedded: the node stops, its projection file is moved aside, `herald replay
//!   --projection messages` rebuilds it;
//! - Kafka + CQL: while the node runs, the replay fills a new keyspace, and the node is
//!   restarted on it;
//!
//! and every message reads exactly as before (status, attempts, timestamps). A second
//! replay reads the same records (projections are idempotent).

mod support;

use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use support::dns::{Knot, Zone};
use support::herald::Backends;
use support::node::{Cluster, Node};
use support::sink::Sink;

const MESSAGES: usize = 20;

async fn views(http: &reqwest::Client, base: &str, ids: &[String]) -> Vec<Value> {
    let mut out = vec![];
    for id in ids {
        let r = http.get(format!("{base}/v1/messages/{id}")).bearer_auth("k").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "GET /v1/messages/{id}");
        out.push(r.json().await.unwrap());
    }
    out
}

fn replay(config: &std::path::Path, env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["replay", "--projection", "messages", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "herald replay failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// The records count `herald replay` printed.
fn replayed(out: &str) -> u64 {
    out.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unexpected output: {out}"))
}

async fn rebuilds_the_messages_projection(backends: Backends) {
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&[Zone {
        origin: "example.test".into(),
        records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()],
    }]);
    let (sink, sink_addr) = Sink::start(0).await;
    let cluster = Cluster::new(backends, knot.port, sink_addr.port(), 4);
    let mut node = Node::start(&cluster, dir.path(), "n1").await;
    let http = reqwest::Client::new();
    let mut ids = vec![];
    for i in 0..MESSAGES {
        ids.push(support::node::send(&http, &node.base, &format!("r{i}@example.test")).await.expect("accepted"));
    }
    support::eventually(90, "every message delivered and projected", || async {
        for id in &ids {
            let r = http.get(format!("{}/v1/messages/{id}", node.base)).bearer_auth("k").send().await.ok()?;
            let v: Value = r.json().await.ok()?;
            if v["status"] != "delivered" {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert_eq!(sink.messages().len(), MESSAGES);
    let before = views(&http, &node.base, &ids).await;
    let config = dir.path().join("n1.toml");

    let out = match backends {
        Backends::Embedded => {
            node.stop(Duration::from_secs(60)).await;
            let projection = dir.path().join("data-n1/projection.redb");
            assert!(projection.exists(), "the embedded store's file is {}", projection.display());
            std::fs::rename(&projection, dir.path().join("projection.redb.old")).unwrap();
            let out = replay(&config, &[]);
            assert_eq!(replayed(&replay(&config, &[])), replayed(&out), "a second replay reads the same records");
            out
        }
        Backends::KafkaCql => {
            // Into a new keyspace while the node runs, then the node moves to it.
            let keyspace = format!("r{}", cluster.unique);
            let env = [("HERALD__BACKEND__CQL_KEYSPACE", keyspace.as_str())];
            let out = replay(&config, &env);
            assert_eq!(replayed(&replay(&config, &env)), replayed(&out), "a second replay reads the same records");
            node.stop(Duration::from_secs(60)).await;
            let text = std::fs::read_to_string(&config).unwrap();
            let moved = text
                .replace(&format!("cql_keyspace = \"n{}\"", cluster.unique), &format!("cql_keyspace = \"{keyspace}\""));
            assert_ne!(moved, text, "the node's config names its keyspace");
            std::fs::write(&config, moved).unwrap();
            out
        }
    };
    // Each message: its acceptance and at least one attempt.
    assert!(replayed(&out) >= 2 * MESSAGES as u64, "{out}");

    node.restart().await;
    let after = views(&http, &node.base, &ids).await;
    assert_eq!(after, before, "the rebuilt projection must read exactly as the live one did");
    node.stop(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_the_messages_projection_embedded() {
    rebuilds_the_messages_projection(Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_the_messages_projection_kafka_cql() {
    rebuilds_the_messages_projection(Backends::KafkaCql).await;
}

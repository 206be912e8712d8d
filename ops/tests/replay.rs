//! `herald replay` rebuilds a projection from the log: messages are sent through a real
//! `herald serve` (embedded log and store) and delivered to the sink, the node stops, its
//! projection file is moved aside, `herald replay --projection messages` rebuilds it, and
//! after a restart every message reads exactly as before (status, attempts, timestamps).
//! A second replay over the rebuilt store changes nothing (projections are idempotent).

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

fn replay(config: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["replay", "--projection", "messages", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_the_messages_projection() {
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&[Zone {
        origin: "example.test".into(),
        records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()],
    }]);
    let (sink, sink_addr) = Sink::start(0).await;
    let cluster = Cluster::new(Backends::Embedded, knot.port, sink_addr.port(), 4);
    let mut node = Node::start(&cluster, dir.path(), "n1").await;
    let http = reqwest::Client::new();
    let mut ids = vec![];
    for i in 0..MESSAGES {
        ids.push(support::node::send(&http, &node.base, &format!("r{i}@example.test")).await.expect("accepted"));
    }
    support::eventually(60, "every message delivered and projected", || async {
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
    node.stop(Duration::from_secs(60)).await;

    let config = dir.path().join("n1.toml");
    let projection = dir.path().join("data-n1/projection.redb");
    assert!(projection.exists(), "the embedded store's file is {}", projection.display());
    std::fs::rename(&projection, dir.path().join("projection.redb.old")).unwrap();
    let out = replay(&config);
    // Each message: its acceptance and at least one attempt.
    assert!(replayed(&out) >= 2 * MESSAGES as u64, "{out}");
    let again = replay(&config);
    assert_eq!(replayed(&again), replayed(&out), "a second replay reads the same records");

    node.restart().await;
    let after = views(&http, &node.base, &ids).await;
    assert_eq!(after, before, "the rebuilt projection must read exactly as the live one did");
    node.stop(Duration::from_secs(60)).await;
}

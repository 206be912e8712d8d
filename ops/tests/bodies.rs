//! Bodies stored once (issue 9 §1, ADR 0007), with real peers: a fan-out to many recipients
//! stores its body once on `<prefix>.bodies`; the first attempts are deferred, Herald is
//! stopped and started again (an empty body cache), and the retries resolve the body from
//! the log alone and deliver it byte for byte. On the embedded backends and on Kafka + CQL.
//! Also: the fan-out limit (REST 422 `fanout_too_large`, SMTP 552 5.3.4), and the memory of
//! one 1 MB × 200-recipient request in the real binary.

mod support;

use herald_engine::log::EventLog;
use serde_json::json;
use std::collections::HashSet;
use support::dns::{Knot, Zone};
use support::herald::{config, start, Backends, KEY};
use support::sink::Sink;

const RECIPIENTS: usize = 30;

fn zones() -> Vec<Zone> {
    vec![Zone { origin: "example.test".into(), records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()] }]
}

/// A 100 KB message whose lines are all different, so a byte out of place shows.
fn big_message() -> String {
    let mut m = String::from(
        "From: news@sender.test\r\nSubject: campaign\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <c@herald.test>\r\n\r\n",
    );
    let mut i = 0;
    while m.len() < 100_000 {
        m.push_str(&format!("line {i:06} of the campaign body, the same for every recipient\r\n"));
        i += 1;
    }
    m
}

/// Records on every partition of the (fresh) bodies topic, read by position.
async fn bodies_on_the_log(log: &dyn EventLog, topic: &str) -> usize {
    let mut n = 0;
    for p in 0..log.partitions() {
        let mut offset = 0;
        while log.read_at(topic, p, offset).await.unwrap().is_some() {
            n += 1;
            offset += 1;
        }
    }
    n
}

async fn stored_once_and_retried_after_restart(backends: Backends) {
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&zones());
    let (sink, addr) = Sink::start(0).await;
    let mut c = config(&dir.path().join("data"), knot.port, addr.port(), backends, vec![]);
    c.delivery.max_age_secs = 300;
    let body = big_message();
    // Every first attempt is deferred.
    let deferrals: Vec<&str> = (0..RECIPIENTS).map(|_| "451 4.7.1 try again later").collect();
    sink.script(&deferrals);

    let herald = start(c.clone()).await;
    let recipients: Vec<String> = (0..RECIPIENTS).map(|i| format!("r{i}@example.test")).collect();
    let (code, reply) =
        herald.send_json(KEY, &json!({"envelope": "b@sender.test", "recipient": recipients, "body": body})).await;
    assert_eq!(code, 202, "{reply}");
    let ids: Vec<String> =
        reply["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    for id in &ids {
        herald.wait_status(id, "deferred", 60).await;
    }
    herald.stop().await;

    // A new process: nothing of the body in memory; the retries read it from the log.
    let herald = start(c.clone()).await;
    for id in &ids {
        let view = herald.wait_status(id, "delivered", 90).await;
        assert_eq!(view["events"][0]["size"], body.len(), "{view}");
    }
    let got = sink.messages();
    let delivered: HashSet<String> = got.iter().flat_map(|m| m.to.clone()).collect();
    assert_eq!(delivered.len(), RECIPIENTS);
    for m in &got {
        assert!(m.data.ends_with(body.split("\r\n\r\n").nth(1).unwrap().as_bytes()), "the body arrived whole");
    }
    herald.stop().await;

    let log = herald::serve::open_log(&c).await.unwrap();
    let topic = herald::serve::topics(&c).bodies();
    assert_eq!(bodies_on_the_log(&*log, &topic).await, 1, "one body for {RECIPIENTS} recipients");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_fanout_stores_one_body_and_retries_read_it_after_a_restart() {
    stored_once_and_retried_after_restart(Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_cql_fanout_stores_one_body_and_retries_read_it_after_a_restart() {
    stored_once_and_retried_after_restart(Backends::KafkaCql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_fanout_limit_is_refused_on_rest_and_smtp() {
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&zones());
    let (sink, addr) = Sink::start(0).await;
    let smtp_port = support::free_port();
    let mut c = config(&dir.path().join("data"), knot.port, addr.port(), Backends::Embedded, vec![]);
    c.bodies.max_fanout_bytes = 50_000;
    c.smtp.listen = format!("127.0.0.1:{smtp_port}").parse().unwrap();
    c.accounts[0].relay_networks = vec!["127.0.0.1".into()];
    let herald = start(c).await;
    let body = format!("From: a@sender.test\r\nSubject: s\r\n\r\n{}\r\n", "x".repeat(20_000));
    let (code, reply) = herald
        .send_json(
            KEY,
            &json!({"envelope": "b@sender.test", "recipient": ["a@example.test", "b@example.test", "c@example.test"], "body": body}),
        )
        .await;
    assert_eq!((code, reply["error"]["code"].as_str().unwrap()), (422, "fanout_too_large"), "{reply}");
    let text = reply["error"]["message"].as_str().unwrap();
    assert!(text.contains("3 recipients") && text.contains("50000"), "{text}");
    // Two recipients fit.
    let (code, reply) = herald
        .send_json(
            KEY,
            &json!({"envelope": "b@sender.test", "recipient": ["a@example.test", "b@example.test"], "body": body}),
        )
        .await;
    assert_eq!(code, 202, "{reply}");

    // SMTP, with swaks: the same message to three recipients.
    let file = dir.path().join("m.eml");
    std::fs::write(&file, &body).unwrap();
    let out = std::process::Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &smtp_port.to_string(), "--from", "b@sender.test"])
        .args(["--to", "a@example.test,b@example.test,c@example.test", "--data"])
        .arg(&file)
        .output()
        .expect("swaks (ops/scripts/install-peers.sh installs it)");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(transcript.contains("552 5.3.4"), "{transcript}");
    support::eventually(60, "the two accepted messages", || async { (sink.messages().len() == 2).then_some(()) }).await;
    herald.stop().await;
}

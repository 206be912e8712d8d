//! Webhooks with real peers, on the embedded backends and on real Kafka + Cassandra.
//!
//! Herald delivers mail through Knot's MX to a sink that refuses every fifth recipient, and
//! tells four endpoints about it. Every request is checked by `ops/tests/webhook_receiver.py`
//! with the `standardwebhooks` package (an independent implementation of the spec):
//! - endpoint A (every event type) is down while the mail goes out and comes up later:
//!   every event arrives, verified, with one `webhook-id` per event;
//! - endpoint B points at a port nobody listens on (dead), next to C (healthy, only
//!   `message.delivered`): C gets each event within the inline budget;
//! - endpoint D answers 410 Gone: it is disabled;
//! - C's secret is rotated: requests then verify with the old and the new secret;
//! - the deliveries of A and B show their failed attempts.
//!
//! And with the guard on (no private targets): internal URLs are refused at creation, names
//! resolving to loopback at connection.

mod support;

use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::dns::{Knot, Zone};
use support::herald::{config, start, Backends, Running, KEY, OTHER_KEY};
use support::sink::Sink;

/// A `webhook_receiver.py` process.
struct Receiver {
    child: Child,
    out: PathBuf,
    secrets: PathBuf,
}

impl Receiver {
    fn start(dir: &Path, name: &str, port: u16, secrets: &[&str]) -> Receiver {
        Self::start_with(dir, name, port, secrets, &[])
    }

    /// `tls`: certificate and key files, to serve HTTPS.
    fn start_with(dir: &Path, name: &str, port: u16, secrets: &[&str], tls: &[&Path]) -> Receiver {
        let out = dir.join(format!("{name}.jsonl"));
        let secrets_file = dir.join(format!("{name}.secrets"));
        if !secrets_file.exists() {
            std::fs::write(&secrets_file, secrets.join("\n") + "\n").unwrap();
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhook_receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(&out)
            .arg(&secrets_file)
            .args(tls)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with standardwebhooks (ops/scripts/install-peers.sh)");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        assert!(line.starts_with("ready"), "receiver did not start: {line:?}");
        Receiver { child, out, secrets: secrets_file }
    }

    fn add_secret(&self, secret: &str) {
        let mut s = std::fs::read_to_string(&self.secrets).unwrap();
        s.push_str(secret);
        s.push('\n');
        std::fs::write(&self.secrets, s).unwrap();
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn post(h: &Running, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = h.http.post(format!("{}{path}", h.base)).bearer_auth(key).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn create(h: &Running, url: String, events: Value) -> (String, String) {
    let (status, body) = post(h, KEY, "/v1/webhooks", &json!({ "url": url, "events": events })).await;
    assert_eq!(status, 201, "{body}");
    (body["id"].as_str().unwrap().to_owned(), body["secret"].as_str().unwrap().to_owned())
}

fn epoch(rfc3339: &str) -> f64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap();
    t.unix_timestamp_nanos() as f64 / 1e9
}

/// The API: creation, validation, listing without secrets, updates, isolation.
async fn crud(h: &Running, port: u16) {
    let url = format!("http://127.0.0.1:{port}/ok");
    let (status, body) = post(h, KEY, "/v1/webhooks", &json!({ "url": url, "events": ["message.nope"] })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_webhook")), "{body}");
    let (status, body) = post(h, KEY, "/v1/webhooks", &json!({ "url": "ftp://x.example/" })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("webhook_url_refused")), "{body}");
    let (status, body) = post(h, KEY, "/v1/webhooks", &json!({ "events": [] })).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = post(h, KEY, "/v1/webhooks", &json!({ "url": url, "colour": "red" })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("malformed_request")), "{body}");
    // A body over the JSON routes' 1 MiB is refused, not buffered whole.
    let huge = json!({ "url": url, "events": ["message.bounced"], "description": "x".repeat(2 << 20) });
    let (status, body) = post(h, KEY, "/v1/webhooks", &huge).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("body_too_large")), "{body}");
    let (status, body) =
        post(h, KEY, "/v1/webhooks", &json!({ "url": url, "events": ["message.bounced"], "description": "crm" })).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(body["secret"].as_str().unwrap().starts_with("whsec_"));
    let (status, list) = h.get(KEY, "/v1/webhooks").await;
    assert_eq!(status, 200);
    let listed = list["webhooks"].as_array().unwrap().iter().find(|e| e["id"] == id.as_str()).unwrap().clone();
    assert!(listed.get("secret").is_none(), "the secret is shown once: {listed}");
    assert_eq!(listed["description"], "crm");
    let (status, _) = h.get(OTHER_KEY, &format!("/v1/webhooks/{id}")).await;
    assert_eq!(status, 404, "another account's endpoint does not exist for it");
    let r = h
        .http
        .patch(format!("{}/v1/webhooks/{id}", h.base))
        .bearer_auth(KEY)
        .json(&json!({ "events": ["message.delivered", "message.failed"], "enabled": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, shown) = h.get(KEY, &format!("/v1/webhooks/{id}")).await;
    assert_eq!(shown["events"], json!(["message.delivered", "message.failed"]));
    assert_eq!(shown["enabled"], false);
    let r = h.http.delete(format!("{}/v1/webhooks/{id}", h.base)).bearer_auth(OTHER_KEY).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = h.http.delete(format!("{}/v1/webhooks/{id}", h.base)).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let (status, _) = h.get(KEY, &format!("/v1/webhooks/{id}")).await;
    assert_eq!(status, 404);
}

async fn scenario(backends: Backends) {
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&[Zone {
        origin: "dest.test".into(),
        records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()],
    }]);
    let (sink, sink_addr) = Sink::start(0).await;
    let mut c = config(&dir.path().join("data"), knot.port, sink_addr.port(), backends, vec![]);
    c.webhooks.allow_private_targets = true;
    c.webhooks.retry_schedule_secs = vec![1, 1, 2, 2, 2, 3, 3, 3, 3];
    c.webhooks.inline_budget_ms = 1000;
    c.delivery.max_age_secs = 600;
    let h = start(c).await;

    let (port_a, port_b, port_c) = (support::free_port(), support::free_port(), support::free_port());
    crud(&h, port_c).await;
    let (a, secret_a) = create(&h, format!("http://127.0.0.1:{port_a}/ok"), json!([])).await;
    let (b, _) = create(&h, format!("http://127.0.0.1:{port_b}/ok"), json!([])).await;
    let (cid, secret_c) = create(&h, format!("http://127.0.0.1:{port_c}/ok"), json!(["message.delivered"])).await;
    let (d, secret_d) = create(&h, format!("http://127.0.0.1:{port_c}/gone"), json!(["message.failed"])).await;
    let receiver_c = Receiver::start(dir.path(), "c", port_c, &[&secret_c, &secret_d]);

    // 20 messages; every fifth recipient is refused (failed + bounced).
    sink.reply_every(5, "550 5.1.1 no such user");
    let mut ids = Vec::new();
    for i in 0..20 {
        let to = format!("r{i}@dest.test");
        let message = format!(
            "From: <news@sender.test>\r\nTo: <{to}>\r\nSubject: hi\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello\r\n"
        );
        let (status, body) =
            h.send_json(KEY, &json!({ "envelope": "bounces@sender.test", "recipient": to, "body": message })).await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["messages"][0]["id"].as_str().unwrap().to_owned());
    }
    let delivered: HashSet<String> = support::eventually(60, "the messages to be delivered or failed", || async {
        let mut delivered = HashSet::new();
        for id in &ids {
            let (_, m) = h.get(KEY, &format!("/v1/messages/{id}")).await;
            match m["status"].as_str() {
                Some("delivered") => {
                    delivered.insert(id.clone());
                }
                Some("failed") | Some("bounced") => {}
                _ => return None,
            }
        }
        Some(delivered)
    })
    .await;
    assert_eq!(delivered.len(), 16, "every fifth recipient was refused");

    // C (healthy, next to the dead B and the down A) got each delivery, quickly.
    let c_lines = support::eventually(30, "C to receive every delivery", || async {
        let lines: Vec<Value> = receiver_c.lines().into_iter().filter(|l| l["path"] == "/ok").collect();
        let got: HashSet<String> = lines.iter().filter_map(|l| l["message_id"].as_str().map(str::to_owned)).collect();
        (got == delivered).then_some(lines)
    })
    .await;
    let mut latencies: Vec<f64> = c_lines
        .iter()
        .map(|l| l["received_at"].as_f64().unwrap() - epoch(l["event_timestamp"].as_str().unwrap()))
        .collect();
    latencies.sort_by(f64::total_cmp);
    assert!(c_lines.iter().all(|l| l["type"] == "message.delivered" && l["verified"] == json!([0])), "{c_lines:?}");
    let worst = latencies.last().copied().unwrap();
    eprintln!("healthy endpoint: event-to-webhook latency p50 {:.3}s, max {worst:.3}s", latencies[latencies.len() / 2]);
    assert!(worst < 1.0 + 2.0, "the dead and the down endpoints held the healthy one back: {worst:.3}s");

    // D answered 410 and is disabled.
    let shown = support::eventually(30, "D to be disabled", || async {
        let (_, e) = h.get(KEY, &format!("/v1/webhooks/{d}")).await;
        (e["enabled"] == false).then_some(e)
    })
    .await;
    assert!(shown["disabled_reason"].as_str().unwrap().contains("410"), "{shown}");

    // A comes up after a while: every event arrives, verified, one id per event.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let receiver_a = Receiver::start(dir.path(), "a", port_a, &[&secret_a]);
    let expected = 16 + 4 * 2; // delivered, or failed + bounced
    let a_lines = support::eventually(60, "A to receive every event", || async {
        let lines = receiver_a.lines();
        let kinds: HashSet<(String, String)> = lines
            .iter()
            .map(|l| (l["message_id"].as_str().unwrap_or("").to_owned(), l["type"].as_str().unwrap().to_owned()))
            .collect();
        (kinds.len() >= expected).then_some(lines)
    })
    .await;
    assert!(a_lines.iter().all(|l| l["verified"] == json!([0])), "every request verified: {a_lines:?}");
    let mut per_event: HashMap<(String, String), HashSet<String>> = HashMap::new();
    for l in &a_lines {
        let key = (l["message_id"].as_str().unwrap().to_owned(), l["type"].as_str().unwrap().to_owned());
        per_event.entry(key).or_default().insert(l["webhook_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(per_event.len(), expected);
    assert!(per_event.values().all(|ids| ids.len() == 1), "one webhook-id per event: {per_event:?}");
    let types: HashSet<&str> = a_lines.iter().filter_map(|l| l["type"].as_str()).collect();
    assert_eq!(types, HashSet::from(["message.delivered", "message.failed", "message.bounced"]));

    // The deliveries show A's failed attempts, then its successes; B only failures.
    // (The projection of outcomes follows the requests closely, not at once.)
    let da = support::eventually(30, "A's deliveries to be projected", || async {
        let (status, da) = h.get(KEY, &format!("/v1/webhooks/{a}/deliveries?limit=1000")).await;
        assert_eq!(status, 200);
        let delivered = da["deliveries"].as_array().unwrap().iter().filter(|r| r["outcome"] == "delivered").count();
        (delivered >= expected).then_some(da)
    })
    .await;
    let rows = da["deliveries"].as_array().unwrap();
    assert!(
        rows.iter().any(|r| r["outcome"] == "retrying" && r["error"].as_str().unwrap().contains("connect")),
        "{da}"
    );
    let ok: HashSet<&str> =
        rows.iter().filter(|r| r["outcome"] == "delivered").map(|r| r["webhook_id"].as_str().unwrap()).collect();
    assert_eq!(ok.len(), expected, "{da}");
    let (_, db) = h.get(KEY, &format!("/v1/webhooks/{b}/deliveries")).await;
    let rows = db["deliveries"].as_array().unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|r| r["outcome"] != "delivered"), "{db}");

    // Rotation: C's new secret, and during the overlap the old one still verifies.
    let (status, rotated) = post(&h, KEY, &format!("/v1/webhooks/{cid}/rotate"), &json!({})).await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret_c);
    receiver_c.add_secret(&new_secret); // index 2
    let (status, test) = post(&h, KEY, &format!("/v1/webhooks/{cid}/test"), &json!({})).await;
    assert_eq!((status, test["delivered"].as_bool()), (200, Some(true)), "{test}");
    let tested = receiver_c.lines().into_iter().find(|l| l["type"] == "webhook.test").unwrap();
    assert_eq!(tested["verified"], json!([0, 2]), "both signatures during the overlap: {tested}");

    feed(&h, &ids, expected).await;
    drop(receiver_a);
    drop(receiver_c);
    h.stop().await;
}

/// `GET /v1/events`: the same events, oldest first, paged with a stable cursor, filtered.
async fn feed(h: &Running, ids: &[String], expected: usize) {
    let failed = support::eventually(30, "the feed to have every failure", || async {
        let (status, page) = h.get(KEY, "/v1/events?type=message.failed&limit=1000").await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap().clone();
        (events.len() == 4).then_some(events)
    })
    .await;
    assert!(failed.iter().all(|e| e["type"] == "message.failed" && e["data"]["reply"]["code"] == 550));
    let (mut seen, mut cursor, mut last) = (Vec::new(), None::<String>, 0.0f64);
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/events?limit=5&cursor={c}"),
            None => "/v1/events?limit=5".to_owned(),
        };
        let (status, page) = h.get(KEY, &path).await;
        assert_eq!(status, 200, "{page}");
        for e in page["events"].as_array().unwrap() {
            let ts = epoch(e["timestamp"].as_str().unwrap());
            assert!(ts >= last, "oldest first: {ts} after {last}");
            last = ts;
            seen.push(e["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "no event twice across pages");
    assert!(seen.len() >= expected, "{} events in the feed, {expected} expected at least", seen.len());
    let (_, one) = h.get(KEY, &format!("/v1/events?message_id={}", ids[0])).await;
    assert!(!one["events"].as_array().unwrap().is_empty());
    assert!(one["events"].as_array().unwrap().iter().all(|e| e["data"]["message_id"] == ids[0].as_str()));
    let (_, r) = h.get(KEY, "/v1/events?recipient=R4@dest.test").await;
    assert!(r["events"].as_array().unwrap().iter().all(|e| e["data"]["recipient"] == "r4@dest.test"), "{r}");
    let (_, other) = h.get(OTHER_KEY, "/v1/events").await;
    assert_eq!(other["events"], json!([]), "another account sees none of them");
    let (status, bad) = h.get(KEY, "/v1/events?type=message.nope").await;
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("invalid_type")));
    let (status, bad) = h.get(KEY, "/v1/events?cursor=zzz").await;
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("invalid_cursor")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_embedded() {
    scenario(Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_kafka_cql() {
    scenario(Backends::KafkaCql).await;
}

/// With the guard on: internal literals refused at creation, names resolving to loopback
/// refused at connection (the receiver never sees a request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_targets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(&dir.path().join("data"), support::free_port(), support::free_port(), Backends::Embedded, vec![]);
    assert!(!c.webhooks.allow_private_targets, "the guard is on by default");
    let h = start(c).await;
    for url in
        ["http://127.0.0.1:8080/", "http://169.254.169.254/latest/meta-data", "http://[::1]/", "http://10.0.0.1/"]
    {
        let (status, body) = post(&h, KEY, "/v1/webhooks", &json!({ "url": url })).await;
        assert_eq!((status, body["error"]["code"].as_str()), (422, Some("webhook_url_refused")), "{url}: {body}");
    }
    let port = support::free_port();
    let (id, secret) = create(&h, format!("http://localhost:{port}/ok"), json!([])).await;
    let receiver = Receiver::start(dir.path(), "r", port, &[&secret]);
    let (status, test) = post(&h, KEY, &format!("/v1/webhooks/{id}/test"), &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(test["delivered"], false, "{test}");
    assert!(test["error"].as_str().unwrap().contains("internal address"), "{test}");
    assert!(receiver.lines().is_empty(), "no request reached the loopback receiver");
    h.stop().await;
}

/// `kill -9` of Herald while deliveries to a down receiver wait on the retry tiers: after the
/// restart every event arrives; the crash costs at most a few redeliveries with the same
/// `webhook-id`.
async fn crash(backends: Backends) {
    use support::node::{send, Cluster, Node};
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&[Zone {
        origin: "dest.test".into(),
        records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()],
    }]);
    let (_sink, sink_addr) = Sink::start(0).await;
    let mut cluster = Cluster::new(backends, knot.port, sink_addr.port(), 4);
    cluster.delivery = "[webhooks]\nallow_private_targets = true\ninline_budget_ms = 1000\n\
                        retry_schedule_secs = [1, 2, 2, 3, 3, 3, 5, 5, 5]\n"
        .into();
    let mut node = Node::start(&cluster, dir.path(), "n1").await;
    let http = reqwest::Client::new();
    let port = support::free_port();
    let r = http
        .post(format!("{}/v1/webhooks", node.base))
        .bearer_auth("k")
        .json(&json!({ "url": format!("http://127.0.0.1:{port}/ok"), "events": ["message.delivered"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let secret = r.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_owned();
    let mut ids = HashSet::new();
    for i in 0..30 {
        ids.extend(send(&http, &node.base, &format!("a{i}@dest.test")).await);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.kill();
    node.restart().await;
    for i in 0..30 {
        ids.extend(send(&http, &node.base, &format!("b{i}@dest.test")).await);
    }
    assert_eq!(ids.len(), 60, "every message acknowledged");
    let receiver = Receiver::start(dir.path(), "r", port, &[&secret]);
    let lines = support::eventually(90, "every delivery to reach the receiver", || async {
        let lines = receiver.lines();
        let got: HashSet<String> = lines.iter().filter_map(|l| l["message_id"].as_str().map(str::to_owned)).collect();
        ids.is_subset(&got).then_some(lines)
    })
    .await;
    assert!(lines.iter().all(|l| l["verified"] == json!([0])), "every request verified");
    let distinct: HashSet<&str> = lines.iter().filter_map(|l| l["webhook_id"].as_str()).collect();
    let mut per_message: HashMap<&str, HashSet<&str>> = HashMap::new();
    for l in &lines {
        per_message.entry(l["message_id"].as_str().unwrap()).or_default().insert(l["webhook_id"].as_str().unwrap());
    }
    let forked = per_message.values().filter(|w| w.len() > 1).count();
    eprintln!(
        "{backends:?}: {} requests for {} events ({} redeliveries with the same webhook-id), {forked} messages with two delivery events",
        lines.len(),
        distinct.len(),
        lines.len() - distinct.len()
    );
    assert!(forked <= 4, "a crash repeats at most the SMTP attempts in flight: {forked}");
    node.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_embedded() {
    crash(Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_kafka_cql() {
    crash(Backends::KafkaCql).await;
}

/// An `https` endpoint: TLS with a certificate from `[webhooks] extra_roots_file`, verified
/// by name; a certificate nobody trusts fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = support::self_signed(dir.path());
    let mut c =
        config(&dir.path().join("data"), support::free_port(), support::free_port(), Backends::Embedded, vec![]);
    c.webhooks.allow_private_targets = true;
    c.webhooks.extra_roots_file = Some(cert.clone());
    let h = start(c).await;
    let port = support::free_port();
    let (id, secret) = create(&h, format!("https://localhost:{port}/ok"), json!([])).await;
    let receiver = Receiver::start_with(dir.path(), "tls", port, &[&secret], &[&cert, &key]);
    let (status, test) = post(&h, KEY, &format!("/v1/webhooks/{id}/test"), &json!({})).await;
    assert_eq!((status, test["delivered"].as_bool()), (200, Some(true)), "{test}");
    assert_eq!(receiver.lines()[0]["verified"], json!([0]));
    h.stop().await;

    // Without the extra root the certificate is not trusted.
    let mut c =
        config(&dir.path().join("data2"), support::free_port(), support::free_port(), Backends::Embedded, vec![]);
    c.webhooks.allow_private_targets = true;
    let h = start(c).await;
    let (id, _) = create(&h, format!("https://localhost:{port}/ok"), json!([])).await;
    let (_, test) = post(&h, KEY, &format!("/v1/webhooks/{id}/test"), &json!({})).await;
    assert_eq!(test["delivered"], false, "{test}");
    assert!(test["error"].as_str().unwrap().to_lowercase().contains("certificate"), "{test}");
    drop(receiver);
    h.stop().await;
}

//! End to end with real peers: REST → Herald → MX found through Knot → SMTP sink, with
//! the DKIM signature checked by dkimpy; statuses and counters read back through the API.
//! Each scenario runs on the embedded backends and on real Kafka + Cassandra.

mod support;

use serde_json::{json, Value};
use support::dns::{txt, Knot, Zone};
use support::herald::{config, start, Backends, KEY, OTHER_KEY};
use support::sink::Sink;

fn message(from: &str, to: &str, subject: &str) -> String {
    format!(
        "From: Sender <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@herald.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello {to},\r\n.line starting with a dot\r\ntrailing spaces   \r\n\r\n\r\n"
    )
}

/// Zones: example.test (preferred MX on 127.0.0.2, where nothing listens, then a backup
/// MX on 127.0.0.1), nullmx.test (RFC 7505), implicit.test (A only, no MX), sender.test
/// with the DKIM keys.
fn zones(rsa_txt: &str, ed_txt: &str) -> Vec<Zone> {
    vec![
        Zone {
            origin: "example.test".into(),
            records: vec![
                "@ MX 10 mx1".into(),
                "@ MX 20 mx2".into(),
                "mx1 A 127.0.0.2".into(),
                "mx2 A 127.0.0.1".into(),
            ],
        },
        Zone { origin: "nullmx.test".into(), records: vec!["@ MX 0 .".into()] },
        Zone { origin: "implicit.test".into(), records: vec!["@ A 127.0.0.1".into()] },
        Zone {
            origin: "sender.test".into(),
            records: vec![
                format!("s1._domainkey TXT {}", txt(rsa_txt)),
                format!("e2._domainkey TXT {}", txt(ed_txt)),
                format!("e1._domainkey.ed TXT {}", txt(ed_txt)),
            ],
        },
    ]
}

struct World {
    knot: Knot,
    sink: Sink,
    herald: support::herald::Running,
    _dir: tempfile::TempDir,
}

async fn world(backends: Backends, tls: bool) -> World {
    let dir = tempfile::tempdir().unwrap();
    let rsa = support::dkim_key(dir.path(), "rsa", "rsa");
    let ed = support::dkim_key(dir.path(), "ed", "ed25519");
    let knot = Knot::start(&zones(&rsa.txt, &ed.txt));
    let (sink, addr) = if tls { Sink::start_tls().await } else { Sink::start(0).await };
    let dkim = vec![
        herald::config::DkimKey {
            domain: "sender.test".into(),
            selector: "s1".into(),
            private_key: rsa.pem_path,
            accounts: vec!["acme".into()],
        },
        herald::config::DkimKey {
            domain: "sender.test".into(),
            selector: "e2".into(),
            private_key: ed.pem_path.clone(),
            accounts: vec!["acme".into()],
        },
        herald::config::DkimKey {
            domain: "ed.sender.test".into(),
            selector: "e1".into(),
            private_key: ed.pem_path,
            accounts: vec!["acme".into()],
        },
    ];
    let herald = start(config(&dir.path().join("data"), knot.port, addr.port(), backends, dkim)).await;
    World { knot, sink, herald, _dir: dir }
}

fn ids(reply: &Value) -> Vec<String> {
    reply["messages"].as_array().expect("messages").iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect()
}

async fn delivered_and_signed(backends: Backends) {
    let w = world(backends, true).await;
    // RSA-signed, JSON, two recipients in two domains (one via the implicit MX).
    let (code, reply) = w
        .herald
        .send_json(
            KEY,
            &json!({
                "envelope": "bounces@sender.test",
                "recipient": ["alice@example.test", "carol@implicit.test"],
                "body": message("news@sender.test", "alice@example.test", "rsa"),
                "clicktracking": true,
            }),
        )
        .await;
    assert_eq!(code, 202, "{reply}");
    let rsa_ids = ids(&reply);
    assert_eq!(reply["messages"][1]["recipient"], "carol@implicit.test");
    // Ed25519-signed, form-encoded.
    let body = message("news@ed.sender.test", "bob@example.test", "ed25519");
    let (code, reply) = w
        .herald
        .send_form(
            KEY,
            &[
                ("envelope", "bounces@ed.sender.test"),
                ("recipient", "bob@example.test"),
                ("body", &body),
                ("openstracking", "1"),
            ],
        )
        .await;
    assert_eq!(code, 202, "{reply}");
    let ed_id = ids(&reply).remove(0);

    for id in rsa_ids.iter().chain([&ed_id]) {
        let view = w.herald.wait_status(id, "delivered", 60).await;
        let events = view["events"].as_array().unwrap();
        assert_eq!(events[0]["type"], "message.accepted");
        assert_eq!(events[1]["type"], "delivery.attempted");
        assert_eq!(events[1]["reply"]["code"], 250);
        assert_eq!(events[1]["mx_ip"], "127.0.0.1");
        assert_eq!(events[1]["tls"], true, "opportunistic STARTTLS was offered: {view}");
        if id != &rsa_ids[1] {
            assert_eq!(events[1]["mx_host"], "mx2.example.test", "the dead preferred MX is skipped");
        }
        assert!(events[1]["dkim"].as_str().unwrap().starts_with("signed"), "{view}");
    }
    let arrived = w.sink.messages();
    assert_eq!(arrived.len(), 3);
    for m in &arrived {
        assert!(m.tls, "every copy came over TLS");
        let report =
            support::dkim_verify(&m.data, w.knot.port).unwrap_or_else(|r| panic!("dkimpy rejected the signature: {r}"));
        // sender.test has two keys, so two signatures (RSA and Ed25519); ed.sender.test one.
        let expected: &[&str] = if m.from.ends_with("@ed.sender.test") {
            &["ok d=ed.sender.test s=e1 a=ed25519-sha256"]
        } else {
            &["ok d=sender.test s=s1 a=rsa-sha256", "ok d=sender.test s=e2 a=ed25519-sha256"]
        };
        for line in expected {
            assert!(report.contains(line), "expected `{line}` in: {report}");
        }
        assert_eq!(report.lines().filter(|l| l.starts_with("ok")).count(), expected.len(), "{report}");
        assert!(String::from_utf8_lossy(&m.data).contains("\r\n.line starting with a dot\r\n"), "dot-stuffing undone");
    }
    let alice = arrived.iter().find(|m| m.to == ["alice@example.test"]).expect("alice's copy");
    assert_eq!(alice.from, "bounces@sender.test");

    let stats = support::eventually(30, "stats", || async {
        let s = w.herald.stats(KEY).await;
        (s["delivered"] == 3).then_some(s)
    })
    .await;
    assert_eq!(
        stats,
        json!({"accepted": 3, "delivered": 3, "deferred": 0, "failed": 0, "opened": 0, "unique_opened": 0, "clicked": 0, "unique_clicked": 0, "unsubscribed": 0,
               "bounced_permanent": 0, "bounced_transient": 0, "complained": 0, "suppressed": 0})
    );
    // Another account sees none of it.
    assert_eq!(w.herald.stats(OTHER_KEY).await["accepted"], 0);
    assert_eq!(w.herald.get(OTHER_KEY, &format!("/v1/messages/{ed_id}")).await.0, 404);
    w.herald.stop().await;
}

async fn deferred_then_delivered_and_failures(backends: Backends) {
    let w = world(backends, false).await;
    // First RCPT: 451, then (retry) 250. Second message: 550.
    w.sink.script(&["451 4.7.1 greylisted, try later"]);
    let send = |to: &'static str| {
        let h = &w.herald;
        async move {
            let (code, reply) =
                h.send_json(KEY, &json!({"envelope": "b@sender.test", "recipient": to, "body": message("n@sender.test", to, "retry")})).await;
            assert_eq!(code, 202, "{reply}");
            ids(&reply).remove(0)
        }
    };
    let greylisted = send("grey@example.test").await;
    let view = w.herald.wait_status(&greylisted, "delivered", 60).await;
    let events = view["events"].as_array().unwrap();
    // Acceptance, two attempts, and the classified 451 (a delayed sync bounce, shown after
    // the attempts; it does not change the status).
    assert_eq!(events.len(), 4, "{view}");
    assert_eq!(events[3]["type"], "bounce.received");
    assert_eq!(
        (&events[3]["action"], &events[3]["source"], &events[3]["class"]),
        (&json!("delayed"), &json!("sync"), &json!("reputation"))
    );
    assert_eq!(events[1]["outcome"], "deferred");
    assert_eq!(events[1]["reply"]["code"], 451);
    assert_eq!(events[1]["reply"]["enhanced"], "4.7.1");
    assert!(events[1]["next_attempt_at"].is_string());
    assert_eq!(events[2]["outcome"], "delivered");
    assert_eq!(events[2]["attempt"], 2);

    w.sink.script(&["550 5.1.1 no such user"]);
    let rejected = send("nobody@example.test").await;
    // The attempt failed; the classified refusal that follows is the latest word.
    let view = w.herald.wait_status(&rejected, "bounced", 60).await;
    assert_eq!(view["events"][1]["outcome"], "failed");
    assert_eq!(view["events"][1]["reply"]["code"], 550);
    assert_eq!(view["events"][1]["reply"]["enhanced"], "5.1.1");
    let events = view["events"].as_array().unwrap();
    let attempts = events.iter().filter(|e| e["type"] == "delivery.attempted").count();
    assert_eq!(attempts, 1, "a 5xx is not retried: {view}");
    let bounce = events.iter().find(|e| e["type"] == "bounce.received").unwrap();
    assert_eq!((&bounce["class"], &bounce["bounce_type"]), (&json!("invalid-recipient"), &json!("permanent")));
    // A hard bounce suppresses the address; the message shows it.
    let suppressed = support::eventually(30, "suppression shown", || async {
        let v = w.herald.get(KEY, &format!("/v1/messages/{rejected}")).await.1;
        v["events"].as_array().unwrap().iter().find(|e| e["type"] == "recipient.suppressed").cloned()
    })
    .await;
    assert_eq!(suppressed["reason"], "hard-bounce");

    let null = send("x@nullmx.test").await;
    let view = w.herald.wait_status(&null, "bounced", 60).await;
    assert_eq!(view["events"][1]["reply"]["code"], 556, "{view}");
    let bounce = view["events"].as_array().unwrap().iter().find(|e| e["type"] == "bounce.received").unwrap().clone();
    assert_eq!(bounce["class"], "bad-domain", "{view}");

    // Always deferred: retried with backoff until the maximum age (4 s here), then failed.
    let busy = send("always451@example.test").await;
    w.herald.wait_status(&busy, "bounced", 60).await;
    // The attempts and the feedback are projected separately: the status may show the
    // give-up before the last attempt is in the view.
    let view = support::eventually(30, "the last attempt in the view", || async {
        let v = w.herald.get(KEY, &format!("/v1/messages/{busy}")).await.1;
        let failed =
            v["events"].as_array()?.iter().any(|e| e["type"] == "delivery.attempted" && e["outcome"] == "failed");
        failed.then_some(v)
    })
    .await;
    let events = view["events"].as_array().unwrap();
    let deferrals = events.iter().filter(|e| e["outcome"] == "deferred").count();
    assert!(deferrals >= 1, "{view}");
    let last = events.iter().rev().find(|e| e["type"] == "delivery.attempted").unwrap();
    assert_eq!(last["outcome"], "failed");
    let gave_up = events.iter().find(|e| e["type"] == "bounce.received" && e["action"] == "failed").unwrap();
    assert_eq!(
        (&gave_up["class"], &gave_up["bounce_type"]),
        (&json!("message-expired"), &json!("transient")),
        "{view}"
    );
    assert_eq!(last["reply"]["code"], 451);
    assert!(last["reply"]["text"].as_str().unwrap().contains("retries exhausted"), "{view}");
    assert!(plain_plaintext(&w), "no TLS was offered, none used");

    let stats = support::eventually(30, "stats", || async {
        let s = w.herald.stats(KEY).await;
        (s["failed"] == 3 && s["delivered"] == 1 && s["bounced_permanent"] == 2 && s["bounced_transient"] == 1)
            .then_some(s)
    })
    .await;
    assert_eq!(
        stats,
        json!({"accepted": 4, "delivered": 1, "deferred": 1 + deferrals, "failed": 3, "opened": 0, "unique_opened": 0, "clicked": 0, "unique_clicked": 0, "unsubscribed": 0,
               "bounced_permanent": 2, "bounced_transient": 1, "complained": 0, "suppressed": 0})
    );
    assert_eq!(w.sink.messages().len(), 1);
    w.herald.stop().await;
}

fn plain_plaintext(w: &World) -> bool {
    w.sink.messages().iter().all(|m| !m.tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_rest_to_smtp_dkim_verified() {
    delivered_and_signed(Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_cql_rest_to_smtp_dkim_verified() {
    delivered_and_signed(Backends::KafkaCql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_deferral_retry_and_failures() {
    deferred_then_delivered_and_failures(Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_cql_deferral_retry_and_failures() {
    deferred_then_delivered_and_failures(Backends::KafkaCql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_append_nothing() {
    let w = world(Backends::Embedded, false).await;
    let h = &w.herald;
    let good = message("n@sender.test", "a@example.test", "x");
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"recipient": "a@example.test", "body": good}), 400, "missing_field"),
        (json!({"envelope": "b@sender.test", "body": good}), 400, "missing_field"),
        (json!({"envelope": "b@sender.test", "recipient": "a@example.test"}), 400, "missing_field"),
        (
            json!({"envelope": "b@sender.test", "recipient": "a@example.test", "body": good, "bogus": 1}),
            400,
            "malformed_request",
        ),
        (json!({"envelope": "not an address", "recipient": "a@example.test", "body": good}), 422, "invalid_address"),
        (
            json!({"envelope": "b@sender.test", "recipient": ["a@example.test", "bad@@x"], "body": good}),
            422,
            "invalid_address",
        ),
        (json!({"envelope": "b@sender.test", "recipient": "a@example.test", "body": "just text"}), 422, "invalid_mime"),
        (
            json!({"envelope": "b@sender.test", "recipient": "a@example.test", "body": good, "clicktracking": "maybe"}),
            400,
            "malformed_request",
        ),
    ];
    for (body, status, code) in cases {
        let (got, reply) = h.send_json(KEY, &body).await;
        assert_eq!((got, reply["error"]["code"].as_str().unwrap_or("")), (status, code), "{body} → {reply}");
        assert!(reply["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (got, reply) = h
        .send_json("wrong-key", &json!({"envelope": "b@sender.test", "recipient": "a@example.test", "body": good}))
        .await;
    assert_eq!((got, reply["error"]["code"].as_str().unwrap()), (401, "unauthorized"));
    let raw = h
        .http
        .post(format!("{}/v1/send", h.base))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    let big = format!("From: a@sender.test\r\n\r\n{}", "x".repeat(26 * 1024 * 1024));
    let (got, reply) =
        h.send_json(KEY, &json!({"envelope": "b@sender.test", "recipient": "a@example.test", "body": big})).await;
    assert_eq!((got, reply["error"]["code"].as_str().unwrap()), (413, "body_too_large"));

    // Nothing above reached the log: one good message later, the counters show exactly one.
    let (code, reply) =
        h.send_json(KEY, &json!({"envelope": "b@sender.test", "recipient": "a@example.test", "body": good})).await;
    assert_eq!(code, 202);
    h.wait_status(&ids(&reply)[0], "delivered", 60).await;
    let stats = h.stats(KEY).await;
    assert_eq!(stats["accepted"], 1, "{stats}");
    assert_eq!(w.sink.messages().len(), 1);
    w.herald.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sessions_are_reused_and_stale_ones_replaced() {
    let w = world(Backends::Embedded, false).await;
    let h = &w.herald;
    let send_and_wait = |n: u32| async move {
        let body = message("n@sender.test", "a@example.test", &format!("reuse{n}"));
        let (code, reply) =
            h.send_json(KEY, &json!({"envelope": "b@sender.test", "recipient": "a@example.test", "body": body})).await;
        assert_eq!(code, 202);
        h.wait_status(&ids(&reply)[0], "delivered", 60).await
    };
    send_and_wait(1).await;
    send_and_wait(2).await;
    assert_eq!(w.sink.connection_count(), 1, "the second message reused the first session");
    // The server now closes each session after its message: the cached session is dead,
    // and the next message must go through a fresh one at its first attempt.
    w.sink.close_after_each_message(true);
    send_and_wait(3).await;
    let view = send_and_wait(4).await;
    assert_eq!(view["events"].as_array().unwrap().len(), 2, "delivered at the first attempt: {view}");
    assert_eq!(view["events"][1]["attempt"], 1);
    assert_eq!(w.sink.connection_count(), 2, "one fresh session replaced the stale one");
    assert_eq!(w.sink.messages().len(), 4);
    let (code, reply) = h.get(KEY, "/v1/stats?from=yesterday").await;
    assert_eq!((code, reply["error"]["code"].as_str().unwrap()), (400, "invalid_time"));
    w.herald.stop().await;
}

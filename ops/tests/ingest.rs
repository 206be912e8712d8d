//! Trustworthy ingestion with real peers (issue 9 §2–4): REST (reqwest) and SMTP (Python
//! smtplib, swaks) refuse the same bad messages with the same findings; long body lines
//! are re-encoded and the signature still verifies with dkimpy; Message-ID and Date are
//! added; duplicate recipients get one copy; a client making 20 errors is disconnected;
//! errors are sentences; From domains are checked per account; Idempotency-Key replays,
//! refuses reuse, survives a restart, and holds across two nodes on Kafka + Cassandra.

mod support;

use base64::Engine;
use serde_json::{json, Value};
use std::time::Duration;
use support::dns::{txt, Knot, Zone};
use support::herald::{config, start, Backends, Running, KEY, OTHER_KEY};
use support::sink::Sink;

struct World {
    knot: Knot,
    sink: Sink,
    herald: Running,
    smtp_port: u16,
    _dir: tempfile::TempDir,
}

/// Knot serves example.test (MX on 127.0.0.1, where the sink listens), refused.test (MX
/// on 127.0.0.2, where nothing listens) and sender.test's DKIM key. Account `acme` relays
/// over SMTP from loopback, has the default `verified` From policy and the static key of
/// sender.test; `other` may use any From domain nobody has.
async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let rsa = support::dkim_key(dir.path(), "rsa", "rsa");
    let knot = Knot::start(&[
        Zone { origin: "example.test".into(), records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()] },
        Zone { origin: "refused.test".into(), records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.2".into()] },
        Zone { origin: "sender.test".into(), records: vec![format!("s1._domainkey TXT {}", txt(&rsa.txt))] },
    ]);
    let (sink, addr) = Sink::start(0).await;
    let dkim = vec![herald::config::DkimKey {
        domain: "sender.test".into(),
        selector: "s1".into(),
        private_key: rsa.pem_path,
        accounts: vec!["acme".into()],
    }];
    let mut c = config(&dir.path().join("data"), knot.port, addr.port(), Backends::Embedded, dkim);
    let smtp_port = support::free_port();
    c.smtp.listen = format!("127.0.0.1:{smtp_port}").parse().unwrap();
    c.smtp.hostname = "mx.herald.test".into();
    c.accounts[0].relay_networks = vec!["127.0.0.0/8".into()];
    c.accounts[0].from_domains = Some(herald::config::FromDomains::Verified);
    let herald = start(c).await;
    World { knot, sink, herald, smtp_port, _dir: dir }
}

/// Runs `tests/smtp_client.py` (smtplib) in `mode` with `input`; one JSON value per line.
async fn smtplib(port: u16, mode: &str, input: &Value) -> Vec<Value> {
    use tokio::io::AsyncWriteExt;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_client.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .args([&port.to_string(), mode])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "smtp_client.py: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

async fn send(h: &Running, key: &str, body: &str, to: Value) -> (u16, Value) {
    h.send_json(key, &json!({"envelope": "bounces@sender.test", "recipient": to, "body": body})).await
}

fn ids(reply: &Value) -> Vec<String> {
    reply["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect()
}

/// What a refusal's message must not look like: Rust's types, debug output, serde's words.
fn assert_sentence(text: &str) {
    for internal in ["untagged", "OneOrMany", "Os {", "Io(", "kind:", "Error(", "invalid type:"] {
        assert!(!text.contains(internal), "`{internal}` in {text:?}");
    }
    assert!(text.len() > 10 && text.contains(' '), "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_smtp_refuse_the_same_messages() {
    let w = world().await;
    let long_subject = format!("From: a@sender.test\r\nSubject: {}\r\n\r\nhi\r\n", "s".repeat(100_000));
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("NUL in a header", b"From: a@sender.test\r\nSubject: a\0b\r\n\r\nhi\r\n".to_vec(), "5.6.0", "NUL"),
        ("NUL in the body", b"From: a@sender.test\r\n\r\nh\0i\r\n".to_vec(), "5.6.0", "NUL"),
        ("bare CR", b"From: a@sender.test\r\n\r\nh\ri\r\n".to_vec(), "5.6.2", "bare CR"),
        ("100,000-octet Subject", long_subject.into_bytes(), "5.6.0", "100009 octets long"),
        ("two From", b"From: a@sender.test\r\nFrom: b@sender.test\r\n\r\nhi\r\n".to_vec(), "5.6.0", "2 `From:`"),
        ("no From", b"Subject: x\r\n\r\nhi\r\n".to_vec(), "5.6.0", "no From:"),
        ("bad header name", b"From: a@sender.test\r\nBad Name: x\r\n\r\nhi\r\n".to_vec(), "5.6.0", "not a header"),
    ];
    let smtp_cases: Vec<Value> = cases
        .iter()
        .map(|(_, m, _, _)| json!({"from": "bounces@sender.test", "to": ["r@example.test"], "data": b64(m)}))
        .collect();
    let smtp = smtplib(w.smtp_port, "send", &Value::Array(smtp_cases)).await;
    for ((what, message, enhanced, names), smtp) in cases.iter().zip(&smtp) {
        let (code, reply) = send(&w.herald, KEY, &String::from_utf8_lossy(message), json!("r@example.test")).await;
        assert_eq!((code, reply["error"]["code"].as_str().unwrap()), (422, "invalid_mime"), "{what}: {reply}");
        let text = reply["error"]["message"].as_str().unwrap();
        assert!(text.contains(names), "{what}: {text}");
        assert_sentence(text);
        assert_eq!(smtp["code"], 550, "{what}: {smtp}");
        let smtp_text = smtp["text"].as_str().unwrap();
        assert!(smtp_text.starts_with(enhanced) && smtp_text.contains(names), "{what}: {smtp_text}");
    }
    // JSON type errors name the field, never a Rust type.
    let (code, reply) = w.herald.send_json(KEY, &json!({"envelope": "b@sender.test", "recipient": 42})).await;
    assert_eq!((code, reply["error"]["code"].as_str().unwrap()), (400, "malformed_request"));
    assert_eq!(reply["error"]["message"], "`recipient` must be a string or a list of strings, not a number");
    assert_eq!(w.herald.stats(KEY).await["accepted"], 0, "nothing refused reached the log");
    assert!(w.sink.messages().is_empty());
    w.herald.stop().await;
}

/// Decoded text of the HTML part, as a mail reader would see it.
fn html_of(data: &[u8]) -> String {
    let m = mail_parser::MessageParser::new().parse(data).unwrap();
    m.body_html(0).unwrap().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_are_reencoded_ids_added_duplicates_merged_and_signatures_verify() {
    let w = world().await;
    let html = format!("<html><body><p>{}</p></body></html>", "Caf\u{e9} <b>bold</b> ".repeat(400));
    assert!(html.len() > 5000);
    let message = format!(
        "From: News <news@sender.test>\r\nTo: r@example.test\r\nSubject: long lines\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
    );
    let to = json!(["r@example.test", "r@EXAMPLE.test", "r@example.TEST"]);
    let (code, reply) = send(&w.herald, KEY, &message, to).await;
    assert_eq!(code, 202, "{reply}");
    assert_eq!(ids(&reply).len(), 1, "one recipient named three times gets one copy: {reply}");
    w.herald.wait_status(&ids(&reply)[0], "delivered", 60).await;

    let smtp = smtplib(
        w.smtp_port,
        "send",
        &json!([{"from": "bounces@sender.test", "to": ["s@example.test", "s@Example.Test"], "data": b64(message.as_bytes())}]),
    )
    .await;
    assert_eq!(smtp[0]["code"], 250, "{smtp:?}");
    let sink = w.sink.clone();
    let got = support::eventually(60, "both messages at the sink", || {
        let sink = sink.clone();
        async move { (sink.messages().len() >= 2).then(|| sink.messages()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.sink.messages().len(), 2, "duplicates were sent once");
    for m in got {
        assert_eq!(m.to.len(), 1);
        let data = String::from_utf8_lossy(&m.data);
        assert!(data.contains("Content-Transfer-Encoding: quoted-printable"), "{data}");
        assert!(data.lines().all(|l| l.len() <= 998), "no line over 998 octets left");
        assert!(data.contains("\r\nMessage-ID: <") && data.contains("@mx.herald.test>"), "{data}");
        assert!(data.contains("\r\nDate: "), "{data}");
        assert_eq!(html_of(&m.data), format!("{html}\r\n"), "the reader sees the same HTML");
        let report = support::dkim_verify(&m.data, w.knot.port).unwrap_or_else(|r| panic!("dkimpy: {r}"));
        assert!(report.contains("ok d=sender.test s=s1"), "{report}");
    }
    w.herald.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_domains_are_the_accounts_own() {
    let w = world().await;
    let body = |from: &str| format!("From: {from}\r\nSubject: policy\r\n\r\nhi\r\n");
    let refused = [
        (KEY, "news@unverified.test", "acme has the `verified` policy"),
        (OTHER_KEY, "news@sender.test", "sender.test's static key names acme only"),
        (OTHER_KEY, "news@mail.sender.test", "subdomains of another account's domain too"),
    ];
    for (key, from, why) in refused {
        let (code, reply) = send(&w.herald, key, &body(from), json!("r@example.test")).await;
        assert_eq!((code, reply["error"]["code"].as_str().unwrap()), (422, "from_domain_not_verified"), "{why}");
        assert_sentence(reply["error"]["message"].as_str().unwrap());
    }
    let (code, reply) = send(&w.herald, KEY, &body("news@mail.sender.test"), json!("r@example.test")).await;
    assert_eq!(code, 202, "a subdomain of acme's static key domain: {reply}");
    let (code, reply) = send(&w.herald, OTHER_KEY, &body("hello@free.test"), json!("r@example.test")).await;
    assert_eq!(code, 202, "`any` allows a domain nobody has: {reply}");

    let smtp = smtplib(
        w.smtp_port,
        "send",
        &json!([
            {"from": "b@sender.test", "to": ["r@example.test"], "data": b64(body("news@unverified.test").as_bytes())},
            {"from": "b@sender.test", "to": ["r@example.test"], "data": b64(body("news@sender.test").as_bytes())},
        ]),
    )
    .await;
    assert_eq!(smtp[0]["code"], 550, "{smtp:?}");
    assert!(smtp[0]["text"].as_str().unwrap().starts_with("5.7.1 The From domain unverified.test"), "{smtp:?}");
    assert_eq!(smtp[1]["code"], 250, "{smtp:?}");
    w.herald.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_bad_commands_disconnect_and_refused_connections_read_as_sentences() {
    let w = world().await;
    let mut lines: Vec<String> = (0..20).map(|i| format!("BOGUS{i}")).collect();
    lines.push("NOOP".into());
    let replies = smtplib(w.smtp_port, "commands", &json!(lines)).await;
    assert_eq!(replies.iter().filter(|r| r["code"] == 500).count(), 20, "{replies:?}");
    assert_eq!(replies[20]["code"], 421, "{replies:?}");
    assert!(replies[20]["text"].as_str().unwrap().starts_with("4.7.0 Too many errors"), "{replies:?}");
    assert_eq!(replies.last().unwrap()["closed"], true, "{replies:?}");

    // swaks names the same recipient twice: one RCPT is merged, one copy is sent.
    let port = w.smtp_port.to_string();
    let out = tokio::process::Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port, "--from", "b@sender.test"])
        .args(["--to", "dup@example.test,dup@EXAMPLE.TEST", "--header", "From: news@sender.test"])
        .args(["--timeout", "20"])
        .output()
        .await
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(transcript.contains("250 2.1.5 Duplicate recipient"), "{transcript}");
    let queued: Vec<&str> = transcript.lines().filter_map(|l| l.split("queued as ").nth(1)).collect();
    assert_eq!(queued.len(), 1, "{transcript}");
    assert_eq!(queued[0].split_whitespace().count(), 1, "one message for one recipient: {transcript}");

    // Delivery to an MX where nothing listens: the attempt says so in a sentence.
    let (code, reply) = send(&w.herald, KEY, "From: n@sender.test\r\n\r\nhi\r\n", json!("r@refused.test")).await;
    assert_eq!(code, 202);
    let id = ids(&reply)[0].clone();
    let h = &w.herald;
    let view = support::eventually(30, "an attempt", || async {
        let (_, v) = h.get(KEY, &format!("/v1/messages/{id}")).await;
        (v["events"].as_array().is_some_and(|e| e.len() >= 2)).then_some(v)
    })
    .await;
    let text = view["events"][1]["reply"]["text"].as_str().unwrap();
    assert_eq!(text, "The connection was refused while connecting.", "{view}");
    w.herald.stop().await;
}

/// `POST /v1/send` with an `Idempotency-Key`.
async fn keyed(h: &Running, api_key: &str, key: &str, body: &Value) -> (u16, Option<String>, Value) {
    let r = h
        .http
        .post(format!("{}/v1/send", h.base))
        .bearer_auth(api_key)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let replayed = r.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap().to_owned());
    (r.status().as_u16(), replayed, r.json().await.unwrap_or(Value::Null))
}

fn request(subject: &str) -> Value {
    json!({
        "envelope": "bounces@sender.test",
        "recipient": ["a@example.test"],
        "body": format!("From: n@sender.test\r\nSubject: {subject}\r\n\r\nhi\r\n"),
    })
}

/// Fires `n` copies of one keyed request at once, spread over `nodes`; returns the set of
/// distinct accepted replies and how many answered 409.
async fn race(nodes: &[&Running], key: &str, body: &Value, n: usize) -> (Vec<Value>, usize) {
    let calls = (0..n).map(|i| keyed(nodes[i % nodes.len()], KEY, key, body));
    let results = futures::future::join_all(calls).await;
    let mut accepted: Vec<Value> = Vec::new();
    let mut conflicts = 0;
    for (code, _, reply) in results {
        match code {
            202 if !accepted.contains(&reply) => accepted.push(reply),
            202 => {}
            409 => {
                assert_eq!(reply["error"]["code"], "idempotency_key_in_use");
                conflicts += 1;
            }
            other => panic!("unexpected {other}: {reply}"),
        }
    }
    (accepted, conflicts)
}

async fn idempotent_sends(backends: Backends) {
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&[Zone {
        origin: "example.test".into(),
        records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()],
    }]);
    let (sink, addr) = Sink::start(0).await;
    let c = config(&dir.path().join("data"), knot.port, addr.port(), backends, vec![]);
    let h = start(c.clone()).await;

    let (code, replayed, first) = keyed(&h, KEY, "order-1", &request("one")).await;
    assert_eq!((code, replayed), (202, None), "{first}");
    let (code, replayed, again) = keyed(&h, KEY, "order-1", &request("one")).await;
    assert_eq!((code, replayed.as_deref()), (202, Some("true")), "{again}");
    assert_eq!(again, first, "the same reply, the same message ids");
    let (code, _, reused) = keyed(&h, KEY, "order-1", &request("something else")).await;
    assert_eq!((code, reused["error"]["code"].as_str().unwrap()), (422, "idempotency_key_reused"));
    let (code, _, theirs) = keyed(&h, OTHER_KEY, "order-1", &request("one")).await;
    assert_eq!(code, 202);
    assert_ne!(theirs, first, "keys are per account");
    let (code, _, bad) = keyed(&h, KEY, "has space", &request("one")).await;
    assert_eq!((code, bad["error"]["code"].as_str().unwrap()), (400, "invalid_idempotency_key"));

    // Many copies at once: one is accepted, every other gets its reply or 409.
    let (accepted, conflicts) = race(&[&h], "order-2", &request("two"), 8).await;
    assert_eq!(accepted.len(), 1, "one set of ids for one key: {accepted:?} ({conflicts} conflicts)");

    // The keys survive a restart.
    h.stop().await;
    let h = start(c.clone()).await;
    let (code, replayed, after) = keyed(&h, KEY, "order-1", &request("one")).await;
    assert_eq!((code, replayed.as_deref(), &after), (202, Some("true"), &first));

    // Two nodes (Kafka + CQL share the log and the keys): copies split between them.
    let nodes = match backends {
        Backends::Embedded => vec![h],
        Backends::KafkaCql => {
            h.stop().await;
            let mut c0 = c.clone();
            c0.cluster.node_count = 2;
            let mut c1 = c0.clone();
            c1.cluster.node_index = 1;
            c1.tracking.listen = format!("127.0.0.1:{}", support::free_port()).parse().unwrap();
            let nodes = vec![start(c0).await, start(c1).await];
            let (accepted, conflicts) = race(&[&nodes[0], &nodes[1]], "order-3", &request("three"), 12).await;
            assert_eq!(accepted.len(), 1, "one winner across nodes: {accepted:?} ({conflicts} conflicts)");
            nodes
        }
    };
    // Each accepted request was appended once: acme's order-1, order-2 (and order-3).
    let expected = 1 + nodes.len() as u64;
    let node = &nodes[0];
    let stats = support::eventually(60, "the projection to count", || async {
        let s = node.stats(KEY).await;
        (s["accepted"] == expected && s["delivered"] == expected).then_some(s)
    })
    .await;
    assert_eq!(stats["accepted"], expected, "{stats}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.messages().len() as u64, expected + 1, "acme's messages and other's one, each sent once");
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_idempotent_sends() {
    idempotent_sends(Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_cql_idempotent_sends_across_restarts_and_nodes() {
    idempotent_sends(Backends::KafkaCql).await;
}

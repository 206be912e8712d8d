//! Bounces, complaints and suppression with real peers, on the embedded backends and on
//! real Kafka + Cassandra:
//!
//! Herald → (MX by Knot) → a private Postfix relay → a scripted sink. The sink refuses some
//! recipients (550 / 451), so Postfix's bounce daemon writes genuine RFC 3464 DSNs (failed
//! and delayed) to the VERP return path; Postfix routes them by the MX Knot publishes for
//! the bounce domain (Postfix runs in a mount namespace whose resolv.conf names Knot on a
//! loopback address of this test, port 53) to Herald's bounce MX. Postfix also refuses
//! some recipients itself at RCPT, which Herald classifies as synchronous bounces. Plain-
//! text bounces, auto-replies, ARF reports and forgeries go to the bounce MX through
//! swaks. Then the suppression list through the API, and the bounce list.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use support::dns::{Knot, Zone};
use support::herald::{config, start, Backends, Running, KEY, OTHER_KEY};
use support::postfix::Postfix;
use support::sink::Sink;

const BOUNCE_DOMAIN: &str = "bounces.herald.test";

struct World {
    sink: Sink,
    postfix: Postfix,
    herald: Running,
    bounce_port: u16,
    _knot: Knot,
    _dir: tempfile::TempDir,
}

/// A loopback address of this test's own (so Knot can take port 53 on it).
fn loopback() -> String {
    let id = herald_schemas::MessageId::generate().0;
    let b = u8::from_str_radix(&id[28..30], 16).unwrap();
    let c = u8::from_str_radix(&id[30..32], 16).unwrap();
    format!("127.53.{b}.{}", c.max(2))
}

fn zones() -> Vec<Zone> {
    vec![
        Zone { origin: "dest.test".into(), records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()] },
        Zone { origin: "herald.test".into(), records: vec!["bounces MX 10 mx".into(), "mx A 127.0.0.1".into()] },
    ]
}

async fn world(backends: Backends) -> World {
    let dir = tempfile::tempdir().unwrap();
    let ip = loopback();
    let knot = Knot::start_on(&ip, 53, &zones());
    let (sink, sink_addr) = Sink::start(0).await;
    let bounce_port = support::free_port();
    // Postfix: sync refusals for sync550-*/sync552-*, relays dest.test to the sink, and
    // sends its bounces by MX to Herald's bounce MX; delay warnings after one second.
    let pdir = dir.path().join("postfix");
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::write(
        pdir.join("access"),
        "/^sync550-/ 550 5.1.1 User unknown in local recipient table\n/^sync552-/ 552 5.2.2 Mailbox full\n",
    )
    .unwrap();
    std::fs::write(
        pdir.join("transport"),
        format!("{BOUNCE_DOMAIN} smtp:{BOUNCE_DOMAIN}:{bounce_port}\n* smtp:[127.0.0.1]:{}\n", sink_addr.port()),
    )
    .unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {ip}\noptions timeout:1 attempts:3\n")).unwrap();
    let extra = format!(
        "relayhost =\ntransport_maps = texthash:{d}/transport\n\
         smtpd_recipient_restrictions = check_recipient_access regexp:{d}/access, permit_mynetworks, reject\n\
         smtp_dns_support_level = enabled\ndisable_dns_lookups = no\nsmtp_host_lookup = dns\n\
         delay_warning_time = 1s\nqueue_run_delay = 1s\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n",
        d = pdir.display()
    );
    let postfix = tokio::task::block_in_place(|| Postfix::start(&pdir, sink_addr.port(), &extra, Some(&resolv)));
    let mut c = config(&dir.path().join("data"), 53, postfix.port, backends, vec![]);
    c.delivery.dns_servers = vec![format!("{ip}:53")];
    // Long enough that Postfix's own retries of deferred mail are not Herald's business.
    c.delivery.max_age_secs = 120;
    c.delivery.retry_max_delay_secs = 5;
    c.bounces.listen = format!("127.0.0.1:{bounce_port}").parse().unwrap();
    c.bounces.default_domain = Some(BOUNCE_DOMAIN.into());
    c.bounces.secret = Some("feedback-test-secret-0123456789".into());
    c.bounces.api_wait_ms = 20_000;
    let herald = start(c).await;
    World { sink, postfix, herald, bounce_port, _knot: knot, _dir: dir }
}

fn body(to: &str, subject: &str) -> String {
    format!("From: News <news@sender.test>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@sender.test>\r\n\r\nHello.\r\n")
}

async fn send(h: &Running, key: &str, to: &str) -> String {
    let (code, reply) = h
        .send_json(
            key,
            &json!({"envelope": "news@sender.test", "recipient": to, "body": body(to, "news"), "bouncetracking": true}),
        )
        .await;
    assert_eq!(code, 202, "{reply}");
    reply["messages"][0]["id"].as_str().unwrap().to_owned()
}

async fn view(h: &Running, id: &str) -> Value {
    h.get(KEY, &format!("/v1/messages/{id}")).await.1
}

/// Waits until message `id` has an event matching `pred`.
async fn event(h: &Running, key: &str, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    support::eventually(90, what, || async {
        let (code, v) = h.get(key, &format!("/v1/messages/{id}")).await;
        (code == 200 && v["events"].as_array().is_some_and(|e| e.iter().any(&pred))).then_some(v)
    })
    .await
}

fn bounce_of(v: &Value) -> &Value {
    v["events"].as_array().unwrap().iter().find(|e| e["type"] == "bounce.received").expect("a bounce event")
}

/// The message view once its status is `status` with at least `events` events (the
/// acceptance, the attempts and the feedback events are projected by different consumers,
/// in any order on Kafka).
async fn wait_view(h: &Running, id: &str, status: &str, events: usize) -> Value {
    support::eventually(60, &format!("{id} {status} with {events} events"), || async {
        let (code, v) = h.get(KEY, &format!("/v1/messages/{id}")).await;
        let n = v["events"].as_array().map_or(0, |e| e.len());
        (code == 200 && v["status"] == status && n >= events).then_some(v)
    })
    .await
}

async fn suppression(h: &Running, key: &str, address: &str) -> (u16, Value) {
    h.get(key, &format!("/v1/suppressions/{address}")).await
}

/// The return path (VERP address) a delivered message had at the sink.
fn return_path(w: &World, to: &str) -> String {
    let m = w.sink.messages().into_iter().find(|m| m.to == [to]).unwrap_or_else(|| panic!("no copy for {to}"));
    m.from
}

async fn swaks(port: u16, to: &str, data: &str) -> (bool, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), data.replace("\r\n", "\n").replace('\n', "\r\n")).unwrap();
    let out = tokio::process::Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port.to_string(), "--from", "<>", "--to", to, "--timeout", "20"])
        .args(["--ehlo", "mx.example.net", "--data"])
        .arg(file.path())
        .output()
        .await
        .expect("swaks");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn corpus(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/feedback").join(name);
    std::fs::read_to_string(path).unwrap()
}

/// Postfix writes the DSNs: a permanent one (the sink's 550) and a delay warning (451).
async fn postfix_dsns(w: &World) {
    let h = &w.herald;
    let bob = send(h, KEY, "always550-bob@dest.test").await;
    let carol = send(h, KEY, "always451-carol@dest.test").await;
    let v = event(h, KEY, &bob, "bob's DSN", |e| e["type"] == "bounce.received").await;
    let b = bounce_of(&v);
    assert_eq!(
        (&b["source"], &b["action"], &b["class"], &b["bounce_type"]),
        (&json!("dsn"), &json!("failed"), &json!("invalid-recipient"), &json!("permanent")),
        "{v}"
    );
    assert_eq!((&b["code"], &b["enhanced"]), (&json!(550), &json!("5.1.1")), "{v}");
    assert!(b["reporting_mta"].as_str().unwrap().contains("relay.herald.test"), "{v}");
    assert!(b["remote_mta"].as_str().unwrap().contains("127.0.0.1"), "{v}");
    // The attempt and the DSN are projected by different consumers (in any order on Kafka):
    // wait for both.
    let v = support::eventually(30, "bob bounced, with his attempt", || async {
        let (code, v) = h.get(KEY, &format!("/v1/messages/{bob}")).await;
        let attempted = v["events"].as_array().is_some_and(|e| e.iter().any(|e| e["type"] == "delivery.attempted"));
        (code == 200 && v["status"] == "bounced" && attempted).then_some(v)
    })
    .await;
    assert_eq!(v["events"][1]["outcome"], "delivered", "Postfix took it first: {v}");
    let s = support::eventually(30, "bob suppressed", || async {
        let (code, v) = suppression(h, KEY, "always550-bob@dest.test").await;
        (code == 200).then_some(v)
    })
    .await;
    assert_eq!(
        (&s["reason"], &s["message_id"], &s["expires_at"]),
        (&json!("hard-bounce"), &json!(bob), &Value::Null),
        "{s}"
    );
    assert_eq!(suppression(h, OTHER_KEY, "always550-bob@dest.test").await.0, 404, "lists are per account");
    // The node's index follows the same log as the projection; let it catch up.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let v = event(h, KEY, &carol, "carol's delay warning", |e| e["type"] == "bounce.received").await;
    let b = bounce_of(&v);
    assert_eq!(
        (&b["action"], &b["bounce_type"], &b["source"]),
        (&json!("delayed"), &json!("transient"), &json!("dsn")),
        "{v}"
    );
    assert_eq!(v["status"], "delivered", "a delay is not the latest word: {v}");
    assert_eq!(suppression(h, KEY, "always451-carol@dest.test").await.0, 404);
    let log = w.postfix.maillog();
    assert!(log.contains("sender non-delivery notification"), "Postfix bounced: {log}");
    assert!(log.contains("sender delay notification"), "Postfix warned: {log}");

    // After the permanent bounce, a new message to bob is accepted but never sent.
    let again = send(h, KEY, "Always550-Bob@dest.test").await;
    let v = wait_view(h, &again, "suppressed", 2).await;
    assert_eq!(v["events"][1]["type"], "message.suppressed", "{v}");
    assert_eq!(v["events"][1]["reason"], "hard-bounce", "{v}");
    assert_eq!(v["events"].as_array().unwrap().len(), 2, "no attempt: {v}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.sink.rcpt_count("always550-bob@dest.test"), 1, "the sink saw bob once");
}

/// Postfix refuses at RCPT: synchronous bounces; three quota refusals suppress for a while.
async fn sync_refusals(w: &World) {
    let h = &w.herald;
    let dan = send(h, KEY, "sync550-dan@dest.test").await;
    let v = h.wait_status(&dan, "bounced", 60).await;
    let b = bounce_of(&v);
    assert_eq!(
        (&b["source"], &b["class"], &b["bounce_type"], &b["code"]),
        (&json!("sync"), &json!("invalid-recipient"), &json!("permanent"), &json!(550)),
        "{v}"
    );
    support::eventually(30, "dan suppressed", || async {
        (suppression(h, KEY, "sync550-dan@dest.test").await.0 == 200).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = send(h, KEY, "sync550-dan@dest.test").await;
    h.wait_status(&again, "suppressed", 60).await;
    let rejects =
        w.postfix.maillog().lines().filter(|l| l.contains("reject: RCPT") && l.contains("sync550-dan")).count();
    assert_eq!(rejects, 1, "Postfix was asked about dan once");

    for i in 0..3 {
        let id = send(h, KEY, "sync552-erin@dest.test").await;
        let v = h.wait_status(&id, "bounced", 60).await;
        assert_eq!(
            (&bounce_of(&v)["class"], &bounce_of(&v)["bounce_type"]),
            (&json!("quota"), &json!("transient")),
            "{i}: {v}"
        );
        if i < 2 {
            assert_eq!(suppression(h, KEY, "sync552-erin@dest.test").await.0, 404, "not yet after {}", i + 1);
        }
    }
    let s = support::eventually(30, "erin suppressed", || async {
        let (code, v) = suppression(h, KEY, "sync552-erin@dest.test").await;
        (code == 200).then_some(v)
    })
    .await;
    assert_eq!(s["reason"], "soft-bounces", "{s}");
    assert!(s["expires_at"].is_string(), "a soft suppression expires: {s}");
}

/// Plain-text bounce, auto-reply, complaints, and forgeries, over SMTP to the bounce MX.
async fn reports_and_forgeries(w: &World) {
    let h = &w.herald;
    let (frank, grace, heidi, ivan, judy, kim) = (
        send(h, KEY, "frank@dest.test").await,
        send(h, KEY, "grace@dest.test").await,
        send(h, KEY, "heidi@dest.test").await,
        send(h, KEY, "ivan@dest.test").await,
        send(h, KEY, "judy@dest.test").await,
        send(h, KEY, "kim@dest.test").await,
    );
    let lee = send(h, OTHER_KEY, "lee@dest.test").await;
    for id in [&frank, &grace, &heidi, &ivan, &judy, &kim] {
        h.wait_status(id, "delivered", 60).await;
    }
    for to in ["frank", "grace", "heidi", "ivan", "judy", "kim", "lee"].map(|n| format!("{n}@dest.test")) {
        support::eventually(60, &format!("{to} at the sink"), || async {
            w.sink.messages().iter().any(|m| m.to == [to.clone()]).then_some(())
        })
        .await;
    }
    let verp = |to: &str| return_path(w, to);
    let frank_rp = verp("frank@dest.test");
    let (local, domain) = frank_rp.split_once('@').unwrap();
    assert_eq!(domain, BOUNCE_DOMAIN);
    assert!(local.len() <= 64 && local.starts_with("b-"), "{local}");
    assert!(local.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{local}");
    let data =
        String::from_utf8_lossy(&w.sink.messages().into_iter().find(|m| m.to == ["frank@dest.test"]).unwrap().data)
            .into_owned();
    assert!(data.contains(&format!("X-Herald-ID: {local}")), "{data}");

    // A plain-text bounce (Yahoo's shape).
    let (ok, t) = swaks(w.bounce_port, &frank_rp, &corpus("yahoo-text-no-account.eml")).await;
    assert!(ok, "{t}");
    let v = h.wait_status(&frank, "bounced", 60).await;
    assert_eq!(
        (&bounce_of(&v)["class"], &bounce_of(&v)["source"]),
        (&json!("invalid-recipient"), &json!("dsn")),
        "{v}"
    );

    // An auto-reply is accepted and ignored.
    let (ok, t) = swaks(w.bounce_port, &verp("grace@dest.test"), &corpus("out-of-office.eml")).await;
    assert!(ok && t.contains("0 feedback event"), "{t}");

    // ARF (RFC 5965's example) naming heidi's message by Original-Mail-From, sent to fbl@.
    let fbl = format!("fbl@{BOUNCE_DOMAIN}");
    let arf = corpus("arf-rfc5965-abuse.eml").replace("b-aaaa@bounce.sender.test", &verp("heidi@dest.test"));
    let (ok, t) = swaks(w.bounce_port, &fbl, &arf).await;
    assert!(ok, "{t}");
    let v = h.wait_status(&heidi, "complained", 60).await;
    let c = v["events"].as_array().unwrap().iter().find(|e| e["type"] == "complaint.received").unwrap().clone();
    assert_eq!((&c["feedback_type"], &c["user_agent"]), (&json!("abuse"), &json!("SomeGenerator/1.0")), "{v}");
    // The recipient redacted: found through the X-Herald-ID of the returned message.
    let ivan_token = verp("ivan@dest.test").split('@').next().unwrap().to_owned();
    let arf = corpus("arf-redacted-recipient.eml")
        .replace("b-aaaa@bounce.sender.test", "b-nothing@elsewhere.test")
        .replace("X-Herald-ID: b-aaaa", &format!("X-Herald-ID: {ivan_token}"));
    let (ok, t) = swaks(w.bounce_port, &fbl, &arf).await;
    assert!(ok, "{t}");
    h.wait_status(&ivan, "complained", 60).await;
    // not-spam: recorded, never suppresses.
    let arf = corpus("arf-not-spam.eml").replace("b-aaaa@bounce.sender.test", &verp("judy@dest.test"));
    let (ok, t) = swaks(w.bounce_port, &fbl, &arf).await;
    assert!(ok, "{t}");
    let v = event(h, KEY, &judy, "judy's not-spam", |e| e["feedback_type"] == "not-spam").await;
    assert_eq!(v["status"], "delivered", "{v}");

    // Forgeries. A token with one character changed, a made-up token, a valid token at a
    // domain that is not a bounce domain: 550 5.1.1 at RCPT.
    let mut forged = local.to_owned().into_bytes();
    forged[12] = if forged[12] == b'a' { b'b' } else { b'a' };
    let forged = String::from_utf8(forged).unwrap();
    for rcpt in [
        format!("{forged}@{BOUNCE_DOMAIN}"),
        format!("b-{}@{BOUNCE_DOMAIN}", "a".repeat(48)),
        format!("{local}@bounces.other.test"),
        format!("postmaster@{BOUNCE_DOMAIN}"),
    ] {
        let (ok, t) = swaks(w.bounce_port, &rcpt, &corpus("postfix-user-unknown.eml")).await;
        assert!(!ok && t.contains("550 5.1.1"), "{rcpt}: {t}");
    }
    // A DSN sent to kim's address about another account's message (lee's, named in the
    // report): only kim's message is affected; the other account's list is untouched.
    let lee_rp = verp("lee@dest.test");
    let dsn = corpus("postfix-user-unknown.eml")
        .replace("bob@example.org", "lee@dest.test")
        .replace("b-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@bounce.sender.test", &lee_rp)
        .replace(
            "X-Herald-ID: b-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            &format!("X-Herald-ID: {}", lee_rp.split('@').next().unwrap()),
        );
    let (ok, t) = swaks(w.bounce_port, &verp("kim@dest.test"), &dsn).await;
    assert!(ok, "{t}");
    h.wait_status(&kim, "bounced", 60).await;
    // An ARF report to fbl@ with a forged token names nobody.
    let arf =
        corpus("arf-rfc5965-abuse.eml").replace("b-aaaa@bounce.sender.test", &format!("{forged}@{BOUNCE_DOMAIN}"));
    let (ok, t) = swaks(w.bounce_port, &fbl, &arf).await;
    assert!(ok && t.contains("0 feedback event"), "{t}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, lee_view) = h.get(OTHER_KEY, &format!("/v1/messages/{lee}")).await;
    assert_eq!((code, &lee_view["status"]), (200, &json!("delivered")), "{lee_view}");
    assert_eq!(suppression(h, OTHER_KEY, "lee@dest.test").await.0, 404);
    assert_eq!(suppression(h, KEY, "lee@dest.test").await.0, 404);
    assert_eq!(
        view(h, &frank).await["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "complaint.received")
            .count(),
        0
    );
    for who in ["grace@dest.test", "judy@dest.test"] {
        assert_eq!(suppression(h, KEY, who).await.0, 404, "{who}");
    }
    for who in ["heidi@dest.test", "ivan@dest.test"] {
        assert_eq!(suppression(h, KEY, who).await.1["reason"], "complaint", "{who}");
    }
    assert_eq!(view(h, &grace).await["status"], "delivered");
}

/// The suppression list by hand, import/export, and the bounce list.
async fn api(w: &World) {
    let h = &w.herald;
    let url = |p: &str| format!("{}{p}", h.base);
    let put = h
        .http
        .put(url("/v1/suppressions/Mallory@Dest.test"))
        .bearer_auth(KEY)
        .json(&json!({"detail": "asked by phone"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 201);
    let v: Value = put.json().await.unwrap();
    assert_eq!((&v["address"], &v["reason"]), (&json!("mallory@dest.test"), &json!("manual")), "{v}");
    let again = h
        .http
        .put(url("/v1/suppressions/mallory@dest.test"))
        .bearer_auth(KEY)
        .json(&json!({"reason": "unsubscribe"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 200, "replaced");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let id = send(h, KEY, "mallory@dest.test").await;
    assert_eq!(wait_view(h, &id, "suppressed", 2).await["events"][1]["reason"], "unsubscribe");
    let del = h.http.delete(url("/v1/suppressions/mallory@dest.test")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(del.status().as_u16(), 204);
    let del = h.http.delete(url("/v1/suppressions/mallory@dest.test")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(del.status().as_u16(), 404);
    // The index follows the log: once lifted, mail flows again.
    let id = support::eventually(30, "mallory deliverable", || async {
        let id = send(h, KEY, "mallory@dest.test").await;
        let v = support::eventually(60, "an outcome", || async {
            let v = view(h, &id).await;
            (v["status"] == "delivered" || v["status"] == "suppressed").then_some(v)
        })
        .await;
        (v["status"] == "delivered").then_some(id)
    })
    .await;
    assert_eq!(view(h, &id).await["status"], "delivered");

    // Bad input: nothing changes.
    let bad = h.http.put(url("/v1/suppressions/not-an-address")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 422);
    let bad = h
        .http
        .put(url("/v1/suppressions/x@dest.test"))
        .bearer_auth(KEY)
        .json(&json!({"reason": "because"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 422);
    assert_eq!(h.get(KEY, "/v1/suppressions?cursor=bogus").await.0, 400);
    assert_eq!(h.get(KEY, "/v1/suppressions?reason=nope").await.0, 400);
    let lines =
        "{\"address\": \"imp1@dest.test\"}\n{\"address\": \"IMP2@dest.test\", \"reason\": \"complaint\"}\nnot json\n";
    let r = h.http.post(url("/v1/suppressions/import")).bearer_auth(KEY).body(lines).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["lines"][0]["line"], 3, "{body}");
    assert_eq!(suppression(h, KEY, "imp1@dest.test").await.0, 404, "a refused import adds nothing");
    let good = "{\"address\": \"imp1@dest.test\"}\n{\"address\": \"IMP2@dest.test\", \"reason\": \"complaint\"}\n\n{\"address\": \"imp3@dest.test\", \"expires_at\": \"2100-01-01T00:00:00Z\"}\n";
    let r = h.http.post(url("/v1/suppressions/import")).bearer_auth(KEY).body(good).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(r.json::<Value>().await.unwrap()["imported"], 3);
    support::eventually(30, "imported", || async {
        (suppression(h, KEY, "imp3@dest.test").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(suppression(h, KEY, "imp2@dest.test").await.1["reason"], "complaint");
    let export = h.http.get(url("/v1/suppressions/export")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(export.headers()["content-type"], "application/x-ndjson");
    let text = export.text().await.unwrap();
    let exported: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for a in ["imp1@dest.test", "imp2@dest.test", "imp3@dest.test", "always550-bob@dest.test", "sync552-erin@dest.test"]
    {
        assert!(exported.iter().any(|e| e["address"] == a), "{a} missing from {text}");
    }
    assert!(!exported.iter().any(|e| e["address"] == "mallory@dest.test"), "lifted entries are not exported");
    // Paging one at a time returns the same set; a reason filter narrows it.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (code, page) = h.get(KEY, &format!("/v1/suppressions?limit=1{cursor}")).await;
        assert_eq!(code, 200, "{page}");
        seen.extend(page["suppressions"].as_array().unwrap().iter().map(|s| s["address"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), exported.len(), "{seen:?}");
    let (_, complaints) = h.get(KEY, "/v1/suppressions?reason=complaint&limit=1000").await;
    assert!(complaints["suppressions"].as_array().unwrap().iter().all(|s| s["reason"] == "complaint"), "{complaints}");
    assert!(complaints["suppressions"].as_array().unwrap().len() >= 3, "{complaints}");
    assert_eq!(h.get(OTHER_KEY, "/v1/suppressions/imp1@dest.test").await.0, 404);

    // The bounce list.
    let (code, all) = h.get(KEY, "/v1/bounces?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z").await;
    assert_eq!(code, 400, "a range is bounded: {all}");
    let (code, all) = h.get(KEY, "/v1/bounces?limit=1000").await;
    assert_eq!(code, 200, "{all}");
    let all = all["bounces"].as_array().unwrap().clone();
    for (r, source, action) in [
        ("always550-bob@dest.test", "dsn", "failed"),
        ("always451-carol@dest.test", "dsn", "delayed"),
        ("sync550-dan@dest.test", "sync", "failed"),
    ] {
        assert!(
            all.iter().any(|b| b["recipient"] == r && b["source"] == source && b["action"] == action),
            "{r}: {all:?}"
        );
    }
    let (_, quota) = h.get(KEY, "/v1/bounces?class=quota&limit=1000").await;
    let quota = quota["bounces"].as_array().unwrap();
    assert_eq!(quota.len(), 3, "{quota:?}");
    assert_eq!(h.get(KEY, "/v1/bounces?class=nope").await.0, 400);
    let (_, one) = h.get(KEY, "/v1/bounces?limit=1").await;
    assert_eq!(one["bounces"].as_array().unwrap().len(), 1);
    assert!(one["next_cursor"].is_string());
    let (_, theirs) = h.get(OTHER_KEY, "/v1/bounces").await;
    assert!(theirs["bounces"].as_array().unwrap().is_empty(), "{theirs}");

    let stats = support::eventually(30, "stats", || async {
        let s = h.stats(KEY).await;
        (s["bounced_permanent"].as_u64() >= Some(4)
            && s["complained"].as_u64() >= Some(2)
            && s["suppressed"].as_u64() >= Some(3))
        .then_some(s)
    })
    .await;
    assert_eq!(stats["bounced_transient"], 3, "erin's three quota refusals: {stats}");
}

async fn scenario(backends: Backends) {
    let w = world(backends).await;
    postfix_dsns(&w).await;
    sync_refusals(&w).await;
    reports_and_forgeries(&w).await;
    api(&w).await;
    w.herald.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_embedded() {
    scenario(Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_kafka_cql() {
    scenario(Backends::KafkaCql).await;
}

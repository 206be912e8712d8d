//! Accounts as data (issue 16): the admin API under `/v1/admin` with operator keys, API keys
//! with scopes shown once, SMTP users, a suspended account refused on REST (403
//! `account_suspended`) and SMTP (550 5.7.1) while its queued mail waits without burning
//! attempts, limits enforced at ingestion, and (on Kafka + CQL) a change made on one node
//! seen by a second node.

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::dns::{Knot, Zone};
use support::herald::{config, start, Backends, Running, KEY};
use support::sink::Sink;

const OPERATOR: &str = "operator-key-for-tests-0001";

fn message(to: &str, subject: &str) -> String {
    format!("From: a@sender.test\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nhello\r\n")
}

async fn admin(h: &Running, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = h.http.request(method, format!("{}{path}", h.base)).bearer_auth(OPERATOR);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn send(h: &Running, key: &str, to: &[&str]) -> (u16, Value) {
    h.send_json(key, &json!({ "envelope": "a@sender.test", "recipient": to, "body": message(to[0], "hi") })).await
}

/// Attempts recorded for message `id` (seen with key `key`); none before it is projected.
async fn attempts(h: &Running, key: &str, id: &str) -> Vec<Value> {
    let (code, v) = h.get(key, &format!("/v1/messages/{id}")).await;
    if code == 404 {
        return vec![];
    }
    assert_eq!(code, 200, "{v}");
    v["events"].as_array().unwrap().iter().filter(|e| e["type"] == "delivery.attempted").cloned().collect()
}

/// swaks with AUTH PLAIN over STARTTLS; returns (success, transcript).
async fn swaks(port: u16, user: &str, password: &str, to: &str) -> (bool, String) {
    let port = port.to_string();
    let args = [
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--ehlo",
        "client.test",
        "--from",
        "a@sender.test",
        "--to",
        to,
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        user,
        "--auth-password",
        password,
        "--timeout",
        "20",
    ];
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("swaks").args(args).kill_on_drop(true).output(),
    )
    .await
    .expect("swaks timed out")
    .expect("swaks runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_manage_accounts_keys_and_users_and_suspension_holds_mail() {
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&[Zone {
        origin: "example.test".into(),
        records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()],
    }]);
    let (sink, addr) = Sink::start(0).await;
    let mut c = config(&dir.path().join("data"), knot.port, addr.port(), Backends::Embedded, vec![]);
    let smtp_port = support::free_port();
    c.smtp.listen = format!("127.0.0.1:{smtp_port}").parse().unwrap();
    c.smtp.auth_failure_delay_ms = 100;
    c.admin.operator_keys = vec![format!("alice={OPERATOR}")];
    c.delivery.max_age_secs = 300;
    c.delivery.suspended_hold_secs = 1;
    c.shaping.hold_secs = 1;
    let h = start(c).await;

    // Who may use the admin API.
    let (code, v) = h.get(KEY, "/v1/admin/accounts").await;
    assert_eq!((code, v["error"]["code"].as_str()), (401, Some("unauthorized")), "an account key is no operator key");
    let (code, v) = h.get(OPERATOR, "/v1/stats").await;
    assert_eq!((code, v["error"]["code"].as_str()), (403, Some("operator_key")), "{v}");

    // Create an account; the config's accounts are listed beside it.
    let body = json!({ "id": "newco", "name": "New Co", "from_domains": "any", "messages_per_second": 2 });
    let (code, v) = admin(&h, reqwest::Method::POST, "/v1/admin/accounts", Some(body.clone())).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!((v["status"].as_str(), v["messages_per_second"].as_u64()), (Some("active"), Some(2)));
    let (code, v) = admin(&h, reqwest::Method::POST, "/v1/admin/accounts", Some(body)).await;
    assert_eq!((code, v["error"]["code"].as_str()), (409, Some("account_exists")), "{v}");
    let (code, v) = admin(&h, reqwest::Method::POST, "/v1/admin/accounts", Some(json!({ "id": "Bad Id!" }))).await;
    assert_eq!(code, 422, "{v}");
    let (code, v) =
        admin(&h, reqwest::Method::POST, "/v1/admin/accounts", Some(json!({ "id": "x", "pool": "nope" }))).await;
    assert_eq!((code, v["error"]["code"].as_str()), (422, Some("invalid_request")), "an unknown pool: {v}");
    let (_, v) = admin(&h, reqwest::Method::GET, "/v1/admin/accounts", None).await;
    let ids: Vec<&str> = v["accounts"].as_array().unwrap().iter().filter_map(|a| a["id"].as_str()).collect();
    assert!(ids.contains(&"newco") && ids.contains(&"acme"), "{ids:?}");

    // A key is shown once; the list shows its prefix only.
    let (code, issued) = admin(
        &h,
        reqwest::Method::POST,
        "/v1/admin/accounts/newco/keys",
        Some(json!({ "name": "sender", "scopes": ["send"] })),
    )
    .await;
    assert_eq!(code, 201, "{issued}");
    let key = issued["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("hrld_") && key.len() > 40, "{key}");
    let (_, keys) = admin(&h, reqwest::Method::GET, "/v1/admin/accounts/newco/keys", None).await;
    assert!(!keys.to_string().contains(&key), "the key itself is never listed: {keys}");
    let (code, v) = admin(
        &h,
        reqwest::Method::POST,
        "/v1/admin/accounts/newco/keys",
        Some(json!({ "scopes": ["send", "everything"] })),
    )
    .await;
    assert_eq!(code, 422, "unknown scope: {v}");

    // Scopes: a send-only key sends but does not read.
    let (code, v) = send(&h, &key, &["bob@example.test"]).await;
    assert_eq!(code, 202, "{v}");
    let first = v["messages"][0]["id"].as_str().unwrap().to_owned();
    let (code, v) = h.get(&key, "/v1/stats").await;
    assert_eq!((code, v["error"]["code"].as_str()), (403, Some("insufficient_scope")), "{v}");
    let (code, reader) = admin(
        &h,
        reqwest::Method::POST,
        "/v1/admin/accounts/newco/keys",
        Some(json!({ "name": "reader", "scopes": ["read"] })),
    )
    .await;
    assert_eq!(code, 201);
    let reader = reader["key"].as_str().unwrap().to_owned();
    h.wait_status_with(&reader, &first, "delivered", 30).await;

    // Limits at ingestion: 2 messages per second.
    let (code, v) = send(&h, &key, &["a@example.test", "b@example.test", "c@example.test"]).await;
    assert_eq!((code, v["error"]["code"].as_str()), (429, Some("rate_limited")), "{v}");

    // SMTP users: added with a password (hashed by Herald), used with AUTH.
    let (code, v) = admin(
        &h,
        reqwest::Method::POST,
        "/v1/admin/accounts/newco/smtp-users",
        Some(json!({ "username": "relay@newco.test", "password": "a long password 1" })),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let (ok, transcript) = swaks(smtp_port, "relay@newco.test", "a long password 1", "carol@example.test").await;
    assert!(ok && transcript.contains("250 2.0.0 Ok: queued as"), "{transcript}");

    // Mail in the queue when the account is suspended waits, without using up attempts.
    sink.defer_all(true);
    tokio::time::sleep(Duration::from_millis(1100)).await; // a fresh per-second budget
    let (code, v) = send(&h, &key, &["dave@example.test"]).await;
    assert_eq!(code, 202, "{v}");
    let queued = v["messages"][0]["id"].as_str().unwrap().to_owned();
    support::eventually(30, "a deferred attempt", || async {
        (!attempts(&h, &reader, &queued).await.is_empty()).then_some(())
    })
    .await;
    let (code, v) =
        admin(&h, reqwest::Method::POST, "/v1/admin/accounts/newco/suspend", Some(json!({ "reason": "review" }))).await;
    assert_eq!((code, v["status"].as_str()), (200, Some("suspended")), "{v}");
    let (code, v) = send(&h, &key, &["erin@example.test"]).await;
    assert_eq!((code, v["error"]["code"].as_str()), (403, Some("account_suspended")), "{v}");
    let (ok, transcript) = swaks(smtp_port, "relay@newco.test", "a long password 1", "carol@example.test").await;
    assert!(!ok && transcript.contains("550 5.7.1"), "{transcript}");
    // An attempt in flight at the suspension may still finish; none after it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = attempts(&h, &reader, &queued).await.len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(attempts(&h, &reader, &queued).await.len(), before, "no attempt while suspended");
    sink.defer_all(false);
    let (code, v) = admin(&h, reqwest::Method::POST, "/v1/admin/accounts/newco/resume", None).await;
    assert_eq!((code, v["status"].as_str()), (200, Some("active")), "{v}");
    h.wait_status_with(&reader, &queued, "delivered", 30).await;
    let all = attempts(&h, &reader, &queued).await;
    let numbers: Vec<u64> = all.iter().filter_map(|a| a["attempt"].as_u64()).collect();
    assert_eq!(numbers, (1..=before as u64 + 1).collect::<Vec<_>>(), "held without burning attempts: {all:?}");

    // Revoked keys and deleted accounts stop working at once on this node.
    let key_id = issued["key_id"].as_str().unwrap();
    let (code, _) = admin(&h, reqwest::Method::DELETE, &format!("/v1/admin/accounts/newco/keys/{key_id}"), None).await;
    assert_eq!(code, 204);
    let (code, v) = send(&h, &key, &["bob@example.test"]).await;
    assert_eq!((code, v["error"]["code"].as_str()), (401, Some("unauthorized")), "{v}");
    let (code, _) = admin(&h, reqwest::Method::DELETE, "/v1/admin/accounts/newco", None).await;
    assert_eq!(code, 204);
    let (code, _) = h.get(&reader, "/v1/stats").await;
    assert_eq!(code, 401, "the deleted account's keys are gone");
    let (code, v) = admin(&h, reqwest::Method::GET, "/v1/admin/accounts/newco", None).await;
    assert_eq!((code, v["error"]["code"].as_str()), (404, Some("account_not_found")), "{v}");
    h.stop().await;
}

/// A second node on the same Kafka and CQL sees an account, a key and a suspension made
/// through the first within a few seconds, without a restart. Prints the propagation times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_changes_reach_a_second_node_on_kafka_and_cql() {
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&[Zone {
        origin: "example.test".into(),
        records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()],
    }]);
    let (_sink, addr) = Sink::start(0).await;
    let mut c = config(&dir.path().join("one"), knot.port, addr.port(), Backends::KafkaCql, vec![]);
    c.admin.operator_keys = vec![format!("alice={OPERATOR}")];
    let mut c2 = c.clone();
    c2.storage.data_dir = dir.path().join("two");
    c2.smtp.listen = "127.0.0.1:0".parse().unwrap();
    let port = support::free_port();
    c2.tracking.listen = format!("127.0.0.1:{port}").parse().unwrap();
    c2.tracking.default_host = format!("127.0.0.1:{port}");
    let one = start(c).await;
    let two = start(c2).await;

    let (code, v) = admin(&one, reqwest::Method::POST, "/v1/admin/accounts", Some(json!({ "id": "spread" }))).await;
    assert_eq!(code, 201, "{v}");
    let (code, issued) = admin(
        &one,
        reqwest::Method::POST,
        "/v1/admin/accounts/spread/keys",
        Some(json!({ "scopes": ["send", "read"] })),
    )
    .await;
    assert_eq!(code, 201, "{issued}");
    let key = issued["key"].as_str().unwrap().to_owned();
    let t = Instant::now();
    support::eventually(20, "the key to work on the second node", || async {
        (two.get(&key, "/v1/stats").await.0 == 200).then_some(())
    })
    .await;
    let key_ms = t.elapsed().as_millis();

    let t = Instant::now();
    let (code, _) = admin(&one, reqwest::Method::POST, "/v1/admin/accounts/spread/suspend", None).await;
    assert_eq!(code, 200);
    let suspended = support::eventually(20, "the suspension on the second node", || async {
        let (code, v) = send(&two, &key, &["bob@example.test"]).await;
        (code == 403).then_some(v)
    })
    .await;
    assert_eq!(suspended["error"]["code"], "account_suspended", "{suspended}");
    let suspend_ms = t.elapsed().as_millis();
    println!("propagation to a second node (Kafka + CQL): new key {key_ms} ms, suspension {suspend_ms} ms");
    assert!(key_ms < 5000 && suspend_ms < 5000, "within a few seconds: {key_ms} ms, {suspend_ms} ms");
    one.stop().await;
    two.stop().await;
}

/// Runs the real `herald` binary with `args`, `stdin` on its standard input.
fn cli(base: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env("HERALD_URL", base)
        .env("HERALD_OPERATOR_KEY", OPERATOR)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `herald accounts …` and `herald keys …` over the admin API, with an operator key the
/// config holds only as its SHA-256 (`herald keys hash`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_accounts_and_keys_over_the_api() {
    let (ok, hashed, err) = cli("http://127.0.0.1:1", &["keys", "hash"], &format!("{OPERATOR}\n"));
    assert!(ok && hashed.starts_with("sha256:") && hashed.trim().len() == 71, "{hashed} {err}");
    let dir = tempfile::tempdir().unwrap();
    let mut c =
        config(&dir.path().join("data"), support::free_port(), support::free_port(), Backends::Embedded, vec![]);
    c.admin.operator_keys = vec![format!("ops={}", hashed.trim())];
    let h = start(c).await;
    let base = h.base.clone();
    let run = |args: Vec<&str>, stdin: &str| {
        let (base, args, stdin) =
            (base.clone(), args.iter().map(|s| s.to_string()).collect::<Vec<_>>(), stdin.to_owned());
        async move {
            tokio::task::spawn_blocking(move || {
                cli(&base, &args.iter().map(String::as_str).collect::<Vec<_>>(), &stdin)
            })
            .await
            .unwrap()
        }
    };

    let (ok, out, err) =
        run(vec!["accounts", "create", "cli-co", "--from-domains", "any", "--messages-per-day", "1000"], "").await;
    assert!(ok && out.contains("\"messages_per_day\": 1000"), "{out} {err}");
    let (ok, out, err) = run(vec!["accounts", "list"], "").await;
    assert!(ok && out.contains("cli-co") && out.contains("acme"), "{out} {err}");
    let (ok, key, err) = run(vec!["keys", "create", "cli-co", "--scope", "send,read", "--name", "ci"], "").await;
    assert!(ok && key.trim().starts_with("hrld_") && err.contains("shown this once"), "{key} {err}");
    let key = key.trim().to_owned();
    let (code, v) = send(&h, &key, &["bob@example.test"]).await;
    assert_eq!(code, 202, "{v}");
    let (ok, out, err) = run(vec!["keys", "list", "cli-co"], "").await;
    assert!(ok && out.contains("active") && out.contains("send,read") && !out.contains(&key), "{out} {err}");
    let key_id = out.split_whitespace().next().unwrap().to_owned();
    let (ok, out, err) = run(vec!["accounts", "add-user", "cli-co", "relay@cli.test"], "another long password\n").await;
    assert!(ok && out.contains("relay@cli.test"), "{out} {err}");
    let (ok, out, err) = run(vec!["accounts", "suspend", "cli-co", "--reason", "unpaid"], "").await;
    assert!(ok && out.contains("\"suspended\""), "{out} {err}");
    let (code, _) = send(&h, &key, &["bob@example.test"]).await;
    assert_eq!(code, 403);
    let (ok, _, err) = run(vec!["keys", "revoke", "cli-co", &key_id], "").await;
    assert!(ok, "{err}");
    assert_eq!(h.get(&key, "/v1/stats").await.0, 401);
    // A wrong operator key is refused with the API's error code.
    let (ok, _, err) = tokio::task::spawn_blocking({
        let base = base.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
                .args(["accounts", "list", "--operator-key", "not-the-operator-key", "--url", &base])
                .output()
                .map(|o| (o.status.success(), String::new(), String::from_utf8_lossy(&o.stderr).into_owned()))
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(!ok && err.contains("unauthorized"), "{err}");
    h.stop().await;
}

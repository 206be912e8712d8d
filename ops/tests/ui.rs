//! The dashboard (`/ui`) in a real browser: headless Chromium driven by Selenium
//! (`ops/tests/ui/walk.py`) against a real Herald and Knot. The script walks the sender-domain
//! wizard until Knot publishes what the wizard shows and the domain is verified, loads the
//! stats page, finds a message by recipient, and checks that a bad key gets a clear error
//! and that the key never appears in a URL; on the embedded backends and on Kafka + CQL.
//! Screenshots: `$CARGO_TARGET_DIR/ui-artifacts/<backends>/`. Also the HTTP side of `/ui`:
//! the security headers, caching and unknown files.

mod support;

use serde_json::json;
use std::path::{Path, PathBuf};
use support::dns::{Knot, Zone};
use support::herald::{config, start, Backends, KEY};
use support::sink::Sink;

const RECIPIENT: &str = "alice@rcpt.test";
const SENT: usize = 3;
const OPERATOR: &str = "op-key-for-the-dashboard-test";

fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("../ui-artifacts")
}

/// Herald on `backends` and Knot; the walk in Chromium; screenshots under `artifacts()/<name>`.
async fn walk(backends: Backends, name: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&[
        Zone { origin: "rcpt.test".into(), records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()] },
        Zone { origin: "sender.test".into(), records: vec![] },
    ]);
    let (_sink, addr) = Sink::start(0).await;
    let mut c = config(&dir.path().join("data"), knot.port, addr.port(), backends, vec![]);
    c.dns.enabled = true;
    c.dns.zone = "herald.test".into();
    c.dns.listen = format!("127.0.0.1:{}", support::free_port()).parse().unwrap();
    c.dns.resolvers = vec![format!("127.0.0.1:{}", knot.port)];
    c.dns.sending_ips = vec!["127.0.0.1".parse().unwrap()];
    c.dns.tracking_ips = vec!["127.0.0.1".parse().unwrap()];
    c.dns.resolver_timeout_ms = 1000;
    c.admin.operator_keys = vec![format!("ops={OPERATOR}")];
    let h = start(c).await;

    for i in 0..SENT {
        let body = format!("From: <news@sender.test>\r\nTo: <{RECIPIENT}>\r\nSubject: ui {i}\r\n\r\nHello.\r\n");
        let (code, reply) =
            h.send_json(KEY, &json!({ "envelope": "bounces@sender.test", "recipient": RECIPIENT, "body": body })).await;
        assert_eq!(code, 202, "{reply}");
        h.wait_status(reply["messages"][0]["id"].as_str().unwrap(), "delivered", 30).await;
    }

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/walk.py");
    let base = h.base.clone();
    let (conf, zone, port) = (knot.conf_path().to_owned(), knot.zone_file("sender.test"), knot.port.to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(&base)
            .arg(KEY)
            .arg(conf)
            .arg(zone)
            .arg(port)
            .arg(RECIPIENT)
            .arg(SENT.to_string())
            .arg(artifacts().join(name))
            .arg(OPERATOR)
            .output()
            .expect("python3 with selenium, chromium and chromedriver (ops/scripts/install-peers.sh)")
    })
    .await
    .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.contains("walk: ok"), "{report}");

    // What the browser did went through the API: the domain is verified there too.
    let (code, d) = h.get(KEY, "/v1/domains/sender.test").await;
    assert_eq!((code, d["status"].as_str()), (200, Some("verified")), "{d}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_walks_the_wizard_shows_stats_and_finds_a_message_in_chromium() {
    walk(Backends::Embedded, "embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_on_kafka_and_cql() {
    walk(Backends::KafkaCql, "kafka-cql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_files_carry_a_strict_policy_validators_and_nothing_else_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(&dir.path().join("data"), support::free_port(), support::free_port(), Backends::Embedded, vec![]);
    let h = start(c).await;
    let get = |path: &str| h.http.get(format!("{}{path}", h.base));

    let r = h.http.get(format!("{}/ui", h.base)).send().await.unwrap();
    assert_eq!(r.url().path(), "/ui/", "/ui redirects to /ui/");
    let page = get("/ui/").send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let etag = page.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(page.headers()["cache-control"], "no-cache", "the page is revalidated at each visit");
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>") && !html.contains("style="), "no inline script or style");
    let release =
        html.split(r#"<script type="module" src="/ui/"#).nth(1).unwrap().split('/').next().unwrap().to_owned();
    assert_eq!(release.len(), 16, "{html}");
    let again = get("/ui/").header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304, "an unchanged page is not sent again");

    let js = get(&format!("/ui/{release}/pages/stats.js")).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert_eq!(js.headers()["cache-control"], "public, max-age=31536000, immutable", "files of a release never change");
    assert!(js.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'self'"));
    // A page loaded before an upgrade asks for the old release: redirected to this one.
    let old = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = old.get(format!("{}/ui/0123456789abcdef/app.js", h.base)).send().await.unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(r.headers()["location"].to_str().unwrap(), format!("/ui/{release}/app.js"));

    let missing = [
        "/ui/nothing.js".to_owned(),
        "/ui/app.js".to_owned(),
        format!("/ui/{release}/nothing.js"),
        format!("/ui/{release}/index.html"),
        format!("/ui/{release}/../Cargo.toml"),
        format!("/ui/{release}/%2e%2e/%2e%2e/Cargo.toml"),
        format!("/ui/{release}/pages/"),
        "/ui/../Cargo.toml".to_owned(),
    ];
    for path in &missing {
        assert_eq!(get(path).send().await.unwrap().status(), 404, "{path}");
    }
    // The API is unchanged beside it.
    assert_eq!(get("/v1/stats").send().await.unwrap().status(), 401);
    h.stop().await;
}

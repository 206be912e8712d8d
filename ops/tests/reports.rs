//! Bounce reports by email with real peers, on the embedded backends and on real Kafka +
//! Cassandra: Herald sends to a scripted SMTP sink (MX by Knot) that refuses some
//! recipients (synchronous bounces, classified by Herald); the account's digest comes
//! back through Herald itself to the same sink, addressed to its `report_email`, and is
//! parsed with mail-parser. Exactly one report per interval (also across a restart of
//! Herald), none for intervals with nothing in them, none for an account with no bounces.

mod support;

use mail_parser::MessageParser;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use support::dns::{Knot, Zone};
use support::herald::{config, start, Backends, Running, KEY, OTHER_KEY};
use support::sink::Sink;

const OPERATOR: &str = "operator-key-for-reports-0001";
const REPORTS_TO: &str = "ops@customer.test";
const OTHER_REPORTS_TO: &str = "ops-other@customer.test";
/// Seconds per report interval of the test account.
const INTERVAL: u32 = 10;

/// One report as the sink got it.
#[derive(Debug)]
struct Report {
    interval: String,
    bounces: u64,
    complaints: u64,
    text: String,
    from: String,
}

fn reports(sink: &Sink, to: &str) -> Vec<Report> {
    sink.messages()
        .into_iter()
        .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to)))
        .map(|m| {
            let parsed = MessageParser::default().parse(&m.data).expect("the report parses");
            let header = |name: &str| parsed.header_raw(name).map(|v| v.trim().to_owned()).unwrap_or_default();
            let counts = header("X-Herald-Report-Counts");
            let count = |key: &str| -> u64 {
                counts
                    .split(';')
                    .find_map(|kv| kv.trim().strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no {key} in {counts:?}"))
            };
            let html = parsed.body_html(0).expect("an HTML part").into_owned();
            assert!(html.contains("<table"), "{html}");
            let from = parsed.from().and_then(|f| f.first()).and_then(|a| a.address()).unwrap_or_default().to_owned();
            Report {
                interval: header("X-Herald-Report-Interval"),
                bounces: count("bounces"),
                complaints: count("complaints"),
                text: parsed.body_text(0).expect("a text part").into_owned(),
                from,
            }
        })
        .collect()
}

async fn admin(h: &Running, method: reqwest::Method, path: &str, body: &Value) -> (u16, Value) {
    let r = h.http.request(method, format!("{}{path}", h.base)).bearer_auth(OPERATOR).json(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn send(h: &Running, key: &str, to: &str) -> String {
    let body = format!("From: <news@sender.test>\r\nTo: <{to}>\r\nSubject: hi\r\n\r\nHello\r\n");
    let (status, reply) =
        h.send_json(key, &json!({"envelope": "news@sender.test", "recipient": to, "body": body})).await;
    assert_eq!(status, 202, "{reply}");
    reply["messages"][0]["id"].as_str().unwrap().to_owned()
}

async fn scenario(backends: Backends) {
    let dir = tempfile::tempdir().unwrap();
    let mx = || vec!["@ MX 10 mx".to_owned(), "mx A 127.0.0.1".to_owned()];
    let knot = Knot::start(&[
        Zone { origin: "dest.test".into(), records: mx() },
        Zone { origin: "customer.test".into(), records: mx() },
    ]);
    let (sink, sink_addr) = Sink::start(0).await;
    let mut c = config(&dir.path().join("data"), knot.port, sink_addr.port(), backends, vec![]);
    c.delivery.max_age_secs = 600;
    c.admin.operator_keys = vec![format!("ops={OPERATOR}")];
    c.reports.min_interval_secs = 1;
    c.reports.tick_ms = 200;
    c.reports.grace_ms = 1500;
    c.accounts[0].report_email = Some(REPORTS_TO.into());
    c.accounts[0].report_interval_secs = Some(INTERVAL);
    c.accounts[1].report_email = Some(OTHER_REPORTS_TO.into());
    let mut h = start(c.clone()).await;

    // The interval through the admin API: bounds checked, recorded, shown.
    let (status, v) =
        admin(&h, reqwest::Method::PATCH, "/v1/admin/accounts/other", &json!({"report_interval_secs": 0})).await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("invalid_request")), "{v}");
    let (status, v) =
        admin(&h, reqwest::Method::PATCH, "/v1/admin/accounts/other", &json!({"report_interval_secs": 2})).await;
    assert_eq!((status, &v["report_interval_secs"]), (200, &json!(2)), "{v}");

    // acme: two unknown users, one full mailbox, one delivered. other: only delivered mail.
    let mut ids = Vec::new();
    for to in ["always550-a@dest.test", "always550-b@dest.test", "always552-c@dest.test", "ok@dest.test"] {
        ids.push(send(&h, KEY, to).await);
    }
    send(&h, OTHER_KEY, "ok-other@dest.test").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let bounced = loop {
        let (code, v) = h.get(KEY, "/v1/bounces").await;
        let n = v["bounces"].as_array().map_or(0, |b| b.len());
        if code == 200 && n == 3 {
            break v;
        }
        if std::time::Instant::now() > deadline {
            // What each message went through, to tell a delivery problem from a projection one.
            let mut seen = Vec::new();
            for id in &ids {
                seen.push(h.get(KEY, &format!("/v1/messages/{id}")).await.1);
            }
            panic!("timed out after 120 s waiting for three bounces: {code} {v:#}\nmessages: {seen:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let classes: Vec<&str> =
        bounced["bounces"].as_array().unwrap().iter().filter_map(|b| b["class"].as_str()).collect();

    // The report(s) covering them: by the end of the bounces' interval plus the grace.
    let got = support::eventually(INTERVAL as u64 * 3 + 30, "reports covering the three bounces", || async {
        let r = reports(&sink, REPORTS_TO);
        (r.iter().map(|r| r.bounces).sum::<u64>() >= 3).then_some(r)
    })
    .await;
    for r in &got {
        assert_eq!(r.from, "reports@mta.herald.test", "no verified sender domain: the service domain");
        assert_eq!(r.complaints, 0);
        assert!(r.bounces > 0, "a report is never empty: {r:?}");
    }
    let mut by_class: BTreeMap<String, u64> = BTreeMap::new();
    for class in &classes {
        *by_class.entry((*class).to_owned()).or_default() += 1;
    }
    let text: String = got.iter().map(|r| r.text.as_str()).collect();
    for (class, n) in &by_class {
        if got.len() == 1 {
            assert!(text.contains(&format!("{class}: {n}")), "{class}: {n} in {text}");
        }
        assert!(text.contains(class.as_str()));
    }
    for to in ["always550-a@dest.test", "always550-b@dest.test", "always552-c@dest.test"] {
        assert!(text.contains(to), "{to} listed in {text}");
    }
    assert!(!text.contains("ok@dest.test"), "delivered mail is not in the report");

    // A restart within the same interval: the claim in the store says it was reported.
    h.stop().await;
    h = start(c).await;
    // Two more intervals, empty: no report for them, and none again for the reported one.
    tokio::time::sleep(Duration::from_secs(INTERVAL as u64 * 2 + 2)).await;
    let after = reports(&sink, REPORTS_TO);
    assert_eq!(after.len(), got.len(), "no report for empty intervals, no second report: {after:?}");
    let mut intervals: Vec<&str> = after.iter().map(|r| r.interval.as_str()).collect();
    intervals.sort();
    intervals.dedup();
    assert_eq!(intervals.len(), after.len(), "one report per interval: {after:?}");
    assert_eq!(after.iter().map(|r| r.bounces).sum::<u64>(), 3);
    assert!(reports(&sink, OTHER_REPORTS_TO).is_empty(), "no bounces, no report");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_embedded() {
    scenario(Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_kafka_cql() {
    scenario(Backends::KafkaCql).await;
}

//! Sender domains with real DNS: Knot serves the customer's zone (whose CNAMEs point into
//! Herald's zone) and the recipients' MX; Herald serves its own zone with hickory-server.
//! Neither recurses, so the verifier asks Knot (the configured resolver) and checks the
//! CNAME targets against Herald's names, and dkimpy follows the CNAME from Knot into
//! Herald's server (`dkim_verify.py ZONE=IP:PORT`), as a recursive resolver would.

mod support;

use serde_json::{json, Value};
use std::process::Command;
use support::dns::{Knot, Zone};
use support::herald::{config, start, Backends, Running, KEY, OTHER_KEY};
use support::sink::Sink;

const ZONE: &str = "herald.test";

fn message(from: &str, subject: &str) -> String {
    format!(
        "From: News <{from}>\r\nTo: <alice@rcpt.test>\r\nSubject: {subject}\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@sender.test>\r\n\r\nHello.\r\n"
    )
}

/// The records the API tells the customer to publish, as Knot zone lines (relative to
/// `sender.test`), with `edit` applied: (record purpose, new line or None to drop).
fn customer_zone(records: &Value, extra: &[&str], drop: &[&str]) -> Zone {
    let mut lines = record_lines(records, drop);
    lines.push("@ MX 10 mail".into());
    lines.push("mail A 127.0.0.1".into());
    lines.extend(extra.iter().map(|s| s.to_string()));
    Zone { origin: "sender.test".into(), records: lines }
}

/// Zone-file lines (absolute names) of the records the API lists, less `drop`.
fn record_lines(records: &Value, drop: &[&str]) -> Vec<String> {
    let mut lines = vec![];
    for r in records["records"].as_array().unwrap() {
        let purpose = r["purpose"].as_str().unwrap();
        let name = r["name"].as_str().unwrap();
        if drop.contains(&purpose) || drop.contains(&name) {
            continue;
        }
        let value = r["value"].as_str().unwrap();
        let value = if r["type"] == "TXT" { format!("\"{value}\"") } else { value.to_owned() };
        lines.push(format!("{name}. {} {value}", r["type"].as_str().unwrap()));
    }
    lines
}

fn kdig(port: u16, args: &[&str]) -> String {
    let out = Command::new("kdig").arg("@127.0.0.1").args(["-p", &port.to_string()]).args(args).output().expect("kdig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn post(h: &Running, key: &str, path: &str, body: Value) -> (u16, Value) {
    let r = h.http.post(format!("{}{path}", h.base)).bearer_auth(key).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn check<'a>(domain: &'a Value, record: &str) -> &'a Value {
    domain["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["record"] == record && (record != "dkim" || c["name"].as_str().unwrap().starts_with("hd1.")))
        .unwrap_or_else(|| panic!("no {record} check in {domain}"))
}

struct World {
    knot: Knot,
    sink: Sink,
    herald: Running,
    dns_port: u16,
    bounce_port: u16,
    dir: tempfile::TempDir,
}

async fn world(backends: Backends) -> World {
    world_with(backends, |_| {}).await
}

/// Knot, a sink and Herald serving its zone, with short rotation timings; `tweak` adjusts
/// the config before Herald starts.
async fn world_with(backends: Backends, tweak: impl FnOnce(&mut herald::config::Config)) -> World {
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&[
        Zone { origin: "rcpt.test".into(), records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()] },
        Zone { origin: "sender.test".into(), records: vec![] },
    ]);
    let (sink, addr) = Sink::start(0).await;
    let dns_port = support::free_port();
    let mut c = config(&dir.path().join("data"), knot.port, addr.port(), backends, vec![]);
    c.dns.enabled = true;
    c.dns.zone = ZONE.into();
    c.dns.listen = format!("127.0.0.1:{dns_port}").parse().unwrap();
    c.dns.resolvers = vec![format!("127.0.0.1:{}", knot.port)];
    c.dns.sending_ips = vec!["127.0.0.1".parse().unwrap()];
    c.dns.tracking_ips = vec!["127.0.0.1".parse().unwrap()];
    c.dns.resolver_timeout_ms = 1000;
    c.dns.refresh_ms = 200;
    c.domains.rotation_interval_secs = 0;
    c.domains.propagation_delay_secs = 2;
    c.domains.grace_secs = 3600;
    c.domains.maintenance_interval_secs = 1;
    c.domains.reverify_secs = 3600;
    let bounce_port = support::free_port();
    c.bounces.listen = format!("127.0.0.1:{bounce_port}").parse().unwrap();
    tweak(&mut c);
    let herald = start(c).await;
    World { knot, sink, herald, dns_port, bounce_port, dir }
}

async fn send(w: &World, from: &str, subject: &str, bounce: bool) -> String {
    let (code, reply) = w
        .herald
        .send_json(KEY, &json!({ "envelope": "bounces@sender.test", "recipient": ["alice@rcpt.test"], "body": message(from, subject), "bouncetracking": bounce }))
        .await;
    assert_eq!(code, 202, "{reply}");
    let id = reply["messages"][0]["id"].as_str().unwrap().to_owned();
    w.herald.wait_status(&id, "delivered", 30).await;
    id
}

fn received(w: &World, subject: &str) -> support::sink::Received {
    let all = w.sink.received.lock().unwrap();
    let needle = format!("Subject: {subject}\r\n");
    all.iter()
        .find(|m| String::from_utf8_lossy(&m.data).contains(&needle))
        .cloned()
        .unwrap_or_else(|| panic!("no message {subject}"))
}

async fn sender_domains(backends: Backends) {
    let w = world(backends).await;
    let h = &w.herald;

    // Add: bad names, public suffix, IDN, claim by another account.
    let (code, v) = post(h, KEY, "/v1/domains", json!({ "domain": "exa mple.test" })).await;
    assert_eq!((code, v["error"]["code"].as_str()), (422, Some("invalid_domain")), "{v}");
    let (code, v) = post(h, KEY, "/v1/domains", json!({ "domain": "co.uk" })).await;
    assert_eq!((code, v["error"]["code"].as_str()), (422, Some("public_suffix")), "{v}");
    let (code, added) =
        post(h, KEY, "/v1/domains", json!({ "domain": "Sender.Test", "dmarc_rua": "mailto:dmarc@sender.test" })).await;
    assert_eq!(code, 201, "{added}");
    assert_eq!(added["status"], "pending");
    assert_eq!(added["selectors"][0]["selector"], "hd1");
    assert_eq!(added["selectors"][0]["state"], "active");
    let (code, again) = post(h, KEY, "/v1/domains", json!({ "domain": "sender.test" })).await;
    assert_eq!((code, again["domain"].as_str()), (200, Some("sender.test")));
    let (code, v) = post(h, OTHER_KEY, "/v1/domains", json!({ "domain": "sender.test" })).await;
    assert_eq!((code, v["error"]["code"].as_str()), (409, Some("domain_claimed")), "{v}");
    let (code, idn) = post(h, KEY, "/v1/domains", json!({ "domain": "bücher.test" })).await;
    assert_eq!(
        (code, idn["domain"].as_str(), idn["unicode"].as_str()),
        (201, Some("xn--bcher-kva.test"), Some("bücher.test"))
    );
    let (code, promo) = post(h, OTHER_KEY, "/v1/domains", json!({ "domain": "promo.sender.test" })).await;
    assert_eq!(code, 201, "a subdomain is a separate sender domain: {promo}");
    let (_, list) = h.get(KEY, "/v1/domains").await;
    let names: Vec<&str> = list["domains"].as_array().unwrap().iter().map(|d| d["domain"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["sender.test", "xn--bcher-kva.test"]);
    let h_list = |list: &Value| list["domains"].as_array().unwrap().len();
    assert_eq!(h_list(&h.get(OTHER_KEY, "/v1/domains").await.1), 1, "the other account sees only its own");
    assert_eq!(h.get(OTHER_KEY, "/v1/domains/sender.test").await.0, 404, "another account's domain is invisible");

    // Records: JSON and zone snippet.
    let (code, records) = h.get(KEY, "/v1/domains/sender.test/records").await;
    assert_eq!(code, 200);
    let zone_text = h
        .http
        .get(format!("{}/v1/domains/sender.test/records?format=zone", h.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dkim_target = records["records"][0]["value"].as_str().unwrap().to_owned();
    assert!(dkim_target.starts_with("hd1.") && dkim_target.ends_with(".dkim.herald.test."), "{dkim_target}");
    assert!(zone_text.contains(&format!("hd1._domainkey.sender.test.\t3600\tIN\tCNAME\t{dkim_target}")), "{zone_text}");
    assert!(zone_text.contains("\"v=spf1 include:_spf.herald.test ~all\""), "{zone_text}");
    assert!(zone_text.contains("\"v=DMARC1; p=none; rua=mailto:dmarc@sender.test;\""), "{zone_text}");

    // Herald's DNS: the key over TCP; truncated over UDP without EDNS.
    let full = kdig(w.dns_port, &["+tcp", "+short", dkim_target.as_str(), "TXT"]);
    assert!(full.contains("v=DKIM1; k=rsa; p="), "{full}");
    let udp = kdig(w.dns_port, &["+notcp", "+noedns", "+ignore", dkim_target.as_str(), "TXT"]);
    let flags = |out: &str| out.lines().find(|l| l.contains("Flags:")).unwrap_or_default().to_owned();
    assert!(flags(&udp).contains(" tc"), "expected TC over UDP without EDNS:\n{udp}");
    let edns = kdig(w.dns_port, &["+notcp", "+edns", "+bufsize=1232", dkim_target.as_str(), "TXT"]);
    assert!(
        !flags(&edns).contains(" tc") && flags(&edns).contains(" aa") && edns.contains("v=DKIM1"),
        "fits with EDNS:\n{edns}"
    );
    assert!(kdig(w.dns_port, &["+tcp", "+short", "_spf.herald.test", "TXT"]).contains("v=spf1 ip4:127.0.0.1 -all"));
    assert!(kdig(w.dns_port, &["+tcp", "nothing.herald.test", "A"]).contains("NXDOMAIN"));

    // Before verification: delivered unsigned, and the attempt says why.
    let id = send(&w, "news@sender.test", "unverified", false).await;
    let (_, m) = h.get(KEY, &format!("/v1/messages/{id}")).await;
    let note = m["events"][1]["dkim"].as_str().unwrap();
    assert_eq!(note, "unsigned: sender domain sender.test is not verified (status pending)");

    // Publish the records; verify.
    w.knot.replace(&customer_zone(&records, &[], &[]));
    let (code, v) = post(h, KEY, "/v1/domains/sender.test/verify", json!({})).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "verified", "{v:#}");
    for c in v["checks"].as_array().unwrap() {
        assert_eq!(c["result"], "ok", "{c}");
    }
    assert!(check(&v, "dmarc")["message"].as_str().unwrap().starts_with("DMARC policy is p=none: fine to start"));

    // Signed now, return path on the bounce domain, verified by dkimpy through the CNAME.
    wait_signing(&w, "signed-1").await;
    let got = received(&w, "signed-1");
    // A VERP address (issue 12): `b-` + the 48-character token, on the sender domain's
    // bounce domain, and the same token in X-Herald-ID.
    let (local, domain) = got.from.split_once('@').unwrap();
    assert!(local.starts_with("b-") && local.len() == 50 && domain == "bounce.sender.test", "{}", got.from);
    assert!(String::from_utf8_lossy(&got.data).contains(&format!("X-Herald-ID: {local}\r\n")), "the token header");
    let report = support::dkim_verify_zones(&got.data, w.knot.port, &[(ZONE, w.dns_port)]).unwrap();
    assert!(report.contains("ok d=sender.test s=hd1"), "{report}");
    // The bounce MX takes a DSN for that address at the account's bounce domain, and
    // nothing else there. A delay notice: it suppresses nothing, so alice gets the later
    // messages of this test.
    let dsn = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/feedback/postfix-delayed.eml"),
    )
    .unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), dsn).unwrap();
    let bounce = |to: String| {
        let port = w.bounce_port.to_string();
        let path = file.path().to_owned();
        async move {
            let out = tokio::process::Command::new("swaks")
                .args(["--server", "127.0.0.1", "--port", &port, "--from", "<>", "--to", &to, "--data"])
                .arg(path)
                .output()
                .await
                .expect("swaks");
            (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    let (ok, t) = bounce(got.from.clone()).await;
    assert!(ok && t.contains("1 feedback event"), "{t}");
    let (ok, t) = bounce(format!("{local}@bounce.other.test")).await;
    assert!(!ok && t.contains("550 5.1.1"), "{t}");

    // A subdomain with an Ed25519 key beside RSA: two signatures, both verified by dkimpy.
    let (code, ed) = post(h, KEY, "/v1/domains", json!({ "domain": "ed.sender.test", "ed25519": true })).await;
    assert_eq!(code, 201, "{ed}");
    let (_, ed_records) = h.get(KEY, "/v1/domains/ed.sender.test/records").await;
    let ed_lines = record_lines(&ed_records, &[]);
    assert!(ed_lines.iter().any(|l| l.starts_with("he2._domainkey.ed.sender.test. CNAME he2.")), "{ed_lines:?}");
    let ed_lines: Vec<&str> = ed_lines.iter().map(String::as_str).collect();
    w.knot.replace(&customer_zone(&records, &ed_lines, &[]));
    // Knot answers REFUSED for a moment while it loads the new zone: verify again then.
    let mut v = Value::Null;
    for _ in 0..20 {
        v = post(h, KEY, "/v1/domains/ed.sender.test/verify", json!({})).await.1;
        let refused = v["checks"].as_array().is_some_and(|c| c.iter().any(|c| c["result"] == "unreachable"));
        if !refused {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(v["status"], "verified", "{v:#}");
    let id = send(&w, "news@ed.sender.test", "ed25519", false).await;
    let (_, m) = h.get(KEY, &format!("/v1/messages/{id}")).await;
    let note = m["events"][1]["dkim"].as_str().unwrap();
    assert!(note.contains("s=hd1 a=rsa-sha256") && note.contains("s=he1 a=ed25519-sha256"), "{note}");
    let report = support::dkim_verify_zones(&received(&w, "ed25519").data, w.knot.port, &[(ZONE, w.dns_port)]).unwrap();
    assert!(report.contains("ok d=ed.sender.test s=hd1") && report.contains("ok d=ed.sender.test s=he1"), "{report}");

    // Click tracking from a verified sender domain uses its tracking domain (the CNAME the
    // customer published); from a domain that is not verified, `[tracking] default_host`.
    for (from, host) in
        [("news@ed.sender.test", "clicks.ed.sender.test".to_owned()), ("news@other.test", h.tracking_host.clone())]
    {
        let subject = format!("tracked-{host}");
        let body = format!(
            "From: <{from}>\r\nTo: <alice@rcpt.test>\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p><a href=\"https://shop.example/x\">x</a></p>\r\n"
        );
        let (code, reply) = h
            .send_json(KEY, &json!({ "envelope": "bounces@sender.test", "recipient": "alice@rcpt.test", "body": body, "clicktracking": true }))
            .await;
        assert_eq!(code, 202, "{reply}");
        w.herald.wait_status(reply["messages"][0]["id"].as_str().unwrap(), "delivered", 30).await;
        let got = String::from_utf8_lossy(&received(&w, &subject).data).into_owned();
        assert!(got.contains(&format!("href=\"http://{host}/c/")), "links on {host}: {got}");
    }
    let allowed = |d: &str| {
        let url = format!("http://{}/tls-allowed?domain={d}", h.tracking_host);
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    assert_eq!(allowed("clicks.ed.sender.test").await, 200, "a certificate for the customer's tracking domain");
    assert_eq!(allowed("clicks.unknown.test").await, 404);

    // Rotation: hd2 published first, signs after the propagation delay; hd1 stays published.
    let (code, rotated) = post(h, KEY, "/v1/domains/sender.test/rotate", json!({})).await;
    assert_eq!(code, 200, "{rotated}");
    assert!(rotated["activates_at"].is_string());
    let (code, v) = post(h, KEY, "/v1/domains/sender.test/rotate", json!({})).await;
    assert_eq!((code, v["error"]["code"].as_str()), (409, Some("rotation_in_progress")));
    let hd2 = dkim_target.replacen("hd1.", "hd2.", 1);
    support::eventually(10, "hd2 served by Herald's DNS", || async {
        kdig(w.dns_port, &["+tcp", "+short", &hd2, "TXT"]).contains("v=DKIM1").then_some(())
    })
    .await;
    let id = send(&w, "news@sender.test", "before-rotation", false).await;
    let (_, m) = h.get(KEY, &format!("/v1/messages/{id}")).await;
    assert!(m["events"][1]["dkim"].as_str().unwrap().contains("s=hd1"), "{m}");
    support::eventually(15, "hd2 to become active", || async {
        let (_, d) = h.get(KEY, "/v1/domains/sender.test").await;
        d["selectors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["selector"] == "hd2" && s["state"] == "active")
            .then_some(())
    })
    .await;
    let id = send(&w, "news@sender.test", "after-rotation", false).await;
    let (_, m) = h.get(KEY, &format!("/v1/messages/{id}")).await;
    assert!(m["events"][1]["dkim"].as_str().unwrap().contains("s=hd2"), "{m}");
    for subject in ["before-rotation", "after-rotation"] {
        let got = received(&w, subject);
        let report = support::dkim_verify_zones(&got.data, w.knot.port, &[(ZONE, w.dns_port)]);
        assert!(report.is_ok(), "{subject}: {report:?}");
    }

    // Broken variants: each gives its precise finding; a required one makes it failing.
    let spf_found = |v: &Value| check(v, "spf").clone();
    w.knot.replace(&customer_zone(&records, &["@ TXT \"v=spf1 mx -all\""], &[]));
    let v = post(h, KEY, "/v1/domains/sender.test/verify", json!({})).await.1;
    assert_eq!(v["status"], "failing");
    let c = spf_found(&v);
    assert_eq!(c["result"], "conflict");
    assert!(c["message"].as_str().unwrap().starts_with("two SPF records found: a domain may have only one"), "{c}");
    let (_, r) = h.get(KEY, "/v1/domains/sender.test/records").await;
    let spf_row = r["records"].as_array().unwrap().iter().find(|x| x["purpose"] == "spf").unwrap().clone();
    assert_eq!(spf_row["value"], "v=spf1 include:_spf.herald.test mx ~all", "merge advice: {spf_row}");

    w.knot.replace(&customer_zone(&records, &["@ TXT \"v=spf1 ~all include:_spf.herald.test\""], &["spf"]));
    let c = spf_found(&post(h, KEY, "/v1/domains/sender.test/verify", json!({})).await.1);
    assert_eq!(c["result"], "wrong_value");
    assert!(c["message"].as_str().unwrap().contains("`~all` is not the last term"), "{c}");

    let wrong_sel = format!("hd1._domainkey CNAME {hd2}");
    w.knot.replace(&customer_zone(&records, &[&wrong_sel], &["hd1._domainkey.sender.test"]));
    let v = post(h, KEY, "/v1/domains/sender.test/verify", json!({})).await.1;
    let c = check(&v, "dkim");
    assert_eq!(c["result"], "wrong_value");
    assert!(c["message"].as_str().unwrap().contains("points to `hd2."), "{c}");
    assert!(c["message"].as_str().unwrap().contains("the active selector is `hd2`"), "{c}");

    w.knot.replace(&customer_zone(&records, &[], &["dmarc"]));
    let v = post(h, KEY, "/v1/domains/sender.test/verify", json!({})).await.1;
    assert_eq!(check(&v, "dmarc")["result"], "missing");
    assert!(check(&v, "dmarc")["message"].as_str().unwrap().starts_with("no DMARC record at _dmarc.sender.test"));

    w.knot.replace(&customer_zone(&records, &["clicks CNAME elsewhere.example."], &["tracking"]));
    let v = post(h, KEY, "/v1/domains/sender.test/verify", json!({})).await.1;
    let c = check(&v, "tracking");
    assert_eq!(c["result"], "wrong_value");
    assert!(c["message"].as_str().unwrap().contains("points to `elsewhere.example`"), "{c}");
    assert_eq!(v["status"], "verified", "tracking is not required: back to verified");

    // Renaming the tracking domain changes the record to publish.
    let r = h
        .http
        .patch(format!("{}/v1/domains/sender.test", h.base))
        .bearer_auth(KEY)
        .json(&json!({ "tracking_label": "www2" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, r) = h.get(KEY, "/v1/domains/sender.test/records").await;
    assert!(
        r["records"].as_array().unwrap().iter().any(|x| x["purpose"] == "tracking" && x["name"] == "www2.sender.test"),
        "{r}"
    );
    let r = h
        .http
        .patch(format!("{}/v1/domains/sender.test", h.base))
        .bearer_auth(KEY)
        .json(&json!({ "tracking_label": "clicks" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // Diagnostics.
    let (code, diag) = h.get(KEY, "/v1/domains/sender.test/check").await;
    assert_eq!(code, 200, "{diag}");
    let find = |r: &str| {
        diag["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["record"] == r)
            .unwrap_or_else(|| panic!("{r} in {diag:#}"))
            .clone()
    };
    assert_eq!(find("dkim_key")["result"], "ok", "{diag:#}");
    assert!(find("dkim_key")["message"].as_str().unwrap().contains("publishes the active rsa key"));
    assert_eq!(find("spf_lookups")["result"], "ok");
    assert_eq!(find("bounce_mx")["result"], "ok", "{diag:#}");
    assert_eq!(find("mx")["result"], "ok");
    assert!(find("dmarc_alignment")["message"].as_str().unwrap().contains("DKIM aligned"));
    // hickory answers loopback's PTR (localhost) and localhost's A itself.
    assert_eq!(find("ptr")["result"], "ok", "{diag:#}");
    assert!(find("ptr")["message"].as_str().unwrap().contains("forward-confirmed reverse DNS"));

    // The CLI, against the running server.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["domains", "--url", &h.base, "--api-key", KEY])
            .args(args)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, text) = cli(&["list"]);
    assert_eq!(code, Some(0));
    assert!(text.contains("sender.test") && text.contains("verified"), "{text}");
    let (_, text) = cli(&["records", "sender.test"]);
    assert!(text.contains("hd2._domainkey.sender.test."), "{text}");
    let (_, text) = cli(&["verify", "sender.test"]);
    assert!(text.contains("wrong_value") && text.contains("tracking"), "{text}");

    // Removal: no longer served, no longer signed.
    assert_eq!(
        h.http
            .delete(format!("{}/v1/domains/sender.test", h.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    assert_eq!(h.get(KEY, "/v1/domains/sender.test").await.0, 404);
    support::eventually(10, "the key withdrawn from Herald's DNS", || async {
        kdig(w.dns_port, &["+tcp", &hd2, "TXT"]).contains("NXDOMAIN").then_some(())
    })
    .await;
    w.herald.stop().await;
}

/// Sends until a message is signed (the signer's snapshot follows the projection).
async fn wait_signing(w: &World, subject: &str) {
    let id = send(w, "news@sender.test", subject, true).await;
    let (_, m) = w.herald.get(KEY, &format!("/v1/messages/{id}")).await;
    let note = m["events"][1]["dkim"].as_str().unwrap().to_owned();
    assert!(note.starts_with("signed d=sender.test s=hd1 a=rsa-sha256"), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sender_domains_with_real_dns() {
    sender_domains(Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_cql_sender_domains_with_real_dns() {
    if std::env::var("HERALD_TEST_KAFKA").is_err() || std::env::var("HERALD_TEST_CQL").is_err() {
        eprintln!("skipped: HERALD_TEST_KAFKA and HERALD_TEST_CQL not set");
        return;
    }
    sender_domains(Backends::KafkaCql).await;
}

/// The periodic task re-checks on its own: pending → verified once the records are
/// published, verified → failing when one breaks, each with a `DomainVerified` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_recheck_moves_the_status() {
    let w = world_with(Backends::Embedded, |c| c.domains.reverify_secs = 1).await;
    let h = &w.herald;
    let (code, _) = post(h, KEY, "/v1/domains", json!({ "domain": "sender.test" })).await;
    assert_eq!(code, 201);
    let (_, records) = h.get(KEY, "/v1/domains/sender.test/records").await;
    w.knot.replace(&customer_zone(&records, &[], &[]));
    let status = |want: &'static str| {
        let h = &w.herald;
        async move {
            support::eventually(20, &format!("status {want}"), || async {
                let (_, d) = h.get(KEY, "/v1/domains/sender.test").await;
                (d["status"] == want).then_some(d)
            })
            .await
        }
    };
    status("verified").await;
    w.knot.replace(&customer_zone(&records, &[], &["dmarc"]));
    let d = status("failing").await;
    assert_eq!(check(&d, "dmarc")["result"], "missing", "{d:#}");
    w.herald.stop().await;
}

/// A server that answers SERVFAIL to everything: verification says `unreachable`, never
/// `missing`, and the status does not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_is_unreachable_not_missing() {
    use herald_engine::domains::{lookup, records::ServiceZone, state, verify};
    use herald_schemas::*;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            if n < 12 {
                continue;
            }
            let mut reply = buf[..n].to_vec();
            reply[2] |= 0x80; // QR
            reply[3] = (reply[3] & 0xf0) | 2; // SERVFAIL
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    let resolver = lookup::resolver(&[addr], std::time::Duration::from_millis(500)).unwrap();
    let added = DomainEvent::Added(DomainAdded {
        account: AccountId("acme".into()),
        domain: "sender.test".into(),
        token: "tok".into(),
        bounce_label: "bounce".into(),
        tracking_label: "clicks".into(),
        dmarc_rua: None,
        bimi_logo: None,
        keys: vec![],
        request_id: "r".into(),
        added_at: Timestamp(0),
    });
    let mut s = state::apply(None, &added, 0).unwrap();
    let checks = verify::verify(&resolver, &ServiceZone::new(ZONE), &s).await;
    assert!(!checks.is_empty());
    for c in &checks {
        assert_eq!(c.result, CheckResult::Unreachable, "{c:?}");
        assert!(c.message.contains("DNS timeout or server failure"), "{}", c.message);
    }
    s.status = VerificationStatus::Verified;
    assert_eq!(state::next_status(s.status, &checks), VerificationStatus::Verified);
}

/// `herald domains ARGS` as the real binary against `h`, as the account of `key`: exit
/// code, stdout, stderr. `RUST_LOG` is cleared so stdout holds only the command's output.
async fn cli(h: &Running, key: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["domains", "--url", &h.base, "--api-key", key])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn selector<'a>(domain: &'a Value, name: &str) -> Option<&'a Value> {
    domain["selectors"].as_array().unwrap().iter().find(|s| s["selector"] == name)
}

/// The private key files of `domain` in `<data_dir>/dkim/<domain>/`, sorted: none since
/// ADR 0017 (private keys travel sealed in the log; `ops/tests/keys.rs`).
fn key_files(w: &World, domain: &str) -> Vec<String> {
    let dir = w.dir.path().join("data/dkim").join(domain);
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".pem"))
            .collect(),
        Err(_) => vec![],
    };
    names.sort();
    names
}

/// `add`, `show`, `check`, `rotate` and `remove` through the binary, each checked against
/// the API's state afterwards. The periodic task is kept out of the way (it would verify a
/// never-checked domain, and activate the rotation), so every change is the command's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_add_show_check_rotate_remove() {
    let w = world_with(Backends::Embedded, |c| {
        c.domains.propagation_delay_secs = 600;
        c.domains.maintenance_interval_secs = 3600;
    })
    .await;
    let h = &w.herald;

    // add: the status, what to do next and the zone snippet; the API has the domain.
    let (code, out, err) = cli(h, KEY, &["add", "sender.test", "--dmarc-rua", "mailto:dmarc@sender.test"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.starts_with("sender.test: pending; publish these records, then run `herald domains verify sender.test`:\n"),
        "{out}"
    );
    let (code, records) = h.get(KEY, "/v1/domains/sender.test/records").await;
    assert_eq!(code, 200, "{records}");
    let hd1 = records["records"][0]["value"].as_str().unwrap().to_owned();
    let hd2 = hd1.replacen("hd1.", "hd2.", 1);
    assert!(out.contains(&format!("hd1._domainkey.sender.test.\t3600\tIN\tCNAME\t{hd1}")), "{out}");
    assert!(out.contains(&format!("hd2._domainkey.sender.test.\t3600\tIN\tCNAME\t{hd2}")), "{out}");
    assert!(out.contains("\"v=DMARC1; p=none; rua=mailto:dmarc@sender.test;\""), "{out}");
    let (_, d) = h.get(KEY, "/v1/domains/sender.test").await;
    assert_eq!(
        (d["status"].as_str(), d["dmarc_rua"].as_str()),
        (Some("pending"), Some("mailto:dmarc@sender.test")),
        "{d}"
    );
    assert_eq!(key_files(&w, "sender.test"), Vec::<String>::new(), "keys are sealed in the log, not files");

    // add of a domain another account holds: non-zero exit with the 409's code and message.
    let (code, out, err) = cli(h, OTHER_KEY, &["add", "sender.test"]).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(err.contains("domain_claimed: sender.test is already a sender domain of another account"), "{err}");
    assert_eq!(out, "");
    assert_eq!(h.get(OTHER_KEY, "/v1/domains/sender.test").await.0, 404);
    assert_eq!(h.get(KEY, "/v1/domains/sender.test").await.1, d, "the claim changed nothing");

    // show: the API's JSON; a Unicode name goes percent-encoded in the path.
    let (code, out, err) = cli(h, KEY, &["show", "sender.test"]).await;
    assert_eq!(code, Some(0), "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(shown, d);
    let (code, out, err) = cli(h, KEY, &["add", "bücher.test"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("xn--bcher-kva.test: pending"), "{out}");
    let (code, out, err) = cli(h, KEY, &["show", "bücher.test"]).await;
    assert_eq!(code, Some(0), "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        (shown["domain"].as_str(), shown["unicode"].as_str()),
        (Some("xn--bcher-kva.test"), Some("bücher.test")),
        "{shown}"
    );
    let (code, out, err) = cli(h, OTHER_KEY, &["show", "sender.test"]).await;
    assert!(code != Some(0) && out.is_empty() && err.contains("domain_not_found"), "{code:?} {out} {err}");

    // check: one readable line per finding; exit 1 while anything fails, 0 once all pass.
    let (code, out, err) = cli(h, KEY, &["check", "sender.test"]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.starts_with("sender.test: problems found\n"), "{out}");
    let line = |out: &str, record: &str| {
        out.lines()
            .find(|l| l.get(5..).is_some_and(|rest| rest.starts_with(&format!("{record} "))))
            .unwrap_or_else(|| panic!("no {record} in {out}"))
            .to_owned()
    };
    assert!(line(&out, "spf").starts_with("FAIL spf              missing      no SPF record at sender.test: publish `v=spf1 include:_spf.herald.test ~all`"), "{out}");
    assert!(line(&out, "dkim_key").contains("no DKIM key record at hd1._domainkey.sender.test"), "{out}");
    assert!(line(&out, "ptr").starts_with("ok   ptr "), "{out}");
    w.knot.replace(&customer_zone(&records, &[], &[]));
    let (code, out, err) = cli(h, KEY, &["check", "sender.test"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("sender.test: all checks pass\n"), "{out}");
    assert!(out.lines().skip(1).all(|l| l.starts_with("ok   ")), "{out}");
    assert!(
        line(&out, "dkim_key").ends_with(&format!(
            "hd1._domainkey.sender.test (through CNAME {}) publishes the active rsa key",
            hd1.trim_end_matches('.')
        )),
        "{out}"
    );
    w.knot.replace(&customer_zone(&records, &[], &["dmarc"]));
    let (code, out, _) = cli(h, KEY, &["check", "sender.test"]).await;
    assert_eq!(code, Some(1), "{out}");
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails, vec!["FAIL dmarc_alignment  missing      no DMARC record at _dmarc.sender.test"], "{out}");
    let (code, out, _) = cli(h, KEY, &["check", "sender.test", "--json"]).await;
    assert_eq!(code, Some(1), "{out}");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!((report["domain"].as_str(), report["ok"].as_bool()), (Some("sender.test"), Some(false)), "{report:#}");
    let (_, after) = h.get(KEY, "/v1/domains/sender.test").await;
    assert_eq!(
        (after["status"].as_str(), &after["checked_at"]),
        (Some("pending"), &Value::Null),
        "check records nothing: {after:#}"
    );

    // rotate: new keys in the idle slot, published (not signing) until the time printed.
    let (code, out, err) = cli(h, KEY, &["rotate", "sender.test"]).await;
    assert_eq!(code, Some(0), "{err}");
    let (_, d) = h.get(KEY, "/v1/domains/sender.test").await;
    assert_eq!(selector(&d, "hd1").map(|s| &s["state"]), Some(&json!("active")), "{d:#}");
    assert_eq!(selector(&d, "hd2").map(|s| &s["state"]), Some(&json!("published")), "{d:#}");
    assert_eq!(
        out,
        format!("sender.test: new keys published; they sign from {}\n", d["activates_at"].as_str().unwrap())
    );
    assert!(kdig(w.dns_port, &["+tcp", "+short", &hd2, "TXT"]).contains("v=DKIM1"), "hd2 served at once");
    let (code, _, err) = cli(h, KEY, &["rotate", "sender.test"]).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("rotation_in_progress: cannot rotate now: keys for slot 2 are already published"), "{err}");

    // remove: gone from the API and from Herald's zone.
    let (code, out, err) = cli(h, KEY, &["remove", "sender.test"]).await;
    assert_eq!((code, out.as_str()), (Some(0), "sender.test: removed\n"), "{err}");
    assert_eq!(h.get(KEY, "/v1/domains/sender.test").await.0, 404);
    let (_, list) = h.get(KEY, "/v1/domains").await;
    assert_eq!(
        list["domains"].as_array().unwrap().iter().map(|d| d["domain"].as_str().unwrap()).collect::<Vec<_>>(),
        vec!["xn--bcher-kva.test"]
    );
    support::eventually(10, "the keys withdrawn from Herald's DNS", || async {
        (kdig(w.dns_port, &["+tcp", &hd1, "TXT"]).contains("NXDOMAIN")
            && kdig(w.dns_port, &["+tcp", &hd2, "TXT"]).contains("NXDOMAIN"))
        .then_some(())
    })
    .await;
    let (code, _, err) = cli(h, KEY, &["remove", "sender.test"]).await;
    assert!(code != Some(0) && err.contains("domain_not_found"), "{err}");
    w.herald.stop().await;
}

/// Rotation end to end with short timings: the new key is published beside the old one and
/// signs after the propagation delay; both are served through the grace period; then the
/// periodic task withdraws the old selector from Herald's zone (and its sealed key from the
/// domain's state: `state::tests::sealed_keys_follow_the_published_keys`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_retires_the_old_key_after_the_grace_period() {
    let w = world_with(Backends::Embedded, |c| {
        c.domains.propagation_delay_secs = 1;
        c.domains.grace_secs = 2;
        c.domains.maintenance_interval_secs = 1;
    })
    .await;
    let h = &w.herald;
    let (code, _) = post(h, KEY, "/v1/domains", json!({ "domain": "sender.test" })).await;
    assert_eq!(code, 201);
    let (_, records) = h.get(KEY, "/v1/domains/sender.test/records").await;
    w.knot.replace(&customer_zone(&records, &[], &[]));
    let (_, v) = post(h, KEY, "/v1/domains/sender.test/verify", json!({})).await;
    assert_eq!(v["status"], "verified", "{v:#}");
    let hd1 = records["records"][0]["value"].as_str().unwrap().to_owned();
    let hd2 = hd1.replacen("hd1.", "hd2.", 1);
    let txt = |name: &str| kdig(w.dns_port, &["+tcp", "+short", name, "TXT"]);
    let old_txt = txt(&hd1);
    assert!(old_txt.contains("v=DKIM1"), "{old_txt}");

    let (code, rotated) = post(h, KEY, "/v1/domains/sender.test/rotate", json!({})).await;
    assert_eq!(code, 200, "{rotated}");
    let d = support::eventually(10, "hd2 to become active", || async {
        let (_, d) = h.get(KEY, "/v1/domains/sender.test").await;
        (selector(&d, "hd2").is_some_and(|s| s["state"] == "active")).then_some(d)
    })
    .await;

    // The grace period: hd1 no longer signs but stays published, beside hd2.
    assert_eq!(selector(&d, "hd1").map(|s| &s["state"]), Some(&json!("retiring")), "{d:#}");
    assert!(d["retires_at"].is_string(), "{d:#}");
    assert_eq!(txt(&hd1), old_txt, "the old key is served during the grace period");
    assert!(txt(&hd2).contains("v=DKIM1"), "the new key is served");

    // After it: hd1 withdrawn from the zone; hd2 alone signs.
    support::eventually(10, "hd1 withdrawn from Herald's DNS", || async {
        (!txt(&hd1).contains("v=DKIM1")).then_some(())
    })
    .await;
    let full = kdig(w.dns_port, &["+tcp", &hd1, "TXT"]);
    assert!(full.contains("NXDOMAIN") || (full.contains("NOERROR") && full.contains("ANSWER: 0")), "{full}");
    assert!(txt(&hd2).contains("v=DKIM1"));
    let (_, d) = h.get(KEY, "/v1/domains/sender.test").await;
    assert_eq!(d["selectors"].as_array().unwrap().len(), 1, "{d:#}");
    assert_eq!(selector(&d, "hd2").map(|s| &s["state"]), Some(&json!("active")), "{d:#}");
    assert!(d["retires_at"].is_null(), "{d:#}");
    assert_eq!(key_files(&w, "sender.test"), Vec::<String>::new(), "no key files since ADR 0017");

    // Slot 1 is free again: the next rotation publishes a fresh key there.
    let (code, rotated) = post(h, KEY, "/v1/domains/sender.test/rotate", json!({})).await;
    assert_eq!(code, 200, "{rotated}");
    let new_txt = txt(&hd1);
    assert!(new_txt.contains("v=DKIM1") && new_txt != old_txt, "{new_txt}");
    w.herald.stop().await;
}

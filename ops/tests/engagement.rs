//! Engagement end to end with real peers: messages sent over REST and over SMTP (swaks) are
//! rewritten, DKIM-signed (RSA and Ed25519) and delivered to a sink through Knot's MX;
//! Python's MIME and HTML parsers read what arrived; dkimpy verifies both signatures; curl
//! follows the links, fetches the pixel and unsubscribes against the tracking server; the
//! events and counters are read back through the API. On embedded and on Kafka + Cassandra.

mod support;

use serde_json::{json, Value};
use std::process::Command;
use support::dns::{txt, Knot, Zone};
use support::herald::{config, start, Backends, Running, KEY, OTHER_KEY};
use support::sink::Sink;

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0";

/// The HTML of the newsletter: every link case the issue lists.
const HTML: &str = r##"<html><head><style>p { color: #123456 } @media (max-width: 600px) { p { font-size: 20px } }</style></head>
<body><p>Hello,</p>
<p><a href="https://shop.example/sale?utm_source=news&amp;utm_medium=email&amp;q=a+b%2Fc#offers">Sale</a></p>
<p><a href="https://shop.example/p/1#reviews">Reviews</a> <a href="#top">Top</a></p>
<p><a href="mailto:help@sender.test?subject=Hi">Mail us</a></p>
<p><a data-herald-notrack href="https://account.example/me">Account</a></p>
<p><a href="%unsubscribe_url%">Unsubscribe</a></p>
</body></html>
"##;

const TEXT: &str = "Hello,\r\nSale: https://shop.example/sale\r\n";

fn quoted_printable(s: &str) -> String {
    // Soft-wrapped at 60 characters, `=` escaped: a quoted-printable part as mailers write it.
    let mut out = String::new();
    for line in s.lines() {
        let escaped = line.replace('=', "=3D");
        let chars: Vec<char> = escaped.chars().collect();
        for (i, chunk) in chars.chunks(60).enumerate() {
            if i > 0 {
                out.push_str("=\r\n");
            }
            out.extend(chunk);
        }
        out.push_str("\r\n");
    }
    out
}

/// multipart/alternative: a text part (never touched) and a quoted-printable HTML part.
fn newsletter(subject: &str) -> String {
    format!(
        "From: News <news@sender.test>\r\nTo: <alice@example.test>\r\nSubject: {subject}\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <{subject}@sender.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n\
--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{TEXT}\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\n{}\r\n--alt--\r\n",
        quoted_printable(HTML)
    )
}

/// A base64 HTML part without `</body>`.
fn base64_note(subject: &str, extra_header: &str) -> String {
    use base64::Engine;
    let html = "<p>Just a note: <a href=\"https://docs.example/guide?x=1&amp;y=2\">the guide</a>.</p>\r\n";
    let b64 = base64::engine::general_purpose::STANDARD.encode(html);
    let lines: Vec<&str> = b64.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!(
        "From: News <news@sender.test>\r\nTo: <bob@example.test>\r\nSubject: {subject}\r\n{extra_header}MIME-Version: 1.0\r\n\
Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        lines.join("\r\n")
    )
}

struct World {
    knot: Knot,
    sink: Sink,
    herald: Running,
    smtp_port: u16,
    _dir: tempfile::TempDir,
}

async fn world(backends: Backends) -> World {
    let dir = tempfile::tempdir().unwrap();
    let rsa = support::dkim_key(dir.path(), "rsa", "rsa");
    let ed = support::dkim_key(dir.path(), "ed", "ed25519");
    let knot = Knot::start(&[
        Zone { origin: "example.test".into(), records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()] },
        Zone {
            origin: "sender.test".into(),
            records: vec![
                format!("s1._domainkey TXT {}", txt(&rsa.txt)),
                format!("e1._domainkey TXT {}", txt(&ed.txt)),
            ],
        },
    ]);
    let (sink, addr) = Sink::start(0).await;
    let dkim = vec![
        herald::config::DkimKey {
            domain: "sender.test".into(),
            selector: "s1".into(),
            private_key: rsa.pem_path,
            accounts: vec!["acme".into()],
        },
        herald::config::DkimKey {
            domain: "sender.test".into(),
            selector: "e1".into(),
            private_key: ed.pem_path,
            accounts: vec!["acme".into()],
        },
    ];
    let mut c = config(&dir.path().join("data"), knot.port, addr.port(), backends, dkim);
    let smtp_port = support::free_port();
    c.smtp.listen = format!("127.0.0.1:{smtp_port}").parse().unwrap();
    c.accounts[0].relay_networks = vec!["127.0.0.1/32".into()];
    c.accounts[0].defaults.openstracking = true; // SMTP mail gets opens from the account's defaults
    c.tracking.min_click_secs = 3;
    let herald = start(c).await;
    World { knot, sink, herald, smtp_port, _dir: dir }
}

/// What Python's email and html.parser make of a delivered message.
fn parts(message: &[u8]) -> Value {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), message).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/engagement_parts.py");
    let out = Command::new("python3").arg(script).arg(file.path()).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// curl: (status, Location header, body as text, lossily).
fn curl(args: &[&str], url: &str) -> (u16, Option<String>, String) {
    let body = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "-o"])
        .arg(body.path())
        .args(args)
        .arg(url)
        .output()
        .expect("curl (ops/scripts/install-peers.sh installs it)");
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: ").or_else(|| l.strip_prefix("Location: ")))
        .map(|l| l.trim_end().to_owned());
    assert!(head.to_ascii_lowercase().contains("cache-control: no-store"), "no-store on every answer: {head}");
    (status, location, String::from_utf8_lossy(&std::fs::read(body.path()).unwrap_or_default()).into_owned())
}

async fn arrived(w: &World, subject: &str) -> Vec<u8> {
    support::eventually(60, &format!("{subject} at the sink"), || async {
        let needle = format!("Subject: {subject}\r\n");
        w.sink.messages().into_iter().find(|m| String::from_utf8_lossy(&m.data).contains(&needle)).map(|m| m.data)
    })
    .await
}

fn verified_by_dkimpy(message: &[u8], w: &World) {
    let report = support::dkim_verify(message, w.knot.port).unwrap_or_else(|r| panic!("dkimpy: {r}"));
    assert!(report.contains("ok d=sender.test s=s1 a=rsa-sha256"), "{report}");
    assert!(report.contains("ok d=sender.test s=e1 a=ed25519-sha256"), "{report}");
}

/// The tracking links of a parsed message, by target URL.
fn tracked(p: &Value, host: &str) -> Vec<String> {
    p["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["href"].as_str().unwrap().to_owned())
        .filter(|h| h.starts_with(&format!("http://{host}/c/")))
        .collect()
}

async fn events_of(h: &Running, id: &str, want: usize) -> Vec<Value> {
    support::eventually(60, &format!("{want} engagement events of {id}"), || async {
        let (_, v) = h.get(KEY, &format!("/v1/messages/{id}")).await;
        let events: Vec<Value> = v["events"]
            .as_array()
            .map(|e| e.iter().filter(|e| e.get("event_id").is_some()).cloned().collect())
            .unwrap_or_default();
        (events.len() >= want).then_some(events)
    })
    .await
}

async fn engagement(backends: Backends) {
    let w = world(backends).await;
    let h = &w.herald;
    let host = h.tracking_host.clone();

    // REST: the newsletter with every option.
    let (code, reply) = h
        .send_json(
            KEY,
            &json!({ "envelope": "bounces@sender.test", "recipient": "alice@example.test", "body": newsletter("news"),
                     "inlinizecss": true, "clicktracking": true, "openstracking": true, "listunsubscribe": true }),
        )
        .await;
    assert_eq!(code, 202, "{reply}");
    let news_id = reply["messages"][0]["id"].as_str().unwrap().to_owned();
    let data = arrived(&w, "news").await;
    let p = parts(&data);
    let links = tracked(&p, &host);

    // Clicked at once: a gateway, by timing.
    let (status, location, _) = curl(&["-A", BROWSER], &links[0]);
    assert_eq!(status, 302);
    let sale = "https://shop.example/sale?utm_source=news&utm_medium=email&q=a+b%2Fc#offers";
    assert_eq!(location.as_deref(), Some(sale), "the author's URL, byte for byte");

    verified_by_dkimpy(&data, &w);
    let text = &p["parts"][0];
    assert_eq!((text["type"].as_str(), text["text"].as_str()), (Some("text/plain"), Some(TEXT)), "untouched");
    let html_part = &p["parts"][1];
    assert_eq!((html_part["type"].as_str(), html_part["cte"].as_str()), (Some("text/html"), Some("quoted-printable")));
    let html = html_part["text"].as_str().unwrap();
    assert!(html.contains("style=\"color: #123456;\"") && html.contains("@media (max-width: 600px)"), "{html}");
    let hrefs: Vec<&str> = p["links"].as_array().unwrap().iter().map(|l| l["href"].as_str().unwrap()).collect();
    assert!(hrefs.contains(&"#top") && hrefs.contains(&"mailto:help@sender.test?subject=Hi"), "{hrefs:?}");
    assert!(hrefs.contains(&"https://account.example/me"), "opted-out link untouched: {hrefs:?}");
    assert!(p["links"].as_array().unwrap().iter().all(|l| l["notrack"] == false), "data-herald-notrack removed");
    assert_eq!(links.len(), 2, "two tracked links: {hrefs:?}");
    let unsubscribe_link = hrefs.iter().find(|h| h.starts_with(&format!("http://{host}/u/"))).expect("footer link");
    let header = p["list_unsubscribe"].as_str().unwrap();
    assert_eq!(header, format!("<{unsubscribe_link}>"), "footer and header share the URL");
    assert_eq!(p["list_unsubscribe_post"], "List-Unsubscribe=One-Click");
    let pixel = p["images"].as_array().unwrap().iter().find_map(|i| i.as_str()).unwrap().to_owned();
    assert!(pixel.starts_with(&format!("http://{host}/o/")), "{pixel}");

    // The second link, a person after a few seconds; a HEAD; a link scanner (curl's own agent).
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let (status, location, _) = curl(&["-A", BROWSER], &links[1]);
    assert_eq!((status, location.as_deref()), (302, Some("https://shop.example/p/1#reviews")));
    let (status, _, _) = curl(&["-A", BROWSER], &links[0]);
    assert_eq!(status, 302);
    let (status, _, _) = curl(&["-I", "-A", BROWSER], &links[0]);
    assert_eq!(status, 302);
    let (status, _, _) = curl(&[], &links[1]);
    assert_eq!(status, 302);

    // Forged, altered, truncated tokens and open-redirect attempts: 404.
    let mut altered = links[0].clone().into_bytes();
    let at = altered.len() - 5;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    for bad in [
        String::from_utf8(altered).unwrap(),
        links[0][..links[0].len() - 3].to_owned(),
        format!("http://{host}/c/?url=https://evil.example/"),
        format!("http://{host}/c/x.y?url=https://evil.example/"),
        format!("http://{host}/redirect?url=https://evil.example/"),
        pixel.replace("/o/", "/c/"),
        // Not a bare token: left to the router (which decodes the segment), still a 404.
        format!("{}/extra", links[0]),
        format!("{}%2F", links[0]),
        format!("{pixel}/extra"),
    ] {
        let (status, location, _) = curl(&["-A", BROWSER], &bad);
        assert_eq!((status, location), (404, None), "{bad}");
    }

    // The proxy's on-demand certificate hook: Herald's hosts only.
    assert_eq!(curl(&[], &format!("http://{host}/tls-allowed?domain=127.0.0.1")).0, 200);
    assert_eq!(curl(&[], &format!("http://{host}/tls-allowed?domain=evil.example")).0, 404);

    // Opens: a person, then Apple's proxy.
    let (status, _, body) = curl(&["-A", BROWSER], &pixel);
    assert_eq!((status, body.starts_with("GIF89a")), (200, true));
    let (status, _, _) = curl(&["-A", "Mozilla/5.0"], &pixel);
    assert_eq!(status, 200);

    // Unsubscribe: the page (a GET never unsubscribes), then the RFC 8058 POST.
    let (status, _, page) = curl(&["-A", BROWSER], unsubscribe_link);
    assert_eq!(status, 200);
    assert!(page.contains("<form method=\"post\">") && page.contains("alice@example.test"), "{page}");
    let (status, _, _) = curl(&["-d", "List-Unsubscribe=Nope"], unsubscribe_link);
    assert_eq!(status, 400);

    // Events so far: 5 clicks and 2 opens; no unsubscription from the GET.
    let events = events_of(h, &news_id, 7).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let events_again = events_of(h, &news_id, 7).await;
    assert_eq!(events_again.len(), 7, "the page GET and the bad POST recorded nothing: {events_again:#?}");
    let clicks: Vec<&Value> = events.iter().filter(|e| e["type"] == "link.clicked").collect();
    let reasons: Vec<Option<&str>> = clicks.iter().map(|e| e["machine_reason"].as_str()).collect();
    assert_eq!(reasons, [Some("too_soon"), None, None, Some("head_request"), Some("scanner")], "{clicks:#?}");
    assert_eq!(clicks[0]["url"], sale);
    assert_eq!((clicks[1]["link_index"].as_u64(), clicks[1]["user_agent"].as_str()), (Some(1), Some(BROWSER)));
    assert_eq!(clicks[1]["client_ip"], "127.0.0.1");
    let opens: Vec<Option<&str>> =
        events.iter().filter(|e| e["type"] == "message.opened").map(|e| e["machine_reason"].as_str()).collect();
    assert_eq!(opens, [None, Some("apple_mpp")]);

    let (status, _, done) = curl(&["-A", BROWSER, "-d", "List-Unsubscribe=One-Click"], unsubscribe_link);
    assert_eq!(status, 200, "{done}");
    let events = events_of(h, &news_id, 8).await;
    let unsub = events.iter().find(|e| e["type"] == "recipient.unsubscribed").expect("unsubscribed");
    assert_eq!(unsub["user_agent"], BROWSER);
    let (_, view) = h.get(KEY, &format!("/v1/messages/{news_id}")).await;
    assert_eq!(view["status"], "delivered", "engagement leaves the status alone");
    // The unsubscribe suppresses alice (issue 12): the feedback projector reads it from the
    // engagement topic and appends a `RecipientSuppressed` with reason `unsubscribe`.
    let s = support::eventually(30, "alice suppressed after unsubscribing", || async {
        let (code, v) = h.get(KEY, "/v1/suppressions/alice@example.test").await;
        (code == 200).then_some(v)
    })
    .await;
    assert_eq!(
        (&s["reason"], &s["message_id"], &s["expires_at"]),
        (&json!("unsubscribe"), &json!(news_id), &Value::Null)
    );

    // REST form, base64, no </body>; and SMTP (swaks) with X-Herald-Options over the defaults.
    let (code, reply) = h
        .send_form(
            KEY,
            &[
                ("envelope", "bounces@sender.test"),
                ("recipient", "bob@example.test"),
                ("body", &base64_note("note", "")),
                ("clicktracking", "1"),
                ("openstracking", "true"),
            ],
        )
        .await;
    assert_eq!(code, 202, "{reply}");
    let note = parts(&arrived(&w, "note").await);
    verified_by_dkimpy(&arrived(&w, "note").await, &w);
    assert_eq!(note["parts"][0]["cte"], "base64");
    let note_html = note["parts"][0]["text"].as_str().unwrap();
    assert!(note_html.trim_end().ends_with("/>") && note_html.contains("/o/"), "pixel at the end: {note_html}");
    let guide = tracked(&note, &host);
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await; // a person, not a gateway
    assert_eq!(curl(&["-A", BROWSER], &guide[0]).1.as_deref(), Some("https://docs.example/guide?x=1&y=2"));

    let eml = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(eml.path(), base64_note("smtp", "X-Herald-Options: clicktracking=1, listunsubscribe=yes\r\n"))
        .unwrap();
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &w.smtp_port.to_string()])
        .args(["--from", "bounces@sender.test", "--to", "carol@example.test", "--data"])
        .arg(eml.path())
        .output()
        .expect("swaks");
    assert!(out.status.success(), "swaks: {}", String::from_utf8_lossy(&out.stdout));
    let smtp_data = arrived(&w, "smtp").await;
    verified_by_dkimpy(&smtp_data, &w);
    let smtp = parts(&smtp_data);
    assert!(smtp["x_herald_options"].is_null(), "the options header is removed before delivery");
    assert!(smtp["list_unsubscribe"].as_str().is_some_and(|u| u.contains("/u/")), "{smtp}");
    assert_eq!(tracked(&smtp, &host).len(), 1, "clicks from the header");
    assert!(
        smtp["images"].as_array().unwrap().iter().any(|i| i.as_str().unwrap().contains("/o/")),
        "opens from the defaults"
    );

    // Counters: all clicks and opens; unique ones without machines; one unsubscription.
    let stats = support::eventually(60, "engagement counters", || async {
        let s = h.stats(KEY).await;
        (s["clicked"] == 6 && s["unsubscribed"] == 1).then_some(s)
    })
    .await;
    assert_eq!(
        (stats["opened"].as_u64(), stats["unique_opened"].as_u64(), stats["unique_clicked"].as_u64()),
        (Some(2), Some(1), Some(2)),
        "{stats}"
    );
    let (code, links_stats) = h.get(KEY, "/v1/stats/links?from=2000-01-01T00:00:00Z&to=2000-03-01T00:00:00Z").await;
    assert_eq!((code, links_stats["links"].as_array().map(Vec::len)), (200, Some(0)));
    let (code, links_stats) = h.get(KEY, &format!("/v1/stats/links?from={}", now_minus_hours(2))).await;
    assert_eq!(code, 200, "{links_stats}");
    assert_eq!(
        links_stats["links"],
        json!([
            { "url": sale, "clicks": 3, "unique_clicks": 1 },
            { "url": "https://shop.example/p/1#reviews", "clicks": 2, "unique_clicks": 1 },
            { "url": "https://docs.example/guide?x=1&y=2", "clicks": 1, "unique_clicks": 1 },
        ])
    );
    let (code, v) = h.get(KEY, "/v1/stats/links?from=2000-01-01T00:00:00Z&to=2026-01-01T00:00:00Z").await;
    assert_eq!((code, v["error"]["code"].as_str()), (400, Some("range_too_long")));
    assert_eq!(h.get(OTHER_KEY, &format!("/v1/stats/links?from={}", now_minus_hours(2))).await.1["links"], json!([]));
    w.herald.stop().await;
}

fn now_minus_hours(hours: i64) -> String {
    let t = time::OffsetDateTime::now_utc() - time::Duration::hours(hours);
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_engagement_with_real_peers() {
    engagement(Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_cql_engagement_with_real_peers() {
    engagement(Backends::KafkaCql).await;
}

/// The tracking server on TLS (`[tracking] tls_cert`/`tls_key`): connections handed to the
/// serving threads complete their handshake there and are answered; plain HTTP on the TLS
/// port is not; many connections at once (spread over the threads) are all answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = support::self_signed(dir.path());
    let mut c =
        config(&dir.path().join("data"), support::free_port(), support::free_port(), Backends::Embedded, vec![]);
    c.tracking.tls_cert = Some(cert.clone());
    c.tracking.tls_key = Some(key);
    let h = start(c).await;
    let port = h.tracking_host.rsplit_once(':').unwrap().1.to_owned();
    let url = format!("https://localhost:{port}/healthz");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let ok =
        Command::new("curl").args(["-sS", "--cacert"]).arg(&cert).args(["--resolve", &resolve, &url]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "ok\n");
    // A forged click over TLS: 404 with no-store (curl() checks the header).
    let (status, location, _) = curl(
        &["--cacert", cert.to_str().unwrap(), "--resolve", &resolve],
        &format!("https://localhost:{port}/c/AAAA.BBBB"),
    );
    assert_eq!((status, location), (404, None));
    let plain =
        Command::new("curl").args(["-sS", "-m", "5", &format!("http://127.0.0.1:{port}/healthz")]).output().unwrap();
    assert!(!plain.status.success(), "plain HTTP on the TLS port must fail");
    // Sixteen connections at once, each answered.
    let clients: Vec<_> = (0..16)
        .map(|_| {
            Command::new("curl")
                .args(["-sS", "-m", "20", "--cacert"])
                .arg(&cert)
                .args(["--resolve", &resolve, &url])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for client in clients {
        let out = client.wait_with_output().unwrap();
        assert!(out.status.success() && out.stdout == b"ok\n", "{}", String::from_utf8_lossy(&out.stderr));
    }
    h.stop().await;
}

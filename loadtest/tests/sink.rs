//! Generator → sink over real loopback SMTP: counts, latency, bounds, STARTTLS with AUTH,
//! reply shares, per-connection limits, and both commands as processes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_loadtest::generator::{self, smtp::SmtpTarget, Mode, SendConfig, SendReport};
use herald_loadtest::message::{parse_domains, Factory};
use herald_loadtest::progress::Progress;
use herald_loadtest::sink::{Rules, Sink, SinkConfig};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn smtp(addr: SocketAddr, messages: Option<u64>, domains: &[&str], recipients: u32) -> SendConfig {
    herald_loadtest::install_crypto();
    let target = SmtpTarget {
        addr: addr.to_string(),
        helo: "client.test".into(),
        starttls: false,
        auth: None,
        timeout: Duration::from_secs(10),
        tls: herald_loadtest::tls::client_config(),
    };
    let domains = parse_domains(&domains.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
    let factory = Factory::new("lt@sender.test".into(), recipients, "5k".parse().unwrap(), domains, vec![]);
    SendConfig {
        mode: Mode::Smtp { target, new_connection_per_message: false },
        concurrency: 8,
        messages,
        duration: None,
        rate: None,
        factory: Arc::new(factory),
    }
}

fn target(config: &mut SendConfig) -> &mut SmtpTarget {
    match &mut config.mode {
        Mode::Smtp { target, .. } => target,
        Mode::Rest(_) => unreachable!(),
    }
}

async fn send(config: SendConfig) -> SendReport {
    tokio::time::timeout(Duration::from_secs(60), generator::run(config, &Progress::hidden()))
        .await
        .expect("a bounded run stops by itself")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_latency_are_right() {
    let sink = Sink::start(SinkConfig::new(loopback())).await.unwrap();
    let report = send(smtp(sink.local_addr(), Some(500), &["example.test"], 2)).await;
    let seen = sink.stop().await;
    assert_eq!((report.sent, report.accepted, report.errors), (500, 500, 0), "{report:?}");
    assert_eq!(report.recipients, 1000);
    assert_eq!(report.latency.count, 500);
    assert!(report.latency.p50_us > 0 && report.latency.max_us < 5_000_000, "{:?}", report.latency);
    assert_eq!((seen.messages, seen.recipients, seen.rcpt_replies), (500, 1000, 1000), "{seen:?}");
    assert!(seen.bytes > 500 * 5000, "5 KB messages: {}", seen.bytes);
    assert_eq!(seen.end_to_end.count, 500, "every message carries the stamp");
    assert!(seen.end_to_end.max_us < 5_000_000, "end-to-end latency is sane: {:?}", seen.end_to_end);
    // End-to-end (stamp → arrival) cannot exceed the client's round trip by much.
    assert!(seen.end_to_end.p50_us <= report.latency.p50_us + 1_000, "{:?} vs {:?}", seen.end_to_end, report.latency);
    assert!(seen.connections <= 8, "connections are reused: {}", seen.connections);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_auth() {
    let mut c = SinkConfig::new(loopback());
    c.starttls = true;
    let sink = Sink::start(c).await.unwrap();
    let mut config = smtp(sink.local_addr(), Some(100), &["example.test"], 1);
    target(&mut config).starttls = true;
    target(&mut config).auth = Some(("user".into(), "secret".into()));
    let report = send(config).await;
    let seen = sink.stop().await;
    assert_eq!((report.accepted, report.errors), (100, 0), "{report:?}");
    assert_eq!(seen.messages, 100);
    assert!(seen.tls_sessions >= 1 && seen.tls_sessions == seen.connections, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_is_required_when_asked() {
    let sink = Sink::start(SinkConfig::new(loopback())).await.unwrap();
    let mut config = smtp(sink.local_addr(), Some(5), &["example.test"], 1);
    target(&mut config).starttls = true;
    let report = send(config).await;
    sink.stop().await;
    assert_eq!((report.accepted, report.errors), (0, 5));
    assert!(report.error_kinds.keys().any(|k| k.contains("STARTTLS")), "{:?}", report.error_kinds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_shares_are_honoured_and_counted_by_code() {
    let mut c = SinkConfig::new(loopback());
    c.rules =
        Rules::parse(&["example.test:10%:451 4.7.1 try later".into(), "bounce*@*:100%:550 5.1.1 no such user".into()])
            .unwrap();
    let sink = Sink::start(c).await.unwrap();
    let report = send(smtp(sink.local_addr(), Some(1000), &["example.test:80", "bounce@other.test:20"], 1)).await;
    let seen = sink.stop().await;
    let (c451, c550) = (
        report.refused_by_code.get("451").copied().unwrap_or(0),
        report.refused_by_code.get("550").copied().unwrap_or(0),
    );
    assert!((150..=250).contains(&c550), "about 20% bounce recipients refused: {c550}");
    let to_example = 1000 - c550;
    assert!((to_example / 10).abs_diff(c451) <= 1, "exactly 10% of {to_example}: {c451}");
    assert_eq!(report.accepted + c451 + c550, 1000, "{report:?}");
    assert_eq!(report.errors, 0);
    assert_eq!(seen.refused_by_code.get("451"), Some(&c451), "both sides count the same refusals");
    assert_eq!(seen.refused_by_code.get("550"), Some(&c550));
    assert_eq!(seen.messages, report.accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_bounded_by_duration_stops_by_itself_at_the_rate() {
    let sink = Sink::start(SinkConfig::new(loopback())).await.unwrap();
    let mut config = smtp(sink.local_addr(), None, &["example.test"], 1);
    config.duration = Some(Duration::from_millis(1000));
    config.rate = Some(100.0);
    let t = Instant::now();
    let report = send(config).await;
    let seen = sink.stop().await;
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!((95..=101).contains(&report.accepted), "100 msg/s for 1 s: {report:?}");
    assert_eq!(seen.messages, report.accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_and_new_connections() {
    let mut c = SinkConfig::new(loopback());
    c.max_messages_per_connection = 5;
    let sink = Sink::start(c).await.unwrap();
    let mut config = smtp(sink.local_addr(), Some(60), &["example.test"], 1);
    config.concurrency = 2;
    let report = send(config).await;
    let seen = sink.stop().await;
    assert_eq!(report.accepted + report.refused_by_code.get("421").copied().unwrap_or(0), 60, "{report:?}");
    assert!(report.refused_by_code.get("421").copied().unwrap_or(0) >= 8, "{report:?}");

    let sink = Sink::start(SinkConfig::new(loopback())).await.unwrap();
    let mut config = smtp(sink.local_addr(), Some(40), &["example.test"], 1);
    if let Mode::Smtp { new_connection_per_message, .. } = &mut config.mode {
        *new_connection_per_message = true;
    }
    let report = send(config).await;
    let seen2 = sink.stop().await;
    assert_eq!(report.accepted, 40);
    assert_eq!(seen2.connections, 40, "one connection per message");
    assert!(seen.connections >= 10, "a new connection after each 421: {}", seen.connections);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_stops_after_n_messages() {
    let mut c = SinkConfig::new(loopback());
    c.stop_after = Some(50);
    let sink = Sink::start(c).await.unwrap();
    let config = smtp(sink.local_addr(), Some(400), &["example.test"], 1);
    let run = tokio::spawn(async move { generator::run(config, &Progress::hidden()).await });
    tokio::time::timeout(Duration::from_secs(20), sink.finished()).await.expect("the sink stops after 50 messages");
    let seen = sink.stop().await;
    assert!((50..=58).contains(&seen.messages), "50 plus at most the transactions in flight: {}", seen.messages);
    let report = tokio::time::timeout(Duration::from_secs(60), run).await.unwrap().unwrap().unwrap();
    assert!(report.errors > 0, "the generator sees the sink go away");
}

#[test]
fn the_commands_run_as_processes_and_stop_by_themselves() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bin = env!("CARGO_BIN_EXE_herald-loadtest");
    let sink = std::process::Command::new(bin)
        .args([
            "sink",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--messages",
            "20",
            "--duration",
            "20s",
            "--json",
            "--reply",
            "x*@*:100%:550 5.1.1 no",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let send = std::process::Command::new(bin)
        .args([
            "send",
            "--target",
            &format!("127.0.0.1:{port}"),
            "-n",
            "40",
            "-c",
            "4",
            "--size",
            "1k:50,10k:50",
            "--domain",
            "a.test:3",
            "--domain",
            "x@b.test:1",
            "--json",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(send.status.success(), "{}", String::from_utf8_lossy(&send.stderr));
    let sent: serde_json::Value = serde_json::from_slice(&send.stdout).unwrap();
    let sink = sink.wait_with_output().unwrap();
    assert!(sink.status.success());
    let seen: serde_json::Value = serde_json::from_slice(&sink.stdout).unwrap();
    assert!(seen["messages"].as_u64().unwrap() >= 20, "{seen}");
    assert!(sent["refused_by_code"]["550"].as_u64().unwrap() > 0, "{sent}");
    assert!(sent["latency"]["p99_us"].as_u64().unwrap() > 0, "{sent}");

    let refused = std::process::Command::new(bin)
        .args(["send", "--target", "127.0.0.1:1", "--domain", "gmail.com", "-n", "1"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--allow-non-test-targets"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_unstuffed_messages_and_answers_a_pipelined_batch_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut c = SinkConfig::new(loopback());
    c.save_dir = Some(dir.path().join("saved"));
    c.rules = Rules::parse(&["no*@*:100%:550 5.1.1 unknown".into()]).unwrap();
    let sink = Sink::start(c).await.unwrap();
    let mut tcp = tokio::net::TcpStream::connect(sink.local_addr()).await.unwrap();
    // Everything in one write, as a pipelining client would (the body follows the 354).
    let batch = "EHLO t.test\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<no1@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n\
                 Subject: dots\r\n\r\n..leading dot\r\nend\r\n.\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<no2@x.test>\r\nDATA\r\nQUIT\r\n";
    tcp.write_all(batch.as_bytes()).await.unwrap();
    let mut replies = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut replies)).await.unwrap().unwrap();
    let codes: Vec<&str> = replies.lines().map(|l| &l[..4]).filter(|c| c.ends_with(' ')).collect();
    assert_eq!(
        codes,
        ["220 ", "250 ", "250 ", "550 ", "250 ", "354 ", "250 ", "250 ", "550 ", "554 ", "221 "],
        "{replies}"
    );
    let seen = sink.stop().await;
    assert_eq!((seen.messages, seen.recipients, seen.refused_by_code.get("550").copied()), (1, 1, Some(2)));
    let files: Vec<_> = std::fs::read_dir(dir.path().join("saved")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    assert_eq!(std::fs::read(&files[0]).unwrap(), b"Subject: dots\r\n\r\n.leading dot\r\nend\r\n");
}

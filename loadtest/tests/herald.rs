//! Generator (REST) → Herald (in-process, embedded backends) → MX found through Knot → the
//! smart sink, driven through `run::run` exactly as `herald-loadtest run` does.

#[allow(dead_code)]
#[path = "../../ops/tests/support/dns.rs"]
mod dns;

use std::net::SocketAddr;
use std::time::Duration;

use dns::{Knot, Zone};
use herald::config::{Account, Config, FromDomains};
use std::sync::Arc;

use herald_loadtest::generator::{self, http::HttpTarget, Mode, SendConfig};
use herald_loadtest::message::{parse_domains, Factory};
use herald_loadtest::progress::Progress;
use herald_loadtest::run::{run, RunOptions};
use herald_loadtest::scenario::Scenario;
use tokio_util::sync::CancellationToken;

/// A port free on loopback right now (`dns.rs` calls it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

const KEY: &str = "loadtest-key";

fn herald_config(data_dir: &std::path::Path, dns_port: u16, mx_port: u16) -> Config {
    let mut c = Config::default();
    c.storage.data_dir = data_dir.to_owned();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.tracking.listen = "127.0.0.1:0".parse().unwrap();
    c.smtp.listen = "127.0.0.1:0".parse().unwrap();
    c.bounces.listen = "127.0.0.1:0".parse().unwrap();
    c.delivery.dns_servers = vec![format!("127.0.0.1:{dns_port}")];
    c.delivery.mx_port = mx_port;
    c.delivery.helo_name = "mta.herald.test".into();
    c.delivery.retry_initial_secs = 1;
    c.delivery.retry_max_delay_secs = 2;
    c.delivery.max_age_secs = 30;
    c.delivery.connect_timeout_secs = 5;
    c.delivery.command_timeout_secs = 10;
    c.backend.partitions = 4;
    c.accounts = vec![Account {
        id: "loadtest".into(),
        api_keys: vec![KEY.into()],
        smtp_users: vec![],
        relay_networks: vec![],
        from_domains: Some(FromDomains::Any),
        ..Default::default()
    }];
    c
}

fn scenario(sink_port: u16) -> Scenario {
    Scenario::parse(&format!(
        r#"
name = "herald-e2e"
[herald]
config = "[delivery]\nmx_port = {sink_port}\n"
[sink]
port = {sink_port}
replies = ["bounce*@*:100%:550 5.1.1 no such user", "example.test:5%:451 4.7.1 try later"]
[generator]
messages = 300
concurrency = 8
size = "1k:50,20k:50"
domains = ["example.test:9", "bounce@other.test:1"]
[wait]
timeout_secs = 60
"#
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_generator_through_herald_to_the_sink() {
    herald_loadtest::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let mx = |origin: &str| Zone { origin: origin.into(), records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()] };
    let knot = Knot::start(&[mx("example.test"), mx("other.test")]);
    let sink_port = free_port();

    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let herald = tokio::spawn(herald::serve::run(
        herald_config(&dir.path().join("data"), knot.port, sink_port),
        None,
        shutdown.clone(),
        Some(ready_tx),
    ));
    let addr = ready_rx.await.expect("herald failed to start");

    let options = RunOptions {
        herald: format!("http://{addr}"),
        api_key: KEY.into(),
        sink_port: Some(sink_port),
        allow_non_test_targets: false,
        quiet: true,
    };
    let report = run(&scenario(sink_port), &options).await.unwrap();

    // Refusals by status code: a wrong key gets 401 for every request.
    let target =
        HttpTarget::parse(&format!("http://{addr}"), Some("wrong-key".into()), Duration::from_secs(10)).unwrap();
    let domains = parse_domains(&["example.test".into()]).unwrap();
    let factory = Factory::new("lt@sender.test".into(), 1, "1k".parse().unwrap(), domains, vec![]);
    let config = SendConfig {
        mode: Mode::Rest(target),
        concurrency: 2,
        messages: Some(10),
        duration: None,
        rate: None,
        factory: Arc::new(factory),
    };
    let refused = generator::run(config, &Progress::hidden()).await.unwrap();
    shutdown.cancel();
    assert_eq!(
        (refused.accepted, refused.refused_by_code.get("401").copied(), refused.errors),
        (0, Some(10), 0),
        "{refused:?}"
    );
    let _ = tokio::time::timeout(Duration::from_secs(30), herald).await;

    let send = &report.send;
    assert_eq!((send.sent, send.accepted, send.errors), (300, 300, 0), "{send:?}");
    assert!(send.refused_by_code.is_empty(), "Herald accepts everything: {send:?}");
    assert_eq!(send.latency.count, 300);
    assert!(report.complete, "the sink saw every accepted recipient: {report:?}");
    let sink = &report.sink;
    let bounced = sink.refused_by_code.get("550").copied().unwrap_or(0);
    assert!((10..=60).contains(&bounced), "about 10% bounce recipients: {sink:?}");
    assert!(sink.refused_by_code.get("451").copied().unwrap_or(0) > 0, "{sink:?}");
    assert!(sink.messages + bounced <= 300 + sink.refused_by_code.get("451").copied().unwrap_or(0));
    assert!(sink.messages >= 300 - bounced - 20, "first attempts delivered: {sink:?}");
    assert_eq!(sink.end_to_end.count, sink.messages, "Herald keeps the stamp header");
    assert!(sink.end_to_end.p50_us >= send.latency.p50_us / 2, "delivery comes after acceptance: {sink:?} vs {send:?}");
    assert!(sink.end_to_end.max_us < 60_000_000);
    drop(knot);
}

//! `kill -9` of the real `herald` binary right after a batch of 202s, then a restart:
//! every accepted message is delivered, none is lost. The sink is down until after the
//! crash, so messages are lost neither from the messages topic (not yet attempted) nor
//! from the retry tiers (deferred before the crash).

mod support;

use serde_json::json;
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use support::dns::{Knot, Zone};
use support::sink::Sink;

const MESSAGES: usize = 200;

fn spawn(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_up(http: &reqwest::Client, base: &str) {
    support::eventually(30, "herald to answer /healthz", || async {
        http.get(format!("{base}/healthz")).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_accepting_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&[Zone {
        origin: "example.test".into(),
        records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()],
    }]);
    let sink_port = support::free_port();
    let http_port = support::free_port();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[storage]
data_dir = "{data}"
[http]
listen = "127.0.0.1:{http_port}"
[smtp]
listen = "127.0.0.1:0"
[tracking]
listen = "127.0.0.1:0"
[delivery]
dns_servers = ["127.0.0.1:{dns}"]
mx_port = {sink_port}
helo_name = "mta.herald.test"
retry_initial_secs = 1
retry_max_delay_secs = 2
connect_timeout_secs = 2
[backend]
log = "embedded"
store = "embedded"
partitions = 4
[[accounts]]
id = "acme"
api_keys = ["k"]
from_domains = "any"
"#,
            data = dir.path().join("data").display(),
            dns = knot.port,
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{http_port}");
    let http = reqwest::Client::new();
    let mut herald = spawn(&config);
    wait_up(&http, &base).await;

    let body = "From: a@sender.test\r\nSubject: crash\r\n\r\nbody\r\n";
    let mut ids = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..MESSAGES {
        let (http, base) = (http.clone(), base.clone());
        tasks.spawn(async move {
            let r = http
                .post(format!("{base}/v1/send"))
                .bearer_auth("k")
                .json(&json!({"envelope": "b@sender.test", "recipient": format!("r{i}@example.test"), "body": body}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
            let v: serde_json::Value = r.json().await.unwrap();
            v["messages"][0]["id"].as_str().unwrap().to_owned()
        });
        if tasks.len() >= 20 {
            ids.push(tasks.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(id) = tasks.join_next().await {
        ids.push(id.unwrap());
    }
    herald.kill().unwrap(); // SIGKILL
    herald.wait().unwrap();

    let (sink, _) = Sink::start(sink_port).await;
    let mut herald = spawn(&config);
    wait_up(&http, &base).await;
    support::eventually(120, "every accepted message at the sink", || async {
        let got: HashSet<String> = sink.messages().iter().flat_map(|m| m.to.clone()).collect();
        (got.len() == MESSAGES).then_some(())
    })
    .await;
    for id in &ids {
        support::eventually(60, "delivered status", || async {
            let v: serde_json::Value =
                http.get(format!("{base}/v1/messages/{id}")).bearer_auth("k").send().await.ok()?.json().await.ok()?;
            (v["status"] == "delivered").then_some(())
        })
        .await;
    }
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for name in ["herald_delivery_attempts_total", "herald_consumer_commit_seconds", "herald_log_commit_seconds"] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    // A graceful stop: SIGTERM, drained, exit status 0, in bounded time.
    let term = Command::new("kill").args(["-TERM", &herald.id().to_string()]).status().unwrap();
    assert!(term.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let status = loop {
        if let Some(status) = herald.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "herald did not stop within 40 s of SIGTERM");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(status.success(), "herald exited with {status} after SIGTERM");
}

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
[bounces]
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
        support::node::wait_delivered(&http, &base, id).await;
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

/// Writes a config for an embedded node whose deliveries fail at once (no DNS answers).
fn plain_config(dir: &std::path::Path, http_port: u16) -> std::path::PathBuf {
    let config = dir.join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndata_dir = \"{data}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[bounces]\nlisten = \"127.0.0.1:0\"\n[tracking]\nlisten = \"127.0.0.1:0\"\n[delivery]\ndns_servers = [\"127.0.0.1:1\"]\n[backend]\npartitions = 4\n[[accounts]]\nid = \"acme\"\napi_keys = [\"k\"]\nfrom_domains = \"any\"\n",
            data = dir.join("data").display(),
        ),
    )
    .unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_fsynced_after_its_files_are_created() {
    // A file is durable only once the directory entry is: after log.redb, log.wal and
    // projection.redb are created, the data directory must be fsynced (seen with strace).
    let dir = tempfile::tempdir().unwrap();
    let http_port = support::free_port();
    let config = plain_config(dir.path(), http_port);
    let trace = dir.path().join("strace.out");
    let mut herald = Command::new("strace")
        .args(["-f", "-y", "-e", "trace=openat,fsync", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace (ops/scripts/install-peers.sh installs it)");
    let http = reqwest::Client::new();
    wait_up(&http, &format!("http://127.0.0.1:{http_port}")).await;
    // `herald` is strace: a killed strace detaches and leaves its tracee running, so the
    // traced node itself is killed (strace then exits with it).
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", herald.id())).unwrap_or_default();
    for pid in children.split_whitespace() {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
    herald.kill().unwrap();
    herald.wait().unwrap();
    let data = dir.path().join("data").canonicalize().unwrap();
    let data = data.display().to_string();
    let lines: Vec<String> = std::fs::read_to_string(&trace).unwrap().lines().map(str::to_owned).collect();
    let dir_fsync =
        |from: usize| lines[from..].iter().any(|l| l.contains("fsync(") && l.contains(&format!("<{data}>")));
    for file in ["log.redb", "log.wal", "projection.redb"] {
        let created = lines
            .iter()
            .position(|l| l.contains("openat(") && l.contains(&format!("{data}/{file}")) && l.contains("O_CREAT"))
            .unwrap_or_else(|| panic!("{file} was not opened with O_CREAT"));
        assert!(dir_fsync(created), "no fsync of {data} after {file} was created");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fanout_request_costs_memory_for_its_body_not_per_recipient() {
    // 1 MB to 200 recipients: 200 MB if the body were copied per recipient. The peak
    // resident memory of the real process may grow by a few copies of the body only.
    let dir = tempfile::tempdir().unwrap();
    let http_port = support::free_port();
    let config = plain_config(dir.path(), http_port);
    let mut herald = spawn(&config);
    let base = format!("http://127.0.0.1:{http_port}");
    let http = reqwest::Client::new();
    wait_up(&http, &base).await;
    let hwm = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let before = hwm(herald.id());
    let mut body = String::from("From: a@sender.test\r\nSubject: big\r\n\r\n");
    while body.len() < 1 << 20 {
        body.push_str("0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\r\n");
    }
    let recipients: Vec<String> = (0..200).map(|i| format!("r{i}@example.test")).collect();
    let r = http
        .post(format!("{base}/v1/send"))
        .bearer_auth("k")
        .json(&json!({"envelope": "b@sender.test", "recipient": recipients, "body": body}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // Delivery attempts (which resolve the body) run too; let them.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let grown = hwm(herald.id()).saturating_sub(before);
    herald.kill().unwrap();
    herald.wait().unwrap();
    assert!(grown < 60 << 20, "peak RSS grew by {} MB for one 1 MB × 200 request", grown >> 20);
}

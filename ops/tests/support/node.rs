//! Real `herald serve` processes for crash, failover and scale-out tests: a config file per
//! node (shared backends, own HTTP port and data directory), `kill -9`, SIGTERM.

use super::herald::Backends;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Settings every node of one test shares.
#[derive(Clone)]
pub struct Cluster {
    pub backends: Backends,
    pub dns_port: u16,
    pub sink_port: u16,
    /// `<prefix>` of the topics and keyspace: unique per test.
    pub unique: String,
    pub partitions: u32,
    /// Extra `[delivery]` lines.
    pub delivery: String,
}

impl Cluster {
    pub fn new(backends: Backends, dns_port: u16, sink_port: u16, partitions: u32) -> Self {
        let unique = herald_schemas::MessageId::generate().0[..20].to_ascii_lowercase();
        Cluster { backends, dns_port, sink_port, unique, partitions, delivery: String::new() }
    }

    fn backend(&self) -> String {
        match self.backends {
            Backends::Embedded => {
                format!("log = \"embedded\"\nstore = \"embedded\"\npartitions = {}\n", self.partitions)
            }
            Backends::KafkaCql => format!(
                r#"log = "kafka"
store = "cql"
partitions = {partitions}
kafka_brokers = "{kafka}"
cql_nodes = ["{cql}"]
topic_prefix = "n{unique}"
cql_keyspace = "n{unique}"
kafka_replication = 1
kafka_min_insync_replicas = 1
kafka_allow_weak_durability = true
kafka_session_timeout_ms = 6000
"#,
                partitions = self.partitions,
                kafka = std::env::var("HERALD_TEST_KAFKA").expect("HERALD_TEST_KAFKA (ops/scripts/test.sh)"),
                cql = std::env::var("HERALD_TEST_CQL").expect("HERALD_TEST_CQL (ops/scripts/test.sh)"),
                unique = self.unique,
            ),
        }
    }

    /// The consumer group of `role` (`delivery`, `projector`): `<topic prefix>-<role>`.
    pub fn group(&self, role: &str) -> String {
        match self.backends {
            Backends::Embedded => format!("herald-{role}"),
            Backends::KafkaCql => format!("n{}-{role}", self.unique),
        }
    }

    /// Writes node `name`'s config under `dir`; returns (config path, HTTP base URL).
    pub fn node_config(&self, dir: &Path, name: &str) -> (PathBuf, String) {
        let http_port = super::free_port();
        let data = dir.join(format!("data-{name}"));
        let config = dir.join(format!("{name}.toml"));
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
[delivery]
dns_servers = ["127.0.0.1:{dns}"]
mx_port = {sink}
helo_name = "mta.herald.test"
connect_timeout_secs = 2
{delivery}
[tracking]
listen = "127.0.0.1:0"
keys = [{{ id = "t1", secret = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" }}]
[backend]
{backend}
[[accounts]]
id = "acme"
api_keys = ["k"]
from_domains = "any"
"#,
                data = data.display(),
                dns = self.dns_port,
                sink = self.sink_port,
                delivery = self.delivery,
                backend = self.backend(),
            ),
        )
        .unwrap();
        (config, format!("http://127.0.0.1:{http_port}"))
    }
}

/// One running `herald serve`.
pub struct Node {
    pub name: String,
    pub base: String,
    config: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts node `name` and waits until it answers `/healthz`.
    pub async fn start(cluster: &Cluster, dir: &Path, name: &str) -> Node {
        // The HTTP port is picked free, but another test may bind it before the node does:
        // then the node exits at once, and it starts again on another port.
        for attempt in 1.. {
            let (config, base) = cluster.node_config(dir, name);
            let mut node = Node { name: name.to_owned(), base, config, child: None };
            match node.try_restart().await {
                Ok(()) => return node,
                Err(log) if attempt < 3 && log.contains("in use") => continue,
                Err(log) => panic!("{name} exited before answering /healthz:\n{log}"),
            }
        }
        unreachable!()
    }

    /// Starts the process again with the same config (after a kill or a stop).
    pub async fn restart(&mut self) {
        if let Err(log) = self.try_restart().await {
            panic!("{} exited before answering /healthz:\n{log}", self.name);
        }
    }

    /// Starts the process and waits (60 s) until it answers `/healthz`; its log if it exited.
    async fn try_restart(&mut self) -> Result<(), String> {
        let log_path = self.config.with_extension("log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("HERALD_TEST_NODE_LOG").unwrap_or_else(|_| "warn,herald_engine::consumer=info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let child = std::sync::Mutex::new(child);
        let http = reqwest::Client::new();
        let url = format!("{}/healthz", self.base);
        let up = super::eventually(60, &format!("{} to answer /healthz", self.name), || async {
            if let Ok(Some(status)) = child.lock().unwrap().try_wait() {
                return Some(Err(status));
            }
            http.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| Ok(()))
        })
        .await;
        match up {
            Ok(()) => {
                self.child = Some(child.into_inner().unwrap());
                Ok(())
            }
            Err(status) => {
                Err(format!("{status}; its log:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default()))
            }
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then waits (at most `limit`) for a clean exit; returns how long it took.
    pub async fn stop(&mut self, limit: Duration) -> Duration {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(term.success());
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{} exited with {status} after SIGTERM", self.name);
                return started.elapsed();
            }
            assert!(started.elapsed() < limit, "{} did not stop within {limit:?} of SIGTERM", self.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until this node's consumers of `group` own `n` partitions (as `/metrics` says).
    pub async fn wait_owning(&self, group: &str, n: usize, secs: u64) {
        let http = reqwest::Client::new();
        let url = format!("{}/metrics", self.base);
        let want = format!("herald_consumer_partitions{{group=\"{group}\"}} {n}");
        super::eventually(secs, &format!("{} to own {n} partitions of {group}", self.name), || async {
            let text = http.get(&url).send().await.ok()?.text().await.ok()?;
            text.lines().any(|l| l.trim() == want).then_some(())
        })
        .await;
    }

    /// The last `n` lines of the node's log (its stderr), for a failure's message; the
    /// lines that list each partition assigned are left out.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains("partition assigned")).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits (60 s) until message `id` reads `delivered` through `base`'s API.
pub async fn wait_delivered(http: &reqwest::Client, base: &str, id: &str) {
    super::eventually(60, &format!("{id} delivered"), || async {
        let v: serde_json::Value =
            http.get(format!("{base}/v1/messages/{id}")).bearer_auth("k").send().await.ok()?.json().await.ok()?;
        (v["status"] == "delivered").then_some(())
    })
    .await;
}

/// Sends one message to `recipient` through `base`; returns its id, or `None` if not
/// acknowledged (the node is down).
pub async fn send(http: &reqwest::Client, base: &str, recipient: &str) -> Option<String> {
    let body = "From: a@sender.test\r\nSubject: t\r\n\r\nbody\r\n";
    let r = http
        .post(format!("{base}/v1/send"))
        .bearer_auth("k")
        .json(&serde_json::json!({"envelope": "b@sender.test", "recipient": recipient, "body": body}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    if r.status().as_u16() != 202 {
        return None;
    }
    let v: serde_json::Value = r.json().await.ok()?;
    v["messages"][0]["id"].as_str().map(str::to_owned)
}

/// How many times each recipient reached the sink.
pub fn arrivals(sink: &super::sink::Sink) -> std::collections::HashMap<String, usize> {
    let mut n = std::collections::HashMap::new();
    for m in sink.messages() {
        for to in m.to {
            *n.entry(to).or_insert(0) += 1;
        }
    }
    n
}

/// Messages that reached the sink more than once with the same `Message-ID` (one message
/// delivered twice), as against [`arrivals`], which also counts a recipient whose send
/// the client made twice (a REST request that timed out and went to another node: two
/// messages, each with its own `Message-ID`).
pub fn redeliveries(sink: &super::sink::Sink) -> usize {
    let mut n = std::collections::HashMap::new();
    for m in sink.messages() {
        let text = String::from_utf8_lossy(&m.data);
        let id = text
            .lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| l.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case("message-id")))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default();
        *n.entry(id).or_insert(0usize) += 1;
    }
    n.values().map(|c| c - 1).sum()
}

//! Herald in-process for tests, plus a small API client.

use herald::config::{Account, Config, DkimKey, FromDomains, LogBackend, StoreBackend};
use serde_json::Value;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

pub const KEY: &str = "test-key-acme";
pub const OTHER_KEY: &str = "test-key-other";

/// Backends a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backends {
    Embedded,
    /// Real Kafka and a real CQL server from `HERALD_TEST_KAFKA` / `HERALD_TEST_CQL`.
    KafkaCql,
}

/// A config pointing delivery at `dns_port` and `mx_port`, with the test accounts.
pub fn config(
    data_dir: &std::path::Path,
    dns_port: u16,
    mx_port: u16,
    backends: Backends,
    dkim: Vec<DkimKey>,
) -> Config {
    let mut c = Config::default();
    c.storage.data_dir = data_dir.to_owned();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.smtp.listen = "127.0.0.1:0".parse().unwrap();
    c.bounces.listen = "127.0.0.1:0".parse().unwrap();
    let tracking_port = super::free_port();
    c.tracking.listen = format!("127.0.0.1:{tracking_port}").parse().unwrap();
    c.tracking.default_host = format!("127.0.0.1:{tracking_port}");
    c.tracking.scheme = "http".into();
    c.delivery.dns_servers = vec![format!("127.0.0.1:{dns_port}")];
    c.delivery.mx_port = mx_port;
    c.delivery.helo_name = "mta.herald.test".into();
    c.delivery.retry_initial_secs = 1;
    c.delivery.retry_max_delay_secs = 2;
    c.delivery.max_age_secs = 4;
    c.delivery.connect_timeout_secs = 5;
    c.delivery.command_timeout_secs = 10;
    c.backend.partitions = 4;
    c.accounts = vec![account("acme", KEY), account("other", OTHER_KEY)];
    c.dkim = dkim;
    if let Backends::KafkaCql = backends {
        let unique = herald_schemas::MessageId::generate().0;
        c.backend.log = LogBackend::Kafka;
        c.tracking.keys = vec![herald::config::TrackingKey {
            id: "t1".into(),
            secret: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into(),
        }];
        c.backend.store = StoreBackend::Cql;
        c.backend.kafka_brokers = std::env::var("HERALD_TEST_KAFKA")
            .expect("HERALD_TEST_KAFKA must name a real Kafka broker (ops/scripts/test.sh)");
        c.backend.cql_nodes = vec![std::env::var("HERALD_TEST_CQL")
            .expect("HERALD_TEST_CQL must name a real CQL server (ops/scripts/test.sh)")];
        c.backend.topic_prefix = format!("e2e-{unique}");
        c.backend.cql_keyspace = format!("e2e_{}", &unique[16..]);
        // One test broker.
        c.backend.kafka_replication = 1;
        c.backend.kafka_min_insync_replicas = 1;
        c.backend.kafka_allow_weak_durability = true;
        c.backend.kafka_session_timeout_ms = 6000;
    }
    c
}

/// A test account. Tests send from domains nobody verified (sender.test), so the accounts
/// may use any From domain; `ops/tests/ingest.rs` tests the `verified` policy itself.
pub fn account(id: &str, key: &str) -> Account {
    Account {
        id: id.into(),
        api_keys: vec![key.into()],
        smtp_users: vec![],
        relay_networks: vec![],
        from_domains: Some(FromDomains::Any),
        ..Default::default()
    }
}

pub struct Running {
    pub base: String,
    /// `host:port` of the tracking server (`[tracking] listen`, also its default host).
    pub tracking_host: String,
    pub shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub http: reqwest::Client,
}

pub async fn start(mut config: Config) -> Running {
    // Herald's warnings go to the test's captured output, shown when the test fails
    // (`HERALD_TEST_LOG` takes an `EnvFilter` for more).
    let filter = std::env::var("HERALD_TEST_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
    for attempt in 1.. {
        let tracking_host = config.tracking.listen.to_string();
        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<SocketAddr>();
        let mut task = tokio::spawn(herald::serve::run(config.clone(), None, shutdown.clone(), Some(tx)));
        let addr = match rx.await {
            Ok(addr) => addr,
            Err(_) => match (&mut task).await {
                // The tracking port was free when `config` picked it, and another test took
                // it since: pick another one.
                Ok(Err(e))
                    if attempt < 5
                        && format!("{e:#}").contains("binding the tracking listener")
                        && format!("{e:#}").contains("Address already in use") =>
                {
                    let port = super::free_port();
                    config.tracking.listen = format!("127.0.0.1:{port}").parse().unwrap();
                    config.tracking.default_host = format!("127.0.0.1:{port}");
                    continue;
                }
                Ok(Err(e)) => panic!("herald failed to start: {e:#}"),
                other => panic!("herald failed to start: {other:?}"),
            },
        };
        return Running { base: format!("http://{addr}"), tracking_host, shutdown, task, http: reqwest::Client::new() };
    }
    unreachable!("the loop returns or panics")
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), self.task).await;
    }

    pub async fn send_json(&self, key: &str, body: &Value) -> (u16, Value) {
        let r = self.http.post(format!("{}/v1/send", self.base)).bearer_auth(key).json(body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn send_form(&self, key: &str, fields: &[(&str, &str)]) -> (u16, Value) {
        let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let r = self
            .http
            .post(format!("{}/v1/send", self.base))
            .bearer_auth(key)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(key).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Waits until message `id` has `status`; returns its view.
    pub async fn wait_status(&self, id: &str, status: &str, secs: u64) -> Value {
        self.wait_status_with(KEY, id, status, secs).await
    }

    /// Waits until message `id`, seen with `key`, has `status`; returns its view. On a
    /// timeout the panic shows the last view, so a failure in CI says where the message
    /// stood.
    pub async fn wait_status_with(&self, key: &str, id: &str, status: &str, secs: u64) -> Value {
        super::until(secs, &format!("message {id} to be {status}"), || async {
            let (code, v) = self.get(key, &format!("/v1/messages/{id}")).await;
            if code == 200 && v["status"] == status {
                Ok(v)
            } else {
                Err(format!("last view ({code}) {v}"))
            }
        })
        .await
    }

    pub async fn stats(&self, key: &str) -> Value {
        self.get(key, "/v1/stats?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z").await.1
    }
}

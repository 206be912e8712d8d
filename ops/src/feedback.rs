//! Wiring of bounce processing (`[bounces]`) for `herald serve`: the VERP keys, the
//! classifier, the node's suppression index, the worker's hooks, the feedback projector,
//! the API service and the bounce MX. Kept apart from `serve.rs` so each capability's
//! wiring stays readable.

use crate::config::{Config, Role, StoreBackend};
use anyhow::Context;
use herald_engine::domains::cache::DomainCache;
use herald_engine::feedback::classify::Classifier;
use herald_engine::feedback::index::SuppressionIndex;
use herald_engine::feedback::policy::SuppressionPolicy;
use herald_engine::feedback::projector::FeedbackProjector;
use herald_engine::feedback::receive::Receiver;
use herald_engine::feedback::sending::Sending;
use herald_engine::feedback::service::FeedbackService;
use herald_engine::feedback::verp::{ReturnPaths, VerpKeys};
use herald_engine::log::{EventLog, Topics};
use herald_engine::routing::Router;
use herald_engine::store::feedback::FeedbackStore;
use herald_engine::store::ProjectionStore;
use herald_ingest::smtp;
use herald_schemas::{AccountId, BounceClass};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The VERP keys: the configured secret; else, on Cassandra, the one every node shares in
/// the store (the first node to start generates it); else the one kept in
/// `<data_dir>/verp.key` (generated at first start; the embedded store is one node's).
pub async fn verp_keys(config: &Config, store: &dyn FeedbackStore) -> anyhow::Result<VerpKeys> {
    let b = &config.bounces;
    let current = match (&b.secret, config.backend.store) {
        (Some(s), _) => s.as_bytes().to_vec(),
        (None, StoreBackend::Cql) => {
            let shared = store.shared_secret("verp", &random_hex()?).await.context("reading the shared VERP secret")?;
            shared.into_bytes()
        }
        (None, StoreBackend::Embedded) => local_secret(&config.storage.data_dir)?,
    };
    let previous: Vec<&[u8]> = b.previous_secrets.iter().map(|s| s.as_bytes()).collect();
    Ok(VerpKeys::new(&current, &previous))
}

fn local_secret(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join("verp.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let t = text.trim();
        anyhow::ensure!(t.len() >= 32, "{}: too short to be a VERP secret", path.display());
        return Ok(t.as_bytes().to_vec());
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let hex = random_hex()?;
    std::fs::write(&path, &hex).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    tracing::info!(path = %path.display(), "generated a VERP secret");
    Ok(hex.into_bytes())
}

/// 32 random bytes in hex: a new VERP secret.
fn random_hex() -> anyhow::Result<String> {
    let mut raw = [0u8; 32];
    aws_lc_rs::rand::fill(&mut raw).map_err(|_| anyhow::anyhow!("no randomness for the VERP secret"))?;
    Ok(hex::encode(raw))
}

/// The classifier: the operator's rule file (if any) before the shipped rules.
pub fn classifier(config: &Config) -> anyhow::Result<Classifier> {
    let b = &config.bounces;
    match &b.rules_file {
        None => Ok(Classifier::shipped()),
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Classifier::with_operator_rules(&text, b.replace_shipped_rules)
                .with_context(|| format!("bounce rules {}", path.display()))
        }
    }
}

pub fn suppression_policy(config: &Config) -> SuppressionPolicy {
    let b = &config.bounces;
    SuppressionPolicy {
        hard_bounces: b.suppress_hard_bounces,
        complaints: b.suppress_complaints,
        soft_classes: b.soft_bounce_classes.iter().filter_map(|c| BounceClass::parse(c)).collect(),
        soft_threshold: b.soft_bounce_threshold,
        soft_window: Duration::from_secs(b.soft_bounce_window_days * 86_400),
        soft_duration: Duration::from_secs(b.soft_bounce_suppress_days * 86_400),
    }
}

/// Everything bounce processing needs, built once per process.
pub struct Feedback {
    pub keys: VerpKeys,
    pub classifier: Arc<Classifier>,
    pub index: Arc<SuppressionIndex>,
    pub service: Arc<FeedbackService>,
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    feedback_store: Arc<dyn FeedbackStore>,
    topics: Topics,
    router: Router,
}

impl Feedback {
    pub async fn new(
        config: &Config,
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        feedback_store: Arc<dyn FeedbackStore>,
        topics: Topics,
        router: Router,
    ) -> anyhow::Result<Feedback> {
        let service = Arc::new(FeedbackService::new(
            log.clone(),
            topics.clone(),
            router.clone(),
            feedback_store.clone(),
            Duration::from_millis(config.bounces.api_wait_ms),
        ));
        Ok(Feedback {
            keys: verp_keys(config, feedback_store.as_ref()).await?,
            classifier: Arc::new(classifier(config)?),
            index: SuppressionIndex::new(),
            service,
            log,
            store,
            feedback_store,
            topics,
            router,
        })
    }

    /// VERP return paths for the deliverer.
    pub fn return_paths(&self, config: &Config) -> ReturnPaths {
        ReturnPaths { keys: self.keys.clone(), default_domain: config.bounces.default_domain.clone() }
    }

    /// The worker's hooks.
    pub fn sending(&self) -> Arc<Sending> {
        Arc::new(Sending {
            index: self.index.clone(),
            classifier: self.classifier.clone(),
            topics: self.topics.clone(),
            router: self.router.clone(),
            store: self.feedback_store.clone(),
        })
    }

    /// The feedback projector for the owned partitions.
    pub fn projector(&self, config: &Config) -> Arc<FeedbackProjector> {
        Arc::new(FeedbackProjector::new(
            self.log.clone(),
            self.store.clone(),
            self.feedback_store.clone(),
            self.topics.clone(),
            self.router.clone(),
            suppression_policy(config),
        ))
    }

    /// Loads and follows the suppression index until `shutdown`.
    pub async fn run_index(&self, partitions: u32, shutdown: tokio_util::sync::CancellationToken) {
        let topic = self.topics.feedback();
        self.index.clone().run(self.feedback_store.clone(), self.log.clone(), topic, partitions, shutdown).await
    }

    /// The bounce MX and its bound listener, when `[bounces]` is enabled on this node.
    pub async fn bounce_mx(
        &self,
        config: &Config,
        cache: DomainCache,
    ) -> anyhow::Result<Option<(Arc<smtp::Server>, tokio::net::TcpListener)>> {
        let b = &config.bounces;
        if !b.enabled || !config.cluster.has(Role::Bounces) {
            return Ok(None);
        }
        let receiver = Arc::new(Receiver {
            keys: self.keys.clone(),
            classifier: self.classifier.clone(),
            store: self.store.clone(),
            log: self.log.clone(),
            topics: self.topics.clone(),
            router: self.router.clone(),
            accounts: config.accounts.iter().map(|a| AccountId(a.id.clone())).collect(),
            domains: cache,
            default_domain: b.default_domain.as_ref().map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
        });
        let cert_key = b.tls_cert.as_deref().zip(b.tls_key.as_deref()).or(config
            .smtp
            .tls_cert
            .as_deref()
            .zip(config.smtp.tls_key.as_deref()));
        let tls = smtp::starttls::acceptor(cert_key, &config.storage.data_dir, &b.hostname)
            .context("bounce MX TLS certificate")?;
        let settings = smtp::Settings {
            hostname: b.hostname.clone(),
            max_message_bytes: b.max_message_bytes,
            max_recipients: b.max_recipients,
            command_timeout: Duration::from_secs(b.command_timeout_secs),
            data_timeout: Duration::from_secs(b.data_timeout_secs),
            max_connections: b.max_connections,
            max_connections_per_ip: b.max_connections_per_ip,
            ..smtp::Settings::default()
        };
        let rate = herald_ingest::inbound::IpRate { per_second: b.messages_per_second_per_ip, burst: b.burst_per_ip };
        let server = herald_ingest::inbound::server(settings, Some(tls), receiver, rate);
        let listener = tokio::net::TcpListener::bind(b.listen)
            .await
            .with_context(|| format!("binding the bounce MX on {}", b.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "bounce mx listening");
        Ok(Some((server, listener)))
    }
}

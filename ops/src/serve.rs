//! `herald serve`: the whole pipeline in one process: REST ingestion, delivery workers,
//! projector and queries, on the backends the config names.

use crate::config::{parse_network, ClusterMode, Config, FromDomains, LogBackend, Role, StoreBackend};
use anyhow::Context;
use herald_engine::accounts::{self, AccountCache, Accounts};
use herald_engine::bodies::{BodySettings, BodyStore};
use herald_engine::consumer::{Membership, Owned};
use herald_engine::delivery::{dkim, mx::MxResolver, Deliverer, DeliverySettings};
use herald_engine::domains::vault::Vault;
use herald_engine::domains::{
    self,
    cache::DomainCache,
    keys::{KeyStore, PrivateKeys},
    records::ServiceZone,
    state::RotationPolicy,
};
use herald_engine::log::embedded::{EmbeddedLog, EmbeddedOptions};
use herald_engine::log::{kafka, EventLog, Retention, Topics};
use herald_engine::projector::Projector;
use herald_engine::retry::RetryPolicy;
use herald_engine::rewrite::{self, token::Keys, Rewriter};
use herald_engine::routing::Router;
use herald_engine::shaping::{self, Shaper};
use herald_engine::store::accounts::AccountStore;
use herald_engine::store::{
    cql::CqlStore, embedded::EmbeddedStore, feedback::FeedbackStore, webhooks::WebhookStore, ProjectionStore,
};
use herald_engine::submit::Submitter;
use herald_engine::webhooks;
use herald_engine::worker::{Worker, WorkerSettings};
use herald_ingest::http::{ApiState, ConsumerGroup, MetricsRender, Operators};
use herald_ingest::sender::{FromPolicy, SenderPolicy};
use herald_ingest::{smtp, track};
use herald_schemas::AccountId;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Installs the process-wide rustls provider (aws-lc-rs). Idempotent.
pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

pub fn retry_policy(config: &Config) -> RetryPolicy {
    let d = &config.delivery;
    RetryPolicy {
        initial: Duration::from_secs(d.retry_initial_secs),
        max_delay: Duration::from_secs(d.retry_max_delay_secs.max(d.retry_initial_secs)),
        max_age: Duration::from_secs(d.max_age_secs),
    }
}

pub fn topics(config: &Config) -> Topics {
    Topics { prefix: config.backend.topic_prefix.clone(), retry_tiers: retry_policy(config).tiers() }
}

/// Opens the configured event log.
pub async fn open_log(config: &Config) -> anyhow::Result<Arc<dyn EventLog>> {
    let topics = topics(config).all();
    Ok(match config.backend.log {
        LogBackend::Embedded => {
            std::fs::create_dir_all(&config.storage.data_dir)
                .with_context(|| format!("creating {}", config.storage.data_dir.display()))?;
            let s = &config.storage;
            let options = EmbeddedOptions {
                cache_bytes: (s.log_cache_mb << 20) as usize,
                compact_when_idle: (s.compact_idle_secs > 0).then(|| Duration::from_secs(s.compact_idle_secs)),
                ..EmbeddedOptions::default()
            };
            Arc::new(EmbeddedLog::open_with(&s.data_dir.join("log.redb"), &topics, config.backend.partitions, options)?)
        }
        LogBackend::Kafka => {
            let b = &config.backend;
            let settings = kafka::KafkaSettings {
                brokers: b.kafka_brokers.clone(),
                partitions: b.partitions,
                replication: b.kafka_replication,
                min_insync_replicas: b.kafka_min_insync_replicas,
                retention: retention(config),
                session_timeout: Duration::from_millis(b.kafka_session_timeout_ms),
                prefetch_kib: b.kafka_prefetch_kib,
                drain: Duration::from_secs(config.delivery.drain_secs),
                bodies: Some(kafka::BodiesTopic {
                    topic: self::topics(config).bodies(),
                    retention: bodies_retention(config),
                }),
                options: b.kafka_client_options(),
                commit_interval: Duration::from_millis(b.kafka_commit_interval_ms),
            };
            Arc::new(kafka::KafkaLog::connect(settings, &topics).await?)
        }
    })
}

fn retention(config: &Config) -> Option<Duration> {
    (config.backend.log_retention_hours > 0).then(|| Duration::from_secs(config.backend.log_retention_hours * 3600))
}

/// How long stored bodies stay: the log's retention, and at least as long as the last retry
/// of a message may run (`max_age` plus the margin); `None`: for ever, like the log.
pub fn bodies_retention(config: &Config) -> Option<Duration> {
    let needed = Duration::from_secs(config.delivery.max_age_secs + config.bodies.retention_margin_hours * 3600);
    retention(config).map(|r| r.max(needed))
}

/// The body store every component of this node shares.
pub fn body_store(config: &Config, log: Arc<dyn EventLog>) -> Arc<BodyStore> {
    let settings = BodySettings {
        inline_below_bytes: config.bodies.inline_below_bytes,
        cache_bytes: config.bodies.cache_mb << 20,
    };
    Arc::new(BodyStore::new(log, topics(config).bodies(), settings))
}

/// Applies log retention every five minutes until `shutdown`.
async fn retention_loop(
    log: Arc<dyn EventLog>,
    retention: Retention,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match log.enforce_retention(&retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "log retention removed records"),
            Err(e) => tracing::warn!(error = %e, "log retention failed"),
        }
    }
}

/// The read models of one store backend, each behind its trait.
pub struct Stores {
    pub projection: Arc<dyn ProjectionStore>,
    pub feedback: Arc<dyn FeedbackStore>,
    pub accounts: Arc<dyn AccountStore>,
    pub webhooks: Arc<dyn WebhookStore>,
}

/// Opens the configured projection store.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn ProjectionStore>> {
    Ok(open_stores(config).await?.projection)
}

/// Opens the configured store once, as every read model it serves (one backend, one
/// connection).
pub async fn open_stores(config: &Config) -> anyhow::Result<Stores> {
    Ok(match config.backend.store {
        StoreBackend::Embedded => {
            std::fs::create_dir_all(&config.storage.data_dir)?;
            let cache = (config.storage.store_cache_mb << 20) as usize;
            let s = Arc::new(EmbeddedStore::open_with_cache(&config.storage.data_dir.join("projection.redb"), cache)?);
            Stores { projection: s.clone(), feedback: s.clone(), accounts: s.clone(), webhooks: s }
        }
        StoreBackend::Cql => {
            let s = Arc::new(CqlStore::connect(&config.backend.cql_nodes, &config.backend.cql_keyspace).await?);
            Stores { projection: s.clone(), feedback: s.clone(), accounts: s.clone(), webhooks: s }
        }
    })
}

/// The operator keys: `[admin] operator_keys`, and `[shaping] operator_keys` (plain keys,
/// named `shaping-1`, `shaping-2`, …), which open the same routes.
pub fn operators(config: &Config) -> Result<Operators, String> {
    let shaping = config.shaping.operator_keys.iter().enumerate().map(|(i, k)| format!("shaping-{}={k}", i + 1));
    let all: Vec<String> = config.admin.operator_keys.iter().cloned().chain(shaping).collect();
    Operators::parse(&all)
}

/// Every consumer group and what it reads (all partitions), for the log-lag view.
pub fn consumer_groups(config: &Config) -> Vec<ConsumerGroup> {
    let t = topics(config);
    let all = |topics: Vec<String>| -> Vec<herald_engine::log::Assignment> {
        topics
            .into_iter()
            .flat_map(|topic| {
                (0..config.backend.partitions)
                    .map(move |partition| herald_engine::log::Assignment { topic: topic.clone(), partition })
            })
            .collect()
    };
    vec![
        ConsumerGroup { group: t.group(herald_engine::worker::ROLE), assignments: all(Worker::topics(&t)) },
        ConsumerGroup {
            group: t.group(herald_engine::projector::ROLE),
            assignments: all(vec![t.messages(), t.attempts()]),
        },
        ConsumerGroup { group: t.group(herald_engine::engagement::ROLE), assignments: all(vec![t.engagement()]) },
        ConsumerGroup {
            group: t.group(herald_engine::feedback::projector::ROLE),
            assignments: all(vec![t.feedback(), t.engagement()]),
        },
        ConsumerGroup { group: t.group(domains::projector::ROLE), assignments: all(vec![t.domains()]) },
        ConsumerGroup { group: t.group(accounts::projector::ROLE), assignments: all(vec![t.accounts()]) },
    ]
}

/// Loads the DKIM keys the config names.
pub fn signers(config: &Config) -> anyhow::Result<dkim::Signers> {
    let pems = config
        .dkim
        .iter()
        .map(|k| {
            std::fs::read_to_string(&k.private_key)
                .with_context(|| format!("reading DKIM key {}", k.private_key.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let specs: Vec<dkim::KeySpec> = config
        .dkim
        .iter()
        .zip(&pems)
        .map(|(k, pem)| dkim::KeySpec { domain: &k.domain, selector: &k.selector, pem })
        .collect();
    let mut signers = dkim::Signers::new(&specs).map_err(anyhow::Error::msg)?;
    for k in &config.dkim {
        signers = signers.restrict(&k.domain, k.accounts.iter().map(|a| AccountId(a.clone())).collect());
    }
    Ok(signers)
}

/// Who may send From which domain: static keys' accounts, verified sender domains, and
/// each account's `from_domains` policy.
pub fn sender_policy(config: &Config, cache: Option<DomainCache>) -> SenderPolicy {
    let mut static_domains: std::collections::HashMap<String, Vec<AccountId>> = Default::default();
    for k in &config.dkim {
        static_domains.insert(k.domain.clone(), k.accounts.iter().map(|a| AccountId(a.clone())).collect());
    }
    let policies = config
        .accounts
        .iter()
        .map(|a| {
            let policy = match config.from_domains(a) {
                FromDomains::Verified => FromPolicy::Verified,
                FromDomains::Any => FromPolicy::Any,
            };
            (AccountId(a.id.clone()), policy)
        })
        .collect();
    SenderPolicy::new(cache, static_domains, policies)
}

/// The sender-domain settings the config names.
pub fn domain_settings(config: &Config) -> domains::DomainSettings {
    let (d, dns) = (&config.domains, &config.dns);
    domains::DomainSettings {
        zone: ServiceZone::new(&dns.zone),
        rotation: RotationPolicy {
            interval: Duration::from_secs(d.rotation_interval_secs),
            propagation_delay: Duration::from_secs(d.propagation_delay_secs),
            grace: Duration::from_secs(d.grace_secs),
        },
        ed25519: d.ed25519,
        bounce_label: d.bounce_label.clone(),
        tracking_label: d.tracking_label.clone(),
        sending_ips: sending_ips(config),
        resolvers: config.resolvers(),
        own_dns: dns.enabled.then_some(dns.listen),
        resolver_timeout: Duration::from_millis(dns.resolver_timeout_ms),
        reverify: Duration::from_secs(d.reverify_secs),
        wait: Duration::from_secs(10),
    }
}

/// The addresses mail leaves from: `[dns] sending_ips` and every `[[pools]]` source
/// (what `_spf.<zone>` and sender-domain diagnostics list).
pub fn sending_ips(config: &Config) -> Vec<std::net::IpAddr> {
    let mut ips = config.dns.sending_ips.clone();
    for pool in &config.pools {
        ips.extend(pool.sources.iter().map(|s| s.ip));
    }
    let mut seen = std::collections::HashSet::new();
    ips.retain(|ip| seen.insert(*ip));
    ips
}

/// The traffic shaper: the providers file, the pools, this node's partitions (for the
/// `default` provider's per-domain shares).
pub fn shaper(
    config: &Config,
    router: Router,
    owned: Owned,
    accounts: Option<AccountCache>,
) -> anyhow::Result<Arc<Shaper>> {
    let providers = config.providers()?;
    let mut pools = config.pools().map_err(anyhow::Error::msg)?;
    if let Some(cache) = accounts {
        pools = pools.with_account_pools(Arc::new(move |id: &AccountId| {
            cache.current().account(id).and_then(|a| a.settings.pool.clone())
        }));
    }
    let s = &config.shaping;
    let settings = shaping::Settings {
        queue_wait: Duration::from_millis(s.queue_wait_ms),
        hold: Duration::from_secs(s.hold_secs),
        report_interval: Duration::from_millis(s.report_interval_ms),
        window: config.delivery.batch_size,
    };
    let ownership = shaping::Ownership { router, owned, topics: Worker::topics(&topics(config)) };
    Ok(Shaper::new(Arc::new(providers), pools, settings, Some(ownership)))
}

/// The service zone's settings.
pub fn zone_settings(config: &Config) -> domains::zone::ZoneSettings {
    let dns = &config.dns;
    let zone = ServiceZone::new(&dns.zone);
    domains::zone::ZoneSettings {
        hostmaster: dns.hostmaster.clone().unwrap_or_else(|| format!("hostmaster.{}", zone.zone)),
        zone,
        nameservers: dns.nameservers.clone(),
        nameserver_ips: dns.nameserver_ips.clone(),
        sending_ips: sending_ips(config),
        mx_ips: dns.mx_ips.clone(),
        tracking_ips: dns.tracking_ips.clone(),
        ttl: dns.ttl,
    }
}

/// Opens the sender-domain service over the log and store.
pub fn open_domains(
    config: &Config,
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    cache: DomainCache,
    vault: Arc<Vault>,
) -> anyhow::Result<Arc<domains::Domains>> {
    let router = Router::new(config.backend.partitions, Default::default());
    let keys = PrivateKeys { vault, files: KeyStore::new(config.storage.data_dir.join("dkim")) };
    let topic = topics(config).domains();
    let service = domains::Domains::new(log, topic, router, store, keys, domain_settings(config), cache)
        .map_err(anyhow::Error::msg)
        .context("sender domains")?;
    Ok(Arc::new(service))
}

/// Opens the node's master keyring (`[keys]`, ADR 0017).
pub fn open_vault(config: &Config) -> anyhow::Result<Arc<Vault>> {
    let (vault, generated) = config.keys.open(&config.storage.data_dir).context("[keys] master keys")?;
    if generated && config.backend.log == LogBackend::Kafka {
        tracing::warn!(
            "no [keys] master_key_file nor HERALD_MASTER_KEYS: this node seals DKIM keys under a master key only it \
             has ({}/master.keys); give every node of the cluster the same keyring",
            config.storage.data_dir.display()
        );
    }
    Ok(Arc::new(vault))
}

/// How this node gets its partitions: the consumer group, or the explicit static mode.
pub fn membership(config: &Config) -> Membership {
    match config.cluster.mode {
        ClusterMode::Group => Membership::Group,
        ClusterMode::Static => Membership::Static(
            (0..config.backend.partitions)
                .filter(|p| p % config.cluster.node_count == config.cluster.node_index)
                .collect(),
        ),
    }
}

/// The tracking keys: configured, or (single node) one kept in `<data_dir>/tracking.key`,
/// made at first start.
pub fn tracking_keys(config: &Config) -> anyhow::Result<Keys> {
    if let Some(keys) = config.tracking_keys()? {
        return Ok(keys);
    }
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let path = config.storage.data_dir.join("tracking.key");
    if !path.exists() {
        std::fs::create_dir_all(&config.storage.data_dir)?;
        let secret: [u8; 32] = rand::random();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).with_context(|| format!("creating {}", path.display()))?;
        std::io::Write::write_all(&mut file, format!("local {}\n", b64.encode(secret)).as_bytes())?;
        tracing::warn!(path = %path.display(), "no [tracking] keys configured: made one for this node only");
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (id, secret) =
        text.trim().split_once(' ').with_context(|| format!("{}: expected `id base64`", path.display()))?;
    let secret = b64.decode(secret).with_context(|| format!("{}: secret is not base64", path.display()))?;
    Keys::new(&[(id.to_owned(), secret)], None).map_err(anyhow::Error::msg)
}

/// The send-time rewriter the config describes.
pub fn rewriter(config: &Config, cache: DomainCache) -> anyhow::Result<Rewriter> {
    let t = &config.tracking;
    let settings = rewrite::Settings {
        tracking: t.enabled,
        scheme: t.scheme.clone(),
        default_host: t.default_host.clone(),
        rewrite_text: t.rewrite_text,
        keys: tracking_keys(config)?,
        cache_bytes: t.body_cache_mb.saturating_mul(1 << 20),
    };
    Ok(Rewriter::new(settings, Some(cache)))
}

/// The tracking server's socket, bound (TLS when configured).
async fn tracking_listener(config: &Config) -> anyhow::Result<track::listener::Bound> {
    let t = &config.tracking;
    let tcp = tokio::net::TcpListener::bind(t.listen)
        .await
        .with_context(|| format!("binding the tracking listener on {}", t.listen))?;
    tracing::info!(addr = %tcp.local_addr()?, tls = t.tls_cert.is_some(), "tracking listening");
    let tls = t
        .tls_cert
        .as_deref()
        .zip(t.tls_key.as_deref())
        .map(|cert_key| {
            smtp::starttls::acceptor(Some(cert_key), &config.storage.data_dir, &t.default_host)
                .context("tracking TLS certificate")
        })
        .transpose()?;
    Ok(track::listener::Bound::new(tcp, tls))
}

/// Runs until `shutdown` is cancelled. `ready` receives the bound HTTP address. Returns
/// once the log and the store are closed, so that their files can be opened again at once.
pub async fn run(
    config: Config,
    metrics: Option<MetricsRender>,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    install_crypto();
    let log = open_log(&config).await.context("opening the event log")?;
    let stores = open_stores(&config).await.context("opening the projection store")?;
    let store = stores.projection.clone();
    let result = serve(config, metrics, shutdown, ready, log.clone(), stores).await;
    close(log, store).await;
    result
}

/// Longest wait at the end of [`run`] for the components' last references to the log and
/// the store.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits until nothing else holds `log` and `store`, then closes them off the runtime (the
/// embedded log stops its writer and checkpoints). A finished component may still be
/// dropping them (axum lets go of a connection before it drops the connection's service).
pub async fn close(log: Arc<dyn EventLog>, store: Arc<dyn ProjectionStore>) {
    let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
    while (Arc::strong_count(&log) > 1 || Arc::strong_count(&store) > 1) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if Arc::strong_count(&log) > 1 || Arc::strong_count(&store) > 1 {
        tracing::warn!("the log or the store is still in use after {CLOSE_TIMEOUT:?}; it closes when let go");
    }
    let _ = tokio::task::spawn_blocking(move || drop((log, store))).await;
}

async fn serve(
    config: Config,
    metrics: Option<MetricsRender>,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
    log: Arc<dyn EventLog>,
    stores: Stores,
) -> anyhow::Result<()> {
    let Stores { projection: store, feedback: feedback_store, accounts: account_store, webhooks: webhook_store } =
        stores;
    let account_cache = AccountCache::new(config.bootstrap());
    if let Err(e) = account_cache.refresh(account_store.as_ref(), true).await {
        tracing::warn!(error = %e, "reading accounts failed; starting with the config's accounts");
    }
    let topics = topics(&config);
    let hot = config.delivery.hot_domains.iter().map(|(d, n)| (d.clone(), *n)).collect();
    let router = Router::new(config.backend.partitions, hot);
    let feedback = crate::feedback::Feedback::new(
        &config,
        log.clone(),
        store.clone(),
        feedback_store.clone(),
        topics.clone(),
        router.clone(),
    )
    .await?;
    let d = &config.delivery;
    let bodies = body_store(&config, log.clone());
    let deliverer = Deliverer::new(
        DeliverySettings {
            helo_name: d.helo_name.clone(),
            mx_port: d.mx_port,
            connect_timeout: Duration::from_secs(d.connect_timeout_secs),
            command_timeout: Duration::from_secs(d.command_timeout_secs),
        },
        MxResolver::new(&config.dns_servers()).map_err(anyhow::Error::msg)?,
        signers(&config)?,
        bodies.clone(),
    )
    .map_err(anyhow::Error::msg)?;
    let cache = DomainCache::default();
    let key_store = KeyStore::new(config.storage.data_dir.join("dkim"));
    let vault = open_vault(&config)?;
    let signing =
        domains::signing::SenderSigning::new(cache.clone(), PrivateKeys { vault: vault.clone(), files: key_store });
    let mut deliverer =
        deliverer.with_sender_domains(Arc::new(signing)).with_rewriter(Arc::new(rewriter(&config, cache.clone())?));
    if config.bounces.enabled {
        deliverer = deliverer.with_return_paths(feedback.return_paths(&config));
    }
    let domains = open_domains(&config, log.clone(), store.clone(), cache.clone(), vault.clone())?;
    let delivery_partitions = Owned::default();
    let shaper = shaper(&config, router.clone(), delivery_partitions.clone(), Some(account_cache.clone()))?;
    let worker = Arc::new(
        Worker::new(
            log.clone(),
            topics.clone(),
            router.clone(),
            Arc::new(deliverer),
            WorkerSettings {
                batch_size: d.batch_size,
                domain_concurrency: d.domain_concurrency,
                policy: retry_policy(&config),
                drain: Duration::from_secs(d.drain_secs),
                hold: Duration::from_secs(config.shaping.hold_secs),
                account_hold: Duration::from_secs(d.suspended_hold_secs),
            },
            shaper.clone(),
            delivery_partitions,
        )
        .with_feedback(feedback.sending())
        .with_accounts(account_cache.clone()),
    );
    let projector = Arc::new(Projector::new(log.clone(), store.clone(), topics.clone()));
    let membership = membership(&config);

    let tracking = if config.tracking.enabled && config.cluster.has(Role::Track) {
        let listener = tracking_listener(&config).await?;
        let (appender, appending) = track::appender::Appender::start(log.clone(), config.tracking.queue);
        let default_host =
            config.tracking.default_host.rsplit_once(':').map(|(h, _)| h).unwrap_or(&config.tracking.default_host);
        let tracker = Arc::new(track::Tracker {
            keys: tracking_keys(&config)?,
            default_host: default_host.trim_matches(['[', ']']).to_ascii_lowercase(),
            domains: Some(cache.clone()),
            appender,
            engagement_topic: topics.engagement(),
            partitions: router.clone(),
            counters: track::Counters::new(),
            settings: track::Settings {
                too_soon_secs: config.tracking.min_click_secs,
                trusted_proxies: config
                    .tracking
                    .trusted_proxies
                    .iter()
                    .map(|n| parse_network(n))
                    .collect::<Result<_, _>>()
                    .map_err(anyhow::Error::msg)?,
            },
        });
        Some((listener, tracker, appending))
    } else {
        None
    };
    let webhooks = webhooks(&config, log.clone(), webhook_store.clone(), &topics)?;
    let bodies_topic = topics.bodies();
    let submitter = Submitter::new(log.clone(), topics, router).with_bodies(bodies, config.bodies.max_fanout_bytes);
    let store_for_cache = store.clone();
    let reporter = crate::reports::reporter(
        &config,
        account_cache.clone(),
        feedback_store,
        webhook_store.clone(),
        store.clone(),
        submitter.clone(),
    );
    let sender = Arc::new(sender_policy(&config, Some(cache.clone())).with_accounts(account_cache.clone()));
    let limits = Arc::new(herald_ingest::limits::Limits::new(store.clone()));
    let smtp =
        smtp_listeners(&config, submitter.clone(), account_cache.clone(), limits.clone(), sender.clone()).await?;
    let admin = Arc::new(
        Accounts::new(
            log.clone(),
            self::topics(&config).accounts(),
            Router::new(config.backend.partitions, Default::default()),
            account_store.clone(),
            account_cache.clone(),
            Duration::from_secs(10),
        )
        .with_report_intervals(config.reports.min_interval_secs, config.reports.max_interval_secs),
    );
    let state = Arc::new(ApiState {
        submitter,
        store,
        accounts: account_cache.clone(),
        admin: Some(admin),
        operators: operators(&config).map_err(anyhow::Error::msg)?,
        limits,
        log: Some((log.clone(), consumer_groups(&config))),
        max_body_bytes: config.http.max_body_bytes,
        max_recipients: config.http.max_recipients,
        metrics,
        domains: Some(domains.clone()),
        feedback: Some(feedback.service.clone()),
        hostname: config.smtp.hostname.clone(),
        sender,
        shaping: config.cluster.has(Role::Deliver).then(|| shaper.clone()),
        webhooks: Some(webhooks.service.clone()),
    });
    let bounce_mx = feedback.bounce_mx(&config, cache.clone()).await?;
    let dns = if config.dns.enabled {
        let sockets = domains::dns::bind(config.dns.listen)
            .await
            .with_context(|| format!("binding the DNS server on {} (UDP and TCP)", config.dns.listen))?;
        tracing::info!(addr = %config.dns.listen, zone = %config.dns.zone, "dns serving");
        Some(sockets)
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding the HTTP listener on {}", config.http.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, log = ?config.backend.log, store = ?config.backend.store, membership = ?membership, "herald serving");
    if config.backend.log == LogBackend::Embedded {
        tracing::info!("embedded log: a single node, which owns every partition");
    }
    if let Some(ready) = ready {
        let _ = ready.send(addr);
    }

    let mut tasks: tokio::task::JoinSet<(&'static str, anyhow::Result<()>)> = tokio::task::JoinSet::new();
    if config.cluster.has(Role::Deliver) {
        let (membership, stop) = (membership.clone(), shutdown.clone());
        tasks.spawn(async move { ("delivery workers", worker.run(&membership, stop).await.map_err(Into::into)) });
        let (log, topics, shutdown) = (log.clone(), self::topics(&config), shutdown.clone());
        tasks.spawn(async move {
            ("traffic shaping", shaping::feed::run(shaper, log, topics, shutdown).await.map_err(Into::into))
        });
    }
    if config.cluster.has(Role::Project) {
        let (mine, stop) = (membership.clone(), shutdown.clone());
        tasks.spawn(async move { ("projector", projector.run(&mine, stop).await.map_err(Into::into)) });
        let (membership, stop, projector) = (membership.clone(), shutdown.clone(), feedback.projector(&config));
        tasks.spawn(async move { ("feedback projector", projector.run(&membership, stop).await.map_err(Into::into)) });
    }
    let feedback = Arc::new(feedback);
    if config.cluster.has(Role::Deliver) {
        let (feedback, shutdown, partitions) = (feedback.clone(), shutdown.clone(), config.backend.partitions);
        tasks.spawn(async move {
            feedback.run_index(partitions, shutdown).await;
            ("suppression index", Ok(()))
        });
    }
    if let Some((server, listener)) = bounce_mx {
        let shutdown = shutdown.clone();
        tasks.spawn(
            async move { ("bounce MX", smtp::run(listener, false, server, shutdown).await.map_err(Into::into)) },
        );
    }
    // Sender domains: the projector and the maintenance (rotation, periodic re-checks) for
    // the partitions of the domains topic this node owns (they follow the group) run with
    // the projector; the cache and the DNS server everywhere.
    let domain_partitions = Owned::default();
    if config.cluster.has(Role::Project) {
        let (log, store, cache, shutdown, membership) =
            (log.clone(), store_for_cache.clone(), cache.clone(), shutdown.clone(), membership.clone());
        let (topics, owned) = (self::topics(&config), domain_partitions.clone());
        tasks.spawn(async move {
            (
                "domain projector",
                domains::projector::run(log, store, &topics, &membership, cache, owned, shutdown)
                    .await
                    .map_err(Into::into),
            )
        });
    }
    {
        let (store, shutdown) = (store_for_cache.clone(), shutdown.clone());
        let (cache, refresh) = (cache.clone(), Duration::from_millis(config.dns.refresh_ms.max(50)));
        tasks.spawn(async move {
            cache.run(store, refresh, shutdown).await;
            ("sender-domain cache", Ok(()))
        });
    }
    // Accounts: the projector with the other projectors; the cache on every node.
    if config.cluster.has(Role::Project) {
        let (log, store, cache, shutdown, membership) =
            (log.clone(), account_store.clone(), account_cache.clone(), shutdown.clone(), membership.clone());
        let topics = self::topics(&config);
        tasks.spawn(async move {
            (
                "account projector",
                accounts::projector::run(log, store, &topics, &membership, cache, shutdown).await.map_err(Into::into),
            )
        });
    }
    {
        let (store, cache, shutdown) = (account_store.clone(), account_cache.clone(), shutdown.clone());
        let every = Duration::from_millis(config.admin.accounts_refresh_ms);
        tasks.spawn(async move {
            cache.run(store, every, shutdown).await;
            ("account cache", Ok(()))
        });
    }
    if config.keys.reload_secs > 0 {
        let (vault, shutdown) = (vault.clone(), shutdown.clone());
        let every = Duration::from_secs(config.keys.reload_secs);
        tasks.spawn(async move {
            vault.run_reloader(every, shutdown).await;
            ("master keyring", Ok(()))
        });
    }
    let key_dir = config.storage.data_dir.join("dkim");
    if key_dir.is_dir() {
        // Key files from before ADR 0017 into the log, on whichever node has them: every
        // maintenance interval (a domain may not be projected yet at start) until shutdown.
        let (domains, shutdown) = (domains.clone(), shutdown.clone());
        let every = Duration::from_secs(config.domains.maintenance_interval_secs.max(1));
        tasks.spawn(async move {
            loop {
                match domains.migrate_key_files().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(domains = n, "DKIM key files sealed into the log"),
                    Err(e) => tracing::warn!(error = %e, "migrating DKIM key files failed; the files still sign here"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return ("DKIM key migration", Ok(())),
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
    }
    if config.cluster.has(Role::Project) {
        let (domains, shutdown, owned) = (domains.clone(), shutdown.clone(), domain_partitions.clone());
        let (every, topic) =
            (Duration::from_secs(config.domains.maintenance_interval_secs), self::topics(&config).domains());
        tasks.spawn(async move {
            domains::service::maintenance_loop(domains, topic, owned, every, shutdown).await;
            ("sender-domain maintenance", Ok(()))
        });
    }
    if let Some((udp, tcp)) = dns {
        let handle = domains::dns::ZoneHandle::new(domains::zone::build(&zone_settings(&config), &[], 0));
        {
            let (cache, handle, shutdown) = (cache.clone(), handle.clone(), shutdown.clone());
            let settings = zone_settings(&config);
            tasks.spawn(async move {
                domains::dns::follow(cache, settings, handle, shutdown).await;
                ("DNS zone", Ok(()))
            });
        }
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            ("DNS server", domains::dns::serve(udp, tcp, handle, shutdown).await.map_err(anyhow::Error::msg))
        });
    }
    if config.cluster.has(Role::Project) {
        let projector = Arc::new(herald_engine::engagement::EngagementProjector::new(
            log.clone(),
            store_for_cache.clone(),
            self::topics(&config),
        ));
        let (shutdown, membership) = (shutdown.clone(), membership.clone());
        tasks.spawn(
            async move { ("engagement projector", projector.run(&membership, shutdown).await.map_err(Into::into)) },
        );
    }
    webhooks.spawn(&config, log.clone(), webhook_store, &membership, &shutdown, &mut tasks);
    if let Some(reporter) = reporter {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            reporter.run(shutdown).await;
            ("bounce reports", Ok(()))
        });
    }
    if let Some((listener, tracker, appending)) = tracking {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let served = track::serve_threads(listener, tracker, shutdown).await;
            // The server is done and its queue handles are gone: wait for the last append.
            let _ = appending.await;
            ("tracking server", served.map_err(Into::into))
        });
    }
    if let (Some(consumed), Some(bodies)) = (retention(&config), bodies_retention(&config)) {
        let retention = Retention { consumed, by_age: vec![(bodies_topic, bodies)] };
        let (log, shutdown) = (log.clone(), shutdown.clone());
        tasks.spawn(async move { ("log retention", retention_loop(log, retention, shutdown).await) });
    }
    if let Some((server, listeners)) = smtp {
        for (listener, implicit_tls) in listeners {
            let (server, shutdown) = (server.clone(), shutdown.clone());
            tasks.spawn(async move {
                ("SMTP server", smtp::run(listener, implicit_tls, server, shutdown).await.map_err(Into::into))
            });
        }
    }
    {
        let shutdown = shutdown.clone();
        let mut app = herald_ingest::http::router(state);
        if config.http.dashboard {
            app = app.merge(crate::ui::router());
        }
        tasks.spawn(async move {
            let served =
                axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
            ("HTTP server", served.map_err(Into::into))
        });
    }
    // The first component to stop (normally because `shutdown` was cancelled) stops the
    // others; they finish what they hold (a worker completes its chunk, appends and
    // commits), bounded by `delivery.drain_secs` + DRAIN_MARGIN, so a restart redoes as
    // little as possible.
    let first = tasks.join_next().await;
    shutdown.cancel();
    let drain_timeout = Duration::from_secs(config.delivery.drain_secs) + DRAIN_MARGIN;
    let drained = tokio::time::timeout(drain_timeout, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            "components still busy after {drain_timeout:?}; stopping anyway (unfinished work is redone on restart)"
        );
    }
    match first {
        Some(Ok((_, Ok(())))) | None => Ok(()),
        Some(Ok((component, Err(e)))) => Err(e.context(component)),
        Some(Err(e)) => Err(e.into()),
    }
}

/// The SMTP server and its bound listeners (`true`: implicit TLS), when `[smtp]` is enabled.
async fn smtp_listeners(
    config: &Config,
    submitter: Submitter,
    accounts: AccountCache,
    limits: Arc<herald_ingest::limits::Limits>,
    sender: Arc<SenderPolicy>,
) -> anyhow::Result<Option<(Arc<smtp::Server>, Vec<(tokio::net::TcpListener, bool)>)>> {
    let c = &config.smtp;
    if !c.enabled || !config.cluster.has(Role::Smtp) {
        return Ok(None);
    }
    let cert_key = c.tls_cert.as_deref().zip(c.tls_key.as_deref());
    let tls =
        smtp::starttls::acceptor(cert_key, &config.storage.data_dir, &c.hostname).context("SMTP TLS certificate")?;
    let settings = smtp::Settings {
        hostname: c.hostname.clone(),
        max_message_bytes: c.max_message_bytes,
        max_recipients: c.max_recipients,
        command_timeout: Duration::from_secs(c.command_timeout_secs),
        data_timeout: Duration::from_secs(c.data_timeout_secs),
        max_connections: c.max_connections,
        max_connections_per_ip: c.max_connections_per_ip,
        allow_plaintext_auth: c.allow_plaintext_auth,
        auth_failure_delay: Duration::from_millis(c.auth_failure_delay_ms),
        max_auth_failures: c.max_auth_failures,
        auth_lockout: Duration::from_secs(c.auth_lockout_secs),
        account_rate: c.account_messages_per_second,
        account_burst: c.account_burst,
        max_errors: c.max_errors,
    };
    let server = Arc::new(smtp::Server::new(settings, submitter, accounts, limits, sender, Some(tls)));
    let mut listeners = vec![];
    for (addr, implicit) in std::iter::once((c.listen, false)).chain(c.implicit_tls_listen.map(|a| (a, true))) {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the SMTP listener on {addr}"))?;
        tracing::info!(addr = %l.local_addr()?, implicit_tls = implicit, "smtp listening");
        listeners.push((l, implicit));
    }
    Ok(Some((server, listeners)))
}

/// The webhook parts of a node: the command service (API), the dispatcher and the registry.
pub struct WebhookParts {
    pub service: Arc<webhooks::service::Webhooks>,
    dispatch: Arc<webhooks::dispatch::Dispatch>,
    registry: webhooks::endpoints::Registry,
}

/// Builds the webhook service and dispatcher the config describes.
pub fn webhooks(
    config: &Config,
    log: Arc<dyn EventLog>,
    store: Arc<dyn WebhookStore>,
    topics: &Topics,
) -> anyhow::Result<WebhookParts> {
    let settings = config.webhooks.settings();
    let extra_roots = match &config.webhooks.extra_roots_file {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?),
        None => None,
    };
    let sender = Arc::new(
        webhooks::sender::Sender::new(settings.allow_private_targets, settings.timeout, extra_roots.as_deref())
            .context("building the webhook HTTP client")?,
    );
    let registry = webhooks::endpoints::Registry::default();
    let service = Arc::new(webhooks::service::Webhooks::new(
        log.clone(),
        store,
        topics.clone(),
        registry.clone(),
        sender.clone(),
        settings.clone(),
    ));
    let dispatch = Arc::new(webhooks::dispatch::Dispatch {
        registry: registry.clone(),
        sender,
        lanes: webhooks::Lanes::new(settings.endpoint_concurrency),
        router: Router::new(log.partitions(), Default::default()),
        topics: topics.clone(),
        settings,
        hot: Default::default(),
    });
    Ok(WebhookParts { service, dispatch, registry })
}

impl WebhookParts {
    /// Spawns the registry refresh (every node), the webhook projector (`project` role) and
    /// the dispatchers (`deliver` role, when `[webhooks] enabled`).
    fn spawn(
        self,
        config: &Config,
        log: Arc<dyn EventLog>,
        store: Arc<dyn WebhookStore>,
        membership: &Membership,
        shutdown: &CancellationToken,
        tasks: &mut tokio::task::JoinSet<(&'static str, anyhow::Result<()>)>,
    ) {
        {
            let (registry, store, shutdown) = (self.registry.clone(), store.clone(), shutdown.clone());
            let every = self.dispatch.settings.refresh;
            tasks.spawn(async move {
                webhooks::projector::refresh(registry, store, every, shutdown).await;
                ("webhook registry", Ok(()))
            });
        }
        if config.cluster.has(Role::Project) {
            let feed = Arc::new(webhooks::feed::FeedProjector::new(store.clone(), self.dispatch.topics.clone()));
            let (l, m, s) = (log.clone(), membership.clone(), shutdown.clone());
            tasks.spawn(async move { ("event feed projector", feed.run(l, &m, s).await.map_err(Into::into)) });
            let projector = Arc::new(webhooks::projector::WebhookProjector::new(store, self.dispatch.topics.clone()));
            let (log, membership, shutdown) = (log.clone(), membership.clone(), shutdown.clone());
            tasks.spawn(async move {
                ("webhook projector", projector.run(log, &membership, shutdown).await.map_err(Into::into))
            });
        }
        if config.webhooks.enabled && config.cluster.has(Role::Deliver) {
            let first = Arc::new(webhooks::dispatch::FirstAttempts::new(self.dispatch.clone()));
            let (l, m, s) = (log.clone(), membership.clone(), shutdown.clone());
            tasks.spawn(async move { ("webhook dispatch", first.run(l, &m, s).await.map_err(Into::into)) });
            let retries = Arc::new(webhooks::dispatch::Retries(self.dispatch.clone()));
            let (l, m, s) = (log, membership.clone(), shutdown.clone());
            tasks.spawn(async move { ("webhook retries", retries.run(l, &m, s).await.map_err(Into::into)) });
        }
    }
}

/// Time past `delivery.drain_secs` for the last commits and leaving the consumer groups.
const DRAIN_MARGIN: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_stay_as_long_as_a_retry_may_need_them() {
        let mut c = Config::default();
        let day = Duration::from_secs(86_400);
        // Default: 7 days of log retention covers 5 days of max age plus a day of margin.
        assert_eq!(bodies_retention(&c), Some(7 * day));
        c.backend.log_retention_hours = 5 * 24;
        assert_eq!(bodies_retention(&c), Some(6 * day), "max age + margin, beyond the log's retention");
        c.bodies.retention_margin_hours = 0;
        assert_eq!(bodies_retention(&c), Some(5 * day));
        c.backend.log_retention_hours = 0;
        assert_eq!(bodies_retention(&c), None, "a log kept for ever keeps its bodies for ever");
    }
}

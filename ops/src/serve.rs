//! `herald serve`: the whole pipeline in one process: REST ingestion, delivery workers,
//! projector and queries, on the backends the config names.

use crate::config::{Config, FromDomains, LogBackend, Role, StoreBackend};
use anyhow::Context;
use herald_engine::accounts::{self, AccountCache, Accounts};
use herald_engine::delivery::{dkim, mx::MxResolver, Deliverer, DeliverySettings};
use herald_engine::domains::{self, cache::DomainCache, keys::KeyStore, records::ServiceZone, state::RotationPolicy};
use herald_engine::log::{embedded::EmbeddedLog, kafka, EventLog, Topics};
use herald_engine::projector::Projector;
use herald_engine::retry::RetryPolicy;
use herald_engine::routing::Router;
use herald_engine::store::accounts::AccountStore;
use herald_engine::store::{cql::CqlStore, embedded::EmbeddedStore, ProjectionStore};
use herald_engine::submit::Submitter;
use herald_engine::worker::{Worker, WorkerSettings};
use herald_ingest::http::{ApiState, ConsumerGroup, MetricsRender, Operators};
use herald_ingest::sender::{FromPolicy, SenderPolicy};
use herald_ingest::smtp;
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
            Arc::new(EmbeddedLog::open(&config.storage.data_dir.join("log.redb"), &topics, config.backend.partitions)?)
        }
        LogBackend::Kafka => {
            let settings = kafka::KafkaSettings {
                brokers: config.backend.kafka_brokers.clone(),
                partitions: config.backend.partitions,
                replication: config.backend.kafka_replication,
                retention: retention(config),
            };
            Arc::new(kafka::KafkaLog::connect(settings, &topics).await?)
        }
    })
}

fn retention(config: &Config) -> Option<Duration> {
    (config.backend.log_retention_hours > 0).then(|| Duration::from_secs(config.backend.log_retention_hours * 3600))
}

/// Applies log retention every five minutes until `shutdown`.
async fn retention_loop(
    log: Arc<dyn EventLog>,
    retention: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match log.enforce_retention(retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "log retention removed records"),
            Err(e) => tracing::warn!(error = %e, "log retention failed"),
        }
    }
}

/// The read models of one store backend, each behind its trait.
pub struct Stores {
    pub projection: Arc<dyn ProjectionStore>,
    pub accounts: Arc<dyn AccountStore>,
}

/// Opens the configured projection store.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn ProjectionStore>> {
    Ok(open_stores(config).await?.projection)
}

/// Opens the configured store once, as every read model it serves.
pub async fn open_stores(config: &Config) -> anyhow::Result<Stores> {
    Ok(match config.backend.store {
        StoreBackend::Embedded => {
            std::fs::create_dir_all(&config.storage.data_dir)?;
            let s = Arc::new(EmbeddedStore::open(&config.storage.data_dir.join("projection.redb"))?);
            Stores { projection: s.clone(), accounts: s }
        }
        StoreBackend::Cql => {
            let s = Arc::new(CqlStore::connect(&config.backend.cql_nodes, &config.backend.cql_keyspace).await?);
            Stores { projection: s.clone(), accounts: s }
        }
    })
}

/// The operator keys of `[admin]`.
pub fn operators(config: &Config) -> Result<Operators, String> {
    Operators::parse(&config.admin.operator_keys)
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
    let mut delivery = vec![t.messages()];
    delivery.extend((0..t.retry_tiers).map(|i| t.retry(i)));
    vec![
        ConsumerGroup { group: herald_engine::worker::GROUP.into(), assignments: all(delivery) },
        ConsumerGroup {
            group: herald_engine::projector::GROUP.into(),
            assignments: all(vec![t.messages(), t.attempts()]),
        },
        ConsumerGroup { group: domains::projector::GROUP.into(), assignments: all(vec![t.domains()]) },
        ConsumerGroup { group: accounts::projector::GROUP.into(), assignments: all(vec![t.accounts()]) },
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
        sending_ips: dns.sending_ips.clone(),
        resolvers: config.resolvers(),
        own_dns: dns.enabled.then_some(dns.listen),
        resolver_timeout: Duration::from_millis(dns.resolver_timeout_ms),
        reverify: Duration::from_secs(d.reverify_secs),
        wait: Duration::from_secs(10),
    }
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
        sending_ips: dns.sending_ips.clone(),
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
) -> anyhow::Result<Arc<domains::Domains>> {
    let router = Router::new(config.backend.partitions, Default::default());
    let keys = KeyStore::new(config.storage.data_dir.join("dkim"));
    let service =
        domains::Domains::new(log, topics(config).domains(), router, store, keys, domain_settings(config), cache)
            .map_err(anyhow::Error::msg)
            .context("sender domains")?;
    Ok(Arc::new(service))
}

/// Runs until `shutdown` is cancelled. `ready` receives the bound HTTP address.
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
    let account_store = stores.accounts.clone();
    let account_cache = AccountCache::new(config.bootstrap());
    if let Err(e) = account_cache.refresh(account_store.as_ref(), true).await {
        tracing::warn!(error = %e, "reading accounts failed; starting with the config's accounts");
    }
    let topics = topics(&config);
    let hot = config.delivery.hot_domains.iter().map(|(d, n)| (d.clone(), *n)).collect();
    let router = Router::new(config.backend.partitions, hot);
    let d = &config.delivery;
    let deliverer = Deliverer::new(
        DeliverySettings {
            helo_name: d.helo_name.clone(),
            mx_port: d.mx_port,
            connect_timeout: Duration::from_secs(d.connect_timeout_secs),
            command_timeout: Duration::from_secs(d.command_timeout_secs),
        },
        MxResolver::new(&config.dns_servers()).map_err(anyhow::Error::msg)?,
        signers(&config)?,
    )
    .map_err(anyhow::Error::msg)?;
    let cache = DomainCache::default();
    let key_store = KeyStore::new(config.storage.data_dir.join("dkim"));
    let deliverer =
        deliverer.with_sender_domains(Arc::new(domains::signing::SenderSigning::new(cache.clone(), key_store)));
    let domains = open_domains(&config, log.clone(), store.clone(), cache.clone())?;
    let worker = Arc::new(Worker::new(
        log.clone(),
        topics.clone(),
        router.clone(),
        Arc::new(deliverer),
        WorkerSettings {
            batch_size: d.batch_size,
            domain_concurrency: d.domain_concurrency,
            policy: retry_policy(&config),
            hold: Duration::from_secs(d.hold_secs),
        },
    )
    .with_accounts(account_cache.clone()));
    let projector = Arc::new(Projector::new(log.clone(), store.clone(), topics.clone()));
    let owned: Vec<u32> =
        (0..config.backend.partitions).filter(|p| p % config.cluster.node_count == config.cluster.node_index).collect();

    let submitter = Submitter::new(log.clone(), topics, router);
    let store_for_cache = store.clone();
    let sender = Arc::new(sender_policy(&config, Some(cache.clone())).with_accounts(account_cache.clone()));
    let limits = Arc::new(herald_ingest::limits::Limits::new(store.clone()));
    let smtp = smtp_listeners(&config, submitter.clone(), account_cache.clone(), limits.clone(), sender.clone()).await?;
    let admin = Arc::new(Accounts::new(
        log.clone(),
        self::topics(&config).accounts(),
        Router::new(config.backend.partitions, Default::default()),
        account_store.clone(),
        account_cache.clone(),
        Duration::from_secs(10),
    ));
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
        hostname: config.smtp.hostname.clone(),
        sender,
    });
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
    tracing::info!(%addr, log = ?config.backend.log, store = ?config.backend.store, partitions = owned.len(), "herald serving");
    if let Some(ready) = ready {
        let _ = ready.send(addr);
    }

    let mut tasks: tokio::task::JoinSet<(&'static str, anyhow::Result<()>)> = tokio::task::JoinSet::new();
    if config.cluster.has(Role::Deliver) {
        let (owned, shutdown) = (owned.clone(), shutdown.clone());
        tasks.spawn(async move { ("delivery workers", worker.run(&owned, shutdown).await.map_err(Into::into)) });
    }
    if config.cluster.has(Role::Project) {
        let (owned, shutdown) = (owned.clone(), shutdown.clone());
        tasks.spawn(async move { ("projector", projector.run(&owned, shutdown).await.map_err(Into::into)) });
    }
    // Sender domains: the projector and the maintenance (rotation, periodic re-checks) for
    // the owned partitions run with the projector; the cache and the DNS server everywhere.
    if config.cluster.has(Role::Project) {
        let (log, store, cache, shutdown, owned) =
            (log.clone(), store_for_cache.clone(), cache.clone(), shutdown.clone(), owned.clone());
        let topic = self::topics(&config).domains();
        tasks.spawn(async move {
            (
                "domain projector",
                domains::projector::run(log, store, topic, &owned, cache, shutdown).await.map_err(Into::into),
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
    // Accounts: the projector for the owned partitions; the cache on every node.
    if config.cluster.has(Role::Project) {
        let (log, store, cache, shutdown, owned) =
            (log.clone(), account_store.clone(), account_cache.clone(), shutdown.clone(), owned.clone());
        let topic = self::topics(&config).accounts();
        tasks.spawn(async move {
            (
                "account projector",
                accounts::projector::run(log, store, topic, &owned, cache, shutdown).await.map_err(Into::into),
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
    if config.cluster.has(Role::Project) {
        let (domains, shutdown, owned) = (domains.clone(), shutdown.clone(), owned.clone());
        let every = Duration::from_secs(config.domains.maintenance_interval_secs);
        tasks.spawn(async move {
            domains::service::maintenance_loop(domains, owned, every, shutdown).await;
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
    if let Some(retention) = retention(&config) {
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
        let app = herald_ingest::http::router(state);
        let app = if config.admin.dashboard { app.merge(herald_ingest::ui::router()) } else { app };
        tasks.spawn(async move {
            let served =
                axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
            ("HTTP server", served.map_err(Into::into))
        });
    }
    // The first component to stop (normally because `shutdown` was cancelled) stops the
    // others; they finish what they hold (a worker completes its chunk, appends and
    // commits), bounded by DRAIN_TIMEOUT, so a restart redoes as little as possible.
    let first = tasks.join_next().await;
    shutdown.cancel();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            "components still busy after {DRAIN_TIMEOUT:?}; stopping anyway (unfinished work is redone on restart)"
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

/// Longest wait for components to finish their work at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

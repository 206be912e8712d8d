//! Herald's configuration: one serde tree, read from TOML, then overridden by environment
//! variables `HERALD__<SECTION>__<KEY>=value` (value parsed as TOML, else taken as a
//! string), e.g. `HERALD__DELIVERY__MX_PORT=2526`. See `docs/config.md`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod bounces;
mod keys;
mod reports;
mod webhooks;
pub use bounces::Bounces;
pub use keys::Keys;
pub use reports::Reports;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
pub use webhooks::Webhooks;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub storage: Storage,
    pub http: Http,
    pub smtp: Smtp,
    pub delivery: Delivery,
    pub backend: Backend,
    pub cluster: Cluster,
    /// Customer accounts and their credentials.
    pub accounts: Vec<Account>,
    /// Herald's authoritative DNS for its service zone, and resolvers for verification.
    pub dns: Dns,
    /// Sender domains: key rotation, verification, defaults of new domains.
    pub domains: Domains,
    /// Static DKIM keys by From domain (an operator override: they win over sender domains).
    pub dkim: Vec<DkimKey>,
    /// Bounce processing: VERP return paths, the bounce MX, classification, suppression.
    pub bounces: Bounces,
    /// Traffic shaping: how long messages wait for their provider's limits, how often
    /// nodes share their usage (`docs/shaping.md`).
    pub shaping: Shaping,
    /// Source-address pools: `[[pools]] name, default, sources = [{ ip, ehlo, weight,
    /// warmup }]`; accounts name theirs with `pool` (`docs/shaping.md`).
    pub pools: Vec<herald_engine::shaping::pools::PoolSpec>,
    /// Click, open and unsubscribe tracking: the tracking server and its keys.
    pub tracking: Tracking,
    /// Message bodies stored once per request: placement, cache, retention, fan-out limit.
    pub bodies: Bodies,
    /// Webhook endpoints: delivery, retries, the guard against internal targets.
    pub webhooks: Webhooks,
    /// Bounce reports by email: intervals, the From address.
    pub reports: Reports,
    /// Operators: the admin API, how accounts propagate.
    pub admin: Admin,
    /// Master keys sealing sender-domain private keys in the log (ADR 0017).
    pub keys: Keys,
}

/// `[admin]`: operator keys of `/v1/admin`, and how quickly account changes reach every node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Operator keys: `NAME=KEY` (the key in clear, at least 16 characters) or
    /// `NAME=sha256:HEX` (its SHA-256, as `herald keys hash` prints). From the environment:
    /// `HERALD__ADMIN__OPERATOR_KEYS='["ops=…"]'`. Empty: no admin API.
    pub operator_keys: Vec<String>,
    /// How often each node looks for account changes made on other nodes, in milliseconds
    /// (changes made on this node are seen at once).
    pub accounts_refresh_ms: u64,
}

impl Default for Admin {
    fn default() -> Self {
        Admin { operator_keys: vec![], accounts_refresh_ms: 1000 }
    }
}

/// `[tracking]`: the tracking server and the links it answers (`docs/config.md#tracking`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tracking {
    /// Track clicks, opens and unsubscriptions when messages ask; `false` ignores those
    /// options (CSS inlining still happens) and runs no tracking server.
    pub enabled: bool,
    /// Address of the tracking server (it answers for any Host).
    pub listen: SocketAddr,
    /// Host of tracking links when the From domain is not a verified sender domain of the
    /// message's account (otherwise `<tracking_label>.<domain>`).
    pub default_host: String,
    /// `https` (default) or `http` (tests, or TLS terminated before Herald).
    pub scheme: String,
    /// PEM certificate chain (a wildcard for `*.track.<zone>` and `default_host`); with `tls_key`
    /// the listener speaks TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Rewrite links in `text/plain` parts too.
    pub rewrite_text: bool,
    /// Signing keys of tracking tokens; empty: one is made and kept in `<data_dir>/tracking.key`
    /// (single node only: every node must share the keys).
    pub keys: Vec<TrackingKey>,
    /// The key that signs new tokens (default: the first). Rotate by adding the new key on
    /// every node, then making it the signing key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
    /// Clicks within this many seconds of the delivery attempt are taken for machines.
    pub min_click_secs: u64,
    /// Proxies (networks) whose `X-Forwarded-For` gives the client address.
    pub trusted_proxies: Vec<String>,
    /// Opens and clicks queued for the log at most (more are counted as dropped).
    pub queue: usize,
    /// Megabytes of prepared (rewritten) bodies kept by each delivering node.
    pub body_cache_mb: usize,
}

impl Default for Tracking {
    fn default() -> Self {
        Tracking {
            enabled: true,
            listen: "127.0.0.1:8081".parse().expect("valid"),
            default_host: "localhost:8081".into(),
            scheme: "https".into(),
            tls_cert: None,
            tls_key: None,
            rewrite_text: false,
            keys: vec![],
            signing_key: None,
            min_click_secs: 3,
            trusted_proxies: vec![],
            queue: 65_536,
            body_cache_mb: 64,
        }
    }
}

/// A tracking-token key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingKey {
    /// 1-16 characters of `A-Z a-z 0-9 _ -`; carried in every token.
    pub id: String,
    /// Base64 of at least 32 random bytes (`openssl rand -base64 32`).
    pub secret: String,
}

/// `[bodies]`: how message bodies travel (see `docs/adr/0007-bodies-stored-once.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bodies {
    /// A request whose body × recipients is below this keeps the body inside every
    /// recipient's event; above it (and always from 2 recipients up, when larger) the body is
    /// stored once on `<prefix>.bodies`. Single-recipient messages are always inline.
    pub inline_below_bytes: u64,
    /// Memory for stored bodies on the delivery side, in MiB (per node).
    pub cache_mb: u64,
    /// Stored bodies are kept `delivery.max_age_secs` plus this long (and at least
    /// `backend.log_retention_hours`), so a retry that runs late still finds its body.
    pub retention_margin_hours: u64,
    /// Most bytes one request may ask to send: body × recipients (more: REST 422
    /// `fanout_too_large`, SMTP 552 5.3.4).
    pub max_fanout_bytes: u64,
}

impl Default for Bodies {
    fn default() -> Self {
        Bodies { inline_below_bytes: 64 * 1024, cache_mb: 64, retention_margin_hours: 24, max_fanout_bytes: 4 << 30 }
    }
}

/// `[shaping]`: the provider limits' timing (the limits themselves are in the providers
/// file, `[delivery] providers_file`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shaping {
    /// Longest a message waits in memory for its provider's rate or connections before it
    /// is set aside (back through the held topic or a retry tier, without using up an
    /// attempt).
    pub queue_wait_ms: u64,
    /// Delay of the held topic: the shortest time a message set aside stays away.
    pub hold_secs: u64,
    /// How often each node reports its usage on the shaping topic and recomputes its share
    /// of the cluster-wide limits.
    pub report_interval_ms: u64,
    /// Keys for `Authorization: Bearer <key>` on the operators' routes
    /// (`/v1/admin/providers`, `/v1/admin/pools`); empty: those routes answer 401.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operator_keys: Vec<String>,
}

impl Default for Shaping {
    fn default() -> Self {
        Shaping { queue_wait_ms: 2000, hold_secs: 5, report_interval_ms: 1000, operator_keys: vec![] }
    }
}

/// `[dns]`: the service zone customers' CNAMEs point into (see `docs/sender-domains.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// Run the authoritative DNS server for `zone`.
    pub enabled: bool,
    /// Herald's service zone, delegated to Herald's name servers.
    pub zone: String,
    /// UDP and TCP address of the DNS server.
    pub listen: SocketAddr,
    /// NS names of the zone (default `ns1.<zone>`).
    pub nameservers: Vec<String>,
    /// Addresses served for in-zone name servers such as `ns1.<zone>`.
    pub nameserver_ips: Vec<IpAddr>,
    /// SOA contact, as a mailbox or a name (`hostmaster.<zone>` by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostmaster: Option<String>,
    /// Addresses Herald sends from: listed in `_spf.<zone>` and checked for reverse DNS.
    pub sending_ips: Vec<IpAddr>,
    /// Addresses of the bounce MX `mx.<zone>` (default: `sending_ips`).
    pub mx_ips: Vec<IpAddr>,
    /// Addresses of the click and open tracking server (`<token>.track.<zone>`).
    pub tracking_ips: Vec<IpAddr>,
    /// TTL of the zone's records, in seconds.
    pub ttl: u32,
    /// Resolvers (`ip` or `ip:port`) for verification and diagnostics; empty: the system's.
    pub resolvers: Vec<String>,
    /// Timeout of one DNS query during verification, in milliseconds.
    pub resolver_timeout_ms: u64,
    /// How often the zone is rebuilt from the shared store (changes made on this node
    /// are picked up at once), in milliseconds.
    pub refresh_ms: u64,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            enabled: false,
            zone: "herald.localhost".into(),
            listen: "127.0.0.1:5300".parse().expect("valid"),
            nameservers: vec![],
            nameserver_ips: vec![],
            hostmaster: None,
            sending_ips: vec![],
            mx_ips: vec![],
            tracking_ips: vec![],
            ttl: 300,
            resolvers: vec![],
            resolver_timeout_ms: 3000,
            refresh_ms: 2000,
        }
    }
}

/// `[domains]`: sender domains' key rotation, verification and defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Domains {
    /// Time between key rotations, in seconds (30 days); 0: manual rotations only.
    pub rotation_interval_secs: u64,
    /// How long new keys are published before they sign, in seconds.
    pub propagation_delay_secs: u64,
    /// How long old keys stay published after signing moved on, in seconds.
    pub grace_secs: u64,
    /// Give new domains an Ed25519 key beside RSA-2048 (two signatures per message).
    pub ed25519: bool,
    /// Label of the bounce (return-path) domain: `bounce` → `bounce.<domain>`.
    pub bounce_label: String,
    /// Default label of the tracking domain (renameable per domain).
    pub tracking_label: String,
    /// How often the periodic task looks for due rotations and re-checks, in seconds.
    pub maintenance_interval_secs: u64,
    /// How often each domain's DNS is verified again, in seconds.
    pub reverify_secs: u64,
}

impl Default for Domains {
    fn default() -> Self {
        Domains {
            rotation_interval_secs: 30 * 86_400,
            propagation_delay_secs: 86_400,
            grace_secs: 7 * 86_400,
            ed25519: false,
            bounce_label: "bounce".into(),
            tracking_label: "clicks".into(),
            maintenance_interval_secs: 60,
            reverify_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Directory of the embedded log and store (created if missing).
    pub data_dir: PathBuf,
    /// Memory for the embedded log's page cache (redb), in MiB.
    pub log_cache_mb: u64,
    /// Memory for the embedded projection store's page cache (redb), in MiB.
    pub store_cache_mb: u64,
    /// Compact the embedded log's file after this many seconds without writes, when a
    /// quarter or more of it is free (space freed by retention goes back to the disk);
    /// 0: never.
    pub compact_idle_secs: u64,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            data_dir: PathBuf::from("./herald-data"),
            log_cache_mb: 64,
            store_cache_mb: 64,
            compact_idle_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Address of the REST API and `/metrics`.
    pub listen: SocketAddr,
    /// Largest MIME body accepted by `POST /v1/send`, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Most recipients in one `POST /v1/send` (more: 422 too_many_recipients).
    pub max_recipients: usize,
    /// Serve the web dashboard at `/ui` (`docs/dashboard.md`); it only calls this API.
    pub dashboard: bool,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: "127.0.0.1:8080".parse().expect("valid"),
            max_body_bytes: 25 * 1024 * 1024,
            max_recipients: 1000,
            dashboard: true,
        }
    }
}

/// The SMTP submission server and smart host (`docs/smtp.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Smtp {
    /// Run the SMTP listener(s).
    pub enabled: bool,
    /// Address of the SMTP listener (STARTTLS offered).
    pub listen: SocketAddr,
    /// Optional implicit-TLS listener (submissions, port 465).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub implicit_tls_listen: Option<SocketAddr>,
    /// Name in the greeting, EHLO reply, `Received:` and generated `Message-ID:`.
    pub hostname: String,
    /// PEM certificate chain; with `tls_key`. Unset: a self-signed one kept in `data_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Offer and accept AUTH without TLS (otherwise 538 5.7.11).
    pub allow_plaintext_auth: bool,
    /// Largest message, advertised in SIZE (larger: 552 5.3.4).
    pub max_message_bytes: usize,
    /// Recipients per message (more: 452 4.5.3).
    pub max_recipients: usize,
    /// Wait for each command (RFC 5321 §4.5.3.2: 5 minutes); then 421 4.4.2.
    pub command_timeout_secs: u64,
    /// Wait for each block of message data (RFC 5321: 3 minutes at least; 10 here).
    pub data_timeout_secs: u64,
    /// Concurrent connections in total (more: 421 4.7.0).
    pub max_connections: usize,
    /// Concurrent connections per client IP (more: 421 4.7.0).
    pub max_connections_per_ip: usize,
    /// Messages per second per account over SMTP (0: unlimited; more: 451 4.7.1).
    pub account_messages_per_second: u32,
    /// Burst allowed above that rate (0: equal to the rate).
    pub account_burst: u32,
    /// Delay before answering a failed AUTH, in milliseconds.
    pub auth_failure_delay_ms: u64,
    /// Failed AUTH attempts per client IP before it is disconnected and refused (421 4.7.0).
    pub max_auth_failures: u32,
    /// How long failures count against a client IP, in seconds.
    pub auth_lockout_secs: u64,
    /// Error replies (5xx) a session may get before it is answered 421 4.7.0 and closed
    /// (Postfix's `smtpd_hard_error_limit`); 0: no limit.
    pub max_errors: u32,
}

impl Default for Smtp {
    fn default() -> Self {
        Smtp {
            enabled: true,
            listen: "127.0.0.1:2525".parse().expect("valid"),
            implicit_tls_listen: None,
            hostname: "localhost.localdomain".into(),
            tls_cert: None,
            tls_key: None,
            allow_plaintext_auth: false,
            max_message_bytes: 25 * 1024 * 1024,
            max_recipients: 1000,
            command_timeout_secs: 300,
            data_timeout_secs: 600,
            max_connections: 1000,
            max_connections_per_ip: 100,
            account_messages_per_second: 0,
            account_burst: 0,
            auth_failure_delay_ms: 1000,
            max_auth_failures: 5,
            auth_lockout_secs: 600,
            max_errors: 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Name servers (`ip` or `ip:port`) for MX and address look-ups; empty: the system's.
    pub dns_servers: Vec<String>,
    /// Port used to reach every MX (25; tests point it at a sink).
    pub mx_port: u16,
    /// Name announced in EHLO; should have forward-confirmed reverse DNS.
    pub helo_name: String,
    pub connect_timeout_secs: u64,
    /// Timeout of each SMTP command (RFC 5321 §4.5.3.2 suggests 5 minutes).
    pub command_timeout_secs: u64,
    /// Concurrent deliveries per recipient domain on this node.
    pub domain_concurrency: usize,
    /// Attempts in flight per partition (and records read ahead). Each finished attempt is
    /// committed at once, so this bounds the attempts made again after a crash.
    pub batch_size: usize,
    /// At a stop (or when a partition moves to another node) attempts in flight get this
    /// long to finish; the rest are aborted and made again by the next owner.
    pub drain_secs: u64,
    /// Delay before the second attempt; each later attempt doubles it.
    pub retry_initial_secs: u64,
    /// Longest delay between attempts.
    pub retry_max_delay_secs: u64,
    /// A message still undelivered this long after acceptance fails (Postfix: 5 days).
    pub max_age_secs: u64,
    /// Domains spread over several partitions: `{ "gmail.com" = 8 }`.
    pub hot_domains: BTreeMap<String, u32>,
    /// The operator's providers file: extends the shipped `ops/config/providers.toml`
    /// (built in), or replaces it when it says `replace_shipped = true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers_file: Option<PathBuf>,
    /// A suspended account's queued message waits this long before the worker looks at it
    /// again, in seconds (rounded down to a retry tier's delay; no attempt is used up).
    pub suspended_hold_secs: u64,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            dns_servers: vec![],
            mx_port: 25,
            helo_name: "localhost.localdomain".into(),
            connect_timeout_secs: 30,
            command_timeout_secs: 300,
            domain_concurrency: 20,
            batch_size: 256,
            drain_secs: 20,
            retry_initial_secs: 60,
            retry_max_delay_secs: 4 * 3600,
            max_age_secs: 5 * 86_400,
            hot_domains: BTreeMap::new(),
            providers_file: None,
            suspended_hold_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogBackend {
    Embedded,
    Kafka,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Embedded,
    Cql,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backend {
    /// `embedded` (default) or `kafka`.
    pub log: LogBackend,
    /// `embedded` (default) or `cql` (ScyllaDB or Cassandra).
    pub store: StoreBackend,
    pub kafka_brokers: String,
    /// Replication factor of topics Herald creates; existing topics must have at least this
    /// many replicas. Below 3 only with `kafka_allow_weak_durability`.
    pub kafka_replication: i32,
    /// `min.insync.replicas` of topics Herald creates (with `acks=all`, an append is
    /// acknowledged once this many replicas have it). Below 2 only with
    /// `kafka_allow_weak_durability`.
    pub kafka_min_insync_replicas: i32,
    /// The explicit development setting: allow replication below 3 and
    /// `min.insync.replicas` below 2 (a single test broker). Never in production.
    pub kafka_allow_weak_durability: bool,
    /// Consumer group session timeout: a node that dies keeps its partitions this long
    /// before the group moves them (failover time).
    pub kafka_session_timeout_ms: u64,
    /// Records prefetched per assigned partition, in KiB (librdkafka's
    /// `queued.max.messages.kbytes`, which applies per partition with Herald's queues).
    pub kafka_prefetch_kib: u32,
    /// librdkafka properties for every Kafka client Herald opens (TLS, SASL:
    /// `"security.protocol" = "sasl_ssl"`, `"sasl.mechanisms"`, `"ssl.ca.location"`, ...).
    /// Properties Herald's guarantees rest on are refused (`docs/config.md`).
    pub kafka_options: BTreeMap<String, KafkaProperty>,
    /// Least time between two commits of a busy partition, in milliseconds (each commit
    /// that carries records is a Kafka transaction). Longer: fewer transactions, more
    /// work redone after a crash. 0 commits whenever a chunk finishes.
    pub kafka_commit_interval_ms: u64,
    /// librdkafka properties for Herald's producers only (`"linger.ms"`, `"batch.size"`, ...).
    pub kafka_producer_options: BTreeMap<String, KafkaProperty>,
    /// librdkafka properties for Herald's group consumers only (`"fetch.min.bytes"`,
    /// `"fetch.wait.max.ms"`, ...).
    pub kafka_consumer_options: BTreeMap<String, KafkaProperty>,
    pub cql_nodes: Vec<String>,
    pub cql_keyspace: String,
    /// Partitions of every topic. Changing it re-routes domains: drain first.
    pub partitions: u32,
    /// Topic names start with this (`<prefix>.messages`, ...).
    pub topic_prefix: String,
    /// Log records are kept this long (and on the embedded log, until every consumer group
    /// is past them); 0 keeps them for ever. Set as `retention.ms` on Kafka topics Herald
    /// creates. Must cover `delivery.max_age_secs`.
    pub log_retention_hours: u64,
}

/// A librdkafka property's value: TOML strings, integers, floats and booleans are all
/// passed to librdkafka as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "expected a string, an integer, a float or a boolean as a librdkafka property's value")]
pub enum KafkaProperty {
    Text(String),
    Integer(i64),
    Float(f64),
    Flag(bool),
}

impl std::fmt::Display for KafkaProperty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KafkaProperty::Text(s) => f.write_str(s),
            KafkaProperty::Integer(n) => write!(f, "{n}"),
            KafkaProperty::Float(x) => write!(f, "{x}"),
            KafkaProperty::Flag(b) => write!(f, "{b}"),
        }
    }
}

impl Backend {
    /// The operator's librdkafka properties, as the Kafka log takes them.
    pub fn kafka_client_options(&self) -> herald_engine::log::kafka::ClientOptions {
        let list =
            |m: &BTreeMap<String, KafkaProperty>| m.iter().map(|(k, v)| (k.trim().to_owned(), v.to_string())).collect();
        herald_engine::log::kafka::ClientOptions {
            common: list(&self.kafka_options),
            producer: list(&self.kafka_producer_options),
            consumer: list(&self.kafka_consumer_options),
        }
    }
}

impl Default for Backend {
    fn default() -> Self {
        Backend {
            log: LogBackend::Embedded,
            store: StoreBackend::Embedded,
            kafka_brokers: "127.0.0.1:9092".into(),
            kafka_replication: 3,
            kafka_min_insync_replicas: 2,
            kafka_allow_weak_durability: false,
            kafka_session_timeout_ms: 10_000,
            kafka_prefetch_kib: 4096,
            kafka_options: BTreeMap::new(),
            kafka_commit_interval_ms: herald_engine::log::kafka::DEFAULT_COMMIT_INTERVAL.as_millis() as u64,
            kafka_producer_options: BTreeMap::new(),
            kafka_consumer_options: BTreeMap::new(),
            cql_nodes: vec!["127.0.0.1:9042".into()],
            cql_keyspace: "herald".into(),
            partitions: 16,
            topic_prefix: "herald".into(),
            log_retention_hours: 168,
        }
    }
}

/// How partitions are shared between nodes, and which components this node runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// `group` (default): nodes join Kafka consumer groups and partitions move between
    /// them as they join and leave, with no config change. `static`: node `node_index` of
    /// `node_count` works partitions `p` with `p % node_count == node_index`, with no
    /// rebalancing (a dead node's partitions wait for it). The embedded backends are one
    /// node, which owns every partition, in either mode.
    pub mode: ClusterMode,
    /// Static mode only.
    pub node_index: u32,
    /// Static mode only.
    pub node_count: u32,
    /// The components this node runs (all of them by default).
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMode {
    Group,
    Static,
}

/// A component of `herald serve`. The HTTP API (`POST /v1/send`, queries, metrics) runs on
/// every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The SMTP listeners.
    Smtp,
    /// Delivery workers for the owned partitions.
    Deliver,
    /// The projector for the owned partitions.
    Project,
    /// The bounce MX (`[bounces] listen`).
    Bounces,
    /// The click, open and unsubscribe tracking server.
    Track,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            mode: ClusterMode::Group,
            node_index: 0,
            node_count: 1,
            roles: vec![Role::Smtp, Role::Deliver, Role::Project, Role::Bounces, Role::Track],
        }
    }
}

impl Cluster {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// An `[[accounts]]` entry: an account defined by the config (bootstrap). The admin API can
/// change it afterwards; what the API changed wins (`docs/adr/0014-accounts-as-events.md`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// 1-64 of `a-z 0-9 . _ -`.
    pub id: String,
    /// A name for people (default: the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The `[[pools]]` this account sends from; unset: the default pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Messages (one per recipient) in any 24 hours; unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_day: Option<u64>,
    /// Messages (one per recipient) per second, per node; unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_second: Option<u32>,
    /// Where reports for the account go (the bounce and complaint digest, `[reports]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_email: Option<String>,
    /// Seconds per bounce report (`[reports] min_interval_secs` to `max_interval_secs`);
    /// unset: `[reports] interval_secs` (hourly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_interval_secs: Option<u32>,
    /// Options of messages that do not set them (REST fields, `X-Herald-Options`).
    #[serde(default)]
    pub defaults: AccountDefaults,
    /// Keys for `Authorization: Bearer <key>`.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// SMTP AUTH users of this account (`herald accounts hash-password` makes the hash).
    #[serde(default)]
    pub smtp_users: Vec<SmtpUser>,
    /// Smart-host mode: clients from these networks (`10.1.2.0/24`, or one address) may
    /// send over SMTP without AUTH, as this account.
    #[serde(default)]
    pub relay_networks: Vec<String>,
    /// From domains this account may send from: `verified` (its verified sender domains and
    /// their subdomains, and the domains of static `[[dkim]]` keys that name it) or `any`
    /// (also domains nobody has verified; another account's domain is always refused).
    /// Unset: `any` for an account that a static `[[dkim]]` key names, else `verified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_domains: Option<FromDomains>,
}

/// `[accounts.defaults]`: the account's default send options, named as in `POST /v1/send`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountDefaults {
    pub inlinizecss: bool,
    pub clicktracking: bool,
    pub openstracking: bool,
    pub bouncetracking: bool,
    pub listunsubscribe: bool,
}

impl AccountDefaults {
    pub fn to_schema(self) -> herald_schemas::AccountDefaults {
        herald_schemas::AccountDefaults {
            inline_css: self.inlinizecss,
            click_tracking: self.clicktracking,
            opens_tracking: self.openstracking,
            bounce_tracking: self.bouncetracking,
            list_unsubscribe: self.listunsubscribe,
        }
    }

    pub fn options(self) -> herald_schemas::SendOptions {
        herald_schemas::SendOptions {
            inline_css: self.inlinizecss,
            click_tracking: self.clicktracking,
            opens_tracking: self.openstracking,
            bounce_tracking: self.bouncetracking,
            list_unsubscribe: self.listunsubscribe,
        }
    }
}

/// An account's From-domain policy (`accounts.from_domains`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FromDomains {
    Verified,
    Any,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpUser {
    /// The AUTH user name; unique over all accounts.
    pub username: String,
    /// Argon2 PHC string (`$argon2id$...`).
    pub password_hash: String,
}

/// A relay network as an `IpNet` (a bare address is a /32 or /128).
pub fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("relay_networks: `{s}` is not a network (10.1.2.0/24) or an address"))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    /// PKCS#8 PEM file, RSA or Ed25519; the algorithm follows the key. Relative paths are
    /// resolved from the config file's directory.
    pub private_key: PathBuf,
    /// The accounts this key signs for (ids from `[[accounts]]`); they may send From the
    /// domain and its subdomains, and no other account may.
    pub accounts: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("environment override {var}: {problem}")]
    Env { var: String, problem: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// The source pools, with each account's (checked: every named pool exists).
    pub fn pools(&self) -> Result<herald_engine::shaping::pools::Pools, String> {
        let accounts: Vec<_> =
            self.accounts.iter().map(|a| (herald_schemas::AccountId(a.id.clone()), a.pool.clone())).collect();
        herald_engine::shaping::pools::Pools::new(&self.pools, &self.delivery.helo_name, &accounts)
            .map_err(|e| format!("[[pools]]: {e}"))
    }

    /// The shipped providers file, extended or replaced by `[delivery] providers_file`.
    pub fn providers(&self) -> Result<herald_engine::shaping::providers::Providers, ConfigError> {
        use herald_engine::shaping::providers::{Providers, SHIPPED};
        let own = match &self.delivery.providers_file {
            Some(path) => Some((
                path.display().to_string(),
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?,
            )),
            None => None,
        };
        Providers::load(SHIPPED, own.as_ref().map(|(n, t)| (n.as_str(), t.as_str())))
            .map_err(|e| ConfigError::Invalid(format!("providers file: {e}")))
    }

    /// Reads `path` (or the defaults when `None`), applies environment overrides, checks.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.into(), source })?,
            None => String::new(),
        };
        let shown = path.map(Path::to_path_buf).unwrap_or_else(|| "<defaults>".into());
        let mut tree: toml::Table =
            toml::from_str(&text).map_err(|source| ConfigError::Parse { path: shown.clone(), source })?;
        apply_env(&mut tree, std::env::vars())?;
        let mut config: Config =
            toml::Value::Table(tree).try_into().map_err(|source| ConfigError::Parse { path: shown, source })?;
        if let Some(dir) = path.and_then(Path::parent) {
            let b = &mut config.bounces;
            for p in [
                &mut config.smtp.tls_cert,
                &mut config.smtp.tls_key,
                &mut b.tls_cert,
                &mut b.tls_key,
                &mut b.rules_file,
            ]
            .into_iter()
            .flatten()
            {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
            for p in [&mut config.tracking.tls_cert, &mut config.tracking.tls_key].into_iter().flatten() {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
            for key in &mut config.dkim {
                if key.private_key.is_relative() {
                    key.private_key = dir.join(&key.private_key);
                }
            }
            if let Some(p) = &mut config.keys.master_key_file {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
            if let Some(p) = &mut config.delivery.providers_file {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
        }
        config.validate()?;
        config.providers()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        self.webhooks.validate().map_err(ConfigError::Invalid)?;
        self.reports.validate().map_err(ConfigError::Invalid)?;
        if self.backend.partitions == 0 {
            return invalid("backend.partitions must be at least 1".into());
        }
        if self.cluster.node_count == 0 || self.cluster.node_index >= self.cluster.node_count {
            return invalid(format!(
                "cluster.node_index {} must be below node_count {}",
                self.cluster.node_index, self.cluster.node_count
            ));
        }
        if self.cluster.node_count > 1
            && (self.backend.log == LogBackend::Embedded || self.backend.store == StoreBackend::Embedded)
        {
            return invalid("cluster.node_count > 1 needs backend.log = \"kafka\" and backend.store = \"cql\": embedded storage is one node's".into());
        }
        let mut ids = std::collections::HashSet::new();
        for a in &self.accounts {
            herald_engine::accounts::service::check_id(&a.id)
                .map_err(|e| ConfigError::Invalid(format!("[[accounts]]: {e}")))?;
            if !ids.insert(&a.id) {
                return invalid(format!("[[accounts]]: account {} is listed twice", a.id));
            }
            herald_engine::accounts::service::check_settings(&self.account_settings(a))
                .map_err(|e| ConfigError::Invalid(format!("account {}: {e}", a.id)))?;
            let (min, max) = (self.reports.min_interval_secs, self.reports.max_interval_secs);
            if a.report_interval_secs.is_some_and(|s| s < min || s > max) {
                return invalid(format!("account {}: report_interval_secs must be between {min} and {max}", a.id));
            }
        }
        crate::serve::operators(self).map_err(ConfigError::Invalid)?;
        if self.admin.accounts_refresh_ms == 0 {
            return invalid("admin.accounts_refresh_ms must be at least 1".into());
        }
        if self.cluster.mode == ClusterMode::Group && (self.cluster.node_count != 1 || self.cluster.node_index != 0) {
            return invalid(
                "cluster.node_index/node_count are for cluster.mode = \"static\"; in group mode nodes share partitions through Kafka consumer groups".into(),
            );
        }
        if self.backend.log == LogBackend::Kafka && !self.backend.kafka_allow_weak_durability {
            if self.backend.kafka_replication < 3 {
                return invalid(format!(
                    "backend.kafka_replication = {} is below 3: an acknowledged message could be lost with one broker; set backend.kafka_allow_weak_durability = true only for development",
                    self.backend.kafka_replication
                ));
            }
            if self.backend.kafka_min_insync_replicas < 2 {
                return invalid(format!(
                    "backend.kafka_min_insync_replicas = {} is below 2: acks=all would then mean one replica; set backend.kafka_allow_weak_durability = true only for development",
                    self.backend.kafka_min_insync_replicas
                ));
            }
        }
        if self.backend.kafka_min_insync_replicas > self.backend.kafka_replication {
            return invalid("backend.kafka_min_insync_replicas cannot exceed backend.kafka_replication".into());
        }
        self.backend.kafka_client_options().check().map_err(|e| ConfigError::Invalid(format!("backend: {e}")))?;
        if self.backend.kafka_commit_interval_ms > 60_000 {
            return invalid("backend.kafka_commit_interval_ms must be at most 60000 (one minute)".into());
        }
        if self.backend.kafka_session_timeout_ms < 1000 {
            return invalid("backend.kafka_session_timeout_ms must be at least 1000".into());
        }
        let mut keys = std::collections::HashSet::new();
        for k in &self.shaping.operator_keys {
            if k.trim().len() < 16 {
                return invalid("shaping.operator_keys: each key must have at least 16 characters".into());
            }
            keys.insert(k);
        }
        for a in &self.accounts {
            for k in &a.api_keys {
                if !keys.insert(k) {
                    return invalid(format!(
                        "API key of account {} is also another account's or an operator key",
                        a.id
                    ));
                }
            }
        }
        let mut users = std::collections::HashSet::new();
        for a in &self.accounts {
            for u in &a.smtp_users {
                if !users.insert(&u.username) {
                    return invalid(format!("SMTP user {} of account {} is also another account's", u.username, a.id));
                }
                if argon2::PasswordHash::new(&u.password_hash).is_err() {
                    return invalid(format!(
                        "SMTP user {} of account {}: password_hash is not a PHC string",
                        u.username, a.id
                    ));
                }
            }
            for n in &a.relay_networks {
                parse_network(n).map_err(|e| ConfigError::Invalid(format!("account {}: {e}", a.id)))?;
            }
        }
        let ids: std::collections::HashSet<&str> = self.accounts.iter().map(|a| a.id.as_str()).collect();
        for k in &self.dkim {
            if k.accounts.is_empty() {
                return invalid(format!(
                    "[[dkim]] key {} of {}: `accounts` must name the accounts it signs for",
                    k.selector, k.domain
                ));
            }
            if let Some(unknown) = k.accounts.iter().find(|a| !ids.contains(a.as_str())) {
                return invalid(format!("[[dkim]] key {} of {}: no account `{unknown}`", k.selector, k.domain));
            }
            let mut others = self.dkim.iter().filter(|o| o.domain.eq_ignore_ascii_case(&k.domain));
            if others.any(|o| o.accounts != k.accounts) {
                return invalid(format!("[[dkim]] keys of {} must name the same accounts", k.domain));
            }
        }
        if self.smtp.tls_cert.is_some() != self.smtp.tls_key.is_some() {
            return invalid("smtp.tls_cert and smtp.tls_key go together".into());
        }
        if self.smtp.max_recipients == 0 || self.smtp.max_connections == 0 || self.smtp.max_connections_per_ip == 0 {
            return invalid(
                "smtp.max_recipients, max_connections and max_connections_per_ip must be at least 1".into(),
            );
        }
        if self.delivery.batch_size == 0 || self.delivery.domain_concurrency == 0 {
            return invalid("delivery.batch_size and delivery.domain_concurrency must be at least 1".into());
        }
        if self.storage.log_cache_mb == 0 || self.storage.store_cache_mb == 0 {
            return invalid("storage.log_cache_mb and storage.store_cache_mb must be at least 1".into());
        }
        self.pools().map_err(ConfigError::Invalid)?;
        if self.shaping.hold_secs == 0 || self.shaping.report_interval_ms < 100 {
            return invalid("shaping.hold_secs must be at least 1 and shaping.report_interval_ms at least 100".into());
        }
        if self.delivery.retry_initial_secs == 0 {
            return invalid("delivery.retry_initial_secs must be at least 1".into());
        }
        let retention = self.backend.log_retention_hours.saturating_mul(3600);
        if retention != 0 && retention < self.delivery.max_age_secs {
            return invalid(format!(
                "backend.log_retention_hours ({}) must cover delivery.max_age_secs ({}): a queued message must not expire from the log",
                self.backend.log_retention_hours, self.delivery.max_age_secs
            ));
        }
        for s in &self.delivery.dns_servers {
            parse_dns_server(s).map_err(ConfigError::Invalid)?;
        }
        for s in &self.dns.resolvers {
            parse_dns_server(s)
                .map_err(|e| ConfigError::Invalid(e.replace("delivery.dns_servers", "dns.resolvers")))?;
        }
        let zone = self.dns.zone.trim_end_matches('.');
        if zone.is_empty() || zone.split('.').any(|l| l.is_empty() || l.len() > 63) {
            return invalid(format!("dns.zone `{}` is not a domain name", self.dns.zone));
        }
        self.bounces.validate().map_err(ConfigError::Invalid)?;
        self.validate_tracking()?;
        if self.domains.maintenance_interval_secs == 0 {
            return invalid("domains.maintenance_interval_secs must be at least 1".into());
        }
        if self.domains.rotation_interval_secs != 0
            && self.domains.rotation_interval_secs <= self.domains.propagation_delay_secs
        {
            return invalid("domains.rotation_interval_secs must be longer than propagation_delay_secs".into());
        }
        Ok(())
    }

    fn validate_tracking(&self) -> Result<(), ConfigError> {
        let t = &self.tracking;
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if t.scheme != "https" && t.scheme != "http" {
            return invalid(format!("tracking.scheme must be https or http, not `{}`", t.scheme));
        }
        if t.default_host.is_empty() || t.default_host.contains(['/', ' ', '?', '#', '@']) {
            return invalid(format!("tracking.default_host `{}` is not a host[:port]", t.default_host));
        }
        if t.tls_cert.is_some() != t.tls_key.is_some() {
            return invalid("tracking.tls_cert and tracking.tls_key go together".into());
        }
        for n in &t.trusted_proxies {
            parse_network(n)
                .map_err(|e| ConfigError::Invalid(e.replace("relay_networks", "tracking.trusted_proxies")))?;
        }
        if t.enabled && t.keys.is_empty() && (self.cluster.node_count > 1 || self.backend.log == LogBackend::Kafka) {
            return invalid(
                "tracking.keys must be set with log = \"kafka\" (several nodes): every node must verify every \
                 token (or set tracking.enabled = false)"
                    .into(),
            );
        }
        self.tracking_keys().map(|_| ())
    }

    /// The configured tracking keys, decoded and checked (`None`: none configured).
    pub fn tracking_keys(&self) -> Result<Option<herald_engine::rewrite::token::Keys>, ConfigError> {
        use base64::Engine;
        if self.tracking.keys.is_empty() {
            return Ok(None);
        }
        let mut keys = Vec::new();
        for k in &self.tracking.keys {
            let secret = base64::engine::general_purpose::STANDARD
                .decode(k.secret.trim())
                .map_err(|e| ConfigError::Invalid(format!("tracking key `{}`: secret is not base64: {e}", k.id)))?;
            keys.push((k.id.clone(), secret));
        }
        herald_engine::rewrite::token::Keys::new(&keys, self.tracking.signing_key.as_deref())
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("tracking: {e}")))
    }

    /// The verification resolvers as socket addresses (port 53 when none is given).
    pub fn resolvers(&self) -> Vec<SocketAddr> {
        self.dns.resolvers.iter().filter_map(|s| parse_dns_server(s).ok()).collect()
    }

    /// The settings of a config account, as the account model holds them.
    pub fn account_settings(&self, a: &Account) -> herald_schemas::AccountSettings {
        herald_schemas::AccountSettings {
            name: a.name.clone().unwrap_or_else(|| a.id.clone()),
            pool: a.pool.clone(),
            defaults: a.defaults.to_schema(),
            limits: herald_schemas::AccountLimits {
                messages_per_day: a.messages_per_day,
                messages_per_second: a.messages_per_second,
            },
            from_domains: match a.from_domains {
                None => herald_schemas::FromDomainsPolicy::Default,
                Some(FromDomains::Verified) => herald_schemas::FromDomainsPolicy::Verified,
                Some(FromDomains::Any) => herald_schemas::FromDomainsPolicy::Any,
            },
            report_email: a.report_email.clone(),
            relay_networks: a.relay_networks.clone(),
        }
    }

    /// The config's accounts, as the account directory takes them.
    pub fn bootstrap(&self) -> Vec<herald_engine::accounts::Bootstrap> {
        self.accounts
            .iter()
            .map(|a| herald_engine::accounts::Bootstrap {
                id: herald_schemas::AccountId(a.id.clone()),
                settings: self.account_settings(a),
                api_keys: a.api_keys.clone(),
                smtp_users: a.smtp_users.iter().map(|u| (u.username.clone(), u.password_hash.clone())).collect(),
                report_interval_secs: a.report_interval_secs,
            })
            .collect()
    }

    /// The From-domain policy of `account` (see [`Account::from_domains`]).
    pub fn from_domains(&self, account: &Account) -> FromDomains {
        account.from_domains.unwrap_or_else(|| {
            if self.dkim.iter().any(|k| k.accounts.contains(&account.id)) {
                FromDomains::Any
            } else {
                FromDomains::Verified
            }
        })
    }

    /// The name servers as socket addresses (port 53 when none is given).
    pub fn dns_servers(&self) -> Vec<SocketAddr> {
        self.delivery.dns_servers.iter().filter_map(|s| parse_dns_server(s).ok()).collect()
    }
}

fn parse_dns_server(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("delivery.dns_servers: `{s}` is not ip or ip:port"))
}

/// Applies `HERALD__A__B=value` overrides to the TOML tree.
pub fn apply_env(tree: &mut toml::Table, vars: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
    for (var, raw) in vars {
        let Some(path) = var.strip_prefix("HERALD__") else { continue };
        let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw.clone()));
        let (last, parents) =
            keys.split_last().ok_or_else(|| ConfigError::Env { var: var.clone(), problem: "empty".into() })?;
        let mut node = &mut *tree;
        for k in parents {
            let entry = node.entry(k.clone()).or_insert_with(|| toml::Value::Table(Default::default()));
            node = entry
                .as_table_mut()
                .ok_or_else(|| ConfigError::Env { var: var.clone(), problem: format!("`{k}` is not a section") })?;
        }
        node.insert(last.clone(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_env_overrides() {
        let text = toml::to_string(&Config::default()).unwrap();
        let mut tree: toml::Table = toml::from_str(&text).unwrap();
        apply_env(
            &mut tree,
            vec![
                ("HERALD__DELIVERY__MX_PORT".to_owned(), "2526".to_owned()),
                ("HERALD__BACKEND__LOG".to_owned(), "kafka".to_owned()),
                ("UNRELATED".to_owned(), "x".to_owned()),
            ],
        )
        .unwrap();
        let c: Config = toml::Value::Table(tree).try_into().unwrap();
        assert_eq!(c.delivery.mx_port, 2526);
        assert_eq!(c.backend.log, LogBackend::Kafka);
    }

    #[test]
    fn static_keys_must_name_known_accounts() {
        let base =
            "[[accounts]]\nid = \"acme\"\n[[dkim]]\ndomain = \"s.test\"\nselector = \"a\"\nprivate_key = \"k.pem\"\n";
        let err = toml::from_str::<Config>(base).unwrap_err();
        assert!(err.to_string().contains("accounts"), "{err}");
        let none: Config = toml::from_str(&format!("{base}accounts = []\n")).unwrap();
        assert!(none.validate().unwrap_err().to_string().contains("must name the accounts"));
        let unknown: Config = toml::from_str(&format!("{base}accounts = [\"nobody\"]\n")).unwrap();
        assert!(unknown.validate().unwrap_err().to_string().contains("no account `nobody`"));
        let plain: Config = toml::from_str("[[accounts]]\nid = \"solo\"\n").unwrap();
        assert_eq!(plain.from_domains(&plain.accounts[0]), FromDomains::Verified);
    }

    #[test]
    fn kafka_options_pass_through_and_reserved_ones_are_refused() {
        let c: Config = toml::from_str(
            "[backend]\nkafka_options = { \"security.protocol\" = \"sasl_ssl\", \"socket.keepalive.enable\" = true }\nkafka_producer_options = { \"linger.ms\" = 20, \"batch.size\" = 1000000 }\nkafka_consumer_options = { \"fetch.min.bytes\" = \"65536\" }\n",
        )
        .unwrap();
        c.validate().unwrap();
        let o = c.backend.kafka_client_options();
        assert_eq!(
            o.common,
            vec![("security.protocol".into(), "sasl_ssl".into()), ("socket.keepalive.enable".into(), "true".into())]
        );
        assert_eq!(o.producer, vec![("batch.size".into(), "1000000".into()), ("linger.ms".into(), "20".into())]);
        assert_eq!(o.consumer, vec![("fetch.min.bytes".into(), "65536".into())]);
        // A secret (a SASL password) comes as the whole table through the environment.
        let mut tree: toml::Table = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        let table = r#"{ "security.protocol" = "sasl_ssl", "sasl.password" = "s3cret" }"#;
        apply_env(&mut tree, vec![("HERALD__BACKEND__KAFKA_OPTIONS".to_owned(), table.to_owned())]).unwrap();
        let c: Config = toml::Value::Table(tree).try_into().unwrap();
        assert_eq!(
            c.backend.kafka_client_options().common,
            vec![("sasl.password".into(), "s3cret".into()), ("security.protocol".into(), "sasl_ssl".into())]
        );
        let err = toml::from_str::<Config>("[backend]\nkafka_options = { \"client.id\" = [1, 2] }\n").unwrap_err();
        assert!(err.to_string().contains("a librdkafka property's value"), "{err}");
        let long: Config = toml::from_str("[backend]\nkafka_commit_interval_ms = 86400000\n").unwrap();
        assert!(long.validate().unwrap_err().to_string().contains("kafka_commit_interval_ms"));
        for (table, key) in [
            ("kafka_producer_options", "acks"),
            ("kafka_producer_options", "enable.idempotence"),
            ("kafka_consumer_options", "isolation.level"),
            ("kafka_consumer_options", "enable.auto.commit"),
            ("kafka_options", "bootstrap.servers"),
        ] {
            let c: Config = toml::from_str(&format!("[backend]\n{table} = {{ \"{key}\" = \"x\" }}\n")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("may not be overridden"), "{err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("[http]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn contract_keys_parse() {
        let c: Config = toml::from_str(
            r#"
            [storage]
            data_dir = "./d"
            [http]
            listen = "127.0.0.1:8080"
            [delivery]
            dns_servers = ["127.0.0.1:5354"]
            mx_port = 25
            helo_name = "mta.example.net"
            [backend]
            log = "embedded"
            store = "cql"
            kafka_brokers = "127.0.0.1:9092"
            cql_nodes = ["127.0.0.1:9042"]
            [[accounts]]
            id = "acme"
            api_keys = ["test-key-acme"]
            [[dkim]]
            domain = "sender.test"
            selector = "s1"
            private_key = "path/to/pkcs8.pem"
            accounts = ["acme"]
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.from_domains(&c.accounts[0]), FromDomains::Any, "named by a static key");
        assert_eq!(c.backend.store, StoreBackend::Cql);
        assert_eq!(c.dns_servers(), vec!["127.0.0.1:5354".parse().unwrap()]);
    }
}

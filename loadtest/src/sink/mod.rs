//! The smart sink: a lean SMTP server on loopback that accepts, counts, optionally saves,
//! and refuses a configurable share of recipients ([`rules`]), measuring end-to-end latency
//! from the generator's stamp header. [`server`] holds the per-connection session.
//!
//! [`Sink::start`] binds and returns at once; the sink runs until [`Sink::stop`], and
//! [`Sink::finished`] resolves when its own bound (`stop_after` messages or `duration`) is hit.

pub mod rules;
pub mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::report::{fmt_us, table, Latency, LatencySummary};
pub use rules::{Rule, RuleError, Rules};

/// Starting the sink failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("binding the sink to {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(
        "the sink listens on loopback only; {0} is not a loopback address (pass --allow-non-loopback to override)"
    )]
    NotLoopback(SocketAddr),
    #[error("creating the save directory {path}: {source}")]
    SaveDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Everything the sink can be told.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    pub listen: SocketAddr,
    pub hostname: String,
    pub rules: Rules,
    /// Offer STARTTLS with a self-signed certificate.
    pub starttls: bool,
    /// Save each accepted message as `<dir>/<connection>-<n>.eml`.
    pub save_dir: Option<PathBuf>,
    /// Answer `421` to the MAIL after this many messages on one connection (0: no limit).
    pub max_messages_per_connection: u64,
    /// Stop after this many messages.
    pub stop_after: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    pub allow_non_loopback: bool,
}

impl SinkConfig {
    pub fn new(listen: SocketAddr) -> Self {
        SinkConfig {
            listen,
            hostname: "sink.herald.test".into(),
            rules: Rules::default(),
            starttls: false,
            save_dir: None,
            max_messages_per_connection: 0,
            stop_after: None,
            duration: None,
            allow_non_loopback: false,
        }
    }
}

/// Live counters, shared by every connection.
#[derive(Debug)]
pub struct Stats {
    pub started: Instant,
    pub connections: AtomicU64,
    pub messages: AtomicU64,
    /// Accepted recipients of accepted messages.
    pub recipients: AtomicU64,
    /// Every RCPT answered, accepted or not.
    pub rcpt_replies: AtomicU64,
    pub bytes: AtomicU64,
    pub tls_sessions: AtomicU64,
    first_us: AtomicU64,
    last_us: AtomicU64,
    pub refusals: Mutex<BTreeMap<u16, u64>>,
    pub latency: Mutex<Latency>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            started: Instant::now(),
            connections: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            recipients: AtomicU64::new(0),
            rcpt_replies: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            tls_sessions: AtomicU64::new(0),
            first_us: AtomicU64::new(0),
            last_us: AtomicU64::new(0),
            refusals: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(Latency::default()),
        }
    }

    pub(crate) fn refused(&self, code: u16) {
        *self.refusals.lock().unwrap_or_else(|e| e.into_inner()).entry(code).or_default() += 1;
    }

    /// Records one accepted message; returns the running message count.
    pub(crate) fn message(&self, recipients: u64, bytes: u64, now_us: u64) -> u64 {
        let _ = self.first_us.compare_exchange(0, now_us, Ordering::Relaxed, Ordering::Relaxed);
        self.last_us.fetch_max(now_us, Ordering::Relaxed);
        self.recipients.fetch_add(recipients, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.messages.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn snapshot(&self) -> SinkReport {
        let messages = self.messages.load(Ordering::Relaxed);
        let (first, last) = (self.first_us.load(Ordering::Relaxed), self.last_us.load(Ordering::Relaxed));
        let arrival_secs = last.saturating_sub(first) as f64 / 1e6;
        let elapsed = self.started.elapsed().as_secs_f64();
        SinkReport {
            elapsed_secs: elapsed,
            connections: self.connections.load(Ordering::Relaxed),
            tls_sessions: self.tls_sessions.load(Ordering::Relaxed),
            messages,
            recipients: self.recipients.load(Ordering::Relaxed),
            rcpt_replies: self.rcpt_replies.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            refused_by_code: self
                .refusals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            arrival_rate: if messages > 1 && arrival_secs > 0.0 { (messages - 1) as f64 / arrival_secs } else { 0.0 },
            end_to_end: self.latency.lock().unwrap_or_else(|e| e.into_inner()).summary(),
        }
    }
}

/// What the sink saw; `--json` prints it as is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SinkReport {
    pub elapsed_secs: f64,
    pub connections: u64,
    pub tls_sessions: u64,
    pub messages: u64,
    pub recipients: u64,
    pub rcpt_replies: u64,
    pub bytes: u64,
    /// Refusals the sink answered (rules and per-connection limits), by reply code.
    pub refused_by_code: BTreeMap<String, u64>,
    /// Messages per second between the first and the last arrival.
    pub arrival_rate: f64,
    /// Send stamp to arrival, for messages carrying the stamp header.
    pub end_to_end: LatencySummary,
}

impl SinkReport {
    pub fn table(&self) -> String {
        let refused = if self.refused_by_code.is_empty() {
            "none".into()
        } else {
            self.refused_by_code.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
        };
        table(
            "herald-loadtest sink",
            &[
                ("elapsed".into(), format!("{:.2}s", self.elapsed_secs)),
                ("connections".into(), format!("{} ({} TLS)", self.connections, self.tls_sessions)),
                ("messages".into(), self.messages.to_string()),
                ("recipients".into(), format!("{} accepted, {} RCPT replies", self.recipients, self.rcpt_replies)),
                ("bytes".into(), self.bytes.to_string()),
                ("refused".into(), refused),
                ("arrival rate".into(), format!("{:.0} msg/s", self.arrival_rate)),
                ("end-to-end".into(), self.end_to_end.line()),
                ("end-to-end mean".into(), fmt_us(self.end_to_end.mean_us)),
            ],
        )
    }
}

/// A running sink.
pub struct Sink {
    addr: SocketAddr,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    done: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    /// Binds `config.listen` and starts accepting.
    pub async fn start(config: SinkConfig) -> Result<Sink, SinkError> {
        if !config.allow_non_loopback && !config.listen.ip().is_loopback() {
            return Err(SinkError::NotLoopback(config.listen));
        }
        if let Some(dir) = &config.save_dir {
            std::fs::create_dir_all(dir).map_err(|source| SinkError::SaveDir { path: dir.clone(), source })?;
        }
        let tls = if config.starttls {
            Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(&config.hostname)?))
        } else {
            None
        };
        let listener =
            TcpListener::bind(config.listen).await.map_err(|source| SinkError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| SinkError::Bind { addr: config.listen, source })?;
        let stats = Arc::new(Stats::new());
        let (shutdown, done) = (CancellationToken::new(), CancellationToken::new());
        let kill = CancellationToken::new();
        if let Some(d) = config.duration {
            let done = done.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                done.cancel();
            });
        }
        let ctx = Arc::new(server::Context {
            config,
            tls,
            stats: stats.clone(),
            shutdown: shutdown.clone(),
            kill,
            done: done.clone(),
        });
        let task = tokio::spawn(server::accept_loop(listener, ctx));
        Ok(Sink { addr, stats, shutdown, done, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Resolves when the sink's own bound (message count or duration) is reached.
    pub async fn finished(&self) {
        self.done.cancelled().await
    }

    /// Closes the listener, gives connections a second to finish, closes them; returns the
    /// final report.
    pub async fn stop(self) -> SinkReport {
        self.shutdown.cancel();
        let _ = self.task.await;
        self.stats.snapshot()
    }
}

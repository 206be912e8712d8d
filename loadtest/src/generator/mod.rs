//! The load generator: `concurrency` workers share one [`Budget`] (message count, deadline and
//! rate cap) and each drive one connection, over SMTP ([`smtp`]) or REST ([`http`]). Workers
//! keep their own histogram and counts and merge them at the end; a few shared atomics feed
//! the progress bar.

pub mod http;
pub mod smtp;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::message::Factory;
use crate::progress::Progress;
use crate::report::{table, Latency, LatencySummary};

/// Why a message, a connection or a whole run failed.
#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    #[error("bad target {0}")]
    Target(String),
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("I/O: {0}")]
    Io(std::io::Error),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("the server closed the connection")]
    Closed,
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("a run needs a bound: give a message count or a duration")]
    Unbounded,
}

/// How one transaction or request ended.
#[derive(Debug, Default)]
pub struct Outcome {
    pub accepted: bool,
    /// Refusal codes: one per refused recipient, or one for a refused message.
    pub refused: Vec<u16>,
    /// The server is closing the connection (421).
    pub closed: bool,
}

impl Outcome {
    fn refuse(&mut self, code: u16) {
        self.refused.push(code);
        self.closed |= code == 421;
    }

    /// Counts a RCPT reply; 1 when accepted. Refusals after a refused MAIL are not counted.
    fn rcpt(&mut self, code: u16, mail_code: u16) -> u32 {
        if (200..300).contains(&code) {
            return 1;
        }
        if mail_code == 250 {
            self.refuse(code);
        }
        0
    }

    fn closing(mut self, code: u16) -> Self {
        self.closed |= code == 421;
        self
    }
}

/// Which protocol, and where.
#[derive(Clone)]
pub enum Mode {
    Smtp { target: smtp::SmtpTarget, new_connection_per_message: bool },
    Rest(http::HttpTarget),
}

/// A whole `send` run.
#[derive(Clone)]
pub struct SendConfig {
    pub mode: Mode,
    pub concurrency: usize,
    pub messages: Option<u64>,
    pub duration: Option<Duration>,
    /// Messages per second over the whole run, all workers together.
    pub rate: Option<f64>,
    pub factory: Arc<Factory>,
}

/// Hands out message indexes while the run is within its bounds, pacing them to the rate.
pub struct Budget {
    start: Instant,
    claimed: AtomicU64,
    messages: Option<u64>,
    deadline: Option<Instant>,
    rate: Option<f64>,
}

impl Budget {
    pub fn new(messages: Option<u64>, duration: Option<Duration>, rate: Option<f64>) -> Result<Budget, GeneratorError> {
        if messages.is_none() && duration.is_none() {
            return Err(GeneratorError::Unbounded);
        }
        let start = Instant::now();
        Ok(Budget {
            start,
            claimed: AtomicU64::new(0),
            messages,
            deadline: duration.map(|d| start + d),
            rate: rate.filter(|r| *r > 0.0),
        })
    }

    /// The next message index, after waiting for its rate slot; `None` once the run is over.
    pub async fn next(&self) -> Option<u64> {
        let index = self.claimed.fetch_add(1, Ordering::Relaxed);
        if self.messages.is_some_and(|n| index >= n) {
            return None;
        }
        if let Some(rate) = self.rate {
            let slot = self.start + Duration::from_secs_f64(index as f64 / rate);
            if self.deadline.is_some_and(|d| slot >= d) {
                return None;
            }
            tokio::time::sleep_until(slot.into()).await;
        }
        match self.deadline {
            Some(d) if Instant::now() >= d => None,
            _ => Some(index),
        }
    }
}

/// Counters the progress bar reads while the run goes on.
#[derive(Debug, Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub errors: AtomicU64,
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    latency: Latency,
    refused: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    recipients: u64,
}

impl Tally {
    fn outcome(&mut self, live: &Live, o: &Outcome, took: Duration) {
        self.latency.record(took.as_micros() as u64);
        for code in &o.refused {
            *self.refused.entry(*code).or_default() += 1;
        }
        if o.accepted {
            live.accepted.fetch_add(1, Ordering::Relaxed);
        }
        live.refused.fetch_add(o.refused.len() as u64, Ordering::Relaxed);
    }

    fn error(&mut self, live: &Live, e: &GeneratorError) {
        live.errors.fetch_add(1, Ordering::Relaxed);
        let key = e.to_string();
        if self.errors.len() < 20 || self.errors.contains_key(&key) {
            *self.errors.entry(key).or_default() += 1;
        } else {
            *self.errors.entry("(other errors)".into()).or_default() += 1;
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latency.merge(&other.latency);
        self.recipients += other.recipients;
        for (k, v) in other.refused {
            *self.refused.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// The end-of-run summary; `--json` prints it as is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendReport {
    pub mode: String,
    pub elapsed_secs: f64,
    /// Messages attempted (requests or transactions started).
    pub sent: u64,
    /// Messages accepted (2xx response, or 250 after DATA).
    pub accepted: u64,
    pub recipients: u64,
    /// Refusals by reply or status code: per recipient for RCPT refusals, else per message.
    pub refused_by_code: BTreeMap<String, u64>,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// Accepted messages per second.
    pub throughput: f64,
    /// Round trip of each request or transaction.
    pub latency: LatencySummary,
}

impl SendReport {
    pub fn table(&self) -> String {
        let join = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
            }
        };
        table(
            &format!("herald-loadtest send ({})", self.mode),
            &[
                ("elapsed".into(), format!("{:.2}s", self.elapsed_secs)),
                ("sent".into(), self.sent.to_string()),
                ("accepted".into(), self.accepted.to_string()),
                ("recipients".into(), self.recipients.to_string()),
                ("refused".into(), join(&self.refused_by_code)),
                ("errors".into(), format!("{} ({})", self.errors, join(&self.error_kinds))),
                ("throughput".into(), format!("{:.0} msg/s", self.throughput)),
                ("latency".into(), self.latency.line()),
            ],
        )
    }
}

/// Runs the generator to its bound and reports.
pub async fn run(config: SendConfig, progress: &Progress) -> Result<SendReport, GeneratorError> {
    let budget = Arc::new(Budget::new(config.messages, config.duration, config.rate)?);
    let live = Arc::new(Live::default());
    let ticker = progress.follow(live.clone());
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency.max(1) {
        let (config, budget, live) = (config.clone(), budget.clone(), live.clone());
        workers.spawn(async move {
            match &config.mode {
                Mode::Smtp { target, new_connection_per_message } => {
                    smtp_worker(target, *new_connection_per_message, &config.factory, &budget, &live).await
                }
                Mode::Rest(target) => rest_worker(target, &config.factory, &budget, &live).await,
            }
        });
    }
    let mut total = Tally::default();
    while let Some(t) = workers.join_next().await {
        if let Ok(t) = t {
            total.merge(t);
        }
    }
    ticker.abort();
    progress.finish();
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = live.accepted.load(Ordering::Relaxed);
    Ok(SendReport {
        mode: match config.mode {
            Mode::Smtp { .. } => "smtp".into(),
            Mode::Rest(_) => "rest".into(),
        },
        elapsed_secs: elapsed,
        sent: live.sent.load(Ordering::Relaxed),
        accepted,
        recipients: total.recipients,
        refused_by_code: total.refused.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        errors: live.errors.load(Ordering::Relaxed),
        error_kinds: total.errors,
        throughput: if elapsed > 0.0 { accepted as f64 / elapsed } else { 0.0 },
        latency: total.latency.summary(),
    })
}

/// Pause after a failed connection, so a dead target does not spin.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

async fn smtp_worker(
    target: &smtp::SmtpTarget,
    per_message: bool,
    factory: &Factory,
    budget: &Budget,
    live: &Live,
) -> Tally {
    let mut tally = Tally::default();
    let (mut rcpts, mut data) = (Vec::new(), Vec::with_capacity(16 * 1024));
    let mut client: Option<smtp::Client> = None;
    while let Some(index) = budget.next().await {
        live.sent.fetch_add(1, Ordering::Relaxed);
        let c = match client.take() {
            Some(c) => c,
            None => match smtp::Client::connect(target).await {
                Ok(c) => c,
                Err(e) => {
                    tally.error(live, &e);
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        let mut c = c;
        factory.recipients_into(index, &mut rcpts);
        tally.recipients += rcpts.len() as u64;
        let t0 = Instant::now();
        factory.message_into(index, &rcpts, crate::now_us(), &mut data);
        match c.transaction(&factory.from, &rcpts, &data).await {
            Ok(o) => {
                tally.outcome(live, &o, t0.elapsed());
                if per_message && !o.closed {
                    c.quit().await;
                } else if !o.closed {
                    client = Some(c);
                }
            }
            Err(e) => tally.error(live, &e),
        }
    }
    if let Some(c) = client {
        c.quit().await;
    }
    tally
}

#[derive(Serialize)]
struct SendBody<'a> {
    envelope: &'a str,
    recipient: &'a [String],
    body: &'a str,
}

async fn rest_worker(target: &http::HttpTarget, factory: &Factory, budget: &Budget, live: &Live) -> Tally {
    let mut tally = Tally::default();
    let (mut rcpts, mut data, mut json) = (Vec::new(), Vec::with_capacity(16 * 1024), Vec::with_capacity(16 * 1024));
    let mut conn: Option<http::Conn> = None;
    while let Some(index) = budget.next().await {
        live.sent.fetch_add(1, Ordering::Relaxed);
        let mut c = match conn.take() {
            Some(c) => c,
            None => match http::Conn::connect(target).await {
                Ok(c) => c,
                Err(e) => {
                    tally.error(live, &e);
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        factory.recipients_into(index, &mut rcpts);
        tally.recipients += rcpts.len() as u64;
        let t0 = Instant::now();
        factory.message_into(index, &rcpts, crate::now_us(), &mut data);
        json.clear();
        // The message is ASCII by construction.
        let body = SendBody {
            envelope: &factory.from,
            recipient: &rcpts,
            body: std::str::from_utf8(&data).unwrap_or_default(),
        };
        if let Err(e) = serde_json::to_writer(&mut json, &body) {
            tally.error(live, &GeneratorError::Protocol(e.to_string()));
            continue;
        }
        match c.post(target, &json).await {
            Ok(status) => {
                let mut o = Outcome::default();
                if (200..300).contains(&status) {
                    o.accepted = true;
                } else {
                    o.refused.push(status);
                }
                tally.outcome(live, &o, t0.elapsed());
                if !c.closing {
                    conn = Some(c);
                }
            }
            Err(e) => tally.error(live, &e),
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn budget_is_bounded_and_paced() {
        assert!(matches!(Budget::new(None, None, None), Err(GeneratorError::Unbounded)));
        let b = Budget::new(Some(3), None, None).unwrap();
        let mut got = Vec::new();
        while let Some(i) = b.next().await {
            got.push(i);
        }
        assert_eq!(got, vec![0, 1, 2]);
        let b = Budget::new(None, Some(Duration::from_millis(300)), Some(20.0)).unwrap();
        let t = Instant::now();
        let mut n = 0;
        while b.next().await.is_some() {
            n += 1;
        }
        assert!((5..=7).contains(&n), "20 msg/s for 0.3 s gave {n}");
        assert!(t.elapsed() < Duration::from_millis(600));
    }
}

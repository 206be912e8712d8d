//! `herald-loadtest run SCENARIO`: starts the sink in-process on the scenario's port, runs
//! the REST generator against an already running Herald, waits until the sink has answered
//! a RCPT for every accepted recipient (or the scenario's timeout), and reports both sides.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::CliError;
use crate::generator::{self, http::HttpTarget, GeneratorError, Mode, SendConfig, SendReport};
use crate::message::{parse_domains, Factory};
use crate::progress::Progress;
use crate::report::table;
use crate::scenario::Scenario;
use crate::sink::{Rules, Sink, SinkConfig, SinkError, SinkReport};

/// A scenario run that could not go ahead.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] CliError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Generator(#[from] GeneratorError),
    #[error("Herald is not reachable at {addr}: {source} (start it first; `run` does not)")]
    HeraldUnreachable { addr: String, source: std::io::Error },
}

/// What `run` was told besides the scenario.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub herald: String,
    pub api_key: String,
    pub sink_port: Option<u16>,
    pub allow_non_test_targets: bool,
    pub quiet: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub scenario: String,
    pub send: SendReport,
    pub sink: SinkReport,
    /// Recipients Herald accepted, which the sink should see.
    pub expected_recipients: u64,
    /// True when the sink answered a RCPT for each of them before the timeout.
    pub complete: bool,
    /// From the first request to the last RCPT the sink answered.
    pub delivery_secs: f64,
    /// Accepted recipients per second through the whole pipeline.
    pub delivery_rate: f64,
}

impl RunReport {
    pub fn table(&self) -> String {
        let mut out = self.send.table();
        out.push_str(&self.sink.table());
        out.push_str(&table(
            &format!("scenario {}", self.scenario),
            &[
                ("expected recipients".into(), self.expected_recipients.to_string()),
                ("complete".into(), self.complete.to_string()),
                ("delivery time".into(), format!("{:.2}s", self.delivery_secs)),
                ("delivery rate".into(), format!("{:.0} rcpt/s", self.delivery_rate)),
            ],
        ));
        out
    }
}

fn send_config(s: &Scenario, o: &RunOptions) -> Result<SendConfig, CliError> {
    let g = &s.generator;
    let domains = parse_domains(&g.domains)?;
    let target = HttpTarget::parse(&o.herald, Some(o.api_key.clone()), Duration::from_secs(30))?;
    crate::safety::check(&target.host, domains.values().map(|d| d.domain.as_str()), o.allow_non_test_targets)?;
    let factory = Factory::new(g.from.clone(), g.recipients, g.size.parse()?, domains, g.headers.clone());
    Ok(SendConfig {
        mode: Mode::Rest(target),
        concurrency: g.concurrency,
        messages: Some(g.messages),
        duration: None,
        rate: g.rate,
        factory: Arc::new(factory),
    })
}

/// Plays `scenario` and reports.
pub async fn run(scenario: &Scenario, o: &RunOptions) -> Result<RunReport, RunError> {
    let send = send_config(scenario, o)?;
    if let Mode::Rest(t) = &send.mode {
        tokio::net::TcpStream::connect(t.addr())
            .await
            .map_err(|source| RunError::HeraldUnreachable { addr: t.addr(), source })?;
    }
    let mut sink_config =
        SinkConfig::new(SocketAddr::from(([127, 0, 0, 1], o.sink_port.unwrap_or(scenario.sink.port))));
    sink_config.rules = Rules::parse(&scenario.sink.replies).map_err(CliError::from)?;
    sink_config.starttls = scenario.sink.starttls;
    sink_config.max_messages_per_connection = scenario.sink.max_messages_per_connection;
    let sink = Sink::start(sink_config).await?;
    let started = Instant::now();
    let report = generator::run(send, &Progress::new(Some(scenario.generator.messages), o.quiet)).await?;
    let expected = report.accepted * u64::from(scenario.generator.recipients.max(1));
    let progress = Progress::new(Some(expected), o.quiet);
    let ticker = progress.follow_sink(sink.stats().clone());
    let deadline = Instant::now() + Duration::from_secs(scenario.wait.timeout_secs);
    let stats = sink.stats().clone();
    let mut last_change = started.elapsed();
    let mut seen = 0;
    let complete = loop {
        let now_seen = stats.rcpt_replies.load(Ordering::Relaxed);
        if now_seen != seen {
            seen = now_seen;
            last_change = started.elapsed();
        }
        if seen >= expected {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    ticker.abort();
    progress.finish();
    let sink_report = sink.stop().await;
    let secs = last_change.as_secs_f64();
    Ok(RunReport {
        scenario: scenario.name.clone(),
        send: report,
        sink: sink_report,
        expected_recipients: expected,
        complete,
        delivery_secs: secs,
        delivery_rate: if secs > 0.0 { seen.min(expected) as f64 / secs } else { 0.0 },
    })
}

//! The command line (`send`, `sink`, `run`) and its translation into the library's
//! configurations, where the safety rules are applied. Every `send` and `sink` run must be
//! bounded by `--messages` or `--duration`; clap refuses the command otherwise.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::generator::{http::HttpTarget, smtp::SmtpTarget, GeneratorError, Mode, SendConfig};
use crate::message::{parse_domains, Factory, MixError, SizeMix};
use crate::safety::{self, SafetyError};
use crate::sink::{RuleError, Rules, SinkConfig};

/// A command line that parses but cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Mix(#[from] MixError),
    #[error(transparent)]
    Safety(#[from] SafetyError),
    #[error(transparent)]
    Target(#[from] GeneratorError),
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("bad header {0:?}: expected 'Name: value' on one line")]
    Header(String),
}

#[derive(Debug, Parser)]
#[command(
    name = "herald-loadtest",
    version,
    about = "Herald's load generator and smart SMTP sink (loopback and test domains by default)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inject messages over SMTP or REST (`--target http://…` selects REST).
    Send(SendArgs),
    /// Run the smart SMTP sink.
    Sink(SinkArgs),
    /// Play a scenario file against a running Herald, with the sink in-process.
    Run(RunArgs),
}

/// `30s`, `2m`, `500ms`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}: expected e.g. 30s, 2m, 500ms"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?}: use ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("bound").required(true).multiple(true).args(["messages", "duration"])))]
pub struct SendArgs {
    /// SMTP `host:port`, or `http://host:port` for REST (`POST /v1/send`).
    #[arg(long, short = 't')]
    pub target: String,
    /// Connections (and in-flight messages).
    #[arg(long, short = 'c', default_value_t = 20)]
    pub concurrency: usize,
    /// Stop after this many messages.
    #[arg(long, short = 'n')]
    pub messages: Option<u64>,
    /// Stop after this long (e.g. 30s, 2m).
    #[arg(long, short = 'd', value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Cap on messages per second, all connections together.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Message size, or a weighted mix: `5k` or `1k:50,10k:40,100k:10`.
    #[arg(long, default_value = "5k")]
    pub size: SizeMix,
    /// Recipients per message.
    #[arg(long, default_value_t = 1)]
    pub recipients: u32,
    /// Weighted recipient domain, repeatable: `[LOCALPREFIX@]DOMAIN[:WEIGHT]`.
    #[arg(long = "domain", default_values_t = ["example.test".to_string()])]
    pub domains: Vec<String>,
    /// Extra header, repeatable: `Name: value`.
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Envelope sender and From address.
    #[arg(long, default_value = "loadtest@sender.test")]
    pub from: String,
    /// REST: the API key sent as a bearer token.
    #[arg(long, env = "HERALD_API_KEY")]
    pub api_key: Option<String>,
    /// SMTP: AUTH PLAIN user (with --password).
    #[arg(long, requires = "password")]
    pub user: Option<String>,
    #[arg(long, requires = "user")]
    pub password: Option<String>,
    /// SMTP: upgrade with STARTTLS (certificates are not verified).
    #[arg(long)]
    pub starttls: bool,
    /// SMTP: open a connection per message instead of reusing them.
    #[arg(long)]
    pub new_connection_per_message: bool,
    /// SMTP: the EHLO name.
    #[arg(long, default_value = "loadtest.herald.test")]
    pub helo: String,
    /// Per-operation timeout.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
    /// Allow non-loopback targets and recipient domains outside .test/.example/.invalid.
    #[arg(long)]
    pub allow_non_test_targets: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl SendArgs {
    /// The run this command line describes, after the safety checks.
    pub fn config(&self) -> Result<SendConfig, CliError> {
        let domains = parse_domains(&self.domains)?;
        for h in &self.headers {
            if !h.contains(':') || h.contains(['\r', '\n']) || h.starts_with([' ', '\t', '.']) {
                return Err(CliError::Header(h.clone()));
            }
        }
        let mode = if self.target.starts_with("http") {
            let t = HttpTarget::parse(&self.target, self.api_key.clone(), self.timeout)?;
            safety::check(&t.host, domains.values().map(|d| d.domain.as_str()), self.allow_non_test_targets)?;
            Mode::Rest(t)
        } else {
            safety::check(
                safety::host_of(&self.target),
                domains.values().map(|d| d.domain.as_str()),
                self.allow_non_test_targets,
            )?;
            let auth = self.user.clone().zip(self.password.clone());
            let target = SmtpTarget {
                addr: self.target.clone(),
                helo: self.helo.clone(),
                starttls: self.starttls,
                auth,
                timeout: self.timeout,
                tls: crate::tls::client_config(),
            };
            Mode::Smtp { target, new_connection_per_message: self.new_connection_per_message }
        };
        let factory =
            Factory::new(self.from.clone(), self.recipients, self.size.clone(), domains, self.headers.clone());
        Ok(SendConfig {
            mode,
            concurrency: self.concurrency,
            messages: self.messages,
            duration: self.duration,
            rate: self.rate,
            factory: Arc::new(factory),
        })
    }
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("bound").required(true).multiple(true).args(["messages", "duration"])))]
pub struct SinkArgs {
    /// Address to listen on (loopback only unless --allow-non-loopback).
    #[arg(long, short = 'l', default_value = "127.0.0.1:2525")]
    pub listen: SocketAddr,
    /// Refuse a share of recipients, repeatable: `PATTERN:SHARE%:CODE TEXT`.
    #[arg(long = "reply")]
    pub replies: Vec<String>,
    /// Offer STARTTLS with a self-signed certificate.
    #[arg(long)]
    pub starttls: bool,
    /// Save every accepted message in this directory.
    #[arg(long)]
    pub save_dir: Option<PathBuf>,
    /// Answer 421 and close after this many messages on one connection (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_messages_per_connection: u64,
    /// Stop after this many messages.
    #[arg(long, short = 'n')]
    pub messages: Option<u64>,
    /// Stop after this long (e.g. 30s, 2m).
    #[arg(long, short = 'd', value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// The name in the greeting and EHLO reply.
    #[arg(long, default_value = "sink.herald.test")]
    pub hostname: String,
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No live display.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl SinkArgs {
    pub fn config(&self) -> Result<SinkConfig, CliError> {
        let mut c = SinkConfig::new(self.listen);
        c.rules = Rules::parse(&self.replies)?;
        c.hostname = self.hostname.clone();
        c.starttls = self.starttls;
        c.save_dir = self.save_dir.clone();
        c.max_messages_per_connection = self.max_messages_per_connection;
        c.stop_after = self.messages;
        c.duration = self.duration;
        c.allow_non_loopback = self.allow_non_loopback;
        Ok(c)
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// A scenario file, e.g. loadtest/scenarios/relay-5k.toml.
    pub scenario: PathBuf,
    /// Base URL of the running Herald.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub herald: String,
    #[arg(long, env = "HERALD_API_KEY")]
    pub api_key: String,
    /// Override the scenario's sink port (Herald's `[delivery] mx_port` must match).
    #[arg(long)]
    pub sink_port: Option<u16>,
    #[arg(long)]
    pub allow_non_test_targets: bool,
    #[arg(long)]
    pub json: bool,
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_is_required() {
        assert!(Cli::try_parse_from(["herald-loadtest", "send", "--target", "127.0.0.1:25"]).is_err());
        assert!(Cli::try_parse_from(["herald-loadtest", "sink"]).is_err());
        assert!(
            Cli::try_parse_from(["herald-loadtest", "send", "--target", "127.0.0.1:25", "--duration", "5s"]).is_ok()
        );
        assert!(Cli::try_parse_from(["herald-loadtest", "sink", "-n", "5"]).is_ok());
    }

    #[test]
    fn unsafe_runs_are_refused_unless_allowed() {
        let parse = |args: &[&str]| {
            let mut v = vec!["herald-loadtest", "send", "-n", "1"];
            v.extend_from_slice(args);
            match Cli::try_parse_from(v).unwrap().command {
                Command::Send(s) => s.config().map(|_| ()),
                _ => unreachable!(),
            }
        };
        assert!(parse(&["--target", "127.0.0.1:2525"]).is_ok());
        assert!(matches!(parse(&["--target", "mx.example.com:25"]), Err(CliError::Safety(SafetyError::Host(_)))));
        assert!(matches!(parse(&["--target", "http://10.0.0.1:8080"]), Err(CliError::Safety(SafetyError::Host(_)))));
        assert!(matches!(
            parse(&["--target", "127.0.0.1:2525", "--domain", "gmail.com"]),
            Err(CliError::Safety(SafetyError::Domain(_)))
        ));
        assert!(parse(&["--target", "mx.example.com:25", "--domain", "gmail.com", "--allow-non-test-targets"]).is_ok());
        assert!(matches!(parse(&["--target", "127.0.0.1:2525", "--header", "bad"]), Err(CliError::Header(_))));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3 weeks").is_err());
    }
}

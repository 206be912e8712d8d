//! `[bounces]`: VERP return paths, the bounce MX, the classifier's rule file and the
//! suppression thresholds (`docs/config.md`, `docs/bounce-rules.md`).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bounces {
    /// Run the bounce MX (on nodes with the `bounces` role) and give messages sent with
    /// bounce tracking a VERP return path. Suppression lists, the classification of
    /// synchronous refusals and the API work either way.
    pub enabled: bool,
    /// Address of the bounce MX (port 25 in production, behind the MX of the bounce domains).
    pub listen: SocketAddr,
    /// Name in the bounce MX's greeting and EHLO reply.
    pub hostname: String,
    /// Return-path domain for messages whose From domain is not a verified sender domain
    /// of their account (its MX must point to the bounce MX); unset: such messages keep
    /// their envelope sender and their bounces do not come back to Herald.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_domain: Option<String>,
    /// HMAC secret of VERP tokens (at least 16 bytes). Unset: on Cassandra the first node
    /// to start generates one and every node reads it from the store; on the embedded
    /// store one is generated at first start and kept in `<data_dir>/verp.key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Earlier secrets, still accepted for returning bounces after a rotation.
    pub previous_secrets: Vec<String>,
    /// Largest message the bounce MX takes (larger: 552 5.3.4).
    pub max_message_bytes: usize,
    /// Recipients per message.
    pub max_recipients: usize,
    /// Concurrent connections in total and per client IP (more: 421 4.7.0).
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Messages per second per client IP (0: unlimited; more: 451 4.7.1), and the burst.
    pub messages_per_second_per_ip: u32,
    pub burst_per_ip: u32,
    /// Wait for each command, and for each block of data, in seconds.
    pub command_timeout_secs: u64,
    pub data_timeout_secs: u64,
    /// PEM certificate and key for STARTTLS; unset: the SMTP server's (or a self-signed one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// The operator's classification rules (TOML), tried before the shipped ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules_file: Option<PathBuf>,
    /// Use only `rules_file`, not the shipped rules.
    pub replace_shipped_rules: bool,
    /// Suppress an address at once on a permanent bounce.
    pub suppress_hard_bounces: bool,
    /// Suppress an address on a complaint (never on `not-spam`).
    pub suppress_complaints: bool,
    /// Transient failures of `soft_bounce_classes` within `soft_bounce_window_days` that
    /// suppress an address for `soft_bounce_suppress_days` (0: never).
    pub soft_bounce_threshold: u32,
    pub soft_bounce_window_days: u64,
    pub soft_bounce_suppress_days: u64,
    /// Bounce classes that count as soft failures.
    pub soft_bounce_classes: Vec<String>,
    /// How long a suppression-list change made through the API waits to be readable, in ms.
    pub api_wait_ms: u64,
}

impl Default for Bounces {
    fn default() -> Self {
        Bounces {
            enabled: true,
            listen: "127.0.0.1:2526".parse().expect("valid"),
            hostname: "localhost.localdomain".into(),
            default_domain: None,
            secret: None,
            previous_secrets: vec![],
            max_message_bytes: 10 * 1024 * 1024,
            max_recipients: 100,
            max_connections: 1000,
            max_connections_per_ip: 50,
            messages_per_second_per_ip: 100,
            burst_per_ip: 500,
            command_timeout_secs: 300,
            data_timeout_secs: 600,
            tls_cert: None,
            tls_key: None,
            rules_file: None,
            replace_shipped_rules: false,
            suppress_hard_bounces: true,
            suppress_complaints: true,
            soft_bounce_threshold: 3,
            soft_bounce_window_days: 7,
            soft_bounce_suppress_days: 30,
            soft_bounce_classes: vec!["quota".into(), "message-expired".into(), "uncategorized".into()],
            api_wait_ms: 10_000,
        }
    }
}

impl Bounces {
    /// Checks what `Config::validate` can check without I/O; the rule file is compiled at
    /// `herald config check` and at start.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(s) = &self.secret {
            if s.len() < 16 {
                return Err("bounces.secret must be at least 16 bytes".into());
            }
        }
        if let Some(d) = &self.default_domain {
            let d = d.trim_end_matches('.');
            if d.is_empty() || !d.contains('.') || d.split('.').any(|l| l.is_empty() || l.len() > 63) {
                return Err(format!("bounces.default_domain `{d}` is not a domain name"));
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("bounces.tls_cert and bounces.tls_key go together".into());
        }
        if self.max_recipients == 0 || self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err("bounces.max_recipients, max_connections and max_connections_per_ip must be at least 1".into());
        }
        for c in &self.soft_bounce_classes {
            if herald_schemas::BounceClass::parse(c).is_none() {
                return Err(format!("bounces.soft_bounce_classes: unknown class `{c}`"));
            }
        }
        if self.soft_bounce_threshold > 0 && (self.soft_bounce_window_days == 0 || self.soft_bounce_suppress_days == 0)
        {
            return Err("bounces.soft_bounce_window_days and soft_bounce_suppress_days must be at least 1".into());
        }
        Ok(())
    }
}

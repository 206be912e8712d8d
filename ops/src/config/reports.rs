//! `[reports]`: bounce reports by email, a digest of each interval's bounces and
//! complaints sent to the account's `report_email` (`docs/config.md#reports`,
//! `docs/adr/0018-bounce-reports-by-email.md`).

use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reports {
    /// Send reports (from every node; a claim in the store makes one report per account
    /// and interval).
    pub enabled: bool,
    /// Interval of accounts that set none (`report_interval_secs`), in seconds.
    pub interval_secs: u32,
    /// Shortest interval an account may set, in seconds.
    pub min_interval_secs: u32,
    /// Longest interval an account may set, in seconds.
    pub max_interval_secs: u32,
    /// How long after an interval ends its report waits, so events from just before the
    /// boundary are in the projections, in milliseconds.
    pub grace_ms: u64,
    /// How often each node looks for due reports, in milliseconds.
    pub tick_ms: u64,
    /// Local part of the From address (`reports@<domain>`).
    pub from_local_part: String,
    /// Domain of the From address when the account has no verified sender domain.
    /// Unset: `[dns] zone` when Herald serves it, else `[delivery] helo_name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_domain: Option<String>,
}

impl Default for Reports {
    fn default() -> Self {
        Reports {
            enabled: true,
            interval_secs: 3600,
            min_interval_secs: 300,
            max_interval_secs: 7 * 86_400,
            grace_ms: 120_000,
            tick_ms: 15_000,
            from_local_part: "reports".into(),
            from_domain: None,
        }
    }
}

impl Reports {
    pub fn validate(&self) -> Result<(), String> {
        if self.min_interval_secs == 0 || self.min_interval_secs > self.max_interval_secs {
            return Err("reports.min_interval_secs must be at least 1 and at most reports.max_interval_secs".into());
        }
        if !(self.min_interval_secs..=self.max_interval_secs).contains(&self.interval_secs) {
            return Err(format!(
                "reports.interval_secs {} must be between min_interval_secs {} and max_interval_secs {}",
                self.interval_secs, self.min_interval_secs, self.max_interval_secs
            ));
        }
        let local = &self.from_local_part;
        if local.is_empty()
            || local.len() > 64
            || !local.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
        {
            return Err(format!(
                "reports.from_local_part `{local}` must be 1-64 letters, digits, `.`, `_`, `+` or `-`"
            ));
        }
        Ok(())
    }

    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms.max(50))
    }
}

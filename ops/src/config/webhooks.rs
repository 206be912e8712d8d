//! `[webhooks]`: delivery of account events to their webhook endpoints
//! (`docs/config.md#webhooks`, `docs/adr/0013-webhook-delivery.md`).

use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Webhooks {
    /// Dispatch events to endpoints (on nodes with the `deliver` role). The API and the
    /// projection of endpoints work either way.
    pub enabled: bool,
    /// Let endpoints be loopback, private, link-local or metadata addresses. Off in
    /// production: a customer's URL must not reach the service's own network.
    pub allow_private_targets: bool,
    /// Time for one request, connection included.
    pub timeout_secs: u64,
    /// Longest a first attempt holds its partition before it continues on the retry tiers.
    pub inline_budget_ms: u64,
    /// Waits between attempts, in seconds (at most 9; the Standard Webhooks schedule by
    /// default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h). After the last the
    /// event is dropped for that endpoint.
    pub retry_schedule_secs: Vec<u64>,
    /// Requests in flight per endpoint on one node, at most.
    pub endpoint_concurrency: usize,
    /// How long the previous secret keeps signing after a rotation.
    pub rotation_overlap_secs: u64,
    /// How often a node reloads the endpoints from the store.
    pub refresh_ms: u64,
    /// PEM certificates trusted for `https` endpoints besides the Mozilla roots (a private
    /// CA, tests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_roots_file: Option<std::path::PathBuf>,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            enabled: true,
            allow_private_targets: false,
            timeout_secs: 15,
            inline_budget_ms: 2000,
            retry_schedule_secs: herald_engine::webhooks::DEFAULT_SCHEDULE.iter().map(|d| d.as_secs()).collect(),
            endpoint_concurrency: 16,
            rotation_overlap_secs: 24 * 3600,
            refresh_ms: 1000,
            extra_roots_file: None,
        }
    }
}

impl Webhooks {
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_schedule_secs.len() > herald_engine::webhooks::MAX_TIERS as usize {
            return Err(format!(
                "webhooks.retry_schedule_secs has {} waits; at most {}",
                self.retry_schedule_secs.len(),
                herald_engine::webhooks::MAX_TIERS
            ));
        }
        if self.timeout_secs == 0 || self.endpoint_concurrency == 0 {
            return Err("webhooks.timeout_secs and webhooks.endpoint_concurrency must be at least 1".into());
        }
        Ok(())
    }

    /// The engine's settings.
    pub fn settings(&self) -> herald_engine::webhooks::Settings {
        herald_engine::webhooks::Settings {
            allow_private_targets: self.allow_private_targets,
            timeout: Duration::from_secs(self.timeout_secs),
            inline_budget: Duration::from_millis(self.inline_budget_ms.max(1)),
            schedule: self.retry_schedule_secs.iter().map(|s| Duration::from_secs(*s)).collect(),
            endpoint_concurrency: self.endpoint_concurrency,
            rotation_overlap: Duration::from_secs(self.rotation_overlap_secs),
            refresh: Duration::from_millis(self.refresh_ms.max(50)),
            wait: Duration::from_secs(10),
        }
    }
}

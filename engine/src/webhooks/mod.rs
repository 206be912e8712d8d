//! Webhooks: the account's endpoints (`endpoints.rs`, commands in `service.rs`), what an
//! event looks like to them (`payload.rs`), Standard Webhooks signatures (`signing.rs`), the
//! guard against internal targets (`ssrf.rs`), one HTTP attempt (`sender.rs`), and durable
//! dispatch on the consumer runtime (`dispatch.rs`): a consumer group over the topics that
//! hold customer-visible events makes each first attempt; failures wait on the webhook retry
//! tiers (`<prefix>.webhooks.retry.<tier>`) with the Standard Webhooks schedule. Outcomes
//! and endpoint changes go to `<prefix>.webhooks`, which `projector.rs` applies to the store.
//! See `docs/adr/0013-webhook-delivery.md`.

pub mod dispatch;
pub mod endpoints;
pub mod feed;
pub mod payload;
pub mod projector;
pub mod sender;
pub mod service;
pub mod signing;
pub mod ssrf;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Retry tiers (topics) that exist: the longest schedule allowed.
pub const MAX_TIERS: u32 = 9;

/// The Standard Webhooks schedule: waits after attempt 1, 2, …, failed (then it is dropped).
pub const DEFAULT_SCHEDULE: [Duration; 9] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(14 * 3600),
    Duration::from_secs(20 * 3600),
    Duration::from_secs(24 * 3600),
];

/// How webhooks are delivered (`[webhooks]`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Let targets be loopback, private or link-local addresses (tests, private networks).
    pub allow_private_targets: bool,
    /// Time for one request, connection included (15 s).
    pub timeout: Duration,
    /// How long a first attempt may hold its partition: past it the attempt continues on
    /// the retry tiers (so one slow endpoint never delays the others).
    pub inline_budget: Duration,
    /// Waits between attempts; its length (at most [`MAX_TIERS`]) + 1 is the number of
    /// attempts.
    pub schedule: Vec<Duration>,
    /// Requests in flight per endpoint, at most.
    pub endpoint_concurrency: usize,
    /// How long the previous secret still signs after a rotation.
    pub rotation_overlap: Duration,
    /// How often a node reloads the endpoints from the store.
    pub refresh: Duration,
    /// How long a command waits for the projection to show its change.
    pub wait: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allow_private_targets: false,
            timeout: Duration::from_secs(15),
            inline_budget: Duration::from_secs(2),
            schedule: DEFAULT_SCHEDULE.to_vec(),
            endpoint_concurrency: 16,
            rotation_overlap: Duration::from_secs(24 * 3600),
            refresh: Duration::from_secs(1),
            wait: Duration::from_secs(10),
        }
    }
}

impl Settings {
    /// The wait after attempt `attempt` failed, or `None` when it was the last.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        self.schedule.get(attempt.checked_sub(1)? as usize).copied()
    }
}

/// The retry tier (topic index) of a delivery whose next attempt is `attempt`: the wait
/// before attempt `n` is `schedule[n - 2]`; a first attempt set aside because its endpoint is
/// failing waits on tier 0.
pub fn tier_of(attempt: u32) -> u32 {
    attempt.saturating_sub(2).min(MAX_TIERS - 1)
}

/// One endpoint's lane: its concurrency, its idle connections and whether it is failing.
pub struct Lane {
    pub slots: tokio::sync::Semaphore,
    pub idle: sender::Idle,
    /// Until this instant (ms) new first attempts skip the endpoint and wait on tier 0.
    failing_until: AtomicI64,
}

impl Lane {
    pub fn failing(&self, now_ms: i64) -> Option<i64> {
        let until = self.failing_until.load(Ordering::Relaxed);
        (until > now_ms).then_some(until)
    }

    pub fn failed(&self, until_ms: i64) {
        self.failing_until.fetch_max(until_ms, Ordering::Relaxed);
    }

    pub fn succeeded(&self) {
        self.failing_until.store(0, Ordering::Relaxed);
    }
}

/// Every endpoint's lane on this node.
#[derive(Clone)]
pub struct Lanes {
    concurrency: usize,
    lanes: Arc<Mutex<HashMap<String, Arc<Lane>>>>,
}

impl Lanes {
    pub fn new(concurrency: usize) -> Self {
        Lanes { concurrency: concurrency.max(1), lanes: Default::default() }
    }

    pub fn get(&self, endpoint_id: &str) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes
            .entry(endpoint_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Lane {
                    slots: tokio::sync::Semaphore::new(self.concurrency),
                    idle: Default::default(),
                    failing_until: AtomicI64::new(0),
                })
            })
            .clone()
    }

    /// Closes every lane's connections that were unused for [`sender::IDLE_TIMEOUT`].
    pub fn sweep(&self) {
        let lanes: Vec<Arc<Lane>> = self.lanes.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for lane in lanes {
            lane.idle.sweep();
        }
    }

    /// Sweeps idle connections every few seconds until `shutdown`.
    pub async fn sweep_until(&self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(sender::IDLE_TIMEOUT / 3) => self.sweep(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_the_specs() {
        let s = Settings::default();
        assert_eq!(s.delay_after(1), Some(Duration::from_secs(5)));
        assert_eq!(s.delay_after(2), Some(Duration::from_secs(300)));
        assert_eq!(s.delay_after(9), Some(Duration::from_secs(86_400)));
        assert_eq!(s.delay_after(10), None, "ten attempts, then dropped");
        assert_eq!(tier_of(2), 0);
        assert_eq!(tier_of(1), 0);
        assert_eq!(tier_of(10), 8);
    }
}

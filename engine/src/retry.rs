//! The retry schedule: pure arithmetic, no I/O.
//!
//! Attempt `n` (n ≥ 2) waits `initial · 2^(n−2)`, capped at `max_delay`. Each distinct
//! delay is a *tier*, and each tier is its own topic, so every record in a tier partition
//! waits the same delay and the partition is ordered by due time: a worker only ever waits
//! for the head of the queue (the design of Uber's retry topics). A message whose next
//! attempt would fall after `accepted_at + max_age` fails instead.

use herald_schemas::Timestamp;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max_delay: Duration,
    pub max_age: Duration,
}

/// What to do after a temporary failure of attempt `attempt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Retry { attempt: u32, tier: u32, at: Timestamp },
    GiveUp,
}

impl RetryPolicy {
    /// Number of tiers (and retry topics) this policy needs.
    pub fn tiers(&self) -> u32 {
        let mut tiers = 1;
        let mut d = self.initial.max(Duration::from_millis(1));
        while d < self.max_delay && tiers < 32 {
            d *= 2;
            tiers += 1;
        }
        tiers
    }

    /// Delay of `tier`.
    pub fn delay(&self, tier: u32) -> Duration {
        self.initial.saturating_mul(1u32 << tier.min(31)).min(self.max_delay)
    }

    /// The decision after attempt `failed_attempt` (1-based) failed temporarily at `now`.
    pub fn next(&self, failed_attempt: u32, accepted_at: Timestamp, now: Timestamp) -> Next {
        let tier = failed_attempt.saturating_sub(1).min(self.tiers() - 1);
        let at = now.saturating_add(self.delay(tier));
        if at > accepted_at.saturating_add(self.max_age) {
            return Next::GiveUp;
        }
        Next::Retry { attempt: failed_attempt + 1, tier, at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(60),
            max_delay: Duration::from_secs(3600),
            max_age: Duration::from_secs(86_400),
        }
    }

    #[test]
    fn doubles_then_caps() {
        let p = policy();
        assert_eq!(p.tiers(), 7); // 1,2,4,8,16,32,60 minutes
        let t0 = Timestamp(0);
        let delays: Vec<i64> = (1..=9)
            .map(|a| match p.next(a, t0, t0) {
                Next::Retry { at, .. } => at.0 / 60_000,
                Next::GiveUp => -1,
            })
            .collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn gives_up_after_max_age() {
        let p = policy();
        let accepted = Timestamp(0);
        let late = Timestamp(86_400_000 - 30_000);
        assert_eq!(p.next(1, accepted, late), Next::GiveUp);
        assert!(matches!(p.next(1, accepted, Timestamp(0)), Next::Retry { attempt: 2, tier: 0, .. }));
    }
}

//! Report intervals: wall-clock multiples of the account's interval since the Unix epoch,
//! so every node, before and after any restart, computes the same boundaries. Pure.

use herald_schemas::Timestamp;
use std::time::Duration;

/// One report interval, `[from, to)` in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interval {
    pub from: Timestamp,
    pub to: Timestamp,
}

impl Interval {
    /// The interval of `secs` seconds that contains `at`.
    pub fn containing(at: Timestamp, secs: u32) -> Interval {
        let len = i64::from(secs.max(1)) * 1000;
        let from = at.millis().div_euclid(len) * len;
        Interval { from: Timestamp(from), to: Timestamp(from + len) }
    }

    /// The latest interval of `secs` seconds that ended at least `grace` before `now`:
    /// the one a report is due for. The grace lets the projections catch up with events
    /// that happened just before the boundary.
    pub fn last_closed(now: Timestamp, secs: u32, grace: Duration) -> Interval {
        let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX / 2);
        let current = Interval::containing(Timestamp(now.millis().saturating_sub(grace)), secs);
        let len = current.to.millis() - current.from.millis();
        Interval { from: Timestamp(current.from.millis() - len), to: current.from }
    }

    /// Stable key of the interval in the claim store (never a valid `Idempotency-Key`:
    /// it contains spaces, which customer keys cannot).
    pub fn claim_key(&self) -> String {
        format!("herald report {}-{}", self.from.millis(), self.to.millis())
    }

    pub fn secs(&self) -> u64 {
        ((self.to.millis() - self.from.millis()) / 1000) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_are_multiples_of_the_interval() {
        // 2026-11-28T00:59:59.999Z and the hour before it.
        let t = Timestamp(1_795_827_599_999);
        let i = Interval::containing(t, 3600);
        assert_eq!(i.from.millis() % 3_600_000, 0);
        assert!(i.from <= t && t < i.to);
        assert_eq!(i.to.millis() - i.from.millis(), 3_600_000);
        let next = Interval::containing(Timestamp(t.millis() + 1), 3600);
        assert_eq!(next.from, i.to, "one millisecond later is the next interval");
    }

    #[test]
    fn the_due_interval_waits_for_the_grace() {
        let hour = 3_600_000;
        let boundary = 1_795_827_600_000 - 1_795_827_600_000 % hour;
        let grace = Duration::from_secs(60);
        // 30 s after the boundary: still inside the grace, the due interval is the one before.
        let early = Interval::last_closed(Timestamp(boundary + 30_000), 3600, grace);
        assert_eq!(early.to, Timestamp(boundary - hour));
        // 61 s after: the interval that ended at the boundary is due.
        let due = Interval::last_closed(Timestamp(boundary + 61_000), 3600, grace);
        assert_eq!((due.from, due.to), (Timestamp(boundary - hour), Timestamp(boundary)));
        assert_eq!(due.secs(), 3600);
        assert_ne!(due.claim_key(), early.claim_key());
        assert!(due.claim_key().contains(' '));
    }
}

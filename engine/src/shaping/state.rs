//! The shaping state every node folds from `<prefix>.shaping`: active throttles, each
//! source's first use, warm-up counts per (source, provider, day) and each node's latest
//! demand. Pure: [`ShapingState::apply`] takes events in any order across partitions and
//! any number of times where that matters (throttles by id, first use by minimum).

use herald_schemas::{ProviderThrottled, ShapingEvent, Timestamp, UsageReported};
use std::collections::HashMap;

/// Reports older than this no longer count as a node's demand (the node stopped or is
/// cut off).
pub const REPORT_TTL_MS: i64 = 5_000;
/// Warm-up counts are kept this long after their last report.
const USAGE_TTL_MS: i64 = 3 * 86_400_000;

/// Warm-up counts, cluster-wide, of one (source, provider, warm-up day).
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    sent: u64,
    last: i64,
}

#[derive(Debug, Default)]
pub struct ShapingState {
    throttles: HashMap<String, ProviderThrottled>,
    /// Throttles lifted by hand, with their original expiry: a copy read later (a refresh
    /// that crossed the resume) stays lifted.
    lifted: HashMap<String, Timestamp>,
    first_use: HashMap<String, (Timestamp, String)>,
    /// When a first use or a throttle was last seen in the log (for the daily refresh).
    seen: HashMap<String, Timestamp>,
    usage: HashMap<(String, String, u32), Usage>,
    reports: HashMap<String, UsageReported>,
}

impl ShapingState {
    /// Folds one event; `recorded` is when the log took it (the record's timestamp).
    pub fn apply(&mut self, event: &ShapingEvent, recorded: Timestamp) {
        match event {
            ShapingEvent::Throttled(t) => {
                let seen = self.seen.entry(format!("t/{}", t.id)).or_insert(Timestamp(0));
                *seen = (*seen).max(recorded);
                if !self.lifted.contains_key(&t.id) {
                    self.throttles.entry(t.id.clone()).or_insert_with(|| t.clone());
                }
            }
            ShapingEvent::Resumed(r) => {
                let lifted = &mut self.lifted;
                self.throttles.retain(|id, t| {
                    let lift = t.provider == r.provider
                        && t.domain == r.domain
                        && (r.source.is_none() || t.source == r.source)
                        && r.id.as_ref().is_none_or(|want| want == id)
                        && t.at <= r.at;
                    if lift {
                        lifted.insert(id.clone(), t.until);
                    }
                    !lift
                });
            }
            ShapingEvent::SourceFirstUsed(f) => {
                let seen = self.seen.entry(format!("s/{}", f.source)).or_insert(Timestamp(0));
                *seen = (*seen).max(recorded);
                let entry = self.first_use.entry(f.source.clone()).or_insert((f.at, f.pool.clone()));
                if f.at < entry.0 {
                    *entry = (f.at, f.pool.clone());
                }
            }
            ShapingEvent::UsageReported(u) => {
                for lane in u.lanes.iter().filter(|l| l.day > 0 && l.sent > 0) {
                    let e = self.usage.entry((lane.source.clone(), lane.provider.clone(), lane.day)).or_default();
                    e.sent += lane.sent as u64;
                    e.last = e.last.max(u.at.0);
                }
                let newer = self.reports.get(&u.node).is_none_or(|old| old.seq < u.seq);
                if newer {
                    self.reports.insert(u.node.clone(), u.clone());
                }
            }
        }
    }

    /// Drops what can no longer matter: expired throttles, old counts and reports.
    pub fn prune(&mut self, now: Timestamp) {
        self.throttles.retain(|_, t| t.until > now);
        self.lifted.retain(|_, until| *until > now);
        self.usage.retain(|_, u| now.0 - u.last < USAGE_TTL_MS);
        self.reports.retain(|_, r| now.0 - r.at.0 < 10 * REPORT_TTL_MS);
        let (throttles, first_use) = (&self.throttles, &self.first_use);
        self.seen.retain(|k, _| match k.split_once('/') {
            Some(("t", id)) => throttles.contains_key(id),
            Some(("s", s)) => first_use.contains_key(s),
            _ => false,
        });
    }

    /// Throttles active at `now` that cover (provider, domain, source).
    pub fn throttles_for<'a>(
        &'a self,
        provider: &'a str,
        domain: Option<&'a str>,
        source: &'a str,
        now: Timestamp,
    ) -> impl Iterator<Item = &'a ProviderThrottled> + 'a {
        self.throttles.values().filter(move |t| {
            t.until > now
                && t.provider == provider
                && t.domain.as_deref() == domain
                && t.source.as_deref().is_none_or(|s| s == source)
        })
    }

    /// Every active throttle.
    pub fn active(&self, now: Timestamp) -> Vec<&ProviderThrottled> {
        let mut all: Vec<&ProviderThrottled> = self.throttles.values().filter(|t| t.until > now).collect();
        all.sort_by(|a, b| (&a.provider, a.at).cmp(&(&b.provider, b.at)));
        all
    }

    pub fn first_use(&self, source: &str) -> Option<Timestamp> {
        self.first_use.get(source).map(|(t, _)| *t)
    }

    /// Messages reported (by every node) through `source` to `provider` on warm-up `day`.
    pub fn used(&self, source: &str, provider: &str, day: u32) -> u64 {
        self.usage.get(&(source.to_owned(), provider.to_owned(), day)).map_or(0, |u| u.sent)
    }

    /// The demand other nodes reported recently for (provider, source): their backlog,
    /// the messages waiting for a slot or set aside for one (`waiting`).
    pub fn others_demand(&self, me: &str, provider: &str, source: &str, now: Timestamp) -> Vec<f64> {
        self.reports
            .values()
            .filter(|r| r.node != me && now.0 - r.at.0 < REPORT_TTL_MS)
            .filter_map(|r| {
                r.lanes.iter().find(|l| l.provider == provider && l.source == source).map(|l| l.waiting as f64)
            })
            .collect()
    }

    /// Other nodes with a recent report.
    pub fn live_nodes(&self, me: &str, now: Timestamp) -> usize {
        self.reports.values().filter(|r| r.node != me && now.0 - r.at.0 < REPORT_TTL_MS).count()
    }

    /// First uses and long throttles last recorded in the log before `before`: they are
    /// appended again (unchanged) so that log retention never forgets them.
    pub fn stale(&self, before: Timestamp, now: Timestamp) -> Vec<ShapingEvent> {
        let mut out = vec![];
        for (source, (at, pool)) in &self.first_use {
            if self.seen.get(&format!("s/{source}")).is_none_or(|s| *s < before) {
                out.push(ShapingEvent::SourceFirstUsed(herald_schemas::SourceFirstUsed {
                    source: source.clone(),
                    pool: pool.clone(),
                    node: String::new(),
                    at: *at,
                }));
            }
        }
        for t in self.throttles.values().filter(|t| t.until > now) {
            if self.seen.get(&format!("t/{}", t.id)).is_none_or(|s| *s < before) {
                out.push(ShapingEvent::Throttled(t.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_schemas::{LaneUsage, ProviderResumed, SourceFirstUsed, ThrottleAction};

    const T0: Timestamp = Timestamp(0);

    fn throttled(id: &str, source: Option<&str>, at: i64, until: i64) -> ShapingEvent {
        ShapingEvent::Throttled(ProviderThrottled {
            id: id.into(),
            provider: "google".into(),
            domain: None,
            source: source.map(Into::into),
            action: ThrottleAction::Suspend,
            rule: "r".into(),
            reason: "421".into(),
            node: "a".into(),
            at: Timestamp(at),
            until: Timestamp(until),
        })
    }

    fn resumed(source: Option<&str>, id: Option<&str>, at: i64) -> ShapingEvent {
        ShapingEvent::Resumed(ProviderResumed {
            provider: "google".into(),
            domain: None,
            source: source.map(Into::into),
            id: id.map(Into::into),
            reason: "op".into(),
            node: "a".into(),
            at: Timestamp(at),
        })
    }

    #[test]
    fn throttles_scope_expire_and_resume() {
        let mut s = ShapingState::default();
        s.apply(&throttled("1", Some("10.0.0.1"), 0, 1000), T0);
        s.apply(&throttled("2", None, 0, 2000), T0);
        s.apply(&throttled("2", None, 0, 2000), T0); // the same id again: one throttle
        let now = Timestamp(500);
        assert_eq!(s.throttles_for("google", None, "10.0.0.1", now).count(), 2);
        assert_eq!(s.throttles_for("google", None, "10.0.0.2", now).count(), 1);
        assert_eq!(s.throttles_for("yahoo", None, "10.0.0.1", now).count(), 0);
        assert_eq!(s.throttles_for("google", Some("x.test"), "10.0.0.1", now).count(), 0);
        assert_eq!(s.throttles_for("google", None, "10.0.0.1", Timestamp(1500)).count(), 1, "expired");
        s.apply(&resumed(Some("10.0.0.9"), None, 600), T0);
        assert_eq!(s.active(now).len(), 2, "another source's resume lifts nothing here");
        s.apply(&resumed(None, Some("1"), 600), T0);
        assert_eq!(s.active(now).len(), 1);
        s.apply(&throttled("1", Some("10.0.0.1"), 0, 1000), T0);
        assert_eq!(s.active(now).len(), 1, "a copy read after the resume stays lifted");
        s.apply(&throttled("3", None, 700, 5000), T0);
        s.apply(&resumed(None, None, 650), T0);
        assert_eq!(
            s.active(now).iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            vec!["3"],
            "only those before the resume"
        );
        s.prune(Timestamp(6000));
        assert!(s.active(Timestamp(0)).is_empty());
    }

    #[test]
    fn first_use_is_the_earliest_and_usage_adds_up() {
        let mut s = ShapingState::default();
        for at in [500, 300, 900] {
            s.apply(
                &ShapingEvent::SourceFirstUsed(SourceFirstUsed {
                    source: "10.0.0.1".into(),
                    pool: "p".into(),
                    node: "a".into(),
                    at: Timestamp(at),
                }),
                T0,
            );
        }
        assert_eq!(s.first_use("10.0.0.1"), Some(Timestamp(300)));
        let report = |node: &str, seq, sent, waiting| {
            ShapingEvent::UsageReported(UsageReported {
                node: node.into(),
                seq,
                interval_ms: 1000,
                lanes: vec![LaneUsage { provider: "google".into(), source: "10.0.0.1".into(), sent, waiting, day: 2 }],
                at: Timestamp(10_000),
            })
        };
        s.apply(&report("a", 1, 20, 5), T0);
        s.apply(&report("b", 1, 10, 0), T0);
        s.apply(&report("a", 2, 5, 100), T0);
        assert_eq!(s.used("10.0.0.1", "google", 2), 35);
        assert_eq!(s.used("10.0.0.1", "google", 1), 0);
        let mut d = s.others_demand("b", "google", "10.0.0.1", Timestamp(11_000));
        d.sort_by(f64::total_cmp);
        assert_eq!(d, vec![100.0], "a's latest report only: its backlog");
        assert!(s.others_demand("b", "google", "10.0.0.1", Timestamp(20_000)).is_empty(), "too old");
        assert_eq!(s.live_nodes("c", Timestamp(11_000)), 2);
    }

    #[test]
    fn stale_facts_are_refreshed() {
        let mut s = ShapingState::default();
        s.apply(
            &ShapingEvent::SourceFirstUsed(SourceFirstUsed {
                source: "10.0.0.1".into(),
                pool: "p".into(),
                node: "a".into(),
                at: Timestamp(100),
            }),
            Timestamp(100),
        );
        s.apply(&throttled("long", None, 100, 10_000_000), Timestamp(100));
        s.apply(&throttled("short", None, 100, 200), Timestamp(100));
        let stale = s.stale(Timestamp(1000), Timestamp(5000));
        assert_eq!(stale.len(), 2, "the first use and the long throttle, not the expired one");
        for e in &stale {
            s.apply(e, Timestamp(5000));
        }
        assert!(s.stale(Timestamp(1000), Timestamp(5000)).is_empty());
        assert_eq!(s.first_use("10.0.0.1"), Some(Timestamp(100)), "the refresh keeps the first use");
    }
}

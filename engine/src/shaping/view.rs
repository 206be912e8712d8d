//! What `GET /v1/admin/providers` and `GET /v1/admin/pools` show: each provider's
//! configured limits and rules, its live lanes on this node (effective limits, current
//! rate, connections, waiting messages, the node's share, warm-up), and the throttles in
//! force across the cluster; each pool's sources with their first use and warm-up day.

use super::automation::{Scope, Trigger};
use super::lanes::Lane;
use super::providers::{Limits, Provider};
use super::{pools, Shaper};
use crate::projector::rfc3339;
use herald_schemas::{ProviderThrottled, ThrottleAction, Timestamp};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Lanes listed per provider (the busiest first); `lanes_total` counts them all.
const MAX_LANES: usize = 50;

#[derive(Debug, Serialize)]
pub struct ProvidersView {
    /// The node that answered (lanes are per node; throttles are the cluster's).
    pub node: String,
    pub providers: Vec<ProviderView>,
}

#[derive(Debug, Serialize)]
pub struct ProviderView {
    pub name: String,
    pub mx_suffixes: Vec<String>,
    pub domains: Vec<String>,
    pub limits: Limits,
    pub rules: Vec<RuleView>,
    pub throttles: Vec<ThrottleView>,
    pub lanes: Vec<LaneView>,
    pub lanes_total: usize,
}

#[derive(Debug, Serialize)]
pub struct RuleView {
    pub name: String,
    pub action: ThrottleAction,
    /// `immediately`, or `N/<seconds>s`.
    pub trigger: String,
    pub duration_secs: u64,
    pub scope: Scope,
}

#[derive(Debug, Serialize)]
pub struct ThrottleView {
    pub id: String,
    pub domain: Option<String>,
    /// `null`: every source.
    pub source: Option<String>,
    pub action: ThrottleAction,
    pub rule: String,
    pub reason: String,
    pub node: String,
    pub since: String,
    pub until: String,
}

#[derive(Debug, Serialize)]
pub struct Connections {
    pub open: usize,
    pub busy: usize,
    /// `null`: no cap.
    pub cap: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct Warmup {
    pub day: u32,
    /// `null`: the schedule is over.
    pub cap: Option<u64>,
    pub used: u64,
}

#[derive(Debug, Serialize)]
pub struct LaneView {
    pub source: String,
    /// For the `default` provider: the recipient domain.
    pub domain: Option<String>,
    /// Messages per second allowed on this node now (`null`: no limit).
    pub rate_limit: Option<f64>,
    /// Messages per second admitted over the last ten seconds.
    pub current_rate: f64,
    pub connections: Connections,
    /// Messages waiting in the lane's line.
    pub waiting: usize,
    /// This node's share of the cluster-wide limits.
    pub share: f64,
    pub suspended_until: Option<String>,
    pub warmup: Option<Warmup>,
}

#[derive(Debug, Serialize)]
pub struct PoolsView {
    pub pools: Vec<PoolView>,
}

#[derive(Debug, Serialize)]
pub struct PoolView {
    pub name: String,
    pub sources: Vec<SourceView>,
}

#[derive(Debug, Serialize)]
pub struct SourceView {
    pub ip: Option<String>,
    pub ehlo: String,
    pub weight: u32,
    pub first_used: Option<String>,
    /// Warm-up day now (1 = the day of the first use); `null` without a schedule.
    pub warmup_day: Option<u32>,
    pub warmup_days: Option<usize>,
}

fn throttle_view(t: &ProviderThrottled) -> ThrottleView {
    ThrottleView {
        id: t.id.clone(),
        domain: t.domain.clone(),
        source: t.source.clone(),
        action: t.action,
        rule: t.rule.clone(),
        reason: t.reason.clone(),
        node: t.node.clone(),
        since: rfc3339(t.at),
        until: rfc3339(t.until),
    }
}

impl Shaper {
    /// Every provider (or the one named).
    pub fn view(&self, only: Option<&str>) -> ProvidersView {
        let now = Timestamp::now();
        let instant = Instant::now();
        let lanes = self.lanes();
        let providers = self
            .providers()
            .all()
            .iter()
            .filter(|p| only.is_none_or(|n| n == p.name))
            .map(|p| self.provider_view(p, &lanes, now, instant))
            .collect();
        ProvidersView { node: self.node().to_owned(), providers }
    }

    fn provider_view(
        &self,
        p: &Provider,
        lanes: &[std::sync::Arc<Lane>],
        now: Timestamp,
        instant: Instant,
    ) -> ProviderView {
        let throttles =
            self.state().active(now).into_iter().filter(|t| t.provider == p.name).map(throttle_view).collect();
        let mut mine: Vec<(f64, LaneView)> = lanes
            .iter()
            .filter(|l| l.key.provider == p.name)
            .map(|l| {
                let rate = l.current_rate(instant);
                (rate, self.lane_view(l, rate, now))
            })
            .collect();
        mine.sort_by(|a, b| b.0.total_cmp(&a.0));
        let lanes_total = mine.len();
        ProviderView {
            name: p.name.clone(),
            mx_suffixes: p.mx_suffixes.clone(),
            domains: p.domains.clone(),
            limits: p.limits,
            rules: p
                .rules
                .iter()
                .map(|r| RuleView {
                    name: r.name.clone(),
                    action: r.action,
                    trigger: match r.trigger {
                        Trigger::Immediately => "immediately".into(),
                        Trigger::Threshold { count, window } => format!("{count}/{}s", window.as_secs()),
                    },
                    duration_secs: r.duration.as_secs(),
                    scope: r.scope,
                })
                .collect(),
            throttles,
            lanes: mine.into_iter().take(MAX_LANES).map(|(_, v)| v).collect(),
            lanes_total,
        }
    }

    fn lane_view(&self, l: &Lane, current_rate: f64, now: Timestamp) -> LaneView {
        let e = self.effective(l, now);
        let (open, busy) = l.connections.counts();
        let warmup = l.source.warmup.as_ref().map(|w| {
            let first = self.state().first_use(&l.source.label).unwrap_or(now);
            let day = pools::day_of(first, now);
            let used = self.state().used(&l.source.label, &l.provider.name, day)
                + self.local_usage(&l.provider.name, &l.source.label, day);
            Warmup { day, cap: w.cap(day), used }
        });
        LaneView {
            source: l.key.source.clone(),
            domain: l.key.domain.clone(),
            rate_limit: e.rate,
            current_rate,
            connections: Connections { open, busy, cap: l.connections.cap() },
            waiting: l.waiting.load(Ordering::Relaxed),
            share: l.share(),
            suspended_until: e.suspended_until.map(rfc3339),
            warmup,
        }
    }

    /// Every pool and its sources.
    pub fn pools_view(&self) -> PoolsView {
        let now = Timestamp::now();
        let state = self.state();
        let mut pools: Vec<PoolView> = self
            .pools()
            .all()
            .map(|p| PoolView {
                name: p.name.clone(),
                sources: p
                    .sources
                    .iter()
                    .map(|s| {
                        let first = state.first_use(&s.label);
                        SourceView {
                            ip: s.ip.map(|ip| ip.to_string()),
                            ehlo: s.ehlo.clone(),
                            weight: s.weight,
                            first_used: first.map(rfc3339),
                            warmup_day: s.warmup.as_ref().map(|_| pools::day_of(first.unwrap_or(now), now)),
                            warmup_days: s.warmup.as_ref().map(|w| w.days()),
                        }
                    })
                    .collect(),
            })
            .collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        PoolsView { pools }
    }
}

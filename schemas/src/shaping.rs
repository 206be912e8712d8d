//! Traffic-shaping events, on the `<prefix>.shaping` topic. Every node reads all of them
//! (not as a consumer group: each node folds the whole topic), so every node, and every
//! node that restarts, applies the same throttles and knows each source's first use and
//! the cluster's warm-up counts (`herald_engine::shaping::state`).
//!
//! - [`ProviderThrottled`]: an adaptive-backoff rule fired (or an operator suspended a
//!   provider by hand): until `until`, the scope sends less, or nothing.
//! - [`ProviderResumed`]: an operator lifted throttles before their expiry.
//! - [`SourceFirstUsed`]: a pool's source address sent its first message; warm-up days
//!   count from here.
//! - [`UsageReported`]: a node's messages per (provider, source) over the last interval
//!   and what is waiting; warm-up caps and cluster-wide rate shares are computed from them.

use crate::Timestamp;
use bincode::{Decode, Encode};
use serde::Serialize;

/// What a throttle does to its scope while it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ThrottleAction {
    /// No message is attempted; they wait (without using up an attempt).
    Suspend,
    /// The message rate is multiplied by `factor_permille / 1000`.
    ScaleRate { factor_permille: u32 },
    /// The message rate is at most `messages` per `per_secs` seconds.
    LimitRate { messages: u32, per_secs: u32 },
    /// At most `max` connections at once.
    CapConnections { max: u32 },
}

/// A throttle began. Nodes apply it from when they read it until `until`, unless a
/// [`ProviderResumed`] lifts it earlier. The same `id` appended again (a refresh of a long
/// throttle, or a second node reacting to the same replies) is the same throttle.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ProviderThrottled {
    pub id: String,
    /// The provider's name in the providers file (`google`, `default`, ...).
    pub provider: String,
    /// For the `default` provider, whose limits are per recipient domain: the domain the
    /// throttle applies to. `None` for named providers.
    pub domain: Option<String>,
    /// The source address it applies to; `None`: every source.
    pub source: Option<String>,
    pub action: ThrottleAction,
    /// The rule's name, or `manual`.
    pub rule: String,
    /// The reply that fired the rule, or the operator's reason.
    pub reason: String,
    /// The node that appended it.
    pub node: String,
    pub at: Timestamp,
    pub until: Timestamp,
}

/// Throttles lifted before their expiry (by an operator).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ProviderResumed {
    pub provider: String,
    pub domain: Option<String>,
    /// Lift only the throttles of this source; `None`: of every source.
    pub source: Option<String>,
    /// Lift only this throttle; `None`: every throttle of the scope that began before `at`.
    pub id: Option<String>,
    pub reason: String,
    pub node: String,
    pub at: Timestamp,
}

/// A source address of a pool sent for the first time (appended again, unchanged, about
/// once a day so that log retention never forgets it).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SourceFirstUsed {
    pub source: String,
    pub pool: String,
    pub node: String,
    pub at: Timestamp,
}

/// One (provider, source) of a [`UsageReported`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct LaneUsage {
    pub provider: String,
    /// The source address, or `default` when no pool is configured.
    pub source: String,
    /// Messages admitted in the interval.
    pub sent: u32,
    /// Messages waiting for this lane at the end of the interval (queued or set aside).
    pub waiting: u32,
    /// The source's warm-up day the messages count against (1 = the day of its first
    /// use); 0 when the source has no warm-up schedule.
    pub day: u32,
}

/// A node's usage over the last interval. Only lanes with something to say are listed.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct UsageReported {
    pub node: String,
    /// Increasing per node, so a node recognises its own reports.
    pub seq: u64,
    pub interval_ms: u32,
    pub lanes: Vec<LaneUsage>,
    pub at: Timestamp,
}

/// Traffic-shaping events (`<prefix>.shaping`).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum ShapingEvent {
    Throttled(ProviderThrottled),
    Resumed(ProviderResumed),
    SourceFirstUsed(SourceFirstUsed),
    UsageReported(UsageReported),
}

impl ShapingEvent {
    /// Stable name, never reused for another shape.
    pub fn event_type(&self) -> &'static str {
        match self {
            ShapingEvent::Throttled(_) => "provider.throttled",
            ShapingEvent::Resumed(_) => "provider.resumed",
            ShapingEvent::SourceFirstUsed(_) => "source.first_used",
            ShapingEvent::UsageReported(_) => "shaping.usage_reported",
        }
    }

    /// The partition key: the provider, the source, or the reporting node.
    pub fn key(&self) -> &str {
        match self {
            ShapingEvent::Throttled(e) => &e.provider,
            ShapingEvent::Resumed(e) => &e.provider,
            ShapingEvent::SourceFirstUsed(e) => &e.source,
            ShapingEvent::UsageReported(e) => &e.node,
        }
    }
}

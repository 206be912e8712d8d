//! Projections: what queries read, built from the log by [`crate::projector`].
//!
//! A [`ProjectionStore`] keeps, per account, every projected event of every message (from
//! which the status is derived at read time, so events may arrive in any order across
//! topics), its engagement events (opens, clicks, unsubscriptions: [`EngagementRow`]),
//! per-hour counters and per-hour, per-URL click counters, the current state of every
//! sender domain ([`crate::domains::state::DomainState`], one row per domain, tombstones
//! included), an index of messages by recipient (message search), and the accounts
//! ([`accounts`]). Backends: [`embedded`] (redb, default) and [`cql`] (ScyllaDB or
//! Cassandra). `tests/store_conformance.rs` runs against both.

pub mod accounts;
pub mod cql;
pub mod embedded;
pub mod feedback;
pub mod webhooks;

use crate::domains::state::DomainState;
use async_trait::async_trait;
use herald_schemas::{AccountId, MessageId, Timestamp};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors of a store. Queries map them to HTTP 503; the projector retries the batch.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("embedded store: {0}")]
    Embedded(String),
    #[error("cql: {0}")]
    Cql(String),
    /// 400 `invalid_cursor`: the client sent a cursor this server did not make.
    #[error("invalid cursor `{0}`")]
    BadCursor(String),
}

/// What a projected event counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Accepted,
    Delivered,
    Deferred,
    Failed,
    /// A bounce that ended the message, of a permanent type (counts `bounced_permanent`).
    Bounced,
    /// A bounce that ended the message, transient or undetermined (`bounced_transient`).
    SoftBounced,
    /// A spam complaint (`complained`).
    Complained,
    /// Not sent: the recipient is suppressed (`suppressed`).
    Suppressed,
    /// Shown with the message but changes neither its status nor a counter (a delayed
    /// DSN, a not-spam report, the suppression a bounce caused).
    Info,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Accepted => "accepted",
            Kind::Delivered => "delivered",
            Kind::Deferred => "deferred",
            Kind::Failed => "failed",
            Kind::Bounced => "bounced",
            Kind::SoftBounced => "soft_bounced",
            Kind::Complained => "complained",
            Kind::Suppressed => "suppressed",
            Kind::Info => "info",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "accepted" => Kind::Accepted,
            "delivered" => Kind::Delivered,
            "deferred" => Kind::Deferred,
            "failed" => Kind::Failed,
            "bounced" => Kind::Bounced,
            "soft_bounced" => Kind::SoftBounced,
            "complained" => Kind::Complained,
            "suppressed" => Kind::Suppressed,
            "info" => Kind::Info,
            _ => return None,
        })
    }

    /// The status a message has when this is its latest word; `None` for `Info`.
    pub fn status(self) -> Option<Status> {
        Some(match self {
            Kind::Accepted => Status::Queued,
            Kind::Delivered => Status::Delivered,
            Kind::Deferred => Status::Deferred,
            Kind::Failed => Status::Failed,
            Kind::Bounced | Kind::SoftBounced => Status::Bounced,
            Kind::Complained => Status::Complained,
            Kind::Suppressed => Status::Suppressed,
            Kind::Info => return None,
        })
    }

    /// Whether the kind has an hourly counter.
    pub fn counted(self) -> bool {
        self != Kind::Info
    }
}

/// Sequence numbers at or above this are feedback events (see [`feedback_seq`]): they sort
/// after every attempt, among themselves by time.
pub const FEEDBACK_SEQ: u32 = 0x8000_0000;

/// The projection sequence of a feedback event with id `id`: stable (so a replay is
/// skipped), in the feedback range.
pub fn feedback_seq(id: &str) -> u32 {
    // FNV-1a, 32 bits: stable across builds and platforms.
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    FEEDBACK_SEQ | (h & 0x7fff_ffff)
}

/// One event as the projection keeps it. `(account, message_id, seq)` identifies it, so
/// applying it twice (at-least-once delivery) changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Projected {
    pub account: AccountId,
    pub message_id: MessageId,
    /// 0 for acceptance, the attempt number for attempts.
    pub seq: u32,
    pub recipient: String,
    pub kind: Kind,
    pub at: Timestamp,
    /// The event as shown by `GET /v1/messages/{id}`.
    pub detail: serde_json::Value,
}

/// Message status as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Deferred,
    Delivered,
    Failed,
    /// A bounce ended the message (synchronous refusal or DSN).
    Bounced,
    /// The recipient complained.
    Complained,
    /// Not sent: the recipient is on the account's suppression list.
    Suppressed,
}

/// A message and its story, as `GET /v1/messages/{id}` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    /// 32 lower-case hex digits (UUIDv7).
    #[schema(value_type = String)]
    pub id: MessageId,
    pub recipient: String,
    pub status: Status,
    /// Acceptance, then each attempt, in order.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
}

/// One hour of an account's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourStats {
    /// The hour's start, epoch milliseconds.
    pub hour: i64,
    pub stats: Stats,
}

/// Counters of an account over a time range. Engagement counters count every event,
/// machine traffic included; the unique ones count messages, each once, at its first event
/// not taken for a machine (`unsubscribed` counts each message once too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub accepted: u64,
    pub delivered: u64,
    pub deferred: u64,
    pub failed: u64,
    /// Bounces that ended a message and say the address is bad.
    pub bounced_permanent: u64,
    /// Bounces that ended a message for another reason (transient or undetermined).
    pub bounced_transient: u64,
    /// Spam complaints (not-spam reports are not counted).
    pub complained: u64,
    /// Messages not sent because the recipient is suppressed.
    pub suppressed: u64,
    pub opened: u64,
    pub unique_opened: u64,
    pub clicked: u64,
    pub unique_clicked: u64,
    pub unsubscribed: u64,
}

impl Stats {
    /// Adds every counter of `other`.
    pub fn merge(&mut self, other: &Stats) {
        let Stats {
            accepted,
            delivered,
            deferred,
            failed,
            bounced_permanent,
            bounced_transient,
            complained,
            suppressed,
            opened,
            unique_opened,
            clicked,
            unique_clicked,
            unsubscribed,
        } = *other;
        self.accepted += accepted;
        self.delivered += delivered;
        self.deferred += deferred;
        self.failed += failed;
        self.bounced_permanent += bounced_permanent;
        self.bounced_transient += bounced_transient;
        self.complained += complained;
        self.suppressed += suppressed;
        self.opened += opened;
        self.unique_opened += unique_opened;
        self.clicked += clicked;
        self.unique_clicked += unique_clicked;
        self.unsubscribed += unsubscribed;
    }

    pub fn add(&mut self, kind: Kind, n: u64) {
        match kind {
            Kind::Accepted => self.accepted += n,
            Kind::Delivered => self.delivered += n,
            Kind::Deferred => self.deferred += n,
            Kind::Failed => self.failed += n,
            Kind::Bounced => self.bounced_permanent += n,
            Kind::SoftBounced => self.bounced_transient += n,
            Kind::Complained => self.complained += n,
            Kind::Suppressed => self.suppressed += n,
            Kind::Info => {}
        }
    }

    /// Adds `n` to the counter called `name` (a [`Kind`] or an [`Counter`]); unknown names
    /// are ignored.
    pub fn add_named(&mut self, name: &str, n: u64) {
        if let Some(kind) = Kind::parse(name) {
            return self.add(kind, n);
        }
        match Counter::parse(name) {
            Some(Counter::Opened) => self.opened += n,
            Some(Counter::UniqueOpened) => self.unique_opened += n,
            Some(Counter::Clicked) => self.clicked += n,
            Some(Counter::UniqueClicked) => self.unique_clicked += n,
            Some(Counter::Unsubscribed) => self.unsubscribed += n,
            None => {}
        }
    }
}

/// The engagement counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Opened,
    UniqueOpened,
    Clicked,
    UniqueClicked,
    Unsubscribed,
}

impl Counter {
    pub const ALL: [Counter; 5] =
        [Counter::Opened, Counter::UniqueOpened, Counter::Clicked, Counter::UniqueClicked, Counter::Unsubscribed];

    pub fn as_str(self) -> &'static str {
        match self {
            Counter::Opened => "opened",
            Counter::UniqueOpened => "unique_opened",
            Counter::Clicked => "clicked",
            Counter::UniqueClicked => "unique_clicked",
            Counter::Unsubscribed => "unsubscribed",
        }
    }

    pub fn parse(s: &str) -> Option<Counter> {
        Counter::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// What an engagement event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngagementKind {
    Opened,
    Clicked,
    Unsubscribed,
}

impl EngagementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngagementKind::Opened => "opened",
            EngagementKind::Clicked => "clicked",
            EngagementKind::Unsubscribed => "unsubscribed",
        }
    }
}

/// One engagement event as the projection keeps it; `(account, message_id, event_id)`
/// identifies it, so applying it twice changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngagementRow {
    pub account: AccountId,
    pub message_id: MessageId,
    pub event_id: String,
    pub kind: EngagementKind,
    pub at: Timestamp,
    /// Taken for machine traffic: counted, but never as unique.
    pub machine: bool,
    /// The clicked URL.
    pub url: Option<String>,
    /// The event as shown by `GET /v1/messages/{id}`.
    pub detail: serde_json::Value,
}

impl EngagementRow {
    /// The counters a new row adds to, given which of its firsts it is (see [`Firsts`]).
    pub fn counters(&self, first: Firsts) -> Vec<Counter> {
        match self.kind {
            EngagementKind::Opened => {
                let mut c = vec![Counter::Opened];
                if first.message {
                    c.push(Counter::UniqueOpened);
                }
                c
            }
            EngagementKind::Clicked => {
                let mut c = vec![Counter::Clicked];
                if first.message {
                    c.push(Counter::UniqueClicked);
                }
                c
            }
            EngagementKind::Unsubscribed if first.message => vec![Counter::Unsubscribed],
            EngagementKind::Unsubscribed => vec![],
        }
    }

    /// The "first of" markers this row may claim: per message (and kind), and per message and
    /// URL for clicks. Machine events claim none (except an unsubscription, which counts once
    /// whoever made it).
    pub fn first_keys(&self) -> (Option<String>, Option<String>) {
        match self.kind {
            EngagementKind::Unsubscribed => (Some("unsubscribed".into()), None),
            _ if self.machine => (None, None),
            EngagementKind::Opened => (Some("opened".into()), None),
            EngagementKind::Clicked => (Some("clicked".into()), self.url.as_ref().map(|u| format!("clicked {u}"))),
        }
    }
}

/// Which firsts a new engagement row turned out to be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Firsts {
    /// The first (human) event of its kind for the message.
    pub message: bool,
    /// The first human click of this URL for the message.
    pub url: bool,
}

/// Clicks of one URL over a time range (`GET /v1/stats/links`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LinkStats {
    pub url: String,
    pub clicks: u64,
    /// Messages (so recipients) that clicked it at least once, machines left out.
    pub unique_clicks: u64,
}

/// Most URLs `links` returns (the most clicked first).
pub const MAX_LINK_ROWS: usize = 1000;

/// Sums per-hour link rows into the most clicked URLs.
pub fn top_links(rows: impl IntoIterator<Item = (String, u64, u64)>) -> Vec<LinkStats> {
    let mut by_url: std::collections::HashMap<String, (u64, u64)> = std::collections::HashMap::new();
    for (url, clicks, unique) in rows {
        let e = by_url.entry(url).or_default();
        e.0 += clicks;
        e.1 += unique;
    }
    let mut out: Vec<LinkStats> =
        by_url.into_iter().map(|(url, (clicks, unique_clicks))| LinkStats { url, clicks, unique_clicks }).collect();
    out.sort_by(|a, b| b.clicks.cmp(&a.clicks).then_with(|| a.url.cmp(&b.url)));
    out.truncate(MAX_LINK_ROWS);
    out
}

/// Builds the view of one message from its events, in any order: acceptance and attempts
/// by their number, then feedback events by time, then engagement events by time. The
/// status is that of the latest delivery or feedback event that has one; engagement never
/// changes it.
pub fn view(mut events: Vec<Projected>, mut engagement: Vec<EngagementRow>) -> Option<MessageView> {
    events.sort_by_key(|e| if e.seq >= FEEDBACK_SEQ { (1, e.at.millis(), e.seq) } else { (0, i64::from(e.seq), 0) });
    engagement.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.event_id.cmp(&b.event_id)));
    let last = events.last()?;
    let status = events.iter().rev().find_map(|e| e.kind.status()).unwrap_or(Status::Queued);
    Some(MessageView {
        id: last.message_id.clone(),
        recipient: last.recipient.clone(),
        status,
        events: events.into_iter().map(|e| e.detail).chain(engagement.into_iter().map(|e| e.detail)).collect(),
    })
}

/// What an `Idempotency-Key` of `POST /v1/send` holds (keys are per account). Stored by
/// the request that claimed the key, before it appends its messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// SHA-256 (hex) of the request: the same key with another request is refused.
    pub fingerprint: String,
    /// Unique id of the request holding the key.
    pub claim: String,
    /// The 202 reply body (the message ids are chosen before the append).
    pub response: String,
    /// One of the request's messages: once the projection shows it, the request's append
    /// happened, even if its holder died before marking the record done.
    pub probe: MessageId,
    /// The append succeeded and the reply was sent.
    pub done: bool,
    pub claimed_at: Timestamp,
}

/// The outcome of [`ProjectionStore::claim_idempotency`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free (or expired); the record is now the caller's.
    Won,
    /// Another request holds the key; its record.
    Held(IdempotencyRecord),
}

/// How far a log partition's events may have been applied to the messages projection
/// ([`ProjectionStore::projected_through`], `docs/adr/0021-projection-marks.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectedThrough {
    /// Nothing of the partition was ever applied (a store that has kept marks since it was
    /// created, and none for this partition).
    Never,
    /// Events at offsets up to this one may have been applied; none after it.
    Through(u64),
    /// Not known: the store was projected into before it kept marks.
    Unknown,
}

/// Read models of the log.
#[async_trait]
pub trait ProjectionStore: Send + Sync + 'static {
    /// Applies a batch; idempotent per `(account, message_id, seq)`. Durable on return.
    async fn apply(&self, batch: &[Projected]) -> Result<(), StoreError>;

    /// Whether [`Self::apply_from`] saves work for events known never to have been applied
    /// (a store whose idempotence check is a read over the network). The projector then
    /// keeps a mark per log partition ([`Self::set_projected_through`]) to know which those
    /// are (`docs/adr/0021-projection-marks.md`).
    fn skips_reads(&self) -> bool {
        false
    }

    /// Applies a batch whose events from index `unseen_from` on were never applied before
    /// (no read needed to keep them from being counted twice); the ones before it may have
    /// been. The default checks every event.
    async fn apply_from(&self, batch: &[Projected], unseen_from: usize) -> Result<(), StoreError> {
        let _ = unseen_from;
        self.apply(batch).await
    }

    /// How far some projector may have applied `topic`/`partition`.
    async fn projected_through(&self, topic: &str, partition: u32) -> Result<ProjectedThrough, StoreError> {
        let _ = (topic, partition);
        Ok(ProjectedThrough::Unknown)
    }

    /// Records, before applying anything beyond it, that events of `topic`/`partition`
    /// through `through` may have been applied.
    async fn set_projected_through(&self, topic: &str, partition: u32, through: u64) -> Result<(), StoreError> {
        let _ = (topic, partition, through);
        Ok(())
    }

    /// One message of one account; `None` if the account has no such message.
    async fn message(&self, account: &AccountId, id: &MessageId) -> Result<Option<MessageView>, StoreError>;

    /// Counters of the hours that start in `[from, to)`, after rounding `from` down to its hour.
    async fn stats(&self, account: &AccountId, from: Timestamp, to: Timestamp) -> Result<Stats, StoreError>;

    /// The same counters hour by hour (hours without events left out), oldest first.
    async fn hourly(&self, account: &AccountId, from: Timestamp, to: Timestamp) -> Result<Vec<HourStats>, StoreError>;

    /// Messages of `account` to `recipient` (compared without case), newest first, accepted
    /// before `before`; at most `limit`.
    async fn messages_to(
        &self,
        account: &AccountId,
        recipient: &str,
        before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<MessageView>, StoreError>;

    /// Applies engagement events; idempotent per `(account, message_id, event_id)`, counting
    /// each new one (see [`EngagementRow::counters`]). Durable on return. Events of one
    /// message come from one log partition, read by one task, so they never race.
    async fn apply_engagement(&self, batch: &[EngagementRow]) -> Result<(), StoreError>;

    /// Clicks per URL over the hours that start in `[from, to)` (see [`top_links`]).
    async fn links(&self, account: &AccountId, from: Timestamp, to: Timestamp) -> Result<Vec<LinkStats>, StoreError>;

    /// One sender domain (a removed one as its tombstone); `None` if never added.
    async fn domain(&self, domain: &str) -> Result<Option<DomainState>, StoreError>;

    /// Replaces a sender domain's state. Durable on return. Only the domain projector
    /// writes it, one task per partition, so writes of one domain never race.
    async fn put_domain(&self, state: &DomainState) -> Result<(), StoreError>;

    /// Every sender domain, tombstones included (the service zone and signing read this).
    async fn domains(&self) -> Result<Vec<DomainState>, StoreError>;

    /// Stores `record` under `(account, key)` for `ttl` unless a live record is there
    /// already. Atomic across nodes (a CQL lightweight transaction; one redb write).
    async fn claim_idempotency(
        &self,
        account: &AccountId,
        key: &str,
        record: &IdempotencyRecord,
        ttl: std::time::Duration,
    ) -> Result<Claim, StoreError>;

    /// Replaces the record of `(account, key)` with `record` only if it is still held by
    /// `claim`; returns whether it was. Keeps the key for `ttl` from now.
    async fn replace_idempotency(
        &self,
        account: &AccountId,
        key: &str,
        claim: &str,
        record: &IdempotencyRecord,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError>;

    /// Frees `(account, key)` if `claim` still holds it (the request was not accepted).
    async fn release_idempotency(&self, account: &AccountId, key: &str, claim: &str) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u32, kind: Kind) -> Projected {
        Projected {
            account: AccountId("a".into()),
            message_id: MessageId("m".into()),
            seq,
            recipient: "r@x.test".into(),
            kind,
            at: Timestamp(seq as i64),
            detail: serde_json::json!({ "seq": seq }),
        }
    }

    #[test]
    fn status_follows_the_latest_attempt_whatever_the_arrival_order() {
        assert_eq!(view(vec![ev(0, Kind::Accepted)], vec![]).unwrap().status, Status::Queued);
        let v = view(vec![ev(2, Kind::Delivered), ev(0, Kind::Accepted), ev(1, Kind::Deferred)], vec![]).unwrap();
        assert_eq!(v.status, Status::Delivered);
        assert_eq!(v.events[0]["seq"], 0);
        assert_eq!(view(vec![ev(1, Kind::Failed)], vec![]).unwrap().status, Status::Failed);
        assert!(view(vec![], vec![]).is_none());
        let opened = EngagementRow {
            account: AccountId("a".into()),
            message_id: MessageId("m".into()),
            event_id: "e".into(),
            kind: EngagementKind::Opened,
            at: Timestamp(9),
            machine: false,
            url: None,
            detail: serde_json::json!({ "type": "message.opened" }),
        };
        let v = view(vec![ev(1, Kind::Delivered), ev(0, Kind::Accepted)], vec![opened]).unwrap();
        assert_eq!(v.status, Status::Delivered, "engagement does not change the status");
        assert_eq!(v.events[2]["type"], "message.opened");
    }

    #[test]
    fn feedback_comes_after_attempts_and_info_keeps_the_status() {
        let mut bounce = ev(feedback_seq("dsn-1"), Kind::Bounced);
        bounce.at = Timestamp(-5); // even if its clock says earlier
        let v = view(vec![bounce.clone(), ev(1, Kind::Delivered), ev(0, Kind::Accepted)], vec![]).unwrap();
        assert_eq!(v.status, Status::Bounced);
        let mut info = ev(feedback_seq("dsn-2"), Kind::Info);
        info.at = Timestamp(10);
        let v = view(vec![ev(0, Kind::Accepted), ev(1, Kind::Delivered), info.clone()], vec![]).unwrap();
        assert_eq!(v.status, Status::Delivered);
        assert_eq!(v.events.len(), 3);
        let mut complaint = ev(feedback_seq("arf-1"), Kind::Complained);
        complaint.at = Timestamp(20);
        let v = view(vec![complaint, info, ev(1, Kind::Delivered), bounce], vec![]).unwrap();
        assert_eq!(v.status, Status::Complained, "the latest word wins");
        assert!(feedback_seq("a") >= FEEDBACK_SEQ && feedback_seq("a") != feedback_seq("b"));
    }
}

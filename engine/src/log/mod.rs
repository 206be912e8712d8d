//! The event log: an append-only, partitioned, durable sequence of encoded events.
//!
//! Two backends implement [`EventLog`]: [`embedded`] (redb, the single-process default)
//! and [`kafka`] (the scale-out backend). Both are partitioned the same way (see
//! [`crate::routing`]) and both give the same guarantees, which `tests/log_conformance.rs`
//! checks against each:
//! - `append` returns only once every record is durable (fsynced, or acked by all in-sync
//!   Kafka replicas); a failed `append` may have stored some records, never reported them.
//! - records of one partition are read in append order;
//! - a consumer group resumes from its last committed [`Position`], after any restart;
//! - [`PartitionConsumer::commit`] appends a consumer's output records **and** commits its
//!   position as one atomic step (one write-ahead frame and redb transaction; one Kafka
//!   transaction with `send_offsets_to_transaction`): either both happen or neither, so a
//!   crash can never leave output appended for input that is then processed again;
//! - whatever was read but not committed is read again (at-least-once for side effects
//!   outside the log, such as an SMTP delivery);
//! - a record is at most [`MAX_RECORD_BYTES`]; bigger ones are refused, never cut.
//!
//! Consumers join a group with [`EventLog::subscribe`]: the embedded log is a group of one
//! member that owns every partition; Kafka uses consumer groups (cooperative-sticky) and
//! reports assignment changes as [`Change`]s. [`EventLog::consume`] opens fixed
//! partitions (the explicit static mode and tests). Topics no group reads (the bodies) are
//! read by position with [`EventLog::read_at`].

pub mod embedded;
pub mod kafka;
pub mod position;
mod wal;

pub use position::Position;

use async_trait::async_trait;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;

/// Largest record (key and value) either backend takes: a 25 MiB body plus headroom. Kafka
/// topics Herald creates get the same `max.message.bytes`.
pub const MAX_RECORD_BYTES: usize = 32 << 20;

/// Refuses a record over [`MAX_RECORD_BYTES`].
pub fn check_record(r: &Record) -> Result<(), LogError> {
    let bytes = r.key.len() + r.value.len();
    if bytes > MAX_RECORD_BYTES {
        return Err(LogError::TooLarge { what: format!("a record for {}", r.topic), bytes, limit: MAX_RECORD_BYTES });
    }
    Ok(())
}

/// One record to append. `partition` is chosen by the caller ([`crate::routing`]), so
/// that placement is identical on every backend.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: u32,
    /// The partition key: the recipient domain for message events.
    pub key: String,
    pub value: Vec<u8>,
}

/// A record read back from the log.
#[derive(Debug, Clone)]
pub struct Stored {
    pub offset: u64,
    pub key: String,
    pub value: Vec<u8>,
    /// Append time, milliseconds since the epoch.
    pub timestamp_ms: i64,
}

/// A `(topic, partition)` a consumer is assigned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Assignment {
    pub topic: String,
    pub partition: u32,
}

/// Errors of the log. Ingestion maps every variant to "not accepted" (HTTP 503, SMTP 451):
/// the caller may retry, nothing was acknowledged.
#[derive(Debug, Error)]
pub enum LogError {
    #[error("embedded storage: {0}")]
    Storage(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic {topic}: {problem}")]
    Topic { topic: String, problem: String },
    /// The group's committed offset is no longer in the log (retention deleted records no
    /// member had consumed). Herald refuses to skip them silently; an operator decides.
    #[error("{topic}/{partition}: committed offset is out of range (records lost to retention?)")]
    OutOfRange { topic: String, partition: u32 },
    /// A Kafka transaction (records + offsets) failed and was aborted: nothing of it is
    /// visible. Retry; after a fencing error this member no longer owns the partition.
    #[error("kafka transaction: {0}")]
    Transaction(String),
    #[error("the log is shut down")]
    Closed,
    #[error("{what} is {bytes} bytes; the log takes at most {limit}")]
    TooLarge { what: String, bytes: usize, limit: usize },
}

/// An append-only partitioned log of encoded events.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Number of partitions of every topic.
    fn partitions(&self) -> u32;

    /// Appends records; returns once all are durable.
    async fn append(&self, records: Vec<Record>) -> Result<(), LogError> {
        self.append_with_offsets(records).await.map(|_| ())
    }

    /// Appends records like [`EventLog::append`] and returns the offset each was given, in
    /// the order of `records`.
    async fn append_with_offsets(&self, records: Vec<Record>) -> Result<Vec<u64>, LogError>;

    /// The record at `offset` of `topic`'s `partition`, read without a consumer group;
    /// `None` when there is none (never written, or removed by retention).
    async fn read_at(&self, topic: &str, partition: u32, offset: u64) -> Result<Option<Stored>, LogError>;

    /// Why the log cannot take appends right now (the embedded log recovering from a failed
    /// write, for example); `None` when it can. `/healthz` reports it.
    fn failure(&self) -> Option<String> {
        None
    }

    /// Whether the log can take appends now, asking the cluster when there is one
    /// (`/readyz`): the default answers from [`EventLog::failure`]; Kafka also fetches the
    /// cluster's metadata within `timeout`.
    async fn reachable(&self, _timeout: Duration) -> Result<(), String> {
        self.failure().map_or(Ok(()), Err)
    }

    /// Opens one consumer per assignment for `group`, each starting at the group's committed
    /// position for its partition (or the beginning when none was committed). No group
    /// membership: the caller owns these partitions (static mode, tests).
    async fn consume(
        &self,
        group: &str,
        assignments: &[Assignment],
    ) -> Result<Vec<Box<dyn PartitionConsumer>>, LogError>;

    /// Joins `group` as a member consuming `topics`; the partitions this member owns arrive
    /// as [`Change`]s. The default is a group of one member that owns every partition,
    /// which is what the embedded log is (a second process cannot open its files).
    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Box<dyn Subscription>, LogError> {
        let assignments: Vec<Assignment> = topics
            .iter()
            .flat_map(|t| (0..self.partitions()).map(move |partition| Assignment { topic: t.clone(), partition }))
            .collect();
        Ok(Box::new(FixedSubscription::new(self.consume(group, &assignments).await?)))
    }

    /// Says that `group`'s members (subscribed already) append records with their commits, so
    /// the backend can get ready for that before the first commit. Kafka starts the
    /// membership's transactional producer; the default does nothing.
    async fn will_append(&self, _group: &str) {}

    /// Least time between two commits of one partition while it works: a log whose commits
    /// cost a round of broker requests each (Kafka's transactions) folds the chunks that
    /// finish meanwhile into one. Zero (the default): commit whenever a chunk finishes.
    fn commit_interval(&self) -> Duration {
        Duration::ZERO
    }

    /// Deletes records older than `retention.consumed` that every consumer group has
    /// committed past, and records of the `retention.by_age` topics (which no group reads)
    /// older than their own limit. Returns how many were deleted. Kafka enforces
    /// `retention.ms` itself (set on the topics Herald creates), so there it does nothing.
    async fn enforce_retention(&self, retention: &Retention) -> Result<u64, LogError>;

    /// For each assignment: the partition's end offset and `group`'s committed offset (the
    /// operators' log-lag view). A backend that cannot tell returns nothing.
    async fn lag(&self, group: &str, assignments: &[Assignment]) -> Result<Vec<PartitionLag>, LogError> {
        let _ = (group, assignments);
        Ok(vec![])
    }
}

/// What log retention keeps.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Records older than this go once every consumer group has passed them.
    pub consumed: Duration,
    /// Topics no consumer group reads, with how long their records are kept.
    pub by_age: Vec<(String, Duration)>,
}

/// How far a consumer group is behind on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    /// The offset the next record appended will get.
    pub end: u64,
    /// The group's next offset to process (0 when it never committed).
    pub committed: u64,
}

impl PartitionLag {
    pub fn lag(&self) -> u64 {
        self.end.saturating_sub(self.committed)
    }
}

/// Reads one partition for one consumer group.
#[async_trait]
pub trait PartitionConsumer: Send + 'static {
    fn assignment(&self) -> &Assignment;

    /// The group's committed position when this consumer was opened: reading starts at its
    /// `next_offset`, and the offsets in its `finished` set were already processed.
    fn start(&self) -> &Position;

    /// Up to `max` records after the last one returned; waits up to `wait` for the first.
    /// An empty vector means nothing arrived in time. Records already received are returned
    /// even when an error follows them; the error comes with the next call.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Stored>, LogError>;

    /// Appends `records` and commits `position` for this partition, atomically: after a
    /// crash either both are in the log or neither is. Durable on return. Fails when this
    /// member no longer owns the partition (Kafka fences it), and then nothing was written.
    async fn commit(&mut self, records: Vec<Record>, position: Position) -> Result<(), LogError>;

    /// How many records of the partition come after the last one `poll` returned (or after
    /// the start, before the first): what this consumer has not read yet. Feeds the lag
    /// metric (`herald_consumer_lag_records`); the embedded log answers from memory, Kafka
    /// asks the partition leader for the high watermark.
    async fn unread(&mut self) -> Result<u64, LogError>;
}

/// A change of what a group member owns.
pub enum Change {
    /// New partitions, each with its consumer.
    Assigned(Vec<Box<dyn PartitionConsumer>>),
    /// Partitions taken away. Stop their work, commit what finished (unless `lost`), then
    /// hand their consumers back with [`Revocation::done`]; the group waits for that.
    Revoked(Revocation),
}

/// Partitions being revoked from this member.
pub struct Revocation {
    pub partitions: Vec<Assignment>,
    /// The member was already thrown out of the group (session timeout): another member may
    /// own these partitions now, so nothing may be committed.
    pub lost: bool,
    done: std::sync::mpsc::SyncSender<Vec<Box<dyn PartitionConsumer>>>,
}

impl Revocation {
    pub fn new(
        partitions: Vec<Assignment>,
        lost: bool,
    ) -> (Self, std::sync::mpsc::Receiver<Vec<Box<dyn PartitionConsumer>>>) {
        let (done, rx) = std::sync::mpsc::sync_channel(1);
        (Revocation { partitions, lost, done }, rx)
    }

    /// Reports the partitions drained and returns their consumers (which the backend keeps
    /// until the partitions are released).
    pub fn done(self, consumers: Vec<Box<dyn PartitionConsumer>>) {
        let _ = self.done.send(consumers);
    }
}

/// A consumer group membership.
#[async_trait]
pub trait Subscription: Send {
    /// The next change of this member's assignment; `None` once the membership ended.
    async fn next(&mut self) -> Option<Change>;

    /// Leaves the group. Call it after every partition was drained and committed, so the
    /// other members take over at once (graceful handover).
    async fn close(self: Box<Self>);
}

/// A membership whose partitions are fixed: one [`Change::Assigned`], then nothing.
pub struct FixedSubscription {
    first: Option<Vec<Box<dyn PartitionConsumer>>>,
    closed: mpsc::Receiver<()>,
    _keep: mpsc::Sender<()>,
}

impl FixedSubscription {
    pub fn new(consumers: Vec<Box<dyn PartitionConsumer>>) -> Self {
        let (keep, closed) = mpsc::channel(1);
        FixedSubscription { first: Some(consumers), closed, _keep: keep }
    }
}

#[async_trait]
impl Subscription for FixedSubscription {
    async fn next(&mut self) -> Option<Change> {
        if let Some(first) = self.first.take() {
            return Some(Change::Assigned(first));
        }
        // Never changes: wait for ever (the sender is ours and stays alive).
        self.closed.recv().await;
        None
    }

    async fn close(self: Box<Self>) {}
}

/// Topic names, derived from one prefix so several Herald clusters can share a Kafka.
#[derive(Debug, Clone)]
pub struct Topics {
    pub prefix: String,
    pub retry_tiers: u32,
}

impl Topics {
    /// `MessageAccepted`, keyed by recipient domain; read by workers and the projector.
    pub fn messages(&self) -> String {
        format!("{}.messages", self.prefix)
    }

    /// `DeliveryAttempted`; read by the projector.
    pub fn attempts(&self) -> String {
        format!("{}.attempts", self.prefix)
    }

    /// `DeliveryScheduled` whose delay is that of `tier` ([`crate::retry`]).
    pub fn retry(&self, tier: u32) -> String {
        format!("{}.retry.{tier}", self.prefix)
    }

    /// Messages set aside by traffic shaping (their provider is throttled or suspended, a
    /// warm-up cap is reached): `DeliveryScheduled` with the attempt number unchanged,
    /// due after the short hold delay; read by workers.
    pub fn held(&self) -> String {
        format!("{}.held", self.prefix)
    }

    /// Traffic-shaping events (throttles, first uses, usage reports); every node reads all
    /// of it (`crate::shaping::feed`).
    pub fn shaping(&self) -> String {
        format!("{}.shaping", self.prefix)
    }

    /// Sender-domain events, keyed by the domain; read by the domain projector.
    pub fn domains(&self) -> String {
        format!("{}.domains", self.prefix)
    }

    /// Account events, keyed by the account id; read by the account projector and every
    /// node's account cache.
    pub fn accounts(&self) -> String {
        format!("{}.accounts", self.prefix)
    }

    /// Bounces, complaints and suppression-list changes, keyed by recipient domain, on the
    /// partition of the recipient; read by the feedback projector and every node's
    /// suppression index.
    pub fn feedback(&self) -> String {
        format!("{}.feedback", self.prefix)
    }

    /// The consumer group of a role (`delivery`, `projector`, `domain-projector`):
    /// `<prefix>-<role>`, so clusters with different prefixes on one Kafka never share a
    /// group (and `herald-delivery` etc. with the default prefix, as before).
    pub fn group(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Opens, clicks and unsubscriptions, keyed by recipient domain; read by the engagement
    /// projector.
    pub fn engagement(&self) -> String {
        format!("{}.engagement", self.prefix)
    }

    /// Message bodies stored once per request (`BodyStored`), keyed by their SHA-256; read
    /// by position ([`EventLog::read_at`]), never by a consumer group.
    pub fn bodies(&self) -> String {
        format!("{}.bodies", self.prefix)
    }

    /// Webhook endpoint changes and delivery outcomes, keyed by endpoint id; read by the
    /// webhook projector.
    pub fn webhooks(&self) -> String {
        format!("{}.webhooks", self.prefix)
    }

    /// Webhook deliveries waiting for their next attempt (`crate::webhooks::tier_of`).
    pub fn webhook_retry(&self, tier: u32) -> String {
        format!("{}.webhooks.retry.{tier}", self.prefix)
    }

    pub fn all(&self) -> Vec<String> {
        let mut all = vec![
            self.messages(),
            self.attempts(),
            self.domains(),
            self.engagement(),
            self.feedback(),
            self.bodies(),
            self.held(),
            self.shaping(),
            self.accounts(),
        ];
        all.extend((0..self.retry_tiers).map(|t| self.retry(t)));
        all.push(self.webhooks());
        all.extend((0..crate::webhooks::MAX_TIERS).map(|t| self.webhook_retry(t)));
        all
    }
}

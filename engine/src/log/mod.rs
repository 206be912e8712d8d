//! The event log: an append-only, partitioned, durable sequence of encoded events.
//!
//! Two backends implement [`EventLog`]: [`embedded`] (redb, the single-process default)
//! and [`kafka`] (the scale-out backend). Both are partitioned the same way (see
//! [`crate::routing`]) and both give the same guarantees, which `tests/log_conformance.rs`
//! checks against each:
//! - `append` returns only once every record is durable (fsynced, or acked by all in-sync
//!   Kafka replicas); a failed `append` may have stored some records, never reported them.
//! - records of one partition are read in append order;
//! - a consumer group resumes from its last committed offset, after any restart;
//! - delivery is at-least-once: whatever was read but not committed is read again.

pub mod embedded;
pub mod kafka;
mod wal;

use async_trait::async_trait;
use std::time::Duration;
use thiserror::Error;

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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    #[error("the log is shut down")]
    Closed,
}

/// An append-only partitioned log of encoded events.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Number of partitions of every topic.
    fn partitions(&self) -> u32;

    /// Appends records; returns once all are durable.
    async fn append(&self, records: Vec<Record>) -> Result<(), LogError>;

    /// Opens one consumer per assignment for `group`, each starting at the group's committed
    /// offset for its partition (or the beginning when none was committed).
    async fn consume(
        &self,
        group: &str,
        assignments: &[Assignment],
    ) -> Result<Vec<Box<dyn PartitionConsumer>>, LogError>;

    /// Deletes records older than `retention` that every consumer group has committed past.
    /// Returns how many were deleted. Kafka enforces `retention.ms` itself (set on the topics
    /// Herald creates), so there it does nothing.
    async fn enforce_retention(&self, retention: Duration) -> Result<u64, LogError>;

    /// For each assignment: the partition's end offset and `group`'s committed offset (the
    /// operators' log-lag view). A backend that cannot tell returns nothing.
    async fn lag(&self, group: &str, assignments: &[Assignment]) -> Result<Vec<PartitionLag>, LogError> {
        let _ = (group, assignments);
        Ok(vec![])
    }
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

    /// Up to `max` records after the last one returned; waits up to `wait` for the first.
    /// An empty vector means nothing arrived in time.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Stored>, LogError>;

    /// Records that every record before `next_offset` is processed. Durable on return.
    async fn commit(&mut self, next_offset: u64) -> Result<(), LogError>;
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

    /// Sender-domain events, keyed by the domain; read by the domain projector.
    pub fn domains(&self) -> String {
        format!("{}.domains", self.prefix)
    }

    /// Account events, keyed by the account id; read by the account projector.
    pub fn accounts(&self) -> String {
        format!("{}.accounts", self.prefix)
    }

    pub fn all(&self) -> Vec<String> {
        let mut all = vec![self.messages(), self.attempts(), self.domains(), self.accounts()];
        all.extend((0..self.retry_tiers).map(|t| self.retry(t)));
        all
    }
}

//! Projections: what queries read, built from the log by [`crate::projector`].
//!
//! A [`ProjectionStore`] keeps, per account, every projected event of every message (from
//! which the status is derived at read time, so events may arrive in any order across
//! topics) and per-hour counters, and the current state of every sender domain
//! ([`crate::domains::state::DomainState`], one row per domain, tombstones included), an
//! index of messages by recipient (message search), and the accounts ([`accounts`]).
//! Backends: [`embedded`] (redb, default) and [`cql`] (ScyllaDB or Cassandra).
//! `tests/store_conformance.rs` runs against both.

pub mod accounts;
pub mod cql;
pub mod embedded;

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
}

/// What a projected event counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Accepted,
    Delivered,
    Deferred,
    Failed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Accepted => "accepted",
            Kind::Delivered => "delivered",
            Kind::Deferred => "deferred",
            Kind::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "accepted" => Kind::Accepted,
            "delivered" => Kind::Delivered,
            "deferred" => Kind::Deferred,
            "failed" => Kind::Failed,
            _ => return None,
        })
    }
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub accepted: u64,
    pub delivered: u64,
    pub deferred: u64,
    pub failed: u64,
}

impl Stats {
    /// Adds every counter of `other`.
    pub fn merge(&mut self, other: &Stats) {
        self.accepted += other.accepted;
        self.delivered += other.delivered;
        self.deferred += other.deferred;
        self.failed += other.failed;
    }

    pub fn add(&mut self, kind: Kind, n: u64) {
        match kind {
            Kind::Accepted => self.accepted += n,
            Kind::Delivered => self.delivered += n,
            Kind::Deferred => self.deferred += n,
            Kind::Failed => self.failed += n,
        }
    }
}

/// Builds the view of one message from its events, in any order.
pub fn view(mut events: Vec<Projected>) -> Option<MessageView> {
    events.sort_by_key(|e| e.seq);
    let last = events.last()?;
    let status = match last.kind {
        Kind::Accepted => Status::Queued,
        Kind::Delivered => Status::Delivered,
        Kind::Deferred => Status::Deferred,
        Kind::Failed => Status::Failed,
    };
    Some(MessageView {
        id: last.message_id.clone(),
        recipient: last.recipient.clone(),
        status,
        events: events.into_iter().map(|e| e.detail).collect(),
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

/// Read models of the log.
#[async_trait]
pub trait ProjectionStore: Send + Sync + 'static {
    /// Applies a batch; idempotent per `(account, message_id, seq)`. Durable on return.
    async fn apply(&self, batch: &[Projected]) -> Result<(), StoreError>;

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
        assert_eq!(view(vec![ev(0, Kind::Accepted)]).unwrap().status, Status::Queued);
        let v = view(vec![ev(2, Kind::Delivered), ev(0, Kind::Accepted), ev(1, Kind::Deferred)]).unwrap();
        assert_eq!(v.status, Status::Delivered);
        assert_eq!(v.events[0]["seq"], 0);
        assert_eq!(view(vec![ev(1, Kind::Failed)]).unwrap().status, Status::Failed);
        assert!(view(vec![]).is_none());
    }
}

//! The feedback read models: each account's suppression list, its bounces over time, and
//! the recent soft failures of each recipient (for the repeated-transient rule). Written
//! only by the feedback projector (`crate::feedback::projector`), one task per partition
//! of `<prefix>.feedback`; every event of one recipient is on one partition, so writes of
//! one `(account, address)` never race. Backends: `embedded/feedback.rs`, `cql/feedback.rs`.

use super::StoreError;
use async_trait::async_trait;
use herald_schemas::{
    AccountId, BounceAction, BounceClass, BounceSource, BounceType, MessageId, SuppressionReason, Timestamp,
};
use serde::{Deserialize, Serialize};

/// One entry of an account's suppression list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    #[serde(skip_serializing, default = "no_account")]
    pub account: AccountId,
    /// Lower-case.
    pub address: String,
    pub reason: SuppressionReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    pub detail: String,
    /// Stops suppressing at this instant; `None`: until lifted.
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    /// The id of the event that made it.
    pub id: String,
}

impl Suppression {
    /// Whether it still suppresses at `now`.
    pub fn active(&self, now: Timestamp) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

/// A bounce as `GET /v1/bounces` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BounceRow {
    #[serde(skip_serializing, default = "no_account")]
    pub account: AccountId,
    pub id: String,
    pub message_id: MessageId,
    pub recipient: String,
    #[serde(rename = "type")]
    pub bounce_type: BounceType,
    pub class: BounceClass,
    pub action: BounceAction,
    pub code: Option<u16>,
    pub enhanced: Option<String>,
    pub diagnostic: String,
    pub remote_mta: Option<String>,
    pub reporting_mta: Option<String>,
    pub source: BounceSource,
    pub at: Timestamp,
}

impl BounceRow {
    /// The row's key in the bounce list (after the account and the time): the message and
    /// the bounce's id, since an id is unique only within its message (`sync-<attempt>`),
    /// and two messages' bounces may share a millisecond.
    pub fn key(&self) -> String {
        format!("{}/{}", self.message_id.0, self.id)
    }

    /// The bounce's id from a row key (keys written before the message was in them are the
    /// id alone).
    pub fn id_of_key(key: &str) -> &str {
        key.split_once('/').map_or(key, |(_, id)| id)
    }
}

fn no_account() -> AccountId {
    AccountId(String::new())
}

/// One change, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedbackChange {
    /// Put (or replace) an entry.
    Suppress(Suppression),
    /// Remove an entry (nothing if absent).
    Lift { account: AccountId, address: String },
    /// Record a bounce (idempotent by `(account, at, id)`).
    Bounce(BounceRow),
}

/// A page of a listing; `next` is the opaque cursor of the next page, if there may be one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// One soft failure of a recipient: the bounce's id and time.
pub type SoftFailure = (String, Timestamp);

/// Rows a listing reads at most per call when it filters (reason, class): a page may
/// come back short, with a cursor to go on.
pub const SCAN_BUDGET: usize = 5000;

/// Longest range `bounces` is asked for, in days (the CQL backend reads one partition per
/// day); the API refuses longer ones.
pub const MAX_BOUNCE_DAYS: i64 = 366;

/// Read models of the feedback topic.
#[async_trait]
pub trait FeedbackStore: Send + Sync + 'static {
    /// Applies `changes` in order. Durable on return; applying them again changes nothing.
    async fn apply_feedback(&self, changes: &[FeedbackChange]) -> Result<(), StoreError>;

    /// The entry of `address` (lower-case) on `account`'s list, expired or not.
    async fn suppression(&self, account: &AccountId, address: &str) -> Result<Option<Suppression>, StoreError>;

    /// `account`'s entries in a stable order from the cursor `after`, with `reason` only
    /// when given; expired entries included (the caller filters).
    async fn suppressions(
        &self,
        account: &AccountId,
        reason: Option<SuppressionReason>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Suppression>, StoreError>;

    /// Calls `each` with every entry of every account `(account, address, expires_at)`:
    /// the node's suppression index loads from it at start. Returns how many.
    async fn scan_suppressions(
        &self,
        each: &mut (dyn for<'a, 'b> FnMut(&'a AccountId, &'b str, Option<Timestamp>) + Send),
    ) -> Result<u64, StoreError>;

    /// `account`'s bounces with `from <= at < to`, oldest first, from the cursor `after`.
    async fn bounces(
        &self,
        account: &AccountId,
        from: Timestamp,
        to: Timestamp,
        class: Option<BounceClass>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<BounceRow>, StoreError>;

    /// The soft failures kept for `(account, address)`.
    async fn soft_failures(&self, account: &AccountId, address: &str) -> Result<Vec<SoftFailure>, StoreError>;

    /// Replaces them.
    async fn put_soft_failures(
        &self,
        account: &AccountId,
        address: &str,
        failures: &[SoftFailure],
    ) -> Result<(), StoreError>;

    /// The secret stored under `name`, or `candidate`, stored now when there is none: the
    /// first writer wins, so every node sharing the store ends up with the same value
    /// (the VERP key when `bounces.secret` is unset).
    async fn shared_secret(&self, name: &str, candidate: &str) -> Result<String, StoreError>;
}

/// Cursor helpers shared by the backends: URL-safe base64 of a small JSON value, so a
/// cursor is opaque to clients and a tampered one is refused, not trusted.
pub mod cursor {
    use base64::Engine;
    use serde::{de::DeserializeOwned, Serialize};

    fn engine() -> base64::engine::GeneralPurpose {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
    }

    pub fn encode<T: Serialize>(value: &T) -> String {
        engine().encode(serde_json::to_vec(value).unwrap_or_default())
    }

    /// `Err` with a sentence for a cursor this server did not make.
    pub fn decode<T: DeserializeOwned>(s: &str) -> Result<T, super::StoreError> {
        let bad = || super::StoreError::BadCursor(s.chars().take(40).collect());
        let bytes = engine().decode(s).map_err(|_| bad())?;
        serde_json::from_slice(&bytes).map_err(|_| bad())
    }
}

//! The webhook read models: endpoints (state with secrets), each endpoint's recent
//! deliveries, and each account's event feed (`GET /v1/events`). Written only by the webhook projector (`crate::webhooks::projector`), one
//! task per partition of `<prefix>.webhooks`, where every event of one endpoint is on one
//! partition. Backends: `embedded/webhooks.rs`, `cql/webhooks.rs`.

use super::StoreError;
use crate::webhooks::endpoints::Endpoint;
use async_trait::async_trait;
use herald_schemas::Timestamp;
use serde::{Deserialize, Serialize};

/// One delivery attempt, as `GET /v1/webhooks/{id}/deliveries` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRow {
    #[serde(skip_serializing, default)]
    pub endpoint_id: String,
    pub webhook_id: String,
    pub event_type: String,
    pub attempt: u32,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// `delivered`, `retrying` or `dropped`.
    pub outcome: String,
    pub duration_ms: u64,
    pub at: Timestamp,
}

/// How long delivery rows are kept.
pub const DELIVERY_TTL_DAYS: i64 = 30;

/// One customer-visible event, as `GET /v1/events` lists it (the webhook body's fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedRow {
    #[serde(skip_serializing, default = "no_account")]
    pub account: herald_schemas::AccountId,
    /// The event's `webhook-id` (stable per source record).
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub at: Timestamp,
    pub message_id: Option<String>,
    pub recipient: Option<String>,
    pub data: serde_json::Value,
}

fn no_account() -> herald_schemas::AccountId {
    herald_schemas::AccountId(String::new())
}

/// What `GET /v1/events` asks for. `after` is the position of the last row of the previous
/// page: `(at ms, id)`.
#[derive(Debug, Clone)]
pub struct FeedQuery {
    pub from: Timestamp,
    pub to: Timestamp,
    pub event_type: Option<String>,
    pub recipient: Option<String>,
    pub message_id: Option<String>,
    pub after: Option<(i64, String)>,
    pub limit: usize,
}

impl FeedQuery {
    pub fn matches(&self, r: &FeedRow) -> bool {
        self.event_type.as_ref().is_none_or(|t| *t == r.event_type)
            && self.recipient.as_ref().is_none_or(|x| r.recipient.as_deref().is_some_and(|y| y.eq_ignore_ascii_case(x)))
            && self.message_id.as_ref().is_none_or(|m| r.message_id.as_deref() == Some(m.as_str()))
    }
}

/// A page of the feed; `next`: the position to continue after, when there may be more.
#[derive(Debug, Clone)]
pub struct FeedPage {
    pub items: Vec<FeedRow>,
    pub next: Option<(i64, String)>,
}

/// Rows examined per page at most (filters that match little end a page early, with a cursor).
pub const FEED_SCAN_BUDGET: usize = 5000;
/// Longest range of one feed query.
pub const FEED_MAX_DAYS: i64 = 31;

#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Puts an endpoint (`Some`) or removes it (`None`).
    async fn put_endpoint(&self, id: &str, endpoint: Option<&Endpoint>) -> Result<(), StoreError>;
    async fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, StoreError>;
    /// Every endpoint of every account (each node's registry).
    async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError>;
    /// Records deliveries (idempotent by endpoint, time, webhook id and attempt).
    async fn put_deliveries(&self, rows: Vec<DeliveryRow>) -> Result<(), StoreError>;
    /// The endpoint's deliveries before `before` (exclusive; `None`: now), newest first.
    async fn deliveries(
        &self,
        endpoint_id: &str,
        before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, StoreError>;
    /// Records feed rows (idempotent by account, time and id).
    async fn put_feed(&self, rows: &[FeedRow]) -> Result<(), StoreError>;
    /// The account's events in `[from, to)` after the cursor, oldest first.
    async fn feed(&self, account: &herald_schemas::AccountId, q: &FeedQuery) -> Result<FeedPage, StoreError>;
}

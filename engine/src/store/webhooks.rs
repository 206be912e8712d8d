//! The webhook read models: endpoints (state with secrets) and each endpoint's recent
//! deliveries. Written only by the webhook projector (`crate::webhooks::projector`), one
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

#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Puts an endpoint (`Some`) or removes it (`None`).
    async fn put_endpoint(&self, id: &str, endpoint: Option<&Endpoint>) -> Result<(), StoreError>;
    async fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, StoreError>;
    /// Every endpoint of every account (each node's registry).
    async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError>;
    /// Records deliveries (idempotent by endpoint, time, webhook id and attempt).
    async fn put_deliveries(&self, rows: &[DeliveryRow]) -> Result<(), StoreError>;
    /// The endpoint's deliveries before `before` (exclusive; `None`: now), newest first.
    async fn deliveries(
        &self,
        endpoint_id: &str,
        before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, StoreError>;
}

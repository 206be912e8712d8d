//! The webhook projection: reads `<prefix>.webhooks` (endpoint changes, delivery outcomes)
//! in order per partition (group `<prefix>-webhook-projector`) and applies it to the
//! [`WebhookStore`]: endpoint state as the fold of its events, and delivery rows. Also each
//! node's registry refresh from the store.

use super::endpoints::{self, Endpoint, Registry};
use crate::consumer::{self, ChunkHandler, Membership, Owned};
use crate::log::{Assignment, EventLog, LogError, Record, Stored, Topics};
use crate::store::webhooks::{DeliveryRow, WebhookStore};
use crate::store::StoreError;
use async_trait::async_trait;
use herald_schemas::{decode, Event, WebhookEvent, WebhookOutcome};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const ROLE: &str = "webhook-projector";

pub struct WebhookProjector {
    store: Arc<dyn WebhookStore>,
    topics: Topics,
}

impl WebhookProjector {
    pub fn new(store: Arc<dyn WebhookStore>, topics: Topics) -> Self {
        WebhookProjector { store, topics }
    }

    pub async fn run(
        self: Arc<Self>,
        log: Arc<dyn EventLog>,
        membership: &Membership,
        shutdown: CancellationToken,
    ) -> Result<(), LogError> {
        let topics = [self.topics.webhooks()];
        let group = self.topics.group(ROLE);
        consumer::run(
            log,
            &group,
            &topics,
            membership,
            self,
            consumer::Settings::in_order(512),
            Owned::default(),
            shutdown,
        )
        .await
    }

    async fn apply(&self, events: &[WebhookEvent]) -> Result<(), StoreError> {
        let mut states: HashMap<String, Option<Endpoint>> = HashMap::new();
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            if let WebhookEvent::Attempted(a) = event {
                rows.push(DeliveryRow {
                    endpoint_id: a.endpoint_id.clone(),
                    webhook_id: a.webhook_id.clone(),
                    event_type: a.event_type.clone(),
                    attempt: a.attempt,
                    status: a.status,
                    error: a.error.clone(),
                    outcome: match a.outcome {
                        WebhookOutcome::Delivered => "delivered",
                        WebhookOutcome::Retrying => "retrying",
                        WebhookOutcome::Dropped => "dropped",
                    }
                    .to_owned(),
                    duration_ms: a.duration_ms,
                    at: a.attempted_at,
                });
                continue;
            }
            let id = event.endpoint_id().to_owned();
            let current = match states.remove(&id) {
                Some(s) => s,
                None => self.store.endpoint(&id).await?,
            };
            states.insert(id, endpoints::apply(current, event));
        }
        for (id, state) in &states {
            self.store.put_endpoint(id, state.as_ref()).await?;
        }
        if !rows.is_empty() {
            self.store.put_deliveries(rows).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl ChunkHandler for WebhookProjector {
    type Item = WebhookEvent;

    fn prepare(&self, record: &Stored) -> Option<WebhookEvent> {
        match decode(&record.value) {
            Ok(Event::Webhook(e)) => Some(e),
            Ok(other) => {
                tracing::warn!(event = other.event_type(), "unexpected event on the webhooks topic; skipped");
                None
            }
            Err(e) => {
                metrics::counter!("herald_projector_poison_records_total").increment(1);
                tracing::error!(error = %e, offset = record.offset, "undecodable webhook record; skipped");
                None
            }
        }
    }

    /// Applies the chunk until the store takes it; applying it again (after an abort) gives
    /// the same rows, since endpoint events fold from the stored state in log order and a
    /// re-applied change leaves it as it was.
    async fn handle(&self, _: &Assignment, items: Vec<(u64, WebhookEvent)>) -> Vec<Record> {
        let events: Vec<WebhookEvent> = items.into_iter().map(|(_, e)| e).collect();
        consumer::until_ok("webhook projection write", || self.apply(&events)).await;
        Vec::new()
    }
}

/// Reloads `registry` from the store every `every` until `shutdown`.
pub async fn refresh(registry: Registry, store: Arc<dyn WebhookStore>, every: Duration, shutdown: CancellationToken) {
    loop {
        match store.endpoints().await {
            Ok(all) => registry.replace(all),
            Err(e) => tracing::warn!(error = %e, "reloading webhook endpoints failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

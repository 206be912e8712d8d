//! The event feed's projection: the same customer-visible events webhooks carry
//! (`payload.rs`), from the same topics, written per account in time order to the store for
//! `GET /v1/events` (group `<prefix>-event-feed`, in order per partition). Each row's id is
//! the event's `webhook-id`, so a chunk applied twice writes the same rows.

use super::dispatch::FirstAttempts;
use super::payload;
use crate::consumer::{self, ChunkHandler, Membership, Owned};
use crate::log::{Assignment, EventLog, LogError, Record, Stored, Topics};
use crate::store::webhooks::{FeedRow, WebhookStore};
use async_trait::async_trait;
use herald_schemas::decode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub const ROLE: &str = "event-feed";

pub struct FeedProjector {
    store: Arc<dyn WebhookStore>,
    topics: Topics,
}

impl FeedProjector {
    pub fn new(store: Arc<dyn WebhookStore>, topics: Topics) -> Self {
        FeedProjector { store, topics }
    }

    pub async fn run(
        self: Arc<Self>,
        log: Arc<dyn EventLog>,
        membership: &Membership,
        shutdown: CancellationToken,
    ) -> Result<(), LogError> {
        let (group, topics) = (self.topics.group(ROLE), FirstAttempts::topics(&self.topics));
        let settings = consumer::Settings::in_order(1024);
        consumer::run(log, &group, &topics, membership, self, settings, Owned::default(), shutdown).await
    }
}

#[async_trait]
impl ChunkHandler for FeedProjector {
    type Item = payload::Payload;

    fn prepare(&self, record: &Stored) -> Option<payload::Payload> {
        match decode(&record.value) {
            Ok(event) => payload::of(&event),
            Err(e) => {
                metrics::counter!("herald_projector_poison_records_total").increment(1);
                tracing::error!(error = %e, offset = record.offset, "undecodable record; skipped by the event feed");
                None
            }
        }
    }

    async fn handle(&self, assignment: &Assignment, items: Vec<(u64, payload::Payload)>) -> Vec<Record> {
        let rows: Vec<FeedRow> = items
            .into_iter()
            .map(|(offset, p)| FeedRow {
                account: p.head.account,
                id: payload::webhook_id(&assignment.topic, assignment.partition, offset),
                event_type: p.head.event_type.to_owned(),
                at: p.head.at,
                message_id: p.head.message_id.map(|m| m.0),
                recipient: p.recipient,
                data: p.data,
            })
            .collect();
        if !rows.is_empty() {
            consumer::until_ok("event feed write", || self.store.put_feed(&rows)).await;
        }
        Vec::new()
    }
}

//! The engagement projection: reads `<prefix>.engagement` (opens, clicks, unsubscriptions
//! appended by the tracking server) and applies each event to the [`ProjectionStore`] as an
//! [`EngagementRow`]; the consumer runtime commits offsets only after the store has them.

use crate::consumer::{self, ChunkHandler, Membership, Owned};
use crate::log::{Assignment, EventLog, LogError, Record, Stored, Topics};
use crate::projector::rfc3339;
use crate::store::{EngagementKind, EngagementRow, ProjectionStore};
use async_trait::async_trait;
use herald_schemas::{decode, Client, EngagementEvent, Event};
use serde_json::json;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The consumer group role: `<prefix>-engagement-projector`.
pub const ROLE: &str = "engagement-projector";

fn client(c: &Client) -> serde_json::Value {
    json!({
        "user_agent": c.user_agent,
        "client_ip": c.ip,
        "machine": c.machine.is_some(),
        "machine_reason": c.machine.map(|m| m.as_str()),
    })
}

/// What an engagement event contributes to the projection.
pub fn project(event: &EngagementEvent) -> EngagementRow {
    let c = event.client();
    let mut detail = json!({ "type": event.event_type(), "at": rfc3339(event.at()), "event_id": event.event_id() });
    let (kind, url) = match event {
        EngagementEvent::MessageOpened(_) => (EngagementKind::Opened, None),
        EngagementEvent::LinkClicked(e) => {
            detail["url"] = json!(e.url);
            detail["link_index"] = json!(e.link_index);
            (EngagementKind::Clicked, Some(e.url.clone()))
        }
        EngagementEvent::RecipientUnsubscribed(_) => (EngagementKind::Unsubscribed, None),
    };
    if let (Some(d), serde_json::Value::Object(extra)) = (detail.as_object_mut(), client(c)) {
        d.extend(extra);
    }
    EngagementRow {
        account: event.account().clone(),
        message_id: event.message_id().clone(),
        event_id: event.event_id().to_owned(),
        kind,
        at: event.at(),
        machine: c.machine.is_some(),
        url,
        detail,
    }
}

/// The engagement projector: a [`ChunkHandler`] of the consumer runtime over
/// `<prefix>.engagement`, in the group `<prefix>-engagement-projector`.
pub struct EngagementProjector {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    topics: Topics,
}

impl EngagementProjector {
    pub fn new(log: Arc<dyn EventLog>, store: Arc<dyn ProjectionStore>, topics: Topics) -> Self {
        EngagementProjector { log, store, topics }
    }

    /// Projects the partitions this node owns until `shutdown`.
    pub async fn run(self: Arc<Self>, membership: &Membership, shutdown: CancellationToken) -> Result<(), LogError> {
        let topics = [self.topics.engagement()];
        let settings = consumer::Settings::in_order(1024);
        let (log, group) = (self.log.clone(), self.topics.group(ROLE));
        consumer::run(log, &group, &topics, membership, self, settings, Owned::default(), shutdown).await
    }
}

#[async_trait]
impl ChunkHandler for EngagementProjector {
    type Item = EngagementRow;

    fn prepare(&self, record: &Stored) -> Option<EngagementRow> {
        match decode(&record.value) {
            Ok(Event::Engagement(e)) => Some(project(&e)),
            Ok(other) => {
                tracing::warn!(
                    event = other.event_type(),
                    offset = record.offset,
                    "unexpected event on the engagement topic; skipped"
                );
                None
            }
            Err(e) => {
                metrics::counter!("herald_projector_poison_records_total").increment(1);
                tracing::error!(error = %e, offset = record.offset, "undecodable record; skipped");
                None
            }
        }
    }

    /// Applies the chunk, retrying until the store takes it (rows are keyed by event id, so
    /// a chunk applied again by the next owner after an abort counts nothing twice).
    async fn handle(&self, _: &Assignment, items: Vec<(u64, EngagementRow)>) -> Vec<Record> {
        let batch: Vec<EngagementRow> = items.into_iter().map(|(_, row)| row).collect();
        consumer::until_ok("engagement projection write", || self.store.apply_engagement(&batch)).await;
        for row in &batch {
            let machine = if row.machine { "true" } else { "false" };
            metrics::counter!("herald_engagement_events_total", "kind" => row.kind.as_str(), "machine" => machine)
                .increment(1);
        }
        Vec::new()
    }
}

//! The projector: a [`ChunkHandler`] (run by [`crate::consumer`]) that reads accepted-message
//! and attempt events and applies them to the [`ProjectionStore`], one chunk at a time per
//! partition, committing offsets only after the store has them.

use crate::consumer::{self, ChunkHandler, Membership, Owned};
use crate::log::{Assignment, EventLog, Record, Stored, Topics};
use crate::store::{Kind, Projected, ProjectionStore};
use async_trait::async_trait;
use herald_schemas::{decode, Event, Outcome, Timestamp};
use serde_json::json;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The role in the projector consumer group's name ([`Topics::group`]).
pub const ROLE: &str = "projector";

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ts: Timestamp) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ts.millis() as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// What an event contributes to the projection (nothing for scheduling events).
pub fn project(event: &Event) -> Option<Projected> {
    match event {
        Event::MessageAccepted(e) => Some(Projected {
            account: e.account.clone(),
            message_id: e.message_id.clone(),
            seq: 0,
            recipient: e.recipient.clone(),
            kind: Kind::Accepted,
            at: e.accepted_at,
            detail: json!({
                "type": "message.accepted",
                "at": rfc3339(e.accepted_at),
                "envelope_sender": e.envelope_sender,
                "recipient": e.recipient,
                "options": e.options,
                "size": e.body.len(),
            }),
        }),
        Event::DeliveryAttempted(e) => Some(Projected {
            account: e.account.clone(),
            message_id: e.message_id.clone(),
            seq: e.attempt,
            recipient: e.recipient.clone(),
            kind: match e.outcome {
                Outcome::Delivered => Kind::Delivered,
                Outcome::Deferred => Kind::Deferred,
                Outcome::Failed => Kind::Failed,
            },
            at: e.attempted_at,
            detail: json!({
                "type": "delivery.attempted",
                "at": rfc3339(e.attempted_at),
                "attempt": e.attempt,
                "outcome": e.outcome,
                "mx_host": e.mx_host,
                "mx_ip": e.mx_ip,
                "tls": e.tls,
                "reply": e.reply,
                "next_attempt_at": e.next_attempt_at.map(rfc3339),
                "duration_ms": e.duration_ms,
                "dkim": e.dkim,
            }),
        }),
        Event::Feedback(e) => crate::feedback::rows::message_row(e),
        Event::DeliveryScheduled(_)
        | Event::Domain(_)
        | Event::Engagement(_)
        | Event::Body(_)
        | Event::Shaping(_)
        | Event::Account(_)
        | Event::Webhook(_) => None,
        Event::Reserved5(r) => match *r {},
    }
}

pub struct Projector {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    topics: Topics,
}

impl Projector {
    pub fn new(log: Arc<dyn EventLog>, store: Arc<dyn ProjectionStore>, topics: Topics) -> Self {
        Projector { log, store, topics }
    }

    pub async fn run(
        self: Arc<Self>,
        membership: &Membership,
        shutdown: CancellationToken,
    ) -> Result<(), crate::log::LogError> {
        let topics = [self.topics.messages(), self.topics.attempts()];
        let settings = consumer::Settings::in_order(1024);
        let log = self.log.clone();
        let group = self.topics.group(ROLE);
        consumer::run(log, &group, &topics, membership, self, settings, Owned::default(), shutdown).await
    }
}

#[async_trait]
impl ChunkHandler for Projector {
    type Item = Projected;

    fn prepare(&self, record: &Stored) -> Option<Projected> {
        match decode(&record.value) {
            Ok(e) => project(&e),
            Err(e) => {
                metrics::counter!("herald_projector_poison_records_total").increment(1);
                tracing::error!(error = %e, offset = record.offset, "undecodable record; skipped");
                None
            }
        }
    }

    /// Applies the chunk, retrying until the store takes it (the runner aborts it when a
    /// stop's drain time is up; it is then applied again by the next owner, idempotently).
    async fn handle(&self, _: &Assignment, items: Vec<(u64, Projected)>) -> Vec<Record> {
        let batch: Vec<Projected> = items.into_iter().map(|(_, p)| p).collect();
        consumer::until_ok("projection store write", || self.store.apply(&batch)).await;
        metrics::counter!("herald_projector_events_total").increment(batch.len() as u64);
        Vec::new()
    }
}

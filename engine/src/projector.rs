//! The projector: reads accepted-message and attempt events and applies them to the
//! [`ProjectionStore`], committing offsets only after the store has them.

use crate::log::{Assignment, EventLog, PartitionConsumer, Topics};
use crate::store::{Kind, Projected, ProjectionStore};
use herald_schemas::{decode, Event, Outcome, Timestamp};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const GROUP: &str = "herald-projector";

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
                "size": e.body.bytes().len(),
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
        _ => None,
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
        partitions: &[u32],
        shutdown: CancellationToken,
    ) -> Result<(), crate::log::LogError> {
        let mut assignments = Vec::new();
        for topic in [self.topics.messages(), self.topics.attempts()] {
            assignments.extend(partitions.iter().map(|&partition| Assignment { topic: topic.clone(), partition }));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for consumer in self.log.consume(GROUP, &assignments).await? {
            tasks.spawn(self.clone().partition_loop(consumer, shutdown.clone()));
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    async fn partition_loop(self: Arc<Self>, mut consumer: Box<dyn PartitionConsumer>, shutdown: CancellationToken) {
        loop {
            let polled = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = consumer.poll(1024, Duration::from_secs(1)) => r,
            };
            let records = match polled {
                Ok(r) if r.is_empty() => continue,
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "projector poll failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let next_offset = records.last().map(|r| r.offset + 1).unwrap_or(0);
            let batch: Vec<Projected> = records
                .iter()
                .filter_map(|r| match decode(&r.value) {
                    Ok(e) => project(&e),
                    Err(e) => {
                        metrics::counter!("herald_projector_poison_records_total").increment(1);
                        tracing::error!(error = %e, offset = r.offset, "undecodable record; skipped");
                        None
                    }
                })
                .collect();
            let mut backoff = Duration::from_millis(100);
            while let Err(e) = self.store.apply(&batch).await {
                tracing::error!(error = %e, "projection store write failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            metrics::counter!("herald_projector_events_total").increment(batch.len() as u64);
            if let Err(e) = consumer.commit(next_offset).await {
                tracing::warn!(error = %e, "projector commit failed");
            }
        }
    }
}

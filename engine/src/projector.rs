//! The projector: a [`ChunkHandler`] (run by [`crate::consumer`]) that reads accepted-message
//! and attempt events and applies them to the [`ProjectionStore`], one chunk at a time per
//! partition, committing offsets only after the store has them.

use crate::consumer::{self, ChunkHandler, Membership, Owned};
use crate::log::{Assignment, EventLog, Record, Stored, Topics};
use crate::store::{Kind, Projected, ProjectedThrough, ProjectionStore};
use async_trait::async_trait;
use herald_schemas::{decode, Event, Outcome, Timestamp};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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

/// How far past the last event of a chunk the projection mark is set, so that it is
/// written once per this many offsets rather than once per chunk.
const MARK_STEP: u64 = 8192;
/// Offsets checked after the start of an ownership when the store cannot say how far the
/// partition was applied (it was projected into before it kept marks): more than a
/// projector ever applies beyond its last commit (one chunk of up to 1,024 records).
const UNKNOWN_MARK_WINDOW: u64 = 4096;

/// What this member knows of a partition's projection mark (`docs/adr/0021-projection-marks.md`),
/// from the ownership's first chunk on (no entry: not read yet).
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// Events at or below this may have been applied by an earlier owner (`None`: none was).
    checked_through: Option<u64>,
    /// The mark as it is in the store.
    stored: Option<u64>,
}

pub struct Projector {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    topics: Topics,
    marks: Mutex<HashMap<Assignment, Mark>>,
}

impl Projector {
    pub fn new(log: Arc<dyn EventLog>, store: Arc<dyn ProjectionStore>, topics: Topics) -> Self {
        Projector { log, store, topics, marks: Mutex::new(HashMap::new()) }
    }

    /// The index of the first item of a chunk (in offset order) that no projector has
    /// applied before: the ones after the partition's mark as it stood when this member was
    /// assigned the partition. Before returning, the mark is moved past the chunk if it is
    /// not there yet, so a later owner knows this chunk may have been applied.
    async fn unseen_from(&self, a: &Assignment, items: &[(u64, Projected)]) -> usize {
        let (Some((first, _)), Some((last, _))) = (items.first(), items.last()) else { return 0 };
        let known = self.marks.lock().expect("marks lock").get(a).copied();
        let mut mark = match known {
            Some(mark) => mark,
            None => {
                let stored =
                    consumer::until_ok("projection mark read", || self.store.projected_through(&a.topic, a.partition))
                        .await;
                match stored {
                    ProjectedThrough::Never => Mark { checked_through: None, stored: None },
                    ProjectedThrough::Through(through) => {
                        Mark { checked_through: Some(through), stored: Some(through) }
                    }
                    // A projector without marks (an earlier version) may have applied the
                    // events after its last commit: the first ones are checked.
                    ProjectedThrough::Unknown => {
                        Mark { checked_through: Some(first.saturating_add(UNKNOWN_MARK_WINDOW)), stored: None }
                    }
                }
            }
        };
        if mark.stored.is_none_or(|through| *last > through) {
            let through = last.saturating_add(MARK_STEP);
            consumer::until_ok("projection mark write", || {
                self.store.set_projected_through(&a.topic, a.partition, through)
            })
            .await;
            mark.stored = Some(through);
        }
        self.marks.lock().expect("marks lock").insert(a.clone(), mark);
        mark.checked_through.map_or(0, |through| items.partition_point(|(o, _)| *o <= through))
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

    fn assigned(&self, assignment: &Assignment) {
        // Whatever happened to the partition since an earlier ownership: read the mark again.
        self.marks.lock().expect("marks lock").remove(assignment);
    }

    /// Applies the chunk, retrying until the store takes it (the runner aborts it when a
    /// stop's drain time is up; it is then applied again by the next owner, idempotently).
    async fn handle(&self, assignment: &Assignment, items: Vec<(u64, Projected)>) -> Vec<Record> {
        let unseen_from =
            if self.store.skips_reads() { self.unseen_from(assignment, &items).await } else { items.len() };
        let batch: Vec<Projected> = items.into_iter().map(|(_, p)| p).collect();
        // A retry checks every event: part of the failed try may have been applied.
        let mut from = unseen_from;
        consumer::until_ok("projection store write", || {
            let checked = std::mem::replace(&mut from, batch.len());
            self.store.apply_from(&batch, checked)
        })
        .await;
        metrics::counter!("herald_projector_events_total").increment(batch.len() as u64);
        Vec::new()
    }
}

//! The feedback projector: a [`ChunkHandler`] run by the consumer runtime
//! ([`crate::consumer`]) on the partitions of `<prefix>.feedback` this node owns (group
//! `<prefix>-feedback-projector`). It writes message-view rows and counters, the bounce list
//! and the suppression lists, and makes the suppression decisions of [`SuppressionPolicy`]:
//! a decision is a `RecipientSuppressed` appended to the same topic (on the recipient's
//! partition, so after the bounce that caused it) atomically with the commit of the chunk
//! that made it; a later chunk projects it.
//!
//! It also reads `<prefix>.engagement` for `RecipientUnsubscribed`: each becomes a
//! `RecipientSuppressed` (reason `unsubscribe`, [`super::policy::unsubscribed`]) appended to
//! the feedback topic the same way, so the suppression index and the lists see it.
//!
//! A chunk: message rows (idempotent), then the list changes and decisions in log order,
//! then the changes and soft-failure histories are written, then the decisions and the
//! partition's position are committed together. A crash before the commit repeats the
//! chunk: rows and list changes are idempotent, decisions have stable ids, histories are
//! keyed by bounce.

use super::policy::{strengthens, SoftStep, SuppressionPolicy};
use super::rows;
use crate::consumer::{self, ChunkHandler, Membership, Owned};
use crate::log::{Assignment, EventLog, Record, Stored, Topics};
use crate::routing::Router;
use crate::store::feedback::{FeedbackChange, FeedbackStore, SoftFailure, Suppression};
use crate::store::{ProjectionStore, StoreError};
use async_trait::async_trait;
use herald_schemas::{decode, AccountId, EngagementEvent, Event, FeedbackEvent, RecipientSuppressed, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The role in the feedback projector's consumer group name (`<prefix>-feedback-projector`).
pub const ROLE: &str = "feedback-projector";

pub struct FeedbackProjector {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    feedback: Arc<dyn FeedbackStore>,
    topics: Topics,
    router: Router,
    policy: SuppressionPolicy,
}

/// A record made ready: a feedback event, or an unsubscribe to turn into a suppression.
pub enum Item {
    Feedback(FeedbackEvent),
    Unsubscribed(RecipientSuppressed),
}

/// What one chunk decided, before it is written.
#[derive(Default)]
struct Chunk {
    changes: Vec<FeedbackChange>,
    /// The list as this chunk leaves it, for decisions later in the same chunk.
    overlay: HashMap<(AccountId, String), Option<Suppression>>,
    histories: HashMap<(AccountId, String), Vec<SoftFailure>>,
    decisions: Vec<FeedbackEvent>,
}

impl FeedbackProjector {
    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        feedback: Arc<dyn FeedbackStore>,
        topics: Topics,
        router: Router,
        policy: SuppressionPolicy,
    ) -> Self {
        FeedbackProjector { log, store, feedback, topics, router, policy }
    }

    /// Consumes the feedback and engagement topics until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        membership: &Membership,
        shutdown: CancellationToken,
    ) -> Result<(), crate::log::LogError> {
        // One chunk at a time per partition: a recipient's decisions follow log order.
        let settings = consumer::Settings::in_order(512);
        let (log, group) = (self.log.clone(), self.topics.group(ROLE));
        let topics = [self.topics.feedback(), self.topics.engagement()];
        consumer::run(log, &group, &topics, membership, self, settings, Owned::default(), shutdown).await
    }
}

#[async_trait]
impl ChunkHandler for FeedbackProjector {
    type Item = Item;

    fn prepare(&self, record: &Stored) -> Option<Item> {
        match decode(&record.value) {
            Ok(Event::Feedback(e)) => Some(Item::Feedback(e)),
            Ok(Event::Engagement(EngagementEvent::RecipientUnsubscribed(u))) => {
                Some(Item::Unsubscribed(super::policy::unsubscribed(
                    &u.account,
                    &u.recipient,
                    Some(&u.message_id),
                    &u.event_id,
                    u.unsubscribed_at,
                )))
            }
            Ok(Event::Engagement(_)) => None, // opens and clicks say nothing about suppression
            Ok(other) => {
                tracing::warn!(
                    event = other.event_type(),
                    offset = record.offset,
                    "unexpected event on the feedback or engagement topic; skipped"
                );
                None
            }
            Err(e) => {
                metrics::counter!("herald_projector_poison_records_total").increment(1);
                tracing::error!(error = %e, offset = record.offset, "undecodable feedback record; skipped");
                None
            }
        }
    }

    /// Projects the chunk, retrying until the stores take it (the runner aborts it when a
    /// stop's drain time is up; the next owner then projects it again, idempotently).
    /// Returns the suppression decisions, committed with the chunk.
    async fn handle(&self, _: &Assignment, items: Vec<(u64, Item)>) -> Vec<Record> {
        let (mut events, mut unsubscribes) = (Vec::new(), Vec::new());
        for (_, item) in items {
            match item {
                Item::Feedback(e) => events.push(e),
                Item::Unsubscribed(s) => unsubscribes.push(s),
            }
        }
        consumer::until_ok("feedback projection", || self.process(&events, &unsubscribes)).await
    }
}

impl FeedbackProjector {
    /// One chunk, all or nothing from the caller's view (it is retried whole).
    async fn process(
        &self,
        events: &[FeedbackEvent],
        unsubscribes: &[RecipientSuppressed],
    ) -> Result<Vec<Record>, String> {
        let rows: Vec<_> = events.iter().filter_map(rows::message_row).collect();
        self.store.apply(&rows).await.map_err(|e| e.to_string())?;
        let mut chunk = Chunk::default();
        for s in unsubscribes {
            self.decide(s.clone(), &mut chunk).await.map_err(|e| e.to_string())?;
        }
        for event in events {
            self.step(event, &mut chunk).await.map_err(|e| e.to_string())?;
        }
        self.feedback.apply_feedback(&chunk.changes).await.map_err(|e| e.to_string())?;
        for ((account, address), history) in &chunk.histories {
            self.feedback.put_soft_failures(account, address, history).await.map_err(|e| e.to_string())?;
        }
        let records: Vec<Record> =
            chunk.decisions.iter().map(|e| super::record(&self.topics, &self.router, e.clone())).collect();
        for e in events {
            let (kind, label) = match e {
                FeedbackEvent::BounceReceived(b) => ("bounce", b.bounce_type.as_str()),
                FeedbackEvent::ComplaintReceived(_) => ("complaint", "-"),
                FeedbackEvent::RecipientSuppressed(s) => ("suppressed", s.reason.as_str()),
                FeedbackEvent::SuppressionLifted(_) => ("lifted", "-"),
                FeedbackEvent::MessageSuppressed(_) => ("message_suppressed", "-"),
            };
            metrics::counter!("herald_feedback_projected_events_total", "kind" => kind, "detail" => label).increment(1);
        }
        Ok(records)
    }

    async fn step(&self, event: &FeedbackEvent, chunk: &mut Chunk) -> Result<(), StoreError> {
        match event {
            FeedbackEvent::RecipientSuppressed(s) => {
                let entry = rows::suppression(s);
                chunk.overlay.insert((s.account.clone(), s.recipient.clone()), Some(entry.clone()));
                chunk.changes.push(FeedbackChange::Suppress(entry));
            }
            FeedbackEvent::SuppressionLifted(l) => {
                chunk.overlay.insert((l.account.clone(), l.recipient.clone()), None);
                chunk.changes.push(FeedbackChange::Lift { account: l.account.clone(), address: l.recipient.clone() });
            }
            FeedbackEvent::BounceReceived(b) => {
                chunk.changes.push(FeedbackChange::Bounce(rows::bounce_row(b)));
                if let Some(s) = self.policy.on_bounce(b) {
                    self.decide(s, chunk).await?;
                }
                let key = (b.account.clone(), super::policy::normalize(&b.recipient));
                let history = match chunk.histories.get(&key) {
                    Some(h) => h.clone(),
                    None => self.feedback.soft_failures(&key.0, &key.1).await?,
                };
                if let SoftStep::Count { history, suppress } = self.policy.soft_step(b, &history) {
                    let n = history.len();
                    chunk.histories.insert(key, history);
                    if suppress {
                        self.decide(self.policy.soft_suppression(b, n), chunk).await?;
                    }
                }
            }
            FeedbackEvent::ComplaintReceived(c) => {
                if let Some(s) = self.policy.on_complaint(c) {
                    self.decide(s, chunk).await?;
                }
            }
            FeedbackEvent::MessageSuppressed(_) => {}
        }
        Ok(())
    }

    /// Appends `s` unless the entry in force is at least as strong.
    async fn decide(&self, s: RecipientSuppressed, chunk: &mut Chunk) -> Result<(), StoreError> {
        let key = (s.account.clone(), s.recipient.clone());
        let current = match chunk.overlay.get(&key) {
            Some(c) => c.clone(),
            None => self.feedback.suppression(&key.0, &key.1).await?,
        };
        if !strengthens(current.as_ref(), &s, Timestamp::now()) {
            return Ok(());
        }
        tracing::info!(account = %s.account, reason = s.reason.as_str(), "recipient suppressed");
        chunk.overlay.insert(key, Some(rows::suppression(&s)));
        chunk.decisions.push(FeedbackEvent::RecipientSuppressed(s));
        Ok(())
    }
}

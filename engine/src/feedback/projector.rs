//! The feedback projector: reads `<prefix>.feedback` (the owned partitions, group
//! `herald-feedback`), writes message-view rows and counters, the bounce list and the
//! suppression lists, and makes the suppression decisions of [`SuppressionPolicy`]: a
//! decision is a `RecipientSuppressed` appended to the same topic (on the recipient's
//! partition, so after the bounce that caused it), which a later chunk projects.
//!
//! A chunk: message rows (idempotent), then the list changes and decisions in log order,
//! then the changes, soft-failure histories and new events are written, then the offset is
//! committed. A crash before the commit repeats the chunk: rows and list changes are
//! idempotent, decisions have stable ids, histories are keyed by bounce.

use super::policy::{strengthens, SoftStep, SuppressionPolicy};
use super::rows;
use crate::log::{Assignment, EventLog, PartitionConsumer, Record, Topics};
use crate::routing::Router;
use crate::store::feedback::{FeedbackChange, FeedbackStore, SoftFailure, Suppression};
use crate::store::{ProjectionStore, StoreError};
use herald_schemas::{decode, AccountId, Event, FeedbackEvent, RecipientSuppressed, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const GROUP: &str = "herald-feedback";

pub struct FeedbackProjector {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    feedback: Arc<dyn FeedbackStore>,
    topics: Topics,
    router: Router,
    policy: SuppressionPolicy,
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

    pub async fn run(
        self: Arc<Self>,
        partitions: &[u32],
        shutdown: CancellationToken,
    ) -> Result<(), crate::log::LogError> {
        let topic = self.topics.feedback();
        let assignments: Vec<Assignment> =
            partitions.iter().map(|&partition| Assignment { topic: topic.clone(), partition }).collect();
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
                r = consumer.poll(512, Duration::from_secs(1)) => r,
            };
            let records = match polled {
                Ok(r) if r.is_empty() => continue,
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "feedback projector poll failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let next_offset = records.last().map(|r| r.offset + 1).unwrap_or(0);
            let events: Vec<FeedbackEvent> = records
                .iter()
                .filter_map(|r| match decode(&r.value) {
                    Ok(Event::Feedback(e)) => Some(e),
                    Ok(other) => {
                        tracing::warn!(event = other.event_type(), "unexpected event on the feedback topic; skipped");
                        None
                    }
                    Err(e) => {
                        metrics::counter!("herald_projector_poison_records_total").increment(1);
                        tracing::error!(error = %e, offset = r.offset, "undecodable feedback record; skipped");
                        None
                    }
                })
                .collect();
            if !self.until_done(&shutdown, || self.process(&events)).await {
                return;
            }
            if let Err(e) = consumer.commit(next_offset).await {
                tracing::warn!(error = %e, "feedback projector commit failed");
            }
        }
    }

    /// Retries `work` with backoff until it succeeds; `false` on shutdown.
    async fn until_done<F, Fut>(&self, shutdown: &CancellationToken, mut work: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let mut backoff = Duration::from_millis(100);
        loop {
            match work().await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::error!(error = %e, "feedback projection failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// One chunk, all or nothing from the caller's view (it is retried whole).
    async fn process(&self, events: &[FeedbackEvent]) -> Result<(), String> {
        let rows: Vec<_> = events.iter().filter_map(rows::message_row).collect();
        self.store.apply(&rows).await.map_err(|e| e.to_string())?;
        let mut chunk = Chunk::default();
        for event in events {
            self.step(event, &mut chunk).await.map_err(|e| e.to_string())?;
        }
        self.feedback.apply_feedback(&chunk.changes).await.map_err(|e| e.to_string())?;
        for ((account, address), history) in &chunk.histories {
            self.feedback.put_soft_failures(account, address, history).await.map_err(|e| e.to_string())?;
        }
        if !chunk.decisions.is_empty() {
            let records: Vec<Record> =
                chunk.decisions.iter().map(|e| super::record(&self.topics, &self.router, e.clone())).collect();
            self.log.append(records).await.map_err(|e| e.to_string())?;
        }
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
        Ok(())
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

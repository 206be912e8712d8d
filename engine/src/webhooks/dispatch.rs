//! Durable, at-least-once dispatch on the consumer runtime.
//!
//! [`FirstAttempts`] (group `<prefix>-webhooks`) reads the topics that hold customer-visible
//! events (attempts, feedback, engagement, domains), one chunk at a time per partition so
//! that the events of one message reach an endpoint in log order. For each event and each
//! subscribed endpoint it makes the first attempt, at most `inline_budget` long, within the
//! endpoint's lane (`endpoint_concurrency` requests at once). An endpoint that failed is
//! skipped for a few seconds (its new events wait on tier 0), so a dead or slow endpoint
//! costs the others nothing after its first failure.
//!
//! [`Retries`] (group `<prefix>-webhook-retries`) reads the retry tiers, each record due at
//! its `not_before`, many at once. Every attempt's outcome is a [`WebhookAttempted`] on
//! `<prefix>.webhooks`; a failure schedules the next attempt on its tier (or drops the event
//! for that endpoint when the schedule ran out); a 410 disables the endpoint. Outcomes and
//! schedules are committed with the consumer's position in one step: a crash redoes only
//! attempts that were in flight, with the same `webhook-id`.

use super::endpoints::{Live, Registry};
use super::payload::{self, Payload};
use super::sender::{Answer, Sender};
use super::{tier_of, Lanes, Settings};
use crate::consumer::{self, ChunkHandler, Membership, Owned};
use crate::log::{Assignment, EventLog, LogError, Record, Stored, Topics};
use crate::routing::Router;
use async_trait::async_trait;
use herald_schemas::{
    decode, encode, EndpointDisabled, Event, Timestamp, WebhookAttempted, WebhookEvent, WebhookOutcome,
    WebhookScheduled,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Consumer group roles: `<prefix>-webhooks`, `<prefix>-webhook-retries`.
pub const ROLE: &str = "webhooks";
pub const RETRY_ROLE: &str = "webhook-retries";

/// What both consumers share.
pub struct Dispatch {
    pub registry: Registry,
    pub sender: Arc<Sender>,
    pub lanes: Lanes,
    pub settings: Settings,
    pub topics: Topics,
    pub router: Router,
}

/// One delivery to make: an event for one endpoint.
struct Job {
    endpoint: Arc<Live>,
    webhook_id: String,
    event_type: String,
    body: Arc<Vec<u8>>,
    occurred_at: Timestamp,
    attempt: u32,
}

impl Dispatch {
    fn record(&self, topic: String, endpoint_id: &str, event: WebhookEvent) -> Record {
        let partition = self.router.key_partition(endpoint_id);
        Record { topic, partition, key: endpoint_id.to_owned(), value: encode(&Event::Webhook(event)) }
    }

    /// Makes one attempt (bounded by `limit`) and returns the records of its outcome.
    async fn attempt(&self, job: &Job, limit: Option<Duration>) -> Vec<Record> {
        let e = &job.endpoint.endpoint;
        let lane = self.lanes.get(&e.id);
        let (answer, took) = {
            let _slot = lane.slots.acquire().await;
            let sent = self.sender.send(e, &job.webhook_id, &job.body);
            match limit {
                None => sent.await,
                Some(limit) => match tokio::time::timeout(limit, sent).await {
                    Ok(done) => done,
                    Err(_) => (
                        Answer::Failed {
                            status: None,
                            error: format!("no answer within {} ms; continued on the retry tiers", limit.as_millis()),
                            retry_after: None,
                        },
                        limit,
                    ),
                },
            }
        };
        metrics::histogram!("herald_webhooks_request_seconds").record(took.as_secs_f64());
        let now = Timestamp::now();
        let attempted = |status, error, outcome| WebhookAttempted {
            account: e.account.clone(),
            endpoint_id: e.id.clone(),
            webhook_id: job.webhook_id.clone(),
            event_type: job.event_type.clone(),
            attempt: job.attempt,
            status,
            error,
            outcome,
            duration_ms: took.as_millis() as u64,
            attempted_at: now,
        };
        let webhooks = self.topics.webhooks();
        match answer {
            Answer::Delivered(status) => {
                lane.succeeded();
                metrics::counter!("herald_webhooks_attempts_total", "outcome" => "delivered").increment(1);
                let latency = (now.millis() - job.occurred_at.millis()).max(0) as f64 / 1000.0;
                metrics::histogram!("herald_webhooks_event_to_delivery_seconds").record(latency);
                let a = attempted(Some(status), None, WebhookOutcome::Delivered);
                vec![self.record(webhooks, &e.id, WebhookEvent::Attempted(a))]
            }
            Answer::Gone => {
                metrics::counter!("herald_webhooks_attempts_total", "outcome" => "gone").increment(1);
                let reason = "the endpoint answered 410 Gone".to_owned();
                tracing::info!(endpoint = %e.id, account = %e.account, "webhook endpoint disabled: 410");
                self.registry.disable(&e.id, &reason, now);
                let a = attempted(Some(410), Some(reason.clone()), WebhookOutcome::Dropped);
                let d = EndpointDisabled {
                    account: e.account.clone(),
                    endpoint_id: e.id.clone(),
                    reason,
                    disabled_at: now,
                };
                vec![
                    self.record(webhooks.clone(), &e.id, WebhookEvent::Attempted(a)),
                    self.record(webhooks, &e.id, WebhookEvent::EndpointDisabled(d)),
                ]
            }
            Answer::Failed { status, error, retry_after } => {
                let Some(delay) = self.settings.delay_after(job.attempt) else {
                    metrics::counter!("herald_webhooks_attempts_total", "outcome" => "dropped").increment(1);
                    let a = attempted(status, Some(error), WebhookOutcome::Dropped);
                    return vec![self.record(webhooks, &e.id, WebhookEvent::Attempted(a))];
                };
                metrics::counter!("herald_webhooks_attempts_total", "outcome" => "failed").increment(1);
                let first_wait = self.settings.schedule.first().copied().unwrap_or(delay);
                lane.failed(now.millis() + first_wait.as_millis() as i64);
                let wait = retry_after.map_or(delay, |r| r.max(delay));
                let a = attempted(status, Some(error), WebhookOutcome::Retrying);
                vec![
                    self.record(webhooks, &e.id, WebhookEvent::Attempted(a)),
                    self.schedule(job, job.attempt + 1, Timestamp(now.millis() + wait.as_millis() as i64)),
                ]
            }
        }
    }

    fn schedule(&self, job: &Job, attempt: u32, not_before: Timestamp) -> Record {
        let e = &job.endpoint.endpoint;
        let s = WebhookScheduled {
            account: e.account.clone(),
            endpoint_id: e.id.clone(),
            webhook_id: job.webhook_id.clone(),
            event_type: job.event_type.clone(),
            payload: job.body.to_vec(),
            attempt,
            not_before,
            occurred_at: job.occurred_at,
        };
        self.record(self.topics.webhook_retry(tier_of(attempt)), &e.id, WebhookEvent::Scheduled(s))
    }
}

/// An event from a source topic, ready to fan out.
pub struct Source {
    payload: Payload,
    body: Arc<Vec<u8>>,
    webhook_id: String,
}

/// The first attempts: a [`ChunkHandler`] over the source topics.
pub struct FirstAttempts(pub Arc<Dispatch>);

impl FirstAttempts {
    /// The topics whose events customers hear about.
    pub fn topics(topics: &Topics) -> Vec<String> {
        vec![topics.attempts(), topics.feedback(), topics.engagement(), topics.domains()]
    }

    pub async fn run(
        self: Arc<Self>,
        log: Arc<dyn EventLog>,
        membership: &Membership,
        shutdown: CancellationToken,
    ) -> Result<(), LogError> {
        let t = &self.0.topics;
        let (group, topics) = (t.group(ROLE), Self::topics(t));
        let settings = consumer::Settings { window: 4096, concurrency: 1, chunk: 1024, drain: Duration::from_secs(20) };
        consumer::run(log, &group, &topics, membership, self, settings, Owned::default(), shutdown).await
    }
}

#[async_trait]
impl ChunkHandler for FirstAttempts {
    type Item = Source;

    fn prepare(&self, record: &Stored) -> Option<Source> {
        // The topic is not in `Stored`; the id is completed in `handle`, which knows it.
        let event = match decode(&record.value) {
            Ok(e) => e,
            Err(e) => {
                metrics::counter!("herald_webhooks_poison_records_total").increment(1);
                tracing::error!(error = %e, offset = record.offset, "undecodable record; skipped by webhooks");
                return None;
            }
        };
        let payload = payload::of(&event)?;
        let body = Arc::new(payload.body());
        Some(Source { payload, body, webhook_id: String::new() })
    }

    async fn handle(&self, assignment: &Assignment, items: Vec<(u64, Source)>) -> Vec<Record> {
        let d = &self.0;
        // One chain per (endpoint, message): in order within, concurrent across.
        let mut chains: BTreeMap<(String, String), Vec<Job>> = BTreeMap::new();
        for (offset, mut item) in items {
            item.webhook_id = payload::webhook_id(&assignment.topic, assignment.partition, offset);
            for endpoint in d.registry.subscribers(&item.payload.account, item.payload.event_type) {
                let key = item.payload.message_id.as_ref().map_or_else(|| item.webhook_id.clone(), |m| m.0.clone());
                chains.entry((endpoint.endpoint.id.clone(), key)).or_default().push(Job {
                    endpoint,
                    webhook_id: item.webhook_id.clone(),
                    event_type: item.payload.event_type.to_owned(),
                    body: item.body.clone(),
                    occurred_at: item.payload.at,
                    attempt: 1,
                });
            }
        }
        let runs = chains.into_values().map(|chain| async move {
            let mut out = Vec::new();
            for job in chain {
                let lane = d.lanes.get(&job.endpoint.endpoint.id);
                match lane.failing(Timestamp::now().millis()) {
                    Some(until) => {
                        metrics::counter!("herald_webhooks_set_aside_total").increment(1);
                        out.push(d.schedule(&job, 1, Timestamp(until)));
                    }
                    None => out.extend(d.attempt(&job, Some(d.settings.inline_budget)).await),
                }
            }
            out
        });
        futures::future::join_all(runs).await.into_iter().flatten().collect()
    }
}

/// The retries: a [`ChunkHandler`] over the webhook retry tiers.
pub struct Retries(pub Arc<Dispatch>);

impl Retries {
    pub async fn run(
        self: Arc<Self>,
        log: Arc<dyn EventLog>,
        membership: &Membership,
        shutdown: CancellationToken,
    ) -> Result<(), LogError> {
        let t = &self.0.topics;
        let topics: Vec<String> = (0..super::MAX_TIERS).map(|i| t.webhook_retry(i)).collect();
        let settings = consumer::Settings { window: 1024, concurrency: 64, chunk: 8, drain: Duration::from_secs(20) };
        consumer::run(log, &t.group(RETRY_ROLE), &topics, membership, self, settings, Owned::default(), shutdown).await
    }
}

#[async_trait]
impl ChunkHandler for Retries {
    type Item = WebhookScheduled;

    fn prepare(&self, record: &Stored) -> Option<WebhookScheduled> {
        match decode(&record.value) {
            Ok(Event::Webhook(WebhookEvent::Scheduled(s))) => Some(s),
            Ok(other) => {
                tracing::warn!(event = other.event_type(), "unexpected event on a webhook retry tier; skipped");
                None
            }
            Err(e) => {
                metrics::counter!("herald_webhooks_poison_records_total").increment(1);
                tracing::error!(error = %e, offset = record.offset, "undecodable webhook retry; skipped");
                None
            }
        }
    }

    fn due(&self, item: &WebhookScheduled) -> Timestamp {
        item.not_before
    }

    async fn handle(&self, _: &Assignment, items: Vec<(u64, WebhookScheduled)>) -> Vec<Record> {
        let d = &self.0;
        let runs = items.into_iter().map(|(_, s)| async move {
            let live = d.registry.get(&s.endpoint_id).filter(|l| l.endpoint.enabled && l.endpoint.account == s.account);
            let Some(endpoint) = live else {
                metrics::counter!("herald_webhooks_attempts_total", "outcome" => "dropped").increment(1);
                let a = WebhookAttempted {
                    account: s.account.clone(),
                    endpoint_id: s.endpoint_id.clone(),
                    webhook_id: s.webhook_id.clone(),
                    event_type: s.event_type.clone(),
                    attempt: s.attempt,
                    status: None,
                    error: Some("the endpoint was deleted or disabled".into()),
                    outcome: WebhookOutcome::Dropped,
                    duration_ms: 0,
                    attempted_at: Timestamp::now(),
                };
                return vec![d.record(d.topics.webhooks(), &s.endpoint_id, WebhookEvent::Attempted(a))];
            };
            let job = Job {
                endpoint,
                webhook_id: s.webhook_id,
                event_type: s.event_type,
                body: Arc::new(s.payload),
                occurred_at: s.occurred_at,
                attempt: s.attempt,
            };
            d.attempt(&job, None).await
        });
        futures::future::join_all(runs).await.into_iter().flatten().collect()
    }
}

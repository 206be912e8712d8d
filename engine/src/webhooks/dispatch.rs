//! Durable, at-least-once dispatch on the consumer runtime.
//!
//! [`FirstAttempts`] (group `<prefix>-webhooks`) reads the topics that hold customer-visible
//! events (attempts, feedback, engagement, domains), several chunks at a time per partition,
//! and the events of one message reach an endpoint in log order (see [`FirstAttempts`]). For each event and each
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
use super::payload::{self, Head};
use super::sender::{Answer, Sender};
use super::{tier_of, Lane, Lanes, Settings};
use crate::consumer::{self, ChunkHandler, Membership, Owned};
use crate::log::{Assignment, EventLog, LogError, Record, Stored, Topics};
use crate::routing::Router;
use async_trait::async_trait;
use herald_schemas::{
    decode, encode, EndpointDisabled, Event, Timestamp, WebhookAttempted, WebhookEvent, WebhookOutcome,
    WebhookScheduled,
};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    /// What every attempt uses, made at the first (`Default::default()` when built).
    pub hot: std::sync::OnceLock<Hot>,
}

/// The topic name and metric handles every attempt uses, looked up once.
pub struct Hot {
    webhooks_topic: String,
    request_seconds: metrics::Histogram,
    event_to_delivery: metrics::Histogram,
    delivered: metrics::Counter,
}

/// One delivery to make: an event for one endpoint.
struct Job {
    endpoint: Arc<Live>,
    webhook_id: String,
    event_type: String,
    body: bytes::Bytes,
    occurred_at: Timestamp,
    attempt: u32,
}

impl Dispatch {
    fn hot(&self) -> &Hot {
        self.hot.get_or_init(|| Hot {
            webhooks_topic: self.topics.webhooks(),
            request_seconds: metrics::histogram!("herald_webhooks_request_seconds"),
            event_to_delivery: metrics::histogram!("herald_webhooks_event_to_delivery_seconds"),
            delivered: metrics::counter!("herald_webhooks_attempts_total", "outcome" => "delivered"),
        })
    }

    fn record(&self, topic: String, endpoint_id: &str, event: WebhookEvent) -> Record {
        let partition = self.router.key_partition(endpoint_id);
        Record { topic, partition, key: endpoint_id.to_owned(), value: encode(&Event::Webhook(event)) }
    }

    /// Makes one attempt (bounded by `limit`) in the endpoint's `lane` and returns the
    /// records of its outcome.
    async fn attempt(&self, lane: &Lane, job: &Job, limit: Option<Duration>) -> Vec<Record> {
        let e = &job.endpoint.endpoint;
        let (answer, took) = {
            let _slot = lane.slots.acquire().await;
            self.sender.send(&job.endpoint, &lane.idle, &job.webhook_id, job.body.clone(), limit).await
        };
        let hot = self.hot();
        hot.request_seconds.record(took.as_secs_f64());
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
        let webhooks = hot.webhooks_topic.clone();
        match answer {
            Answer::Delivered(status) => {
                lane.succeeded();
                hot.delivered.increment(1);
                let latency = (now.millis() - job.occurred_at.millis()).max(0) as f64 / 1000.0;
                hot.event_to_delivery.record(latency);
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
    head: Head,
    body: bytes::Bytes,
    /// The message's place in the partition's order (set when the chunk starts), if the
    /// event is about a message; an event about none is in an order of its own.
    turn: Option<Arc<Turn>>,
}

/// The first attempts: a [`ChunkHandler`] over the source topics.
///
/// Several chunks of a partition are in flight at once (so a chunk's slowest request and its
/// commit do not stall the partition), and the events of one message still reach each
/// endpoint in log order: the events of one message in a chunk take a [`Turn`] when the
/// chunk starts (chunks start in offset order), and wait for the turn of the same message
/// in an earlier chunk still in flight to end.
pub struct FirstAttempts {
    dispatch: Arc<Dispatch>,
    order: Arc<TurnOrder>,
}

/// The latest turn in flight of each message, by [`order_key`].
#[derive(Default)]
struct TurnOrder {
    running: Mutex<HashMap<u64, Arc<TurnEnd>>>,
}

/// A message's key in the turn order: a hash of (topic, partition, message id). Two
/// messages with the same key only wait for each other, so a collision costs time, never
/// order.
fn order_key(topic: &str, partition: u32, message_id: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(topic.as_bytes());
    h.update(&partition.to_le_bytes());
    h.update(message_id.as_bytes());
    h.digest()
}

/// The end of a turn, which the next turn of its message waits for.
#[derive(Default)]
struct TurnEnd {
    ended: AtomicBool,
    notify: tokio::sync::Notify,
}

impl TurnEnd {
    async fn wait(&self) {
        loop {
            // Made before the check: `notify_waiters` wakes every `Notified` made before it.
            let notified = self.notify.notified();
            if self.ended.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

/// A message's place in its partition's order, shared by its events in one chunk. It ends
/// (waking the message's next turn) when the last of them lets go of it: their chains
/// ended, or the chunk was aborted.
struct Turn {
    order: Arc<TurnOrder>,
    key: u64,
    end: Arc<TurnEnd>,
    /// What to wait for first: the message's turn in an earlier chunk.
    before: Option<Arc<TurnEnd>>,
}

impl Turn {
    fn take(order: &Arc<TurnOrder>, key: u64) -> Arc<Turn> {
        let end = Arc::new(TurnEnd::default());
        let before = order.running.lock().expect("turn order").insert(key, end.clone());
        Arc::new(Turn { order: order.clone(), key, end, before })
    }

    /// Waits for the earlier turn (if any) to end.
    async fn wait(&self) {
        if let Some(before) = &self.before {
            before.wait().await; // ended, or its chunk was aborted: either way, go on
        }
    }
}

impl Drop for Turn {
    /// Ends the turn, but never before the earlier one: a turn whose chunk had nothing to
    /// send for its message (or was aborted) passes the wait on to the next.
    fn drop(&mut self) {
        let (order, key, end) = (self.order.clone(), self.key, self.end.clone());
        let finish = move || {
            {
                let mut running = order.running.lock().expect("turn order");
                if running.get(&key).is_some_and(|latest| Arc::ptr_eq(latest, &end)) {
                    running.remove(&key);
                }
            }
            end.end();
        };
        let before = self.before.take().filter(|b| !b.ended.load(Ordering::Acquire));
        match (before, tokio::runtime::Handle::try_current()) {
            (Some(before), Ok(runtime)) => {
                runtime.spawn(async move {
                    before.wait().await;
                    finish();
                });
            }
            _ => finish(),
        }
    }
}

/// The events of one message (or one event about none) for one endpoint, in log order.
struct Chain {
    turn: Option<Arc<Turn>>,
    jobs: Vec<Job>,
}

/// One endpoint's chains in a chunk, taken in turn by its workers.
struct Queue(Mutex<VecDeque<Chain>>);

impl Queue {
    fn next(&self) -> Option<Chain> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
    }
}

impl FirstAttempts {
    pub fn new(dispatch: Arc<Dispatch>) -> Self {
        FirstAttempts { dispatch, order: Arc::default() }
    }

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
        let t = &self.dispatch.topics;
        let (group, topics) = (t.group(ROLE), Self::topics(t));
        let settings = consumer::Settings {
            window: 4096,
            concurrency: 4,
            chunk: 1024,
            drain: Duration::from_secs(20),
            appends: true,
        };
        let lanes = self.dispatch.lanes.clone();
        let sweeping = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { lanes.sweep_until(shutdown).await }
        });
        let ran = consumer::run(log, &group, &topics, membership, self, settings, Owned::default(), shutdown).await;
        sweeping.abort();
        ran
    }
}

#[async_trait]
impl ChunkHandler for FirstAttempts {
    type Item = Source;

    fn prepare(&self, record: &Stored) -> Option<Source> {
        let event = match decode(&record.value) {
            Ok(e) => e,
            Err(e) => {
                metrics::counter!("herald_webhooks_poison_records_total").increment(1);
                tracing::error!(error = %e, offset = record.offset, "undecodable record; skipped by webhooks");
                return None;
            }
        };
        let (head, body) = payload::webhook(event)?;
        Some(Source { head, body: bytes::Bytes::from(body), turn: None })
    }

    fn starting(&self, assignment: &Assignment, items: &mut [(u64, Source)]) {
        let mut turns: HashMap<u64, Arc<Turn>> = HashMap::with_capacity(items.len());
        for (_, item) in items.iter_mut() {
            let Some(message) = &item.head.message_id else { continue };
            let key = order_key(&assignment.topic, assignment.partition, &message.0);
            let turn = turns.entry(key).or_insert_with(|| Turn::take(&self.order, key));
            item.turn = Some(turn.clone());
        }
    }

    async fn handle(&self, assignment: &Assignment, items: Vec<(u64, Source)>) -> Vec<Record> {
        let d = &self.dispatch;
        // One chain per (endpoint, message): in order within, concurrent across, and after
        // the same message's chain of an earlier chunk still in flight. Chains are grouped
        // by endpoint, in the order of their first event.
        let mut endpoints: Vec<(Arc<Live>, Vec<Chain>)> = Vec::new();
        let mut endpoint_at: HashMap<String, usize> = HashMap::new();
        let mut chain_at: HashMap<(usize, u64), usize> = HashMap::new();
        for (offset, item) in items {
            let subscribers = d.registry.subscribers(&item.head.account, item.head.event_type);
            if subscribers.is_empty() {
                continue;
            }
            let webhook_id = payload::webhook_id(&assignment.topic, assignment.partition, offset);
            for endpoint in subscribers {
                let at = match endpoint_at.get(endpoint.endpoint.id.as_str()) {
                    Some(&at) => at,
                    None => {
                        endpoint_at.insert(endpoint.endpoint.id.clone(), endpoints.len());
                        endpoints.push((endpoint.clone(), Vec::new()));
                        endpoints.len() - 1
                    }
                };
                let chains = &mut endpoints[at].1;
                // The message's chain for this endpoint, or a new one (always, for an event
                // about no message).
                let message = item.turn.as_ref().map(|turn| (at, turn.key));
                let chain = match message.and_then(|m| chain_at.get(&m)) {
                    Some(&chain) => chain,
                    None => {
                        chains.push(Chain { turn: item.turn.clone(), jobs: Vec::new() });
                        if let Some(m) = message {
                            chain_at.insert(m, chains.len() - 1);
                        }
                        chains.len() - 1
                    }
                };
                chains[chain].jobs.push(Job {
                    endpoint,
                    webhook_id: webhook_id.clone(),
                    event_type: item.head.event_type.to_owned(),
                    body: item.body.clone(),
                    occurred_at: item.head.at,
                    attempt: 1,
                });
            }
        }
        // Each endpoint's chains are taken by as many workers as it may have requests in
        // flight, each a task of its own, so the chunk's requests (and the connections they
        // drive) run on every worker thread, and a slow endpoint holds up only its own
        // workers. Dropping the set (the chunk aborted at the end of a drain) aborts them.
        let mut tasks = tokio::task::JoinSet::new();
        for (endpoint, chains) in endpoints {
            let lane = d.lanes.get(&endpoint.endpoint.id);
            let workers = chains.len().min(d.settings.endpoint_concurrency.max(1));
            let queue = Arc::new(Queue(Mutex::new(chains.into())));
            for _ in 0..workers {
                let (d, lane, queue) = (self.dispatch.clone(), lane.clone(), queue.clone());
                tasks.spawn(async move {
                    let mut out = Vec::new();
                    while let Some(chain) = queue.next() {
                        if let Some(turn) = &chain.turn {
                            turn.wait().await;
                        }
                        for job in chain.jobs {
                            match lane.failing(Timestamp::now().millis()) {
                                Some(until) => {
                                    metrics::counter!("herald_webhooks_set_aside_total").increment(1);
                                    out.push(d.schedule(&job, 1, Timestamp(until)));
                                }
                                None => out.extend(d.attempt(&lane, &job, Some(d.settings.inline_budget)).await),
                            }
                        }
                        drop(chain.turn); // this chain's part of the message's turn is done
                    }
                    out
                });
            }
        }
        let mut out = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(records) => out.extend(records),
                // A worker that panicked (or was cancelled by the runtime's shutdown) leaves
                // its outcomes unknown: the chunk must not finish, so it is processed again.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("a webhook worker ended early: {e}"),
            }
        }
        out
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
        let settings = consumer::Settings {
            window: 1024,
            concurrency: 64,
            chunk: 8,
            drain: Duration::from_secs(20),
            appends: true,
        };
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
                body: s.payload.into(),
                occurred_at: s.occurred_at,
                attempt: s.attempt,
            };
            let lane = d.lanes.get(&job.endpoint.endpoint.id);
            d.attempt(&lane, &job, None).await
        });
        futures::future::join_all(runs).await.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn key(message: &str) -> u64 {
        order_key("t.attempts", 0, message)
    }

    #[tokio::test]
    async fn a_turn_waits_for_the_earlier_turns_of_its_message_only() {
        let order = Arc::new(TurnOrder::default());
        let first = Turn::take(&order, key("m1"));
        let other = Turn::take(&order, key("m2"));
        let second = Turn::take(&order, key("m1"));
        // Another message does not wait; the same one does.
        assert!(other.wait().now_or_never().is_some());
        let waiting = tokio::spawn({
            let second = second.clone();
            async move { second.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        drop((second, other));
        assert!(order.running.lock().unwrap().is_empty(), "ended turns leave nothing behind");
    }

    #[tokio::test]
    async fn a_turn_with_nothing_to_send_passes_the_wait_on() {
        let order = Arc::new(TurnOrder::default());
        let first = Turn::take(&order, key("m1"));
        // The next chunk had no subscriber for m1: its turn ends at once, unwaited.
        drop(Turn::take(&order, key("m1")));
        let third = Turn::take(&order, key("m1"));
        let waiting = tokio::spawn(async move { third.wait().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the third turn must still wait for the first");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
    }
}

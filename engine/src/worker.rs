//! The delivery worker: a [`ChunkHandler`] run by the consumer runtime ([`crate::consumer`])
//! on every partition this node owns of the messages topic and of each retry-tier topic.
//! Each record is one delivery attempt; a partition has up to `batch_size` records in
//! flight at once (within per-domain limits), and as each attempt finishes its
//! `DeliveryAttempted` (plus a `DeliveryScheduled` on the right retry tier for a deferral)
//! is appended together with the partition's new position, atomically.
//!
//! Before each attempt the shaper (`crate::shaping`) decides which source address sends
//! and whether the message may go now. A message that may not (its provider is suspended
//! or throttled beyond a short wait, its pool's warm-up caps are reached) is *set aside*:
//! finished with a `DeliveryScheduled` carrying the same attempt number, on the held topic
//! or the retry tier whose delay fits, so it comes back later without using up an attempt
//! and without holding back the partition's other domains.
//!
//! Workers hold no state of their own: everything needed to resume is in the log, so any
//! worker can take over any partition. A retry record is appended only with the commit that
//! marks its attempt finished, so a crash can never fork a retry chain; after a crash only
//! the attempts that were in flight are made again (at most `batch_size` per partition).

use crate::accounts::{AccountCache, Gate};
use crate::consumer::{self, ChunkHandler, Membership, Owned};
use crate::delivery::smtp::Egress;
use crate::delivery::{mx, Attempt, Class, Deliverer};
use crate::log::{Assignment, EventLog, Record, Stored, Topics};
use crate::retry::{Next, RetryPolicy};
use crate::routing::Router;
use crate::shaping::providers::TlsPolicy;
use crate::shaping::{Admission, Shaper};
use async_trait::async_trait;
use herald_schemas::{
    decode, encode, DeliveryAttempted, DeliveryScheduled, Event, MessageAccepted, Outcome, SmtpReply, Timestamp,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The role in the delivery consumer group's name ([`Topics::group`]).
pub const ROLE: &str = "delivery";

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Attempts in flight per partition (and records read ahead).
    pub batch_size: usize,
    /// Concurrent deliveries per recipient domain, across all of this node's partitions.
    pub domain_concurrency: usize,
    pub policy: RetryPolicy,
    /// How long a stopping partition waits for its attempts in flight.
    pub drain: Duration,
    /// Delay of the held topic (messages set aside for a short while).
    pub hold: Duration,
    /// How long a suspended account's message is parked before the worker looks again
    /// (the held topic, or the retry tier of the longest delay within it).
    pub account_hold: Duration,
}

pub struct Worker {
    log: Arc<dyn EventLog>,
    topics: Topics,
    router: Router,
    deliverer: Arc<Deliverer>,
    settings: WorkerSettings,
    domains: Mutex<HashMap<String, Arc<Semaphore>>>,
    accounts: Option<AccountCache>,
    /// The suppression check and refusal classification (`crate::feedback::sending`).
    feedback: Option<Arc<crate::feedback::sending::Sending>>,
    shaper: Arc<Shaper>,
    owned: Owned,
}

/// A message due for an attempt.
pub struct Job {
    message: MessageAccepted,
    attempt: u32,
    not_before: Timestamp,
}

#[async_trait]
impl ChunkHandler for Worker {
    type Item = Job;

    fn prepare(&self, record: &Stored) -> Option<Job> {
        job(record)
    }

    fn due(&self, job: &Job) -> Timestamp {
        job.not_before
    }

    async fn handle(&self, assignment: &Assignment, items: Vec<(u64, Job)>) -> Vec<Record> {
        let work = items.into_iter().map(|(_, job)| self.deliver(assignment, job));
        futures::future::join_all(work).await.into_iter().flatten().collect()
    }
}

impl Worker {
    pub fn new(
        log: Arc<dyn EventLog>,
        topics: Topics,
        router: Router,
        deliverer: Arc<Deliverer>,
        settings: WorkerSettings,
        shaper: Arc<Shaper>,
        owned: Owned,
    ) -> Self {
        Worker {
            log,
            topics,
            router,
            deliverer,
            settings,
            domains: Mutex::new(HashMap::new()),
            shaper,
            owned,
            feedback: None,
            accounts: None,
        }
    }

    /// Holds the mail of suspended accounts and drops that of deleted ones.
    pub fn with_accounts(mut self, accounts: AccountCache) -> Self {
        self.accounts = Some(accounts);
        self
    }

    fn gate(&self, job: &Job) -> Gate {
        self.accounts.as_ref().map_or(Gate::Deliver, |a| a.current().gate(&job.message.account))
    }

    /// Checks the suppression lists before each attempt and classifies refusals after it.
    /// The worker waits for the node's suppression index to be ready before it delivers.
    pub fn with_feedback(mut self, sending: Arc<crate::feedback::sending::Sending>) -> Self {
        self.feedback = Some(sending);
        self
    }

    /// The delivery topics: messages, held, and every retry tier.
    pub fn topics(topics: &Topics) -> Vec<String> {
        [topics.messages(), topics.held()].into_iter().chain((0..topics.retry_tiers).map(|t| topics.retry(t))).collect()
    }

    /// Consumes the messages and retry topics until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        membership: &Membership,
        shutdown: CancellationToken,
    ) -> Result<(), crate::log::LogError> {
        // Throttles in force (and warm-up counts) come from the shaping topic: read it
        // to its end before the first attempt.
        tokio::select! {
            _ = self.shaper.wait_ready() => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
        let topics = Worker::topics(&self.topics);
        let settings = consumer::Settings {
            window: self.settings.batch_size,
            concurrency: self.settings.batch_size,
            chunk: 1,
            drain: self.settings.drain,
            appends: true,
        };
        if let Some(f) = &self.feedback {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = f.index.ready() => {}
            }
        }
        let log = self.log.clone();
        let group = self.topics.group(ROLE);
        let owned = self.owned.clone();
        consumer::run(log, &group, &topics, membership, self, settings, owned, shutdown).await
    }

    /// One message: route, admission by the shaper, attempt (or set aside).
    async fn deliver(&self, assignment: &Assignment, job: Job) -> Vec<Record> {
        match self.gate(&job) {
            Gate::Deliver => {}
            Gate::Hold => return self.hold(job),
            Gate::Drop => return self.dropped(job),
        }
        if let Some(f) = &self.feedback {
            if let Some(record) = f.suppressed(&job.message, job.attempt).await {
                return vec![record];
            }
        }
        let domain = job.message.recipient_domain.clone();
        let route = self.deliverer.route(&domain).await;
        let hosts = match &route {
            Ok(mx::Route::Hosts(h)) => Some(h.as_slice()),
            _ => None,
        };
        let provider = self.shaper.provider_for(&domain, hosts);
        let ticket = match self
            .shaper
            .admit(assignment, &job.message.message_id.0, &job.message.account, &domain, &provider)
            .await
        {
            Admission::Go(ticket) => ticket,
            Admission::Park { until, .. } => return self.set_aside(job, until),
        };
        let permit = self.domain_semaphore(&domain).acquire_owned().await;
        let lane = &ticket.lane;
        let allowed = || self.shaper.allowed(&ticket);
        let egress = Egress {
            source: lane.source.ip,
            ehlo: &lane.source.ehlo,
            connections: &lane.connections,
            tls_required: provider.limits.tls == TlsPolicy::Required,
            deadline: ticket.deadline,
            allowed: &allowed,
        };
        let attempt = self.deliverer.attempt(&job.message, route, &egress).await;
        drop(permit);
        match attempt {
            Ok(attempt) => {
                self.shaper.observe(&ticket, &attempt);
                self.records_for(job, attempt)
            }
            Err(_busy) => {
                let until = self.shaper.parked_busy(&ticket);
                self.set_aside(job, until)
            }
        }
    }

    /// Finishes `job` without an attempt: it comes back at about `until` (no later) with
    /// the same attempt number, from the held topic or the retry tier whose delay is the
    /// longest that fits. A message that would come back after its maximum age fails now
    /// (`4.4.7`), as an expired message does after its last deferral.
    fn set_aside(&self, job: Job, until: Timestamp) -> Vec<Record> {
        let now = Timestamp::now();
        let (topic, delay) = self.aside_topic(until.until(now));
        let expires = job.message.accepted_at.saturating_add(self.settings.policy.max_age);
        if now.saturating_add(delay) > expires {
            let expired = Attempt {
                mx_host: None,
                mx_ip: None,
                tls: false,
                reply: crate::delivery::local_reply(
                    451,
                    "4.4.7",
                    "The message reached its maximum age while traffic shaping held it back (its provider was throttled or suspended).",
                ),
                class: Class::Permanent,
                dkim: "not signed: not attempted".into(),
                duration: Duration::ZERO,
            };
            return self.records_for(job, expired);
        }
        let msg = job.message;
        let partition = self.router.partition(&msg.recipient_domain, &msg.message_id.0);
        tracing::debug!(message_id = %msg.message_id, attempt = job.attempt, %topic, delay_ms = delay.as_millis() as u64, "set aside");
        let scheduled = DeliveryScheduled { attempt: job.attempt, not_before: now.saturating_add(delay), message: msg };
        vec![Record {
            topic,
            partition,
            key: scheduled.message.recipient_domain.clone(),
            value: encode(&Event::DeliveryScheduled(scheduled)),
        }]
    }

    /// The held topic (its delay is the shortest), or the retry tier with the longest
    /// delay that is not longer than `wanted`.
    fn aside_topic(&self, wanted: Duration) -> (String, Duration) {
        let mut best = (self.topics.held(), self.settings.hold);
        for tier in 0..self.topics.retry_tiers {
            let d = self.settings.policy.delay(tier);
            if d <= wanted && d > best.1 {
                best = (self.topics.retry(tier), d);
            }
        }
        best
    }

    /// Parks a message of a suspended account on the held topic (or the retry tier of the
    /// longest delay within `hold`), with the same attempt number: no attempt is made or
    /// recorded and nothing counts against its retries. Unlike [`Worker::set_aside`] it does
    /// not expire: the mail waits until the account is resumed or deleted.
    fn hold(&self, job: Job) -> Vec<Record> {
        let now = Timestamp::now();
        let (topic, delay) = self.aside_topic(self.settings.account_hold);
        let msg = job.message;
        metrics::counter!("herald_delivery_account_held_total").increment(1);
        tracing::debug!(message_id = %msg.message_id, account = %msg.account, "held: the account is suspended");
        vec![Record {
            topic,
            partition: self.router.partition(&msg.recipient_domain, &msg.message_id.0),
            key: msg.recipient_domain.clone(),
            value: encode(&Event::DeliveryScheduled(DeliveryScheduled {
                attempt: job.attempt,
                not_before: now.saturating_add(delay),
                message: msg,
            })),
        }]
    }

    /// A message of a deleted account: failed without an attempt.
    fn dropped(&self, job: Job) -> Vec<Record> {
        let reply = crate::delivery::local_reply(550, "5.7.1", "The account was deleted; the message was not sent.");
        let dropped = Attempt {
            mx_host: None,
            mx_ip: None,
            tls: false,
            reply,
            class: Class::Permanent,
            dkim: "unsigned: not sent".into(),
            duration: Duration::ZERO,
        };
        self.records_for(job, dropped)
    }

    fn domain_semaphore(&self, domain: &str) -> Arc<Semaphore> {
        let mut domains = self.domains.lock().expect("domain limiter poisoned");
        domains
            .entry(domain.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.domain_concurrency)))
            .clone()
    }

    /// The events an attempt produces.
    fn records_for(&self, job: Job, attempt: Attempt) -> Vec<Record> {
        let now = Timestamp::now();
        let msg = job.message;
        let partition = self.router.partition(&msg.recipient_domain, &msg.message_id.0);
        let (outcome, next, reply) = match attempt.class {
            Class::Success => (Outcome::Delivered, None, attempt.reply),
            Class::Permanent => (Outcome::Failed, None, attempt.reply),
            Class::Temporary => match self.settings.policy.next(job.attempt, msg.accepted_at, now) {
                Next::Retry { attempt: n, tier, at } => (Outcome::Deferred, Some((n, tier, at)), attempt.reply),
                Next::GiveUp => {
                    let r = attempt.reply;
                    let text =
                        format!("retries exhausted after {} attempts; last reply: {} {}", job.attempt, r.code, r.text);
                    (Outcome::Failed, None, SmtpReply { code: r.code, enhanced: r.enhanced, text })
                }
            },
        };
        let outcome_label = match outcome {
            Outcome::Delivered => "delivered",
            Outcome::Deferred => "deferred",
            Outcome::Failed => "failed",
        };
        metrics::counter!("herald_delivery_attempts_total", "outcome" => outcome_label).increment(1);
        metrics::histogram!("herald_delivery_attempt_seconds").record(attempt.duration.as_secs_f64());
        let event = DeliveryAttempted {
            account: msg.account.clone(),
            message_id: msg.message_id.clone(),
            recipient: msg.recipient.clone(),
            recipient_domain: msg.recipient_domain.clone(),
            attempt: job.attempt,
            mx_host: attempt.mx_host,
            mx_ip: attempt.mx_ip.map(|ip| ip.to_string()),
            tls: attempt.tls,
            reply,
            outcome,
            next_attempt_at: next.map(|(_, _, at)| at),
            duration_ms: attempt.duration.as_millis() as u64,
            attempted_at: now,
            dkim: attempt.dkim,
        };
        tracing::debug!(message_id = %msg.message_id, attempt = job.attempt, outcome = outcome_label, code = event.reply.code, "attempted");
        let key = msg.recipient_domain.clone();
        let refusal = self
            .feedback
            .as_ref()
            .and_then(|f| f.refusal(&msg, job.attempt, outcome, &event.reply, event.mx_host.as_deref()));
        let mut records = vec![Record {
            topic: self.topics.attempts(),
            partition,
            key: key.clone(),
            value: encode(&Event::DeliveryAttempted(event)),
        }];
        records.extend(refusal);
        if let Some((attempt, tier, at)) = next {
            records.push(Record {
                topic: self.topics.retry(tier),
                partition,
                key,
                value: encode(&Event::DeliveryScheduled(DeliveryScheduled { attempt, not_before: at, message: msg })),
            });
        }
        records
    }
}

/// Decodes a messages-topic or retry-topic record into a job; `None` for a poison record.
fn job(record: &Stored) -> Option<Job> {
    match decode(&record.value) {
        Ok(Event::MessageAccepted(message)) => Some(Job { not_before: Timestamp(0), attempt: 1, message }),
        Ok(Event::DeliveryScheduled(s)) => {
            Some(Job { not_before: s.not_before, attempt: s.attempt, message: s.message })
        }
        Ok(other) => {
            tracing::warn!(
                event = other.event_type(),
                offset = record.offset,
                "unexpected event on a delivery topic; skipped"
            );
            None
        }
        Err(e) => {
            metrics::counter!("herald_worker_poison_records_total").increment(1);
            tracing::error!(error = %e, offset = record.offset, "undecodable record; skipped");
            None
        }
    }
}

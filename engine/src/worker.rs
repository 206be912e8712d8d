//! The delivery worker: one task per assigned partition of the messages topic and of each
//! retry-tier topic. A task reads a batch, delivers it (concurrently, within per-domain
//! limits), appends one `DeliveryAttempted` per attempt (plus a `DeliveryScheduled` on the
//! right retry tier for each deferral), and only then commits its offset.
//!
//! Workers hold no state of their own: everything needed to resume is in the log, so any
//! worker can take over any partition. After a crash, the records after the last commit
//! are delivered again (at-least-once); a partition has at most `batch_size` records in
//! flight, which bounds the duplicates.

use crate::accounts::{AccountCache, Gate};
use crate::delivery::{Attempt, Class, Deliverer};
use crate::log::{Assignment, EventLog, PartitionConsumer, Record, Stored, Topics};
use crate::retry::{Next, RetryPolicy};
use crate::routing::Router;
use herald_schemas::{
    decode, encode, DeliveryAttempted, DeliveryScheduled, Event, MessageAccepted, Outcome, SmtpReply, Timestamp,
};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub const GROUP: &str = "herald-delivery";

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub batch_size: usize,
    /// Concurrent deliveries per recipient domain, across all of this node's partitions.
    pub domain_concurrency: usize,
    pub policy: RetryPolicy,
    /// How long a suspended account's message is parked before the worker looks again
    /// (rounded down to a retry tier's delay).
    pub hold: Duration,
}

pub struct Worker {
    log: Arc<dyn EventLog>,
    topics: Topics,
    router: Router,
    deliverer: Arc<Deliverer>,
    settings: WorkerSettings,
    domains: Mutex<HashMap<String, Arc<Semaphore>>>,
    accounts: Option<AccountCache>,
}

/// A message due for an attempt.
struct Job {
    message: MessageAccepted,
    attempt: u32,
    not_before: Timestamp,
}

impl Worker {
    pub fn new(
        log: Arc<dyn EventLog>,
        topics: Topics,
        router: Router,
        deliverer: Arc<Deliverer>,
        settings: WorkerSettings,
    ) -> Self {
        Worker { log, topics, router, deliverer, settings, domains: Mutex::new(HashMap::new()), accounts: None }
    }

    /// Holds the mail of suspended accounts and drops that of deleted ones.
    pub fn with_accounts(mut self, accounts: AccountCache) -> Self {
        self.accounts = Some(accounts);
        self
    }

    fn gate(&self, job: &Job) -> Gate {
        self.accounts.as_ref().map_or(Gate::Deliver, |a| a.current().gate(&job.message.account))
    }

    /// Consumes `partitions` of the messages and retry topics until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        partitions: &[u32],
        shutdown: CancellationToken,
    ) -> Result<(), crate::log::LogError> {
        let mut assignments = Vec::new();
        for topic in
            std::iter::once(self.topics.messages()).chain((0..self.topics.retry_tiers).map(|t| self.topics.retry(t)))
        {
            assignments.extend(partitions.iter().map(|&partition| Assignment { topic: topic.clone(), partition }));
        }
        let consumers = self.log.consume(GROUP, &assignments).await?;
        let mut tasks = tokio::task::JoinSet::new();
        for consumer in consumers {
            tasks.spawn(self.clone().partition_loop(consumer, shutdown.clone()));
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    async fn partition_loop(self: Arc<Self>, mut consumer: Box<dyn PartitionConsumer>, shutdown: CancellationToken) {
        let mut pending: VecDeque<(u64, Option<Job>)> = VecDeque::new();
        loop {
            if pending.is_empty() {
                let polled = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = consumer.poll(self.settings.batch_size, Duration::from_secs(1)) => r,
                };
                match polled {
                    Ok(records) => pending.extend(records.into_iter().map(|r| (r.offset, job(&r)))),
                    Err(e) => {
                        tracing::warn!(error = %e, assignment = ?consumer.assignment(), "poll failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
                continue;
            }
            // Retry tiers hold records in due order: wait for the head, then take every
            // record that is due.
            let head_due = pending.front().and_then(|(_, j)| j.as_ref()).map(|j| j.not_before).unwrap_or(Timestamp(0));
            let wait = head_due.until(Timestamp::now());
            if !wait.is_zero() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let now = Timestamp::now();
            let due = pending.iter().take_while(|(_, j)| j.as_ref().is_none_or(|j| j.not_before <= now)).count().max(1);
            let chunk: Vec<(u64, Option<Job>)> = pending.drain(..due).collect();
            let next_offset = chunk.last().map(|(o, _)| o + 1).expect("chunk is never empty");
            let jobs: Vec<Job> = chunk.into_iter().filter_map(|(_, j)| j).collect();
            let records = self.deliver_all(jobs).await;
            if !self.append_until_done(records, &shutdown).await {
                return; // shutting down: the chunk stays uncommitted and is redone later
            }
            if let Err(e) = consumer.commit(next_offset).await {
                // Not fatal: the records will be delivered again after a restart.
                tracing::warn!(error = %e, "offset commit failed");
            }
        }
    }

    async fn deliver_all(&self, jobs: Vec<Job>) -> Vec<Record> {
        let work = jobs.into_iter().map(|job| async move {
            match self.gate(&job) {
                Gate::Deliver => {}
                Gate::Hold => return self.hold(job),
                Gate::Drop => {
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
                    return self.records_for(job, dropped);
                }
            }
            let permit = self.domain_semaphore(&job.message.recipient_domain).acquire_owned().await;
            let attempt = self.deliverer.attempt(&job.message).await;
            drop(permit);
            self.records_for(job, attempt)
        });
        futures::future::join_all(work).await.into_iter().flatten().collect()
    }

    fn domain_semaphore(&self, domain: &str) -> Arc<Semaphore> {
        let mut domains = self.domains.lock().expect("domain limiter poisoned");
        domains
            .entry(domain.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.domain_concurrency)))
            .clone()
    }

    /// Parks a message of a suspended account on a retry tier, with the same attempt
    /// number: no attempt is made or recorded, and nothing counts against its retries.
    fn hold(&self, job: Job) -> Vec<Record> {
        let policy = &self.settings.policy;
        let tier = policy.hold_tier(self.settings.hold);
        let msg = job.message;
        metrics::counter!("herald_delivery_held_total").increment(1);
        tracing::debug!(message_id = %msg.message_id, account = %msg.account, "held: the account is suspended");
        vec![Record {
            topic: self.topics.retry(tier),
            partition: self.router.partition(&msg.recipient_domain, &msg.message_id.0),
            key: msg.recipient_domain.clone(),
            value: encode(&Event::DeliveryScheduled(DeliveryScheduled {
                attempt: job.attempt,
                not_before: Timestamp::now().saturating_add(policy.delay(tier)),
                message: msg,
            })),
        }]
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
        let mut records = vec![Record {
            topic: self.topics.attempts(),
            partition,
            key: key.clone(),
            value: encode(&Event::DeliveryAttempted(event)),
        }];
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

    /// Appends, retrying with backoff: the offset must not be committed before this
    /// succeeds, and giving up would lose the attempt's outcome. `false` only on shutdown.
    async fn append_until_done(&self, records: Vec<Record>, shutdown: &CancellationToken) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.log.append(records.clone()).await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::error!(error = %e, "appending attempt events failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
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

//! Atomic append + offset commit on Kafka: one transactional producer per consumer group
//! membership, and a loop that folds the commits of all the membership's partition tasks
//! queued at that moment into one transaction (group commit): the records are produced,
//! the offsets (with their finished-set metadata) are added with
//! `send_offsets_to_transaction` under the consumer's group metadata, and the transaction
//! is committed. Either all of it becomes visible to `read_committed` consumers and to the
//! group, or none of it.
//!
//! Fencing (KIP-447): the group metadata carries the member's generation, so a member that
//! lost its partitions cannot commit for them; its transaction fails and is aborted. The
//! `transactional.id` is random per membership and kept across producer rebuilds, so a new
//! producer fences and aborts its predecessor's open transaction at once. A process killed
//! mid-transaction leaves it open until `transaction.timeout.ms` (10 s), during which
//! `read_committed` readers of the partitions it wrote wait: that bounds the extra failover
//! delay on the attempts and retry topics.
//!
//! Commits with no records (the projectors) skip the transaction: a plain synchronous
//! offset commit is atomic on its own.
//!
//! A fatal producer error (fenced, or librdkafka's idempotence state lost) rebuilds the
//! producer; an abortable one aborts the transaction. Either way the callers get an error
//! and retry, and nothing of the failed transaction is visible.

use super::group::GroupConsumer;
use super::{is_retriable, producer_config, KafkaSettings};
use crate::log::{Assignment, LogError, Position, Record};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Most partition commits folded into one transaction.
const MAX_GROUP: usize = 256;
/// Open transactions of a crashed process are aborted by the broker after this long.
const TRANSACTION_TIMEOUT_MS: &str = "10000";

struct Request {
    records: Vec<Record>,
    offsets: Vec<(Assignment, Position)>,
    done: oneshot::Sender<Result<(), LogError>>,
}

/// What the committer's loop is asked to do.
enum Message {
    /// Start the transactional producer now (see [`Committer::start_producer`]).
    StartProducer,
    Commit(Request),
}

pub(crate) struct Committer {
    queue: mpsc::UnboundedSender<Message>,
    inner: Arc<Inner>,
}

struct Inner {
    settings: KafkaSettings,
    group: String,
    transactional_id: String,
    consumer: OnceLock<Weak<GroupConsumer>>,
    producer: Mutex<Option<Arc<FutureProducer>>>,
}

impl Committer {
    pub(super) fn start(settings: KafkaSettings, group: &str) -> Arc<Committer> {
        let inner = Arc::new(Inner {
            settings,
            group: group.to_owned(),
            transactional_id: format!("herald-{group}-{}", herald_schemas::MessageId::generate()),
            consumer: OnceLock::new(),
            producer: Mutex::new(None),
        });
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(inner.clone(), rx));
        Arc::new(Committer { queue, inner })
    }

    /// The group this committer commits for.
    pub(super) fn group(&self) -> &str {
        &self.inner.group
    }

    /// Starts the transactional producer now rather than at the first commit with records:
    /// `init_transactions` can take seconds, and every attempt that finishes meanwhile waits
    /// uncommitted (made again if the node dies first; unseen by `read_committed` readers).
    /// For groups that append records with their commits; a failure is retried at the
    /// first commit.
    pub(super) fn start_producer(&self) {
        let _ = self.queue.send(Message::StartProducer);
    }

    pub(super) fn bind(&self, consumer: Weak<GroupConsumer>) {
        let _ = self.inner.consumer.set(consumer);
    }

    pub(super) fn current_producer(&self) -> Option<Arc<FutureProducer>> {
        self.inner.producer.lock().expect("producer lock").clone()
    }

    /// Appends `records` and commits `position` for `assignment`, atomically.
    pub(super) async fn commit(
        &self,
        assignment: &Assignment,
        records: Vec<Record>,
        position: Position,
    ) -> Result<(), LogError> {
        if records.is_empty() {
            return self.inner.plain_commit(assignment, &position).await;
        }
        let (done, rx) = oneshot::channel();
        let request = Request { records, offsets: vec![(assignment.clone(), position)], done };
        self.queue.send(Message::Commit(request)).map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }
}

async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Message>) {
    while let Some(message) = rx.recv().await {
        let first = match message {
            Message::Commit(r) => r,
            Message::StartProducer => {
                let started = Instant::now();
                match inner.producer().await {
                    Ok(_) => {
                        tracing::debug!(group = %inner.group, took = ?started.elapsed(), "transactional producer ready")
                    }
                    Err(e) => tracing::warn!(group = %inner.group, error = %e,
                        "starting the transactional producer failed; retried at the first commit"),
                }
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Message::Commit(r)) => batch.push(r),
                Ok(Message::StartProducer) => {} // the transaction starts it anyway
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let result = inner.transact(&batch).await;
        metrics::histogram!("herald_log_transaction_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("herald_log_transaction_commits").record(batch.len() as f64);
        let outcome = if result.is_ok() { "committed" } else { "aborted" };
        metrics::counter!("herald_log_transactions_total", "outcome" => outcome).increment(1);
        if let Err(e) = &result {
            tracing::warn!(group = %inner.group, error = %e, commits = batch.len(), "kafka transaction aborted");
        }
        for r in batch {
            let _ = r.done.send(result.clone().map_err(LogError::Transaction));
        }
    }
}

fn offsets_list(batch: &[Request]) -> Result<TopicPartitionList, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for (a, position) in batch.iter().flat_map(|r| &r.offsets) {
        tpl.add_partition_offset(&a.topic, a.partition as i32, Offset::Offset(position.next_offset as i64))?;
        if let Some(mut e) = tpl.find_partition(&a.topic, a.partition as i32) {
            e.set_metadata(position.metadata());
        }
    }
    Ok(tpl)
}

impl Inner {
    /// The transactional producer, created (and `init_transactions`) on first use or after
    /// a fatal error.
    async fn producer(&self) -> Result<Arc<FutureProducer>, KafkaError> {
        if let Some(p) = self.producer.lock().expect("producer lock").clone() {
            return Ok(p);
        }
        let mut config = producer_config(&self.settings);
        config
            .set("transactional.id", &self.transactional_id)
            .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)
            .set("message.timeout.ms", TRANSACTION_TIMEOUT_MS);
        let producer: Arc<FutureProducer> = Arc::new(config.create()?);
        let p = producer.clone();
        tokio::task::spawn_blocking(move || p.init_transactions(Duration::from_secs(30)))
            .await
            .map_err(|_| KafkaError::Canceled)??;
        *self.producer.lock().expect("producer lock") = Some(producer.clone());
        Ok(producer)
    }

    async fn transact(&self, batch: &[Request]) -> Result<(), String> {
        let producer = self.producer().await.map_err(|e| format!("starting the transactional producer: {e}"))?;
        let metadata = self
            .consumer
            .get()
            .and_then(Weak::upgrade)
            .and_then(|c| c.group_metadata())
            .ok_or_else(|| "the consumer is closed".to_owned())?;
        if let Err(e) = producer.begin_transaction() {
            self.recover(&producer, &e, false).await;
            return Err(e.to_string());
        }
        let outcome = async {
            let mut deliveries = Vec::new();
            for r in batch.iter().flat_map(|r| &r.records) {
                let record = FutureRecord::to(&r.topic).partition(r.partition as i32).key(&r.key).payload(&r.value);
                deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
            }
            for d in deliveries {
                match d.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => return Err(e),
                    Err(_) => return Err(KafkaError::Canceled),
                }
            }
            let tpl = offsets_list(batch)?;
            let p = producer.clone();
            tokio::task::spawn_blocking(move || {
                p.send_offsets_to_transaction(&tpl, &metadata, Duration::from_secs(30))?;
                p.commit_transaction(Duration::from_secs(30))
            })
            .await
            .map_err(|_| KafkaError::Canceled)?
        }
        .await;
        match outcome {
            Ok(()) => Ok(()),
            Err(e) => {
                self.recover(&producer, &e, true).await;
                Err(e.to_string())
            }
        }
    }

    /// After a failed transaction: abort it, or rebuild the producer when it cannot go on.
    async fn recover(&self, producer: &Arc<FutureProducer>, e: &KafkaError, begun: bool) {
        let fatal =
            producer.client().fatal_error().is_some() || matches!(e, KafkaError::Transaction(t) if t.is_fatal());
        if !fatal && begun {
            let p = producer.clone();
            let aborted = tokio::task::spawn_blocking(move || p.abort_transaction(Duration::from_secs(30))).await;
            if matches!(aborted, Ok(Ok(()))) {
                return;
            }
        } else if !fatal {
            return;
        }
        let mut slot = self.producer.lock().expect("producer lock");
        if slot.as_ref().is_some_and(|p| Arc::ptr_eq(p, producer)) {
            *slot = None; // the next transaction starts a new producer, which fences this one
            metrics::counter!("herald_log_producer_rebuilds_total", "producer" => "transactional").increment(1);
            tracing::error!(group = %self.group, error = %e, "transactional producer unusable; rebuilding it");
        }
    }

    /// A commit with no records: the consumer's own synchronous offset commit.
    async fn plain_commit(&self, a: &Assignment, position: &Position) -> Result<(), LogError> {
        let consumer = self.consumer.get().and_then(Weak::upgrade).ok_or(LogError::Closed)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&a.topic, a.partition as i32, Offset::Offset(position.next_offset as i64))?;
        if let Some(mut e) = tpl.find_partition(&a.topic, a.partition as i32) {
            e.set_metadata(position.metadata());
        }
        // A fresh cluster creates `__consumer_offsets` on the first commit and answers
        // "coordinator not available" meanwhile: retry retriable errors for a while.
        let mut backoff = Duration::from_millis(100);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (c, t) = (consumer.clone(), tpl.clone());
            let result = tokio::task::spawn_blocking(move || c.commit(&t, CommitMode::Sync))
                .await
                .map_err(|_| LogError::Closed)?;
            match result {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline && is_retriable(&e) => {
                    tracing::debug!(error = %e, "offset commit retried");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

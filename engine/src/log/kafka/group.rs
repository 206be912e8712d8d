//! Kafka consumers: group membership with rebalance callbacks, one split queue per
//! partition, and the partition reader the consumer runtime drives.
//!
//! **Rebalances.** Callbacks run on the thread that polls the consumer's main queue (a
//! dedicated thread per membership, so a callback may block without stalling the async
//! runtime). On an assignment the callback reads the group's committed offsets *with their
//! metadata* (the finished sets), splits one queue per new partition **before**
//! `incremental_assign`, then hands the partitions to the runtime. Fetching starts only at
//! `incremental_assign`, and a split queue's forwarding is the application's (librdkafka
//! keeps it when the fetcher starts), so no record of an assigned partition can reach the
//! main queue: the assign/split race of the old static code cannot happen. The main queue
//! is still watched and any record there is logged and counted
//! (`herald_log_misrouted_records_total`). On a revocation the callback asks the runtime to
//! drain the partitions and waits (bounded) until they are committed and their consumers
//! handed back, then unassigns, and only then drops their queues (dropping a split queue
//! of a partition still assigned stalls it).
//!
//! **Prefetch.** With split queues librdkafka's `queued.max.messages.kbytes` applies per
//! partition: Herald sets it from `prefetch_kib` (4 MiB by default) and
//! `max.partition.fetch.bytes` to 1 MiB, so a node's prefetch is about
//! `assigned partitions × (prefetch + 1 MiB)`, plus one oversized record (≤ 32 MiB) per
//! partition while one is being fetched.

use super::txn::Committer;
use super::{is_retriable, KafkaSettings, MAX_MESSAGE_BYTES};
use crate::log::{Assignment, Change, LogError, PartitionConsumer, Position, Record, Revocation, Stored, Subscription};
use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub(super) type GroupConsumer = StreamConsumer<GroupContext>;

pub(super) struct GroupContext {
    group: String,
    me: OnceLock<Weak<GroupConsumer>>,
    /// Where assignment changes go (`None`: a static consumer, assigned by hand).
    changes: Option<mpsc::UnboundedSender<Change>>,
    committer: Arc<Committer>,
    drain_wait: Duration,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn rebalance(&self, base: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.on_assign(base, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.on_revoke(base, tpl),
            other => {
                tracing::error!(group = %self.group, error = ?other, "kafka rebalance error; releasing the partitions");
                self.on_revoke(base, tpl);
            }
        }
    }
}

impl GroupContext {
    fn on_assign(&self, base: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let wanted = assignments(tpl);
        let positions = blocking_positions(base, &wanted);
        let Some(consumer) = self.me.get().and_then(Weak::upgrade) else {
            let _ = base.incremental_assign(tpl);
            return;
        };
        let (assign, readers) = match split(&consumer, &wanted, positions, &self.committer) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(group = %self.group, error = %e, "cannot prepare assigned partitions");
                let _ = base.incremental_assign(tpl);
                return;
            }
        };
        if let Err(e) = base.incremental_assign(&assign) {
            tracing::error!(group = %self.group, error = %e, "incremental assign failed");
        }
        tracing::info!(group = %self.group, partitions = wanted.len(), "kafka assigned partitions");
        if let Some(tx) = &self.changes {
            let _ = tx.send(Change::Assigned(readers));
        }
    }

    fn on_revoke(&self, base: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let partitions = assignments(tpl);
        let lost = base.assignment_lost();
        let mut kept = Vec::new();
        if let Some(tx) = &self.changes {
            let (revocation, done) = Revocation::new(partitions.clone(), lost);
            if tx.send(Change::Revoked(revocation)).is_ok() {
                match done.recv_timeout(self.drain_wait) {
                    Ok(consumers) => kept = consumers,
                    Err(_) => tracing::warn!(group = %self.group, "revoked partitions did not drain in time"),
                }
            }
        }
        if let Err(e) = base.incremental_unassign(tpl) {
            tracing::warn!(group = %self.group, error = %e, "incremental unassign failed");
        }
        tracing::info!(group = %self.group, partitions = partitions.len(), lost, "kafka revoked partitions");
        drop(kept); // the queues go only now that the partitions are unassigned
    }
}

fn assignments(tpl: &TopicPartitionList) -> Vec<Assignment> {
    tpl.elements().iter().map(|e| Assignment { topic: e.topic().to_owned(), partition: e.partition() as u32 }).collect()
}

fn consumer_config(settings: &KafkaSettings, group: &str) -> ClientConfig {
    let session = settings.session_timeout.as_millis().max(1000);
    let mut c = super::client_config(settings);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A committed offset that retention deleted is an error, never a silent skip.
        .set("auto.offset.reset", "error")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", session.to_string())
        .set("heartbeat.interval.ms", (session / 3).to_string())
        .set("queued.max.messages.kbytes", settings.prefetch_kib.max(1).to_string())
        .set("queued.min.messages", "1000")
        .set("max.partition.fetch.bytes", "1048576")
        .set("fetch.max.bytes", MAX_MESSAGE_BYTES);
    super::apply(&mut c, &settings.options.consumer);
    c
}

fn create(
    settings: &KafkaSettings,
    group: &str,
    changes: Option<mpsc::UnboundedSender<Change>>,
) -> Result<(Arc<GroupConsumer>, Arc<Committer>), LogError> {
    let committer = Committer::start(settings.clone(), group);
    let context = GroupContext {
        group: group.to_owned(),
        me: OnceLock::new(),
        changes,
        committer: committer.clone(),
        drain_wait: settings.drain + Duration::from_secs(5),
    };
    let consumer: GroupConsumer = consumer_config(settings, group).create_with_context(context)?;
    let consumer = Arc::new(consumer);
    let _ = consumer.context().me.set(Arc::downgrade(&consumer));
    committer.bind(Arc::downgrade(&consumer));
    Ok((consumer, committer))
}

/// Joins `group` for `topics`.
pub(super) fn subscribe(
    settings: &KafkaSettings,
    group: &str,
    topics: &[String],
) -> Result<(Box<dyn Subscription>, Arc<Committer>), LogError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (consumer, committer) = create(settings, group, Some(tx))?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = main_loop(Arc::downgrade(&consumer), stop.clone(), group.to_owned());
    Ok((Box::new(KafkaSubscription { consumer: Some(consumer), changes: rx, stop, thread: Some(thread) }), committer))
}

/// Fixed partitions with no group membership (the static mode): split, then assigned.
pub(super) async fn open_static(
    settings: &KafkaSettings,
    group: &str,
    wanted: &[Assignment],
) -> Result<(Vec<Box<dyn PartitionConsumer>>, Arc<Committer>), LogError> {
    let (consumer, committer) = create(settings, group, None)?;
    let positions = {
        let (c, w) = (consumer.clone(), wanted.to_vec());
        tokio::task::spawn_blocking(move || positions(&*c, &w, Duration::from_secs(120)))
            .await
            .map_err(|_| LogError::Closed)??
    };
    let (assign, readers) = split(&consumer, wanted, Some(positions), &committer)?;
    consumer.assign(&assign)?;
    // Nothing is left on the main queue; polling it serves librdkafka's events. The thread
    // ends when the last reader is gone.
    let _ = main_loop(Arc::downgrade(&consumer), Arc::new(AtomicBool::new(false)), group.to_owned());
    Ok((readers, committer))
}

/// Splits a queue for every partition and builds the list to assign (each at its
/// committed offset, or the beginning when none was committed).
fn split(
    consumer: &Arc<GroupConsumer>,
    wanted: &[Assignment],
    positions: Option<Vec<Option<Position>>>,
    committer: &Arc<Committer>,
) -> Result<(TopicPartitionList, Vec<Box<dyn PartitionConsumer>>), LogError> {
    let mut assign = TopicPartitionList::new();
    let mut readers: Vec<Box<dyn PartitionConsumer>> = Vec::new();
    for (i, a) in wanted.iter().enumerate() {
        let known = positions.as_ref().map(|p| p[i].clone());
        let (offset, start) = match known {
            Some(Some(p)) => (Offset::Offset(p.next_offset as i64), p),
            Some(None) => (Offset::Beginning, Position::at(0)),
            // The committed offsets could not be read: let librdkafka fetch them (the
            // finished sets are then unknown: those records are processed again).
            None => (Offset::Stored, Position::at(0)),
        };
        assign.add_partition_offset(&a.topic, a.partition as i32, offset)?;
        let start_offset = start.next_offset;
        let queue = consumer.split_partition_queue(&a.topic, a.partition as i32).ok_or_else(|| LogError::Topic {
            topic: a.topic.clone(),
            problem: format!("cannot split partition {}", a.partition),
        })?;
        readers.push(Box::new(PartitionReader {
            queue,
            assignment: a.clone(),
            start,
            buffered: VecDeque::new(),
            error: None,
            committer: committer.clone(),
            consumer: Arc::downgrade(consumer),
            next: start_offset,
            idle: false,
        }));
    }
    Ok((assign, readers))
}

/// The committed position of each partition (`None` where nothing was committed), from
/// the group coordinator, waiting out a coordinator that is not ready within `patience`.
fn positions<C: Consumer<GroupContext>>(
    consumer: &C,
    wanted: &[Assignment],
    patience: Duration,
) -> Result<Vec<Option<Position>>, LogError> {
    let mut tpl = TopicPartitionList::new();
    for a in wanted {
        tpl.add_partition(&a.topic, a.partition as i32);
    }
    let deadline = Instant::now() + patience;
    let mut backoff = Duration::from_millis(200);
    let committed = loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline && is_retriable(&e) => {
                tracing::info!(error = %e, "waiting for the Kafka group coordinator");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    };
    Ok(wanted
        .iter()
        .map(|a| {
            let e = committed.find_partition(&a.topic, a.partition as i32)?;
            match e.offset() {
                Offset::Offset(n) if n >= 0 => Some(Position::parse(n as u64, e.metadata())),
                _ => None,
            }
        })
        .collect())
}

fn blocking_positions(base: &BaseConsumer<GroupContext>, wanted: &[Assignment]) -> Option<Vec<Option<Position>>> {
    match positions(base, wanted, Duration::from_secs(30)) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read committed offsets; librdkafka will");
            None
        }
    }
}

/// Polls the main queue (rebalance callbacks, errors) on a thread of its own until `stop`
/// or until the consumer is gone.
fn main_loop(consumer: Weak<GroupConsumer>, stop: Arc<AtomicBool>, group: String) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("herald-kafka-group".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_time().build() else { return };
            rt.block_on(async move {
                while !stop.load(Ordering::SeqCst) {
                    let Some(c) = consumer.upgrade() else { return };
                    match tokio::time::timeout(Duration::from_millis(200), c.recv()).await {
                        Ok(Ok(m)) => {
                            metrics::counter!("herald_log_misrouted_records_total").increment(1);
                            tracing::error!(%group, topic = m.topic(), partition = m.partition(), offset = m.offset(),
                                "record on the consumer's main queue (not processed here)");
                        }
                        Ok(Err(e)) => tracing::warn!(%group, error = %e, "kafka consumer"),
                        Err(_) => {}
                    }
                }
            })
        })
        .expect("spawning the kafka group thread")
}

struct KafkaSubscription {
    consumer: Option<Arc<GroupConsumer>>,
    changes: mpsc::UnboundedReceiver<Change>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> Option<Change> {
        self.changes.recv().await
    }

    async fn close(mut self: Box<Self>) {
        // Answer any revocation still queued (the runtime has drained everything), stop
        // taking changes, then leave the group so the other members take over at once.
        self.changes.close();
        while let Ok(change) = self.changes.try_recv() {
            if let Change::Revoked(r) = change {
                r.done(Vec::new());
            }
        }
        let (consumer, stop, thread) = (self.consumer.take(), self.stop.clone(), self.thread.take());
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(c) = &consumer {
                c.unsubscribe();
            }
            // Let the main loop serve the revocation, then stop it and close the consumer.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline
                && consumer.as_ref().is_some_and(|c| c.assignment().map(|a| a.count() > 0).unwrap_or(false))
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            stop.store(true, Ordering::SeqCst);
            if let Some(t) = thread {
                let _ = t.join();
            }
            drop(consumer); // closes: leaves the group
        })
        .await;
    }
}

/// Reads one split partition queue.
struct PartitionReader {
    queue: StreamPartitionQueue<GroupContext>,
    assignment: Assignment,
    start: Position,
    /// Received and not yet returned (so `poll` is cancel-safe).
    buffered: VecDeque<Stored>,
    /// An error that followed buffered records; returned once they are.
    error: Option<LogError>,
    committer: Arc<Committer>,
    /// The group's consumer, for the high watermark (`unread`); weak, so that readers do
    /// not keep a consumer that left its group alive.
    consumer: std::sync::Weak<GroupConsumer>,
    /// One past the last record returned by `poll`.
    next: u64,
    /// The last `poll` waited and found nothing: caught up, but for transaction markers.
    idle: bool,
}

pub(super) fn to_stored(m: &rdkafka::message::BorrowedMessage<'_>) -> Stored {
    Stored {
        offset: m.offset() as u64,
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
        value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
    }
}

fn map_error(assignment: &Assignment, e: KafkaError) -> LogError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange) => {
            metrics::counter!("herald_log_offset_out_of_range_total", "topic" => assignment.topic.clone()).increment(1);
            LogError::OutOfRange { topic: assignment.topic.clone(), partition: assignment.partition }
        }
        _ => e.into(),
    }
}

fn take_one(
    buffered: &mut VecDeque<Stored>,
    error: &mut Option<LogError>,
    assignment: &Assignment,
    m: Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>,
) {
    match m {
        Ok(m) => buffered.push_back(to_stored(&m)),
        Err(e) => *error = Some(map_error(assignment, e)),
    }
}

/// What `poll` returns from what was buffered: records first, then a pending error.
pub(super) fn drain_buffered(
    buffered: &mut VecDeque<Stored>,
    error: &mut Option<LogError>,
    max: usize,
) -> Result<Vec<Stored>, LogError> {
    if buffered.is_empty() {
        return match error.take() {
            Some(e) => Err(e),
            None => Ok(Vec::new()),
        };
    }
    let n = buffered.len().min(max.max(1));
    Ok(buffered.drain(..n).collect())
}

#[async_trait]
impl PartitionConsumer for PartitionReader {
    fn assignment(&self) -> &Assignment {
        &self.assignment
    }

    fn start(&self) -> &Position {
        &self.start
    }

    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Stored>, LogError> {
        let PartitionReader { queue, assignment, buffered, error, .. } = self;
        if buffered.is_empty() && error.is_none() {
            match tokio::time::timeout(wait, queue.recv()).await {
                Err(_) => {
                    self.idle = true;
                    return Ok(Vec::new());
                }
                Ok(m) => take_one(buffered, error, assignment, m),
            }
        }
        self.idle = false;
        // Take what is already there, without waiting.
        while error.is_none() && buffered.len() < max {
            match queue.recv().now_or_never() {
                Some(m) => take_one(buffered, error, assignment, m),
                None => break,
            }
        }
        let records = drain_buffered(&mut self.buffered, &mut self.error, max)?;
        if let Some(last) = records.last() {
            self.next = last.offset + 1;
        }
        Ok(records)
    }

    async fn unread(&mut self) -> Result<u64, LogError> {
        let consumer = self.consumer.upgrade().ok_or(LogError::Closed)?;
        let (topic, partition) = (self.assignment.topic.clone(), self.assignment.partition as i32);
        let (low, high) =
            tokio::task::spawn_blocking(move || consumer.fetch_watermarks(&topic, partition, Duration::from_secs(5)))
                .await
                .map_err(|_| LogError::Closed)??;
        // Before the first record, `next` may be below the log start (a group that begins at
        // the beginning, after retention removed the first records).
        Ok(unread_below(high, self.next.max(low.max(0) as u64), self.idle, self.buffered.len()))
    }

    async fn commit(&mut self, records: Vec<Record>, position: Position) -> Result<(), LogError> {
        for r in &records {
            crate::log::check_record(r)?;
        }
        self.committer.commit(&self.assignment, records, position).await
    }
}

/// Records between `next` (one past the last returned) and the high watermark `high`. A
/// transactional write leaves a marker after its records, which takes an offset no consumer
/// sees: a reader that found nothing on its last poll is caught up when only one offset is
/// left.
fn unread_below(high: i64, next: u64, idle: bool, buffered: usize) -> u64 {
    let gap = (high.max(0) as u64).saturating_sub(next);
    if idle && buffered == 0 && gap <= 1 {
        0
    } else {
        gap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailing_transaction_marker_is_not_lag() {
        assert_eq!(unread_below(11, 10, true, 0), 0, "caught up but for the marker");
        assert_eq!(unread_below(11, 10, false, 0), 1, "a record may be on its way");
        assert_eq!(unread_below(20, 10, true, 0), 10);
        assert_eq!(unread_below(-1, 0, true, 0), 0, "an empty partition");
    }

    fn stored(offset: u64) -> Stored {
        Stored { offset, key: "k".into(), value: vec![], timestamp_ms: 0 }
    }

    #[test]
    fn records_received_before_an_error_are_returned_first() {
        let mut buffered: VecDeque<Stored> = [stored(4), stored(5), stored(6)].into_iter().collect();
        let mut error = Some(LogError::Closed);
        let first = drain_buffered(&mut buffered, &mut error, 2).unwrap();
        assert_eq!(first.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![4, 5]);
        let second = drain_buffered(&mut buffered, &mut error, 10).unwrap();
        assert_eq!(second.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![6]);
        assert!(matches!(drain_buffered(&mut buffered, &mut error, 10), Err(LogError::Closed)));
        assert!(drain_buffered(&mut buffered, &mut error, 10).unwrap().is_empty());
    }
}

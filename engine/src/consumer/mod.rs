//! The one consumer runtime: every component that reads the log (the delivery worker, the
//! projector, the domain projector) is a [`ChunkHandler`] run by [`run`].
//!
//! [`run`] joins a consumer group ([`crate::log::EventLog::subscribe`]) and runs one task
//! per partition it is assigned (`partition.rs`). A task keeps a window of records in
//! flight, hands them to the handler in chunks (several at once for the worker, one at a
//! time for the projectors), and as chunks finish it commits their output records and the
//! partition's new [`Position`](crate::log::Position) in one atomic step: at once on the
//! embedded log, at most every commit interval on Kafka, where each such step is a
//! transaction (`docs/adr/0022-commit-interval.md`). The
//! position is the lowest unfinished offset plus the finished offsets above it, so a stop
//! or a crash redoes only records that were truly unfinished.
//!
//! When the group takes partitions away (another node joined) or the process stops, only
//! those partitions' tasks stop: they start nothing new, wait up to `drain` for the chunks
//! in flight, commit what finished, then hand the partition back. A lost assignment (this
//! node was thrown out of the group) stops at once and commits nothing: the new owner redoes
//! the unfinished records.

mod partition;

use crate::log::{Assignment, Change, EventLog, LogError, PartitionConsumer, Record, Stored};
use async_trait::async_trait;
use herald_schemas::Timestamp;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a consumer does with the records of one partition.
#[async_trait]
pub trait ChunkHandler: Send + Sync + 'static {
    /// A record made ready for work.
    type Item: Send + 'static;

    /// Decodes a record; `None` skips it (a poison record, logged and counted by the
    /// handler), which then counts as finished.
    fn prepare(&self, record: &Stored) -> Option<Self::Item>;

    /// When `item` may start (retry tiers hold records until they are due). Items start in
    /// offset order: a later item waits for an earlier one that is not yet due.
    fn due(&self, _item: &Self::Item) -> Timestamp {
        Timestamp(0)
    }

    /// Called when this member is given `assignment`, before any of its records is
    /// prepared: per-partition state of an earlier ownership is stale from here on.
    fn assigned(&self, _assignment: &Assignment) {}

    /// Called for each chunk in offset order, before it is handed to [`Self::handle`]
    /// (chunks of one partition may then run at once, when `concurrency` > 1): the place to
    /// queue work that must follow an earlier chunk's.
    fn starting(&self, _assignment: &Assignment, _items: &mut [(u64, Self::Item)]) {}

    /// Processes a chunk of items (with their offsets) and returns the records to append
    /// with the commit that marks them finished. A chunk that cannot finish (its store is
    /// down) keeps retrying: the runner aborts it when the drain time is up, and it is then
    /// processed again by whoever owns the partition next.
    async fn handle(&self, assignment: &Assignment, items: Vec<(u64, Self::Item)>) -> Vec<Record>;
}

/// How a partition task reads and works.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Records received and not yet finished, at most (the prefetch of the window).
    pub window: usize,
    /// Chunks in flight at once: 1 keeps the partition's order.
    pub concurrency: usize,
    /// Records per chunk, at most.
    pub chunk: usize,
    /// How long a stopping task waits for its chunks in flight before aborting them.
    pub drain: Duration,
    /// Whether chunks return records to append with the commit (the log gets ready for that
    /// when the member subscribes: [`EventLog::will_append`]).
    pub appends: bool,
}

impl Settings {
    /// A projector's settings: one chunk of up to `chunk` records at a time per partition,
    /// so its store sees the partition's events in log order.
    pub fn in_order(chunk: usize) -> Self {
        Settings { window: chunk, concurrency: 1, chunk, drain: Duration::from_secs(10), appends: false }
    }
}

/// Runs `write` until it succeeds, waiting 100 ms after the first failure and twice as long
/// after each next one, up to 10 s: a projector whose store is down stalls its partition
/// rather than skip records (the runner aborts the chunk when a stop's drain time is up, and
/// the next owner applies it again). `what` names the write in the log.
pub async fn until_ok<T, E, F, Fut>(what: &str, mut write: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match write().await {
            Ok(done) => return done,
            Err(e) => {
                tracing::error!(error = %e, "{what} failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// The partitions this member currently owns, per topic; shared with whoever needs to know
/// (sender-domain maintenance runs for the partitions the node owns).
#[derive(Clone, Default)]
pub struct Owned(Arc<RwLock<BTreeSet<Assignment>>>);

impl Owned {
    pub fn contains(&self, topic: &str, partition: u32) -> bool {
        self.0.read().map(|o| o.contains(&Assignment { topic: topic.to_owned(), partition })).unwrap_or(false)
    }

    pub fn snapshot(&self) -> BTreeSet<Assignment> {
        self.0.read().map(|o| o.clone()).unwrap_or_default()
    }

    fn set(&self, a: &Assignment, owned: bool) {
        if let Ok(mut o) = self.0.write() {
            if owned {
                o.insert(a.clone());
            } else {
                o.remove(a);
            }
        }
    }
}

/// How a node gets its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Join the consumer group: partitions move between nodes as they join and leave.
    Group,
    /// Work exactly these partitions of every topic, with no group membership (the explicit
    /// static mode, `[cluster] node_index`/`node_count`).
    Static(Vec<u32>),
}

/// Consumes `topics` for `group` until `shutdown`, running `handler` on every partition
/// this node owns. Returns after every partition was drained and the membership closed.
#[allow(clippy::too_many_arguments)]
pub async fn run<H: ChunkHandler>(
    log: Arc<dyn EventLog>,
    group: &str,
    topics: &[String],
    membership: &Membership,
    handler: Arc<H>,
    settings: Settings,
    owned: Owned,
    shutdown: CancellationToken,
) -> Result<(), LogError> {
    let subscription: Box<dyn crate::log::Subscription> = match membership {
        Membership::Group => log.subscribe(group, topics).await?,
        Membership::Static(partitions) => {
            let assignments: Vec<Assignment> = topics
                .iter()
                .flat_map(|t| partitions.iter().map(move |&partition| Assignment { topic: t.clone(), partition }))
                .collect();
            Box::new(crate::log::FixedSubscription::new(log.consume(group, &assignments).await?))
        }
    };
    if settings.appends {
        log.will_append(group).await;
    }
    run_subscription(subscription, group, handler, settings, log.commit_interval(), owned, shutdown).await;
    Ok(())
}

struct Task {
    stop: CancellationToken,
    lost: Arc<std::sync::atomic::AtomicBool>,
    handle: tokio::task::JoinHandle<Box<dyn PartitionConsumer>>,
}

async fn run_subscription<H: ChunkHandler>(
    mut subscription: Box<dyn crate::log::Subscription>,
    group: &str,
    handler: Arc<H>,
    settings: Settings,
    commit_interval: Duration,
    owned: Owned,
    shutdown: CancellationToken,
) {
    let mut tasks: HashMap<Assignment, Task> = HashMap::new();
    crate::metrics::init_group(group);
    loop {
        let change = tokio::select! {
            _ = shutdown.cancelled() => break,
            c = subscription.next() => c,
        };
        match change {
            None => break,
            Some(Change::Assigned(consumers)) => {
                for consumer in consumers {
                    let a = consumer.assignment().clone();
                    tracing::info!(group, topic = %a.topic, partition = a.partition, "partition assigned");
                    metrics::counter!("herald_consumer_assignments_total", "group" => group.to_owned()).increment(1);
                    owned.set(&a, true);
                    handler.assigned(&a);
                    let stop = CancellationToken::new();
                    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let task = partition::PartitionTask::new(
                        consumer,
                        handler.clone(),
                        settings.clone(),
                        commit_interval,
                        group.to_owned(),
                        stop.clone(),
                        lost.clone(),
                    );
                    if let Some(old) = tasks.insert(a, Task { stop, lost, handle: tokio::spawn(task.run()) }) {
                        old.stop.cancel(); // cannot happen: a partition is assigned once
                    }
                }
                metrics::gauge!("herald_consumer_partitions", "group" => group.to_owned()).set(tasks.len() as f64);
            }
            Some(Change::Revoked(revocation)) => {
                metrics::gauge!("herald_consumer_partitions", "group" => group.to_owned())
                    .set((tasks.len().saturating_sub(revocation.partitions.len())) as f64);
                let lost = revocation.lost;
                tracing::info!(group, partitions = revocation.partitions.len(), lost, "partitions revoked; draining");
                metrics::counter!("herald_consumer_revocations_total", "group" => group.to_owned(), "lost" => lost.to_string())
                    .increment(1);
                let stopping: Vec<Task> = revocation
                    .partitions
                    .iter()
                    .filter_map(|a| {
                        owned.set(a, false);
                        tasks.remove(a)
                    })
                    .collect();
                let consumers = drain(stopping, lost).await;
                revocation.done(consumers);
            }
        }
    }
    let all: Vec<Task> = tasks
        .drain()
        .map(|(a, t)| {
            owned.set(&a, false);
            t
        })
        .collect();
    let consumers = drain(all, false).await;
    drop(consumers);
    metrics::gauge!("herald_consumer_partitions", "group" => group.to_owned()).set(0.0);
    subscription.close().await;
}

/// Stops tasks and waits for them (each bounds its own drain); returns their consumers.
async fn drain(tasks: Vec<Task>, lost: bool) -> Vec<Box<dyn PartitionConsumer>> {
    for t in &tasks {
        t.lost.store(lost, std::sync::atomic::Ordering::SeqCst);
        t.stop.cancel();
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.handle.await {
            Ok(consumer) => out.push(consumer),
            Err(e) => tracing::error!(error = %e, "partition task failed"),
        }
    }
    out
}

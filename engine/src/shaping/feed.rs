//! The shaping topic's reader and writer, one per node.
//!
//! Every node reads every partition of `<prefix>.shaping` (a fixed assignment, not a
//! consumer group: each node needs all of it) and folds it into its [`Shaper`]. It
//! starts at the group `<prefix>-shaping-state`'s committed offsets, which every node
//! moves to the oldest record still needed (the last [`KEEP`]); first uses and long
//! throttles are appended again (unchanged) about once a day so that nothing needed is
//! older than that. The shaper is *ready* once every partition was read to its end.
//!
//! It appends what the shaper records (throttles, resumes, first uses) in order, and
//! every `report_interval` the shaper's usage report.

use super::Shaper;
use crate::log::{Assignment, EventLog, LogError, PartitionConsumer, Position, Record, Topics};
use crate::routing::Router;
use herald_schemas::{decode, encode, Event, ShapingEvent, Timestamp};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How far back a starting node reads: the warm-up day in progress (24 h) plus margin.
pub const KEEP: Duration = Duration::from_secs(26 * 3600);
/// First uses and throttles last recorded longer ago than this are appended again.
const REFRESH_AFTER: Duration = Duration::from_secs(20 * 3600);
/// How often the committed floor moves and old state is pruned.
const HOUSEKEEPING: Duration = Duration::from_secs(60);
/// A starting node waits at most this long for the topic before it sends anyway.
const READY_PATIENCE: Duration = Duration::from_secs(30);

/// The role in the group name of the floor commits.
pub const ROLE: &str = "shaping-state";

/// Reads and writes the shaping topic until `shutdown`.
pub async fn run(
    shaper: Arc<Shaper>,
    log: Arc<dyn EventLog>,
    topics: Topics,
    shutdown: CancellationToken,
) -> Result<(), LogError> {
    let topic = topics.shaping();
    let assignments: Vec<Assignment> =
        (0..log.partitions()).map(|partition| Assignment { topic: topic.clone(), partition }).collect();
    let consumers = log.consume(&topics.group(ROLE), &assignments).await?;
    let (caught_up, mut caught_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let mut readers = tokio::task::JoinSet::new();
    for consumer in consumers {
        readers.spawn(read(consumer, shaper.clone(), caught_up.clone(), shutdown.clone()));
    }
    drop(caught_up);
    {
        let (shaper, partitions) = (shaper.clone(), log.partitions() as usize);
        tokio::spawn(async move {
            let mut done = std::collections::HashSet::new();
            let patience = tokio::time::sleep(READY_PATIENCE);
            tokio::pin!(patience);
            while done.len() < partitions {
                tokio::select! {
                    p = caught_rx.recv() => match p { Some(p) => { done.insert(p); } None => break },
                    _ = &mut patience => {
                        tracing::warn!(read = done.len(), partitions, "the shaping topic was not read to its end in time; sending anyway");
                        break;
                    }
                }
            }
            shaper.set_ready();
        });
    }
    let writer = write(shaper.clone(), log.clone(), topic, shutdown.clone());
    let refresh = refresh(shaper.clone(), shutdown.clone());
    tokio::join!(writer, refresh);
    while readers.join_next().await.is_some() {}
    Ok(())
}

/// One partition: fold every record; commit the floor now and then.
async fn read(
    mut consumer: Box<dyn PartitionConsumer>,
    shaper: Arc<Shaper>,
    caught_up: tokio::sync::mpsc::UnboundedSender<u32>,
    shutdown: CancellationToken,
) {
    let partition = consumer.assignment().partition;
    let mut marks: VecDeque<(u64, i64)> = VecDeque::new();
    let mut floor = consumer.start().next_offset;
    let mut announced = false;
    let mut housekept = std::time::Instant::now();
    loop {
        // A poll is never dropped half-way (the embedded log reads on a blocking thread
        // that holds the database): shutdown is checked between polls, which wait 300 ms
        // at most.
        if shutdown.is_cancelled() {
            return;
        }
        if housekept.elapsed() >= HOUSEKEEPING {
            housekept = std::time::Instant::now();
            let cutoff = Timestamp::now().0 - KEEP.as_millis() as i64;
            while marks.front().is_some_and(|(_, ts)| *ts < cutoff) {
                marks.pop_front();
            }
            let next = marks.front().map(|(o, _)| *o);
            if let Some(next) = next.filter(|n| *n > floor) {
                match consumer.commit(vec![], Position::at(next)).await {
                    Ok(()) => floor = next,
                    Err(e) => tracing::debug!(error = %e, partition, "shaping floor commit failed"),
                }
            }
            shaper.prune(Timestamp::now());
        }
        let polled = consumer.poll(512, Duration::from_millis(300)).await;
        match polled {
            Ok(records) if records.is_empty() => {
                if !announced {
                    announced = true;
                    let _ = caught_up.send(partition);
                }
            }
            Ok(records) => {
                for r in records {
                    if marks.back().is_none_or(|(_, ts)| r.timestamp_ms - ts >= 60_000) {
                        marks.push_back((r.offset, r.timestamp_ms));
                    }
                    match decode(&r.value) {
                        Ok(Event::Shaping(e)) => shaper.apply(&e, Timestamp(r.timestamp_ms)),
                        Ok(other) => {
                            tracing::warn!(event = other.event_type(), "unexpected event on the shaping topic")
                        }
                        Err(e) => {
                            metrics::counter!("herald_shaping_poison_records_total").increment(1);
                            tracing::error!(error = %e, partition, offset = r.offset, "undecodable shaping record; skipped");
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, partition, "reading the shaping topic failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Appends what the shaper records, in order, and its usage reports.
async fn write(shaper: Arc<Shaper>, log: Arc<dyn EventLog>, topic: String, shutdown: CancellationToken) {
    let Some(mut outbox) = shaper.take_outbox() else { return };
    let router = Router::new(log.partitions(), Default::default());
    let mut tick = tokio::time::interval(shaper.settings().report_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let record = |e: &ShapingEvent| Record {
        topic: topic.clone(),
        partition: router.key_partition(e.key()),
        key: e.key().to_owned(),
        value: encode(&Event::Shaping(e.clone())),
    };
    loop {
        let batch: Vec<ShapingEvent> = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = outbox.recv() => match e {
                Some(e) => {
                    let mut batch = vec![e];
                    while let Ok(more) = outbox.try_recv() {
                        batch.push(more);
                    }
                    batch
                }
                None => return,
            },
            _ = tick.tick() => shaper.report().map(ShapingEvent::UsageReported).into_iter().collect(),
        };
        if batch.is_empty() {
            continue;
        }
        let records: Vec<Record> = batch.iter().map(record).collect();
        let mut backoff = Duration::from_millis(100);
        loop {
            match log.append(records.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, events = records.len(), "appending shaping events failed; retrying");
                    metrics::counter!("herald_shaping_append_failures_total").increment(1);
                    let reports_only = batch.iter().all(|e| matches!(e, ShapingEvent::UsageReported(_)));
                    if reports_only {
                        break; // the next report carries on; old reports are worth little
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Appends stale first uses and long throttles again, about once a day.
async fn refresh(shaper: Arc<Shaper>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Timestamp::now();
        let before = Timestamp(now.0 - REFRESH_AFTER.as_millis() as i64);
        let stale = shaper.state().stale(before, now);
        for e in stale {
            shaper.requeue(e);
        }
    }
}

impl Shaper {
    /// Queues an event for the log without applying it again.
    fn requeue(&self, event: ShapingEvent) {
        let _ = self.outbox_sender().send(event);
    }
}

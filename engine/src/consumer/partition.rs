//! One partition's task: a window of records in flight, chunks started as they fall due,
//! and a commit (output records + position, atomically) whenever chunks finish.
//!
//! Invariants: an offset is either unfinished (received, not yet processed: waiting or in
//! flight) or finished; the committed position is the lowest unfinished offset plus the
//! finished offsets above it, so it never claims an unfinished record and never forgets a
//! finished one whose output was appended (both are in the same atomic commit).

use super::{ChunkHandler, Settings};
use crate::log::{PartitionConsumer, Position, Record};
use herald_schemas::Timestamp;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a partition task samples its lag and its oldest unfinished record's age.
const LAG_INTERVAL: Duration = Duration::from_secs(10);

pub(super) struct PartitionTask<H: ChunkHandler> {
    consumer: Box<dyn PartitionConsumer>,
    handler: Arc<H>,
    settings: Settings,
    group: String,
    stop: CancellationToken,
    lost: Arc<AtomicBool>,
    /// Received, not started, in offset order.
    waiting: VecDeque<(u64, H::Item)>,
    in_flight: JoinSet<(Vec<u64>, Vec<Record>)>,
    /// Unfinished offsets, each with when its record became due (its append time, or its
    /// retry time when later), in milliseconds: the age metric's origin.
    unfinished: BTreeMap<u64, i64>,
    /// Finished offsets above the committed `next_offset`.
    finished: BTreeSet<u64>,
    /// Output of finished chunks, not yet committed.
    output: Vec<Record>,
    /// One past the last offset received.
    end: u64,
    committed: Position,
    /// Offsets the previous owner had finished above its committed offset.
    done_before: Position,
    /// Least time between two commits while the partition works
    /// ([`crate::log::EventLog::commit_interval`]).
    commit_interval: Duration,
    /// Records finished since the last commit: a window's worth makes a commit due before
    /// the commit interval is up, so a crash redoes at most a window in flight and a
    /// window finished.
    uncommitted: usize,
}

impl<H: ChunkHandler> PartitionTask<H> {
    pub(super) fn new(
        consumer: Box<dyn PartitionConsumer>,
        handler: Arc<H>,
        settings: Settings,
        commit_interval: Duration,
        group: String,
        stop: CancellationToken,
        lost: Arc<AtomicBool>,
    ) -> Self {
        let start = consumer.start().clone();
        PartitionTask {
            consumer,
            handler,
            settings,
            commit_interval,
            group,
            stop,
            lost,
            waiting: VecDeque::new(),
            in_flight: JoinSet::new(),
            unfinished: BTreeMap::new(),
            finished: BTreeSet::new(),
            output: Vec::new(),
            end: start.next_offset,
            committed: start.clone(),
            done_before: start,
            uncommitted: 0,
        }
    }

    fn position(&self) -> Position {
        Position::from_parts(self.unfinished.first_key_value().map(|(o, _)| *o), self.end, &self.finished)
    }

    fn dirty(&self) -> bool {
        !self.output.is_empty() || self.position() != self.committed
    }

    /// Runs until stopped; returns the consumer (the backend releases the partition after).
    /// Its lag gauges read 0 once it stops: the partition's next owner reports them.
    pub(super) async fn run(self) -> Box<dyn PartitionConsumer> {
        let labels = self.labels();
        let consumer = self.work().await;
        metrics::gauge!("herald_consumer_lag_records", labels.to_vec()).set(0.0);
        metrics::gauge!("herald_consumer_oldest_unfinished_age_seconds", labels.to_vec()).set(0.0);
        consumer
    }

    fn labels(&self) -> [metrics::Label; 3] {
        let a = self.consumer.assignment();
        [
            metrics::Label::new("group", self.group.clone()),
            metrics::Label::new("topic", a.topic.clone()),
            metrics::Label::new("partition", a.partition.to_string()),
        ]
    }

    /// Samples the partition's lag and the age of its oldest unfinished record.
    async fn report_lag(&mut self) {
        let unread = match self.consumer.unread().await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, group = %self.group, "lag not sampled");
                return;
            }
        };
        let labels = self.labels();
        let lag = unread + self.unfinished.len() as u64;
        metrics::gauge!("herald_consumer_lag_records", labels.to_vec()).set(lag as f64);
        let now = Timestamp::now().millis();
        let age = self.unfinished.values().min().map_or(0, |since| now.saturating_sub(*since).max(0));
        metrics::gauge!("herald_consumer_oldest_unfinished_age_seconds", labels.to_vec()).set(age as f64 / 1000.0);
    }

    async fn work(mut self) -> Box<dyn PartitionConsumer> {
        // Sampled between turns rather than as a branch of the `biased` select below, which a
        // busy partition (records always ready) would never reach; an idle poll returns
        // within a second, so a sample is never much later than due.
        let mut sampled: Option<Instant> = None;
        let mut deadline: Option<Instant> = None;
        let mut poll_backoff = Duration::from_millis(100);
        let mut commit_backoff = Duration::from_millis(100);
        let interval = self.commit_interval;
        let mut last_commit = Instant::now();
        loop {
            if self.lost.load(Ordering::SeqCst) {
                self.in_flight.abort_all();
                return self.consumer; // another member owns it now: commit nothing
            }
            if deadline.is_none() {
                self.start_due();
                if sampled.is_none_or(|t| t.elapsed() >= LAG_INTERVAL) {
                    self.report_lag().await;
                    sampled = Some(Instant::now());
                }
            }
            // While the partition works, commits come at most every `interval`, or once a
            // window's worth of records finished; a stop or a handover (a deadline) commits
            // at once.
            let dirty = self.dirty();
            let commit_due =
                deadline.is_some() || last_commit.elapsed() >= interval || self.uncommitted >= self.settings.window;
            if dirty && commit_due {
                match self.commit().await {
                    Ok(()) => {
                        commit_backoff = Duration::from_millis(100);
                        last_commit = Instant::now();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, group = %self.group, topic = %self.consumer.assignment().topic,
                            partition = self.consumer.assignment().partition, "commit failed; retrying");
                        metrics::counter!("herald_consumer_commit_failures_total", "group" => self.group.clone())
                            .increment(1);
                        let until = deadline.unwrap_or_else(|| Instant::now() + commit_backoff);
                        tokio::select! {
                            _ = tokio::time::sleep_until(until.min(Instant::now() + commit_backoff)) => {}
                            _ = self.stop.cancelled(), if deadline.is_none() => {}
                        }
                        commit_backoff = (commit_backoff * 2).min(Duration::from_secs(5));
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            self.in_flight.abort_all();
                            return self.consumer;
                        }
                        continue;
                    }
                }
            }
            if deadline.is_some() && self.in_flight.is_empty() {
                return self.consumer;
            }
            let room = self.settings.window.saturating_sub(self.unfinished.len());
            let head_wait = self.head_wait();
            // Dirty and not due yet (a due commit was made above, or the turn retried it).
            let commit_at = (dirty && !commit_due).then(|| last_commit + interval);
            tokio::select! {
                biased;
                _ = self.stop.cancelled(), if deadline.is_none() => {
                    // Nothing new starts; waiting records stay unfinished for the next owner.
                    self.waiting.clear();
                    let drain = if self.lost.load(Ordering::SeqCst) { Duration::ZERO } else { self.settings.drain };
                    deadline = Some(Instant::now() + drain);
                }
                _ = sleep_until_opt(deadline), if deadline.is_some() => {
                    let n = self.in_flight.len();
                    if n > 0 {
                        tracing::warn!(group = %self.group, chunks = n, "drain time is up; aborting chunks in flight (redone by the next owner)");
                        metrics::counter!("herald_consumer_aborted_chunks_total", "group" => self.group.clone()).increment(n as u64);
                    }
                    self.in_flight.abort_all();
                    while self.in_flight.join_next().await.is_some() {}
                    // Whatever finished meanwhile is committed by the next turn; nothing is in flight.
                }
                _ = sleep_until_opt(commit_at), if commit_at.is_some() => {} // a commit is due
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    self.finish(done);
                    while let Some(done) = self.in_flight.try_join_next() {
                        self.finish(done);
                    }
                }
                polled = self.consumer.poll(room, Duration::from_secs(1)), if deadline.is_none() && room > 0 => {
                    match polled {
                        Ok(records) => {
                            poll_backoff = Duration::from_millis(100);
                            self.receive(records);
                        }
                        Err(e) => {
                            let a = self.consumer.assignment();
                            tracing::warn!(error = %e, group = %self.group, topic = %a.topic, partition = a.partition, "poll failed");
                            metrics::counter!("herald_consumer_poll_errors_total", "group" => self.group.clone()).increment(1);
                            tokio::select! {
                                _ = tokio::time::sleep(poll_backoff) => {}
                                _ = self.stop.cancelled() => {}
                            }
                            poll_backoff = (poll_backoff * 2).min(Duration::from_secs(10));
                        }
                    }
                }
                _ = tokio::time::sleep(head_wait.unwrap_or(Duration::ZERO)), if head_wait.is_some() => {}
            }
        }
    }

    fn receive(&mut self, records: Vec<crate::log::Stored>) {
        for record in records {
            if record.offset < self.end {
                continue; // already received (a backend re-delivered it): never twice in flight
            }
            self.end = self.end.max(record.offset + 1);
            if self.done_before.is_done(record.offset) {
                self.finished.insert(record.offset); // the previous owner finished it
                continue;
            }
            match self.handler.prepare(&record) {
                Some(item) => {
                    let since = record.timestamp_ms.max(self.handler.due(&item).millis());
                    self.unfinished.insert(record.offset, since);
                    self.waiting.push_back((record.offset, item));
                }
                None => {
                    self.finished.insert(record.offset);
                }
            }
        }
    }

    /// How long until the head waiting item is due, when a chunk could start.
    fn head_wait(&self) -> Option<Duration> {
        if self.in_flight.len() >= self.settings.concurrency {
            return None;
        }
        let (_, head) = self.waiting.front()?;
        Some(self.handler.due(head).until(Timestamp::now()).max(Duration::from_millis(1)))
    }

    /// Starts chunks of due items, in offset order, while there is room.
    fn start_due(&mut self) {
        let now = Timestamp::now();
        while self.in_flight.len() < self.settings.concurrency {
            let mut chunk = Vec::with_capacity(self.settings.chunk.min(self.waiting.len()));
            while chunk.len() < self.settings.chunk {
                match self.waiting.front() {
                    Some((_, item)) if self.handler.due(item) <= now => {
                        chunk.push(self.waiting.pop_front().expect("front exists"))
                    }
                    _ => break,
                }
            }
            if chunk.is_empty() {
                return;
            }
            let (handler, assignment) = (self.handler.clone(), self.consumer.assignment().clone());
            handler.starting(&assignment, &mut chunk);
            self.in_flight.spawn(async move {
                let offsets: Vec<u64> = chunk.iter().map(|(o, _)| *o).collect();
                let records = handler.handle(&assignment, chunk).await;
                (offsets, records)
            });
        }
    }

    fn finish(&mut self, done: Result<(Vec<u64>, Vec<Record>), tokio::task::JoinError>) {
        match done {
            Ok((offsets, records)) => {
                self.uncommitted += offsets.len();
                for o in offsets {
                    self.unfinished.remove(&o);
                    self.finished.insert(o);
                }
                self.output.extend(records);
            }
            // Aborted at the end of a drain, or the handler panicked: the chunk stays
            // unfinished and is processed again by the next owner.
            Err(e) if e.is_cancelled() => {}
            Err(e) => tracing::error!(error = %e, group = %self.group, "chunk handler panicked"),
        }
    }

    async fn commit(&mut self) -> Result<(), crate::log::LogError> {
        let position = self.position();
        let records = self.output.clone();
        let started = std::time::Instant::now();
        self.consumer.commit(records, position.clone()).await?;
        metrics::histogram!("herald_consumer_commit_seconds", "group" => self.group.clone())
            .record(started.elapsed().as_secs_f64());
        self.output.clear();
        self.uncommitted = 0;
        let below = position.next_offset;
        self.finished = self.finished.split_off(&below);
        self.committed = position;
        Ok(())
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

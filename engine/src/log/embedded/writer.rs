//! The embedded log's one writer thread: group commit through the write-ahead file,
//! checkpoints, recovery after a failed write, and compaction when idle.
//!
//! A group is whatever is queued, up to `MAX_GROUP` commands and [`MAX_GROUP_BYTES`]; a
//! command that would overflow the group waits for the next one. A group is one write-ahead
//! frame, `fdatasync`ed, then one redb transaction committed without an fsync; callers are
//! answered after both. A consumer's commit (its output records and its position, kind 3
//! in `wal.rs`) is one command, so it always lands in one group: both or neither.
//!
//! After a failed write or checkpoint (ENOSPC, EIO), redb refuses every later write until
//! the file is reopened, and the page cache may have lost what the write-ahead file had not
//! made durable. So the writer answers the group with the error, takes the database away
//! from readers, and reopens it the way a restart would: redb's last durable commit (a quick
//! repair), then the write-ahead frames since. Until that succeeds (retried with backoff up
//! to `MAX_BACKOFF`), every append and commit fails at once with the reason, which
//! [`EventLog::failure`](crate::log::EventLog::failure) and `/healthz` report.

use super::{
    close_run, open_files, push_run, start_run, storage, table, table_name, Opened, Shared, MAX_GROUP_BYTES, META,
    OFFSETS, OFFSET_META, RUN_BYTES,
};
use crate::log::wal::{self, Wal};
use crate::log::{LogError, Record};
use redb::{Database, Durability};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most commands folded into one transaction.
const MAX_GROUP: usize = 8192;
/// Largest frame buffer kept between groups.
const KEEP_FRAME: usize = 4 << 20;
/// Most run buffers kept between groups (each at most twice [`RUN_BYTES`]).
const KEEP_RUN_BUFS: usize = KEEP_FRAME / RUN_BYTES;
/// Longest wait between two recovery attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Compaction is worth it from this much free space (and a quarter of the file).
const COMPACT_MIN_FREE: u64 = 16 << 20;

/// The records of one partition being gathered into an entry of the group.
struct Run {
    /// The offset the next record gets.
    next: u64,
    count: u32,
    /// When the group was written: every run of it has this time.
    ts: i64,
    buf: Vec<u8>,
}

impl Run {
    /// A run in `buf`, a buffer of an earlier group's run (so it is not grown and copied
    /// again) or a new one.
    fn new(next: u64, ts: i64, mut buf: Vec<u8>) -> Self {
        start_run(&mut buf, ts);
        Run { next, count: 0, ts, buf }
    }

    fn push(&mut self, key: &str, value: &[u8]) {
        push_run(&mut self.buf, key, value);
        self.count += 1;
        self.next += 1;
    }

    /// Stores the run (if it holds records) under its last offset, in the transaction and
    /// the write-ahead frame, and starts the next one.
    fn close(
        &mut self,
        table: &mut redb::Table<(u32, u64), &'static [u8]>,
        frame: &mut Vec<u8>,
        topic: &str,
        partition: u32,
    ) -> Result<(), LogError> {
        if self.count == 0 {
            return Ok(());
        }
        close_run(&mut self.buf, self.count);
        let last = self.next - 1;
        table.insert((partition, last), self.buf.as_slice()).map_err(storage)?;
        wal::put_record(frame, topic, partition, last, &self.buf);
        start_run(&mut self.buf, self.ts);
        self.count = 0;
        Ok(())
    }
}

pub(super) enum Command {
    Append {
        records: Vec<Record>,
        /// What the records take in a frame ([`record_cost`]).
        bytes: usize,
        done: oneshot::Sender<Result<Vec<u64>, LogError>>,
    },
    /// A consumer's output records and its new position (`offset` and the finished set as
    /// `metadata`, `position.rs`), in one group.
    Commit {
        group: String,
        topic: String,
        partition: u32,
        offset: u64,
        metadata: String,
        records: Vec<Record>,
        /// What the records and the position take in a frame.
        bytes: usize,
        done: oneshot::Sender<Result<(), LogError>>,
    },
    Shutdown,
}

impl Command {
    fn bytes(&self) -> usize {
        match self {
            Command::Append { bytes, .. } | Command::Commit { bytes, .. } => *bytes,
            Command::Shutdown => 0,
        }
    }

    fn fail(self, why: &str) {
        match self {
            Command::Append { done, .. } => drop(done.send(Err(LogError::Storage(why.to_owned())))),
            Command::Commit { done, .. } => drop(done.send(Err(LogError::Storage(why.to_owned())))),
            Command::Shutdown => {}
        }
    }
}

/// Bytes a record takes in a write-ahead frame.
pub(super) fn record_cost(r: &Record) -> usize {
    1 + 4 + r.topic.len() + 4 + 8 + 4 + 12 + r.key.len() + r.value.len()
}

/// Bytes a consumer position takes in a write-ahead frame (kind 3).
pub(super) fn offset_cost(group: &str, topic: &str, metadata: &str) -> usize {
    1 + 4 + group.len() + 4 + topic.len() + 4 + 8 + 4 + metadata.len()
}

pub(super) fn spawn(
    shared: Arc<Shared>,
    wal: Wal,
    rx: mpsc::Receiver<Command>,
    topics: Vec<String>,
    partitions: u32,
) -> Result<std::thread::JoinHandle<()>, LogError> {
    let writer = Writer {
        shared,
        wal: Some(wal),
        rx,
        carry: None,
        topics,
        partitions,
        last_checkpoint: Instant::now(),
        last_write: Instant::now(),
        compact_checked: false,
        failed: None,
        frame: Vec::new(),
        run_bufs: Vec::new(),
    };
    std::thread::Builder::new().name("herald-log-writer".into()).spawn(move || writer.run()).map_err(storage)
}

/// A failed write and the recovery it waits for.
struct Failed {
    /// The database that failed, kept until every reader let go of it.
    poisoned: Option<Arc<Database>>,
    next_try: Instant,
    backoff: Duration,
    reason: String,
}

struct Writer {
    shared: Arc<Shared>,
    /// `None` while failed.
    wal: Option<Wal>,
    rx: mpsc::Receiver<Command>,
    /// A command that did not fit in the last group.
    carry: Option<Command>,
    topics: Vec<String>,
    partitions: u32,
    last_checkpoint: Instant,
    last_write: Instant,
    /// Whether compaction was considered since the last write.
    compact_checked: bool,
    failed: Option<Failed>,
    /// The write-ahead frame's buffer, reused by every group.
    frame: Vec<u8>,
    /// The buffers of the last group's runs, reused by the next.
    run_bufs: Vec<Vec<u8>>,
}

impl Writer {
    fn run(mut self) {
        let interval = self.shared.options.checkpoint_interval;
        loop {
            let wait = match &self.failed {
                Some(f) => f.next_try.saturating_duration_since(Instant::now()).min(interval),
                None => interval,
            };
            let first = match self.carry.take().map(Ok).unwrap_or_else(|| self.rx.recv_timeout(wait)) {
                Ok(cmd) => cmd,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.idle();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if matches!(first, Command::Shutdown) {
                break;
            }
            let (batch, stopping) = self.gather(first);
            if let Some(f) = &self.failed {
                if Instant::now() >= f.next_try {
                    self.recover();
                }
            }
            if let Some(f) = &self.failed {
                let why = f.reason.clone();
                batch.into_iter().for_each(|c| c.fail(&why));
            } else {
                self.write(batch);
            }
            if stopping {
                break;
            }
        }
        if self.failed.is_none() && self.wal.as_ref().is_some_and(|w| !w.is_empty()) {
            self.checkpoint();
        }
    }

    /// `first` and whatever else is queued, within the group's limits; `true` once a
    /// shutdown was seen.
    fn gather(&mut self, first: Command) -> (Vec<Command>, bool) {
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP {
            let Ok(cmd) = self.rx.try_recv() else { break };
            if matches!(cmd, Command::Shutdown) {
                return (batch, true);
            }
            if bytes + cmd.bytes() > MAX_GROUP_BYTES {
                self.carry = Some(cmd);
                break;
            }
            bytes += cmd.bytes();
            batch.push(cmd);
        }
        (batch, false)
    }

    /// Nothing arrived for a while: recover, checkpoint, or compact.
    fn idle(&mut self) {
        if let Some(f) = &self.failed {
            if Instant::now() >= f.next_try {
                self.recover();
            }
        } else if self.wal.as_ref().is_some_and(|w| !w.is_empty()) {
            self.checkpoint();
        } else if let Some(after) = self.shared.options.compact_when_idle {
            if !self.compact_checked && self.last_write.elapsed() >= after {
                self.compact_checked = true;
                self.compact();
            }
        }
    }

    fn write(&mut self, batch: Vec<Command>) {
        let started = Instant::now();
        let result = self.write_batch(&batch);
        metrics::histogram!("herald_log_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("herald_log_commit_commands").record(batch.len() as f64);
        self.last_write = Instant::now();
        self.compact_checked = false;
        match result {
            Ok((new_heads, mut offsets)) => {
                for ((topic, partition), next) in new_heads {
                    self.shared.heads[&topic][partition as usize].send_replace(next);
                }
                offsets.reverse();
                for cmd in batch {
                    match cmd {
                        Command::Append { done, .. } => drop(done.send(Ok(offsets.pop().unwrap_or_default()))),
                        Command::Commit { done, .. } => {
                            offsets.pop(); // a commit's records were given offsets too
                            drop(done.send(Ok(())));
                        }
                        Command::Shutdown => {}
                    }
                }
            }
            Err(e) => {
                let why = self.fail(&e);
                batch.into_iter().for_each(|c| c.fail(&why));
                return;
            }
        }
        let wal_len = self.wal.as_ref().map_or(0, Wal::len);
        if wal_len >= self.shared.options.checkpoint_bytes
            || self.last_checkpoint.elapsed() >= self.shared.options.checkpoint_interval
        {
            self.checkpoint();
        }
    }

    /// Writes a group in one transaction, made durable by one write-ahead frame before it
    /// is committed (and so before readers can see it). Returns the new heads, and the
    /// offsets given to the records of each append and commit, in order.
    #[allow(clippy::type_complexity)]
    fn write_batch(&mut self, batch: &[Command]) -> Result<(HashMap<(String, u32), u64>, Vec<Vec<u64>>), LogError> {
        let db = self.shared.db()?;
        let wal = self.wal.as_mut().ok_or(LogError::Closed)?;
        let mut txn = db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::None).map_err(storage)?;
        // The frame is this writer's buffer, kept between groups (a group's frame can be
        // megabytes: a fresh one would be grown, copied and faulted in every time).
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        let group_bytes = batch.iter().map(Command::bytes).sum::<usize>();
        frame.reserve(group_bytes + batch.len() * 64);
        let mut new_heads: HashMap<(String, u32), u64> = HashMap::new();
        let mut offsets = Vec::new();
        {
            let mut tables = HashMap::new();
            let now = super::now_ms();
            // The open run of each (topic, partition) in this group: its records' offsets
            // are consecutive however the group interleaves partitions, so each partition's
            // records become a few entries of at most `RUN_BYTES` (a larger record is an
            // entry of its own), not one B-tree insert apiece.
            let mut runs: HashMap<(&str, u32), Run> = HashMap::new();
            for cmd in batch {
                let records = match cmd {
                    Command::Append { records, .. } | Command::Commit { records, .. } => records,
                    Command::Shutdown => continue,
                };
                let mut given = Vec::with_capacity(records.len());
                for r in records {
                    let run = match runs.entry((r.topic.as_str(), r.partition)) {
                        Entry::Occupied(open) => open.into_mut(),
                        Entry::Vacant(none) => {
                            let next = *self.shared.head(&r.topic, r.partition)?.borrow();
                            if !tables.contains_key(&r.topic) {
                                let name = table_name(&r.topic);
                                tables.insert(r.topic.clone(), txn.open_table(table(&name)).map_err(storage)?);
                            }
                            none.insert(Run::new(next, now, self.run_bufs.pop().unwrap_or_default()))
                        }
                    };
                    // A record that would take the run past `RUN_BYTES` closes it first; a
                    // run that reached it is closed at once.
                    if run.buf.len() + 8 + r.key.len() + r.value.len() > RUN_BYTES {
                        let t = tables.get_mut(&r.topic).expect("opened with the run");
                        run.close(t, &mut frame, &r.topic, r.partition)?;
                    }
                    given.push(run.next);
                    run.push(&r.key, &r.value);
                    if run.buf.len() >= RUN_BYTES {
                        let t = tables.get_mut(&r.topic).expect("opened with the run");
                        run.close(t, &mut frame, &r.topic, r.partition)?;
                    }
                }
                offsets.push(given);
            }
            for ((topic, partition), mut run) in runs {
                let t = tables.get_mut(topic).expect("opened with the run");
                run.close(t, &mut frame, topic, partition)?;
                new_heads.insert((topic.to_owned(), partition), run.next);
                // Kept unless a large record grew it, as the frame is.
                if run.buf.capacity() <= 2 * RUN_BYTES && self.run_bufs.len() < KEEP_RUN_BUFS {
                    self.run_bufs.push(run.buf);
                }
            }
            let mut table = txn.open_table(OFFSETS).map_err(storage)?;
            let mut metas = txn.open_table(OFFSET_META).map_err(storage)?;
            for cmd in batch {
                if let Command::Commit { group, topic, partition, offset, metadata, .. } = cmd {
                    let key = (group.as_str(), topic.as_str(), *partition);
                    table.insert(key, *offset).map_err(storage)?;
                    metas.insert(key, metadata.as_str()).map_err(storage)?;
                    wal::put_offset(&mut frame, group, topic, *partition, *offset, metadata);
                }
            }
        }
        let before = wal.len();
        let appended = wal.append(&frame);
        let frame_len = frame.len();
        // Kept for the next group unless a rare large group grew it: that memory goes back.
        if frame.capacity() <= KEEP_FRAME {
            self.frame = frame;
        }
        appended.map_err(storage)?;
        metrics::counter!("herald_log_written_bytes_total").increment(frame_len as u64);
        if let Err(e) = txn.commit() {
            // Not acknowledged, so it must not come back at the next replay either.
            let _ = wal.erase_from(before);
            return Err(storage(e));
        }
        Ok((new_heads, offsets))
    }

    /// Makes everything committed so far durable in redb (recording the allocator state, so
    /// a restart after a crash repairs quickly), then starts a new write-ahead generation.
    fn checkpoint(&mut self) {
        let started = Instant::now();
        let result = (|| -> Result<(), LogError> {
            let db = self.shared.db()?;
            let mut txn = db.begin_write().map_err(storage)?;
            txn.set_durability(Durability::Immediate).map_err(storage)?;
            txn.set_quick_repair(true);
            let generation = Wal::new_generation();
            txn.open_table(META).map_err(storage)?.insert("wal_generation", generation).map_err(storage)?;
            txn.commit().map_err(storage)?;
            if let Some(wal) = self.wal.as_mut() {
                if let Err(e) = wal.reset(generation) {
                    tracing::warn!(error = %e, "embedded log: cutting the write-ahead file back failed");
                }
            }
            Ok(())
        })();
        metrics::histogram!("herald_log_checkpoint_seconds").record(started.elapsed().as_secs_f64());
        self.last_checkpoint = Instant::now();
        if let Err(e) = result {
            self.fail(&e);
        }
    }

    /// Enters the failed state: readers lose the database, appends fail until
    /// [`Writer::recover`] succeeds. Returns the reason given to callers.
    fn fail(&mut self, e: &LogError) -> String {
        metrics::counter!("herald_log_write_failures_total").increment(1);
        let reason = format!("the embedded log could not write ({e}); it is recovering, try again");
        tracing::error!(error = %e, "embedded log write failed; reopening the database and replaying the write-ahead file");
        let poisoned = self.shared.db.lock().unwrap_or_else(|p| p.into_inner()).db.take();
        *self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
        self.wal = None;
        let backoff = Duration::from_millis(100);
        self.failed = Some(Failed { poisoned, next_try: Instant::now() + backoff, backoff, reason: reason.clone() });
        reason
    }

    /// Reopens the database as a restart would (redb's last durable state, then the
    /// write-ahead frames since), once no reader holds the failed one.
    fn recover(&mut self) {
        let Some(failed) = self.failed.as_mut() else { return };
        if let Some(db) = failed.poisoned.take() {
            match Arc::try_unwrap(db) {
                Ok(db) => drop(db),
                Err(db) => {
                    failed.poisoned = Some(db); // a reader still has it: soon
                    failed.next_try = Instant::now() + Duration::from_millis(10);
                    return;
                }
            }
        }
        let options = &self.shared.options;
        match open_files(&self.shared.path, &self.topics, self.partitions, options.cache_bytes) {
            Ok(Opened { db, wal, heads }) => {
                for (topic, next) in heads {
                    for (p, n) in next.into_iter().enumerate() {
                        let head = &self.shared.heads[&topic][p];
                        if n < *head.borrow() {
                            tracing::error!(%topic, partition = p, was = *head.borrow(), now = n, "embedded log: head went back after recovery");
                        }
                        head.send_replace(n);
                    }
                }
                *self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.shared.put_db(db);
                self.wal = Some(wal);
                self.failed = None;
                self.last_checkpoint = Instant::now();
                metrics::counter!("herald_log_recoveries_total").increment(1);
                tracing::info!("embedded log recovered: writes accepted again");
            }
            Err(e) => {
                failed.backoff = (failed.backoff * 2).min(MAX_BACKOFF);
                failed.next_try = Instant::now() + failed.backoff;
                failed.reason = format!("the embedded log cannot write ({e}); it is recovering, try again");
                *self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(failed.reason.clone());
                tracing::warn!(error = %e, retry_in = ?failed.backoff, "embedded log recovery failed");
            }
        }
    }

    /// Compacts the file when a quarter or more of it (and at least `COMPACT_MIN_FREE`) is
    /// free pages, so space freed by retention returns to the disk.
    fn compact(&mut self) {
        let Ok(db) = self.shared.db() else { return };
        let file_len = std::fs::metadata(&self.shared.path).map(|m| m.len()).unwrap_or(0);
        let used = (|| -> Result<u64, LogError> {
            let txn = db.begin_write().map_err(storage)?;
            let stats = txn.stats().map_err(storage)?;
            let used = stats.allocated_pages() * stats.page_size() as u64;
            txn.abort().map_err(storage)?;
            Ok(used)
        })();
        drop(db);
        let Ok(used) = used else { return };
        let free = file_len.saturating_sub(used);
        if free < COMPACT_MIN_FREE || free < file_len / 4 {
            return;
        }
        let Some(mut db) = take_exclusive(&self.shared, Duration::from_secs(5)) else { return };
        let started = Instant::now();
        let mut result = Ok(());
        for _ in 0..8 {
            match db.compact() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.shared.put_db(db);
        let after = std::fs::metadata(&self.shared.path).map(|m| m.len()).unwrap_or(file_len);
        match result {
            Ok(()) => {
                metrics::counter!("herald_log_compactions_total").increment(1);
                metrics::counter!("herald_log_reclaimed_bytes_total").increment(file_len.saturating_sub(after));
                tracing::info!(
                    before = file_len,
                    after,
                    ms = started.elapsed().as_millis() as u64,
                    "embedded log compacted"
                );
            }
            Err(e) => tracing::warn!(error = %e, "embedded log compaction failed"),
        }
    }
}

/// Takes the database away from readers (who wait meanwhile) until none holds it, for at
/// most `wait`; [`Shared::put_db`] gives it back.
fn take_exclusive(shared: &Shared, wait: Duration) -> Option<Database> {
    let mut db = {
        let mut slot = shared.db.lock().unwrap_or_else(|p| p.into_inner());
        let db = slot.db.take()?;
        slot.compacting = true;
        db
    };
    let deadline = Instant::now() + wait;
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => return Some(db),
            Err(back) => db = back,
        }
        if Instant::now() >= deadline {
            let mut slot = shared.db.lock().unwrap_or_else(|p| p.into_inner());
            slot.db = Some(db);
            slot.compacting = false;
            shared.compacted.notify_all();
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

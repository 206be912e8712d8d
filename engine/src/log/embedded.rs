//! The embedded log on redb (see `docs/adr/0001-embedded-storage-redb.md`).
//!
//! One table per topic keyed by `(partition, offset)`. All writes (appends and offset
//! commits) go through one writer thread that gathers whatever is queued into a single
//! write transaction: group commit. The group is first appended to a write-ahead file and
//! `fdatasync`ed (`wal.rs`), then committed to redb without an fsync of its own, and only
//! then are callers answered, so an acknowledged append survives a crash: at open, the
//! write-ahead frames since redb's last durable commit are replayed. A checkpoint (a
//! durable redb commit, then a new write-ahead generation) runs every `CHECKPOINT_INTERVAL`,
//! when the file passes `CHECKPOINT_BYTES`, when idle, and at shutdown. One sequential
//! append and fdatasync costs about half of redb's own durable commit, which writes the
//! B-tree's pages in place.
//! Readers use redb's MVCC read transactions and never block the writer.

use super::wal::{self, Entry, Wal};
use super::{Assignment, EventLog, LogError, PartitionConsumer, Record, Stored};
use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

mod lag;

const OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("consumer_offsets");
/// `wal_generation`: the id of the write-ahead generation whose frames are not yet durable
/// in redb.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Longest time between checkpoints while appends keep coming.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);
/// Write-ahead size that forces a checkpoint (below the file's preallocated size).
const CHECKPOINT_BYTES: u64 = 24 << 20;
const _: () = assert!(CHECKPOINT_BYTES < wal::PREALLOCATE);
/// Most commands folded into one transaction.
const MAX_GROUP: usize = 8192;
/// Most records deleted per retention transaction, so appends are never held up long.
const TRIM_CHUNK: usize = 4096;

fn storage<E: std::fmt::Display>(e: E) -> LogError {
    LogError::Storage(e.to_string())
}

fn table_name(topic: &str) -> String {
    format!("log:{topic}")
}

enum Command {
    Append { records: Vec<Record>, done: oneshot::Sender<Result<(), LogError>> },
    Commit { group: String, topic: String, partition: u32, offset: u64, done: oneshot::Sender<Result<(), LogError>> },
    Shutdown,
}

struct Shared {
    db: Database,
    /// Next offset per topic and partition, published after each durable commit.
    heads: HashMap<String, Vec<watch::Sender<u64>>>,
}

/// The embedded, fsynced, partitioned log.
pub struct EmbeddedLog {
    shared: Arc<Shared>,
    writer: mpsc::Sender<Command>,
    writer_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    partitions: u32,
}

impl Drop for EmbeddedLog {
    /// Stops the writer after the commands already queued, so the file can be reopened.
    fn drop(&mut self) {
        let _ = self.writer.send(Command::Shutdown);
        if let Some(handle) = self.writer_thread.lock().ok().and_then(|mut h| h.take()) {
            let _ = handle.join();
        }
    }
}

impl EmbeddedLog {
    /// Opens (or creates) the log at `path` with `topics`, each of `partitions` partitions.
    pub fn open(path: &Path, topics: &[String], partitions: u32) -> Result<Self, LogError> {
        let db = Database::create(path).map_err(storage)?;
        let mut heads = HashMap::new();
        let wal = {
            let mut txn = db.begin_write().map_err(storage)?;
            txn.set_durability(Durability::Immediate).map_err(storage)?;
            txn.open_table(OFFSETS).map_err(storage)?;
            let generation =
                txn.open_table(META).map_err(storage)?.get("wal_generation").map_err(storage)?.map_or(0, |v| v.value());
            let (mut wal, replay) = Wal::open(&path.with_extension("wal"), generation).map_err(storage)?;
            if !replay.is_empty() {
                tracing::info!(entries = replay.len(), "embedded log: replaying the write-ahead file");
                apply(&txn, replay)?;
            }
            let next = Wal::new_generation();
            txn.open_table(META).map_err(storage)?.insert("wal_generation", next).map_err(storage)?;
            for topic in topics {
                let name = table_name(topic);
                let table = txn.open_table(TableDefinition::<(u32, u64), &[u8]>::new(&name)).map_err(storage)?;
                let mut senders = Vec::with_capacity(partitions as usize);
                for p in 0..partitions {
                    let next = match table.range((p, 0)..=(p, u64::MAX)).map_err(storage)?.next_back() {
                        Some(entry) => entry.map_err(storage)?.0.value().1 + 1,
                        None => 0,
                    };
                    senders.push(watch::channel(next).0);
                }
                heads.insert(topic.clone(), senders);
            }
            txn.commit().map_err(storage)?;
            wal.reset(next);
            wal
        };
        let shared = Arc::new(Shared { db, heads });
        let (tx, rx) = mpsc::channel();
        let writer_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("herald-log-writer".into())
            .spawn(move || writer_loop(writer_shared, wal, rx))
            .map_err(storage)?;
        Ok(EmbeddedLog { shared, writer: tx, writer_thread: std::sync::Mutex::new(Some(handle)), partitions })
    }

    async fn send(&self, make: impl FnOnce(oneshot::Sender<Result<(), LogError>>) -> Command) -> Result<(), LogError> {
        let (done, rx) = oneshot::channel();
        self.writer.send(make(done)).map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }
}

/// Replays write-ahead entries into `txn` (idempotent: the same keys get the same values).
fn apply(txn: &redb::WriteTransaction, entries: Vec<Entry>) -> Result<(), LogError> {
    for e in entries {
        match e {
            Entry::Record { topic, partition, offset, stored } => {
                let name = table_name(&topic);
                let mut table = txn.open_table(TableDefinition::<(u32, u64), &[u8]>::new(&name)).map_err(storage)?;
                table.insert((partition, offset), stored.as_slice()).map_err(storage)?;
            }
            Entry::Offset { group, topic, partition, offset } => {
                let mut offsets = txn.open_table(OFFSETS).map_err(storage)?;
                offsets.insert((group.as_str(), topic.as_str(), partition), offset).map_err(storage)?;
            }
        }
    }
    Ok(())
}

/// Makes everything committed so far durable in redb, then starts a new write-ahead
/// generation (the old frames are no longer needed).
fn checkpoint(shared: &Shared, wal: &mut Wal) -> Result<(), LogError> {
    let mut txn = shared.db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::Immediate).map_err(storage)?;
    let generation = Wal::new_generation();
    txn.open_table(META).map_err(storage)?.insert("wal_generation", generation).map_err(storage)?;
    txn.commit().map_err(storage)?;
    wal.reset(generation);
    Ok(())
}

fn writer_loop(shared: Arc<Shared>, mut wal: Wal, rx: mpsc::Receiver<Command>) {
    let mut stopping = false;
    let mut last_checkpoint = Instant::now();
    let checkpoint_now = |wal: &mut Wal, last: &mut Instant| {
        let started = Instant::now();
        if let Err(e) = checkpoint(&shared, wal) {
            // The write-ahead file keeps growing and still covers everything; retried later.
            tracing::error!(error = %e, "embedded log checkpoint failed");
        }
        metrics::histogram!("herald_log_checkpoint_seconds").record(started.elapsed().as_secs_f64());
        *last = Instant::now();
    };
    while !stopping {
        let first = match rx.recv_timeout(CHECKPOINT_INTERVAL) {
            Ok(cmd) => cmd,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !wal.is_empty() {
                    checkpoint_now(&mut wal, &mut last_checkpoint);
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        if let Some(i) = batch.iter().position(|c| matches!(c, Command::Shutdown)) {
            stopping = true;
            batch.truncate(i);
        }
        if batch.is_empty() {
            continue;
        }
        let started = Instant::now();
        let result = write_batch(&shared, &mut wal, &batch);
        metrics::histogram!("herald_log_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("herald_log_commit_commands").record(batch.len() as f64);
        match result {
            Ok(new_heads) => {
                for ((topic, partition), next) in new_heads {
                    shared.heads[&topic][partition as usize].send_replace(next);
                }
                for cmd in batch {
                    if let Command::Append { done, .. } | Command::Commit { done, .. } = cmd {
                        let _ = done.send(Ok(()));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "embedded log commit failed");
                for cmd in batch {
                    if let Command::Append { done, .. } | Command::Commit { done, .. } = cmd {
                        let _ = done.send(Err(LogError::Storage(e.to_string())));
                    }
                }
            }
        }
        if stopping || wal.len() >= CHECKPOINT_BYTES || last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
            checkpoint_now(&mut wal, &mut last_checkpoint);
        }
    }
    if !wal.is_empty() {
        checkpoint_now(&mut wal, &mut last_checkpoint);
    }
}

/// Writes a group of commands in one transaction, made durable by one write-ahead frame
/// before it is committed (and so before readers can see it). Returns the new heads.
fn write_batch(shared: &Shared, wal: &mut Wal, batch: &[Command]) -> Result<HashMap<(String, u32), u64>, LogError> {
    let mut txn = shared.db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::None).map_err(storage)?;
    let mut frame = Vec::new();
    let mut new_heads: HashMap<(String, u32), u64> = HashMap::new();
    {
        let mut tables = HashMap::new();
        let now = now_ms();
        let mut buf = Vec::new();
        for cmd in batch {
            let Command::Append { records, .. } = cmd else { continue };
            for r in records {
                let heads = shared.heads.get(&r.topic).ok_or_else(|| LogError::Topic {
                    topic: r.topic.clone(),
                    problem: "not declared when the log was opened".into(),
                })?;
                let head = heads.get(r.partition as usize).ok_or_else(|| LogError::Topic {
                    topic: r.topic.clone(),
                    problem: format!("no partition {}", r.partition),
                })?;
                let next = new_heads.entry((r.topic.clone(), r.partition)).or_insert_with(|| *head.borrow());
                if !tables.contains_key(&r.topic) {
                    let name = table_name(&r.topic);
                    let t = txn.open_table(TableDefinition::<(u32, u64), &[u8]>::new(&name)).map_err(storage)?;
                    tables.insert(r.topic.clone(), t);
                }
                let table = tables.get_mut(&r.topic).expect("inserted above");
                buf.clear();
                encode_stored(&mut buf, now, &r.key, &r.value);
                table.insert((r.partition, *next), buf.as_slice()).map_err(storage)?;
                wal::put_record(&mut frame, &r.topic, r.partition, *next, &buf);
                *next += 1;
            }
        }
        let mut offsets = txn.open_table(OFFSETS).map_err(storage)?;
        for cmd in batch {
            if let Command::Commit { group, topic, partition, offset, .. } = cmd {
                offsets.insert((group.as_str(), topic.as_str(), *partition), *offset).map_err(storage)?;
                wal::put_offset(&mut frame, group, topic, *partition, *offset);
            }
        }
    }
    let before = wal.len();
    wal.append(&frame).map_err(storage)?;
    if let Err(e) = txn.commit() {
        // Not acknowledged, so it must not come back at the next replay either.
        wal.erase_from(before).map_err(storage)?;
        return Err(storage(e));
    }
    Ok(new_heads)
}

fn now_ms() -> i64 {
    herald_schemas::Timestamp::now().millis()
}

fn encode_stored(buf: &mut Vec<u8>, ts: i64, key: &str, value: &[u8]) {
    buf.extend_from_slice(&ts.to_le_bytes());
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(value);
}

fn decode_stored(offset: u64, raw: &[u8]) -> Result<Stored, LogError> {
    let bad = || LogError::Storage(format!("corrupt log entry at offset {offset}"));
    let ts = i64::from_le_bytes(raw.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
    let klen = u32::from_le_bytes(raw.get(8..12).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
    let key = raw.get(12..12 + klen).ok_or_else(bad)?;
    let key = String::from_utf8(key.to_vec()).map_err(|_| bad())?;
    Ok(Stored { offset, key, value: raw[12 + klen..].to_vec(), timestamp_ms: ts })
}

#[async_trait]
impl EventLog for EmbeddedLog {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn append(&self, records: Vec<Record>) -> Result<(), LogError> {
        if records.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let result = self.send(|done| Command::Append { records, done }).await;
        metrics::histogram!("herald_log_append_seconds", "backend" => "embedded")
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn enforce_retention(&self, retention: Duration) -> Result<u64, LogError> {
        let shared = self.shared.clone();
        let cutoff = now_ms() - retention.as_millis() as i64;
        tokio::task::spawn_blocking(move || EmbeddedLog::trim(&shared, cutoff)).await.map_err(storage)?
    }

    async fn lag(&self, group: &str, assignments: &[Assignment]) -> Result<Vec<super::PartitionLag>, LogError> {
        lag::lag(&self.shared, group, assignments)
    }

    async fn consume(
        &self,
        group: &str,
        assignments: &[Assignment],
    ) -> Result<Vec<Box<dyn PartitionConsumer>>, LogError> {
        let read = self.shared.db.begin_read().map_err(storage)?;
        let offsets = read.open_table(OFFSETS).map_err(storage)?;
        let mut consumers: Vec<Box<dyn PartitionConsumer>> = Vec::new();
        for a in assignments {
            let head = self.shared.heads.get(&a.topic).and_then(|h| h.get(a.partition as usize)).ok_or_else(|| {
                LogError::Topic { topic: a.topic.clone(), problem: format!("no partition {}", a.partition) }
            })?;
            let committed =
                offsets.get((group, a.topic.as_str(), a.partition)).map_err(storage)?.map(|v| v.value()).unwrap_or(0);
            consumers.push(Box::new(Consumer {
                shared: self.shared.clone(),
                writer: self.writer.clone(),
                group: group.to_owned(),
                assignment: a.clone(),
                position: committed,
                head: head.subscribe(),
            }));
        }
        Ok(consumers)
    }
}

impl EmbeddedLog {
    /// Retention, run in a blocking thread: per partition, deletes the oldest records while
    /// they are older than `cutoff_ms`, below every group's committed offset, and not the
    /// partition's last record (whose offset fixes the next one after a restart).
    fn trim(shared: &Shared, cutoff_ms: i64) -> Result<u64, LogError> {
        let mut floors: HashMap<(String, u32), u64> = HashMap::new();
        {
            let read = shared.db.begin_read().map_err(storage)?;
            let offsets = read.open_table(OFFSETS).map_err(storage)?;
            for entry in offsets.iter().map_err(storage)? {
                let (k, v) = entry.map_err(storage)?;
                let (_, topic, partition) = k.value();
                let floor = floors.entry((topic.to_owned(), partition)).or_insert(u64::MAX);
                *floor = (*floor).min(v.value());
            }
        }
        let mut removed = 0u64;
        for ((topic, partition), floor) in floors {
            let Some(head) = shared.heads.get(&topic).and_then(|h| h.get(partition as usize)) else { continue };
            let limit = floor.min(head.borrow().saturating_sub(1));
            loop {
                let mut txn = shared.db.begin_write().map_err(storage)?;
                // Made durable by the writer's next checkpoint; losing a trim is harmless.
                txn.set_durability(Durability::None).map_err(storage)?;
                let n = {
                    let name = table_name(&topic);
                    let mut table =
                        txn.open_table(TableDefinition::<(u32, u64), &[u8]>::new(&name)).map_err(storage)?;
                    let mut doomed = Vec::new();
                    for entry in table.range((partition, 0)..(partition, limit)).map_err(storage)?.take(TRIM_CHUNK) {
                        let (k, v) = entry.map_err(storage)?;
                        let ts = v.value().get(..8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")));
                        if ts.is_none_or(|ts| ts >= cutoff_ms) {
                            break; // records are in time order: the rest are newer
                        }
                        doomed.push(k.value().1);
                    }
                    for offset in &doomed {
                        table.remove((partition, *offset)).map_err(storage)?;
                    }
                    doomed.len()
                };
                txn.commit().map_err(storage)?;
                removed += n as u64;
                if n < TRIM_CHUNK {
                    break;
                }
            }
        }
        metrics::counter!("herald_log_trimmed_records_total").increment(removed);
        Ok(removed)
    }
}

struct Consumer {
    shared: Arc<Shared>,
    writer: mpsc::Sender<Command>,
    group: String,
    assignment: Assignment,
    position: u64,
    head: watch::Receiver<u64>,
}

#[async_trait]
impl PartitionConsumer for Consumer {
    fn assignment(&self) -> &Assignment {
        &self.assignment
    }

    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Stored>, LogError> {
        let position = self.position;
        if *self.head.borrow() <= position {
            let _ = tokio::time::timeout(wait, self.head.wait_for(|h| *h > position)).await;
            if *self.head.borrow() <= position {
                return Ok(Vec::new());
            }
        }
        let shared = self.shared.clone();
        let (topic, partition) = (self.assignment.topic.clone(), self.assignment.partition);
        let records = tokio::task::spawn_blocking(move || -> Result<Vec<Stored>, LogError> {
            let read = shared.db.begin_read().map_err(storage)?;
            let name = table_name(&topic);
            let table = read.open_table(TableDefinition::<(u32, u64), &[u8]>::new(&name)).map_err(storage)?;
            let mut out = Vec::new();
            for entry in table.range((partition, position)..=(partition, u64::MAX)).map_err(storage)?.take(max) {
                let (k, v) = entry.map_err(storage)?;
                out.push(decode_stored(k.value().1, v.value())?);
            }
            Ok(out)
        })
        .await
        .map_err(storage)??;
        if let Some(last) = records.last() {
            self.position = last.offset + 1;
        }
        Ok(records)
    }

    async fn commit(&mut self, next_offset: u64) -> Result<(), LogError> {
        let (done, rx) = oneshot::channel();
        self.writer
            .send(Command::Commit {
                group: self.group.clone(),
                topic: self.assignment.topic.clone(),
                partition: self.assignment.partition,
                offset: next_offset,
                done,
            })
            .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }
}

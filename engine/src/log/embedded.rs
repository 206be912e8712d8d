//! The embedded log on redb (see `docs/adr/0001-embedded-storage-redb.md`).
//!
//! One table per topic keyed by `(partition, offset)`. All writes (appends and offset
//! commits) go through one writer thread ([`writer`]) that gathers whatever is queued, up to
//! [`MAX_GROUP_BYTES`], into a single write transaction: group commit. The group is first
//! appended to a write-ahead file and `fdatasync`ed (`wal.rs`), then committed to redb
//! without an fsync of its own, and only then are callers answered, so an acknowledged
//! append survives a crash: at open, the write-ahead frames since redb's last durable commit
//! are replayed. A checkpoint (a durable redb commit with quick-repair, then a new
//! write-ahead generation) runs every `checkpoint_interval`, when the file passes
//! `checkpoint_bytes`, when idle, and at shutdown. Readers use redb's MVCC read transactions
//! and never block the writer.
//!
//! A write that fails (a full disk, an I/O error) leaves redb refusing every later write, so
//! the writer reopens the database and replays the write-ahead file, retrying with backoff
//! until it can; meanwhile appends fail at once and [`EventLog::failure`] says why. When
//! nothing was written for `compact_when_idle`, a file with a quarter or more free is
//! compacted (`Database::compact`), so space freed by retention goes back to the disk.
//!
//! A consumer's commit carries the records it produced: they and the consumer's position
//! (offset and finished set, `position.rs`) are written by one writer command, so they
//! share a write-ahead frame and a transaction and are durable together or not at all.
//! The embedded log is a consumer group of one member that owns every partition (the
//! default [`EventLog::subscribe`]).

mod writer;

use super::wal::{Entry, Wal};
use super::{check_record, Assignment, EventLog, LogError, PartitionConsumer, Position, Record, Retention, Stored};
use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use writer::Command;

mod lag;

const OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("consumer_offsets");
/// The commit metadata beside each consumer offset (the finished set, `position.rs`).
const OFFSET_META: TableDefinition<(&str, &str, u32), &str> = TableDefinition::new("consumer_offset_meta");
/// `wal_generation`: the id of the write-ahead generation whose frames are not yet durable
/// in redb.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Most bytes of records (and offset commits) in one group, so one write-ahead frame: far
/// below the frame's 32-bit length. An append larger than this is refused.
pub const MAX_GROUP_BYTES: usize = 64 << 20;
/// Most records deleted per retention transaction, so appends are never held up long.
const TRIM_CHUNK: usize = 4096;

fn storage<E: std::fmt::Display>(e: E) -> LogError {
    LogError::Storage(e.to_string())
}

fn table_name(topic: &str) -> String {
    format!("log:{topic}")
}

fn table(name: &str) -> TableDefinition<'_, (u32, u64), &'static [u8]> {
    TableDefinition::new(name)
}

/// Tuning of the embedded log (`[storage]` in the config).
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// redb's cache of pages (reads and not yet written pages), in bytes.
    pub cache_bytes: usize,
    /// Longest time between checkpoints while appends keep coming.
    pub checkpoint_interval: Duration,
    /// Write-ahead size that forces a checkpoint.
    pub checkpoint_bytes: u64,
    /// Compact the file after this long without writes, when a quarter or more of it is
    /// free; `None`: never.
    pub compact_when_idle: Option<Duration>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            cache_bytes: 64 << 20,
            checkpoint_interval: Duration::from_millis(500),
            checkpoint_bytes: 24 << 20,
            compact_when_idle: Some(Duration::from_secs(60)),
        }
    }
}

/// The database and whether the writer has taken it away.
#[derive(Default)]
struct DbSlot {
    /// `None` while the writer has it to itself (recovering or compacting).
    db: Option<Arc<Database>>,
    /// Readers wait for the end of a compaction rather than fail.
    compacting: bool,
}

struct Shared {
    path: PathBuf,
    options: EmbeddedOptions,
    db: Mutex<DbSlot>,
    /// Signalled when a compaction ends.
    compacted: Condvar,
    /// Next offset per topic and partition, published after each durable commit.
    heads: HashMap<String, Vec<watch::Sender<u64>>>,
    /// Why appends fail right now.
    failure: Mutex<Option<String>>,
}

impl Shared {
    /// The database, for one read or write. Blocks while a compaction runs (call it from
    /// blocking threads); fails while the writer recovers from a failed write.
    fn db(&self) -> Result<Arc<Database>, LogError> {
        let slot = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let (slot, _) = self
            .compacted
            .wait_timeout_while(slot, Duration::from_secs(600), |s| s.compacting)
            .unwrap_or_else(|p| p.into_inner());
        slot.db.clone().ok_or_else(|| {
            LogError::Storage(self.failure().unwrap_or_else(|| "the embedded log is unavailable; try again".into()))
        })
    }

    /// Puts the database back (after a compaction or a recovery) and wakes waiting readers.
    fn put_db(&self, db: Database) {
        let mut slot = self.db.lock().unwrap_or_else(|p| p.into_inner());
        slot.db = Some(Arc::new(db));
        slot.compacting = false;
        self.compacted.notify_all();
    }

    fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Checks records before they go to the writer (size, topic, partition, that the log
    /// can write right now) and returns their cost in the group, `extra` included.
    fn check_write(&self, records: &[Record], extra: usize, what: &str) -> Result<usize, LogError> {
        let mut bytes = extra;
        for r in records {
            check_record(r)?;
            self.head(&r.topic, r.partition)?;
            bytes += writer::record_cost(r);
        }
        if bytes > MAX_GROUP_BYTES {
            return Err(LogError::TooLarge { what: what.into(), bytes, limit: MAX_GROUP_BYTES });
        }
        if let Some(why) = self.failure() {
            return Err(LogError::Storage(why));
        }
        Ok(bytes)
    }

    fn head(&self, topic: &str, partition: u32) -> Result<&watch::Sender<u64>, LogError> {
        let heads = self.heads.get(topic).ok_or_else(|| LogError::Topic {
            topic: topic.to_owned(),
            problem: "not declared when the log was opened".into(),
        })?;
        heads
            .get(partition as usize)
            .ok_or_else(|| LogError::Topic { topic: topic.to_owned(), problem: format!("no partition {partition}") })
    }
}

/// The embedded, fsynced, partitioned log.
pub struct EmbeddedLog {
    shared: Arc<Shared>,
    writer: mpsc::Sender<Command>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
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

/// What opening (or reopening after a failure) finds.
struct Opened {
    db: Database,
    wal: Wal,
    /// Next offset of every declared topic's partitions.
    heads: HashMap<String, Vec<u64>>,
}

/// Opens redb at `path` (a quick repair after a crash: checkpoints record the allocator
/// state), replays the write-ahead frames redb may have lost, and starts a new generation.
fn open_files(path: &Path, topics: &[String], partitions: u32, cache_bytes: usize) -> Result<Opened, LogError> {
    let started = Instant::now();
    let db = Database::builder().set_cache_size(cache_bytes).create(path).map_err(storage)?;
    let opened = Instant::now();
    let mut heads = HashMap::new();
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::Immediate).map_err(storage)?;
    txn.set_quick_repair(true);
    txn.open_table(OFFSETS).map_err(storage)?;
    txn.open_table(OFFSET_META).map_err(storage)?;
    let generation =
        txn.open_table(META).map_err(storage)?.get("wal_generation").map_err(storage)?.map_or(0, |v| v.value());
    let (mut wal, replay) = Wal::open(&path.with_extension("wal"), generation).map_err(storage)?;
    let replayed = replay.len();
    if !replay.is_empty() {
        apply(&txn, replay)?;
    }
    let next = Wal::new_generation();
    txn.open_table(META).map_err(storage)?.insert("wal_generation", next).map_err(storage)?;
    for topic in topics {
        let name = table_name(topic);
        let t = txn.open_table(table(&name)).map_err(storage)?;
        let mut next_offsets = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let next = match t.range((p, 0)..=(p, u64::MAX)).map_err(storage)?.next_back() {
                Some(entry) => entry.map_err(storage)?.0.value().1 + 1,
                None => 0,
            };
            next_offsets.push(next);
        }
        heads.insert(topic.clone(), next_offsets);
    }
    txn.commit().map_err(storage)?;
    wal.reset(next).map_err(storage)?;
    // New files (the log, the write-ahead file) are only durable once their directory is.
    sync_dir(path)?;
    tracing::info!(
        open_ms = opened.duration_since(started).as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        replayed,
        "embedded log opened"
    );
    Ok(Opened { db, wal, heads })
}

/// `fsync`s the directory holding `file`, so that files created in it survive a crash.
pub(crate) fn sync_dir(file: &Path) -> Result<(), LogError> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| storage(format!("fsync {}: {e}", dir.display())))
}

impl EmbeddedLog {
    /// Opens (or creates) the log at `path` with `topics`, each of `partitions` partitions.
    pub fn open(path: &Path, topics: &[String], partitions: u32) -> Result<Self, LogError> {
        Self::open_with(path, topics, partitions, EmbeddedOptions::default())
    }

    /// [`EmbeddedLog::open`] with explicit tuning.
    pub fn open_with(
        path: &Path,
        topics: &[String],
        partitions: u32,
        options: EmbeddedOptions,
    ) -> Result<Self, LogError> {
        let Opened { db, wal, heads } = open_files(path, topics, partitions, options.cache_bytes)?;
        let heads = heads
            .into_iter()
            .map(|(topic, next)| (topic, next.into_iter().map(|n| watch::channel(n).0).collect()))
            .collect();
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            options,
            db: Mutex::new(DbSlot { db: Some(Arc::new(db)), compacting: false }),
            compacted: Condvar::new(),
            heads,
            failure: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel();
        let topics = topics.to_vec();
        let handle = writer::spawn(shared.clone(), wal, rx, topics, partitions)?;
        Ok(EmbeddedLog { shared, writer: tx, writer_thread: Mutex::new(Some(handle)), partitions })
    }
}

/// Replays write-ahead entries into `txn` (idempotent: the same keys get the same values).
fn apply(txn: &redb::WriteTransaction, entries: Vec<Entry>) -> Result<(), LogError> {
    for e in entries {
        match e {
            Entry::Record { topic, partition, offset, stored } => {
                let name = table_name(&topic);
                let mut t = txn.open_table(table(&name)).map_err(storage)?;
                t.insert((partition, offset), stored.as_slice()).map_err(storage)?;
            }
            Entry::Offset { group, topic, partition, offset, metadata } => {
                let key = (group.as_str(), topic.as_str(), partition);
                txn.open_table(OFFSETS).map_err(storage)?.insert(key, offset).map_err(storage)?;
                txn.open_table(OFFSET_META).map_err(storage)?.insert(key, metadata.as_str()).map_err(storage)?;
            }
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    herald_schemas::Timestamp::now().millis()
}

#[cfg(test)]
fn encode_stored(buf: &mut Vec<u8>, ts: i64, key: &str, value: &[u8]) {
    buf.extend_from_slice(&ts.to_le_bytes());
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(value);
}

/// Where a single record's entry has its timestamp (never negative), a run of records has
/// this marker: `mark | timestamp i64 | count u32 | (key length u32 | key | value length u32
/// | value) × count`, under the key of its last record (`docs/adr/0020-log-runs.md`).
const RUN_MARK: [u8; 8] = i64::MIN.to_le_bytes();
/// Where a run's record count is, and where its first record starts.
const RUN_COUNT_AT: usize = 16;
const RUN_HEADER: usize = 20;
/// A run is closed once it holds this many bytes; a record as large is a run of its own.
pub(crate) const RUN_BYTES: usize = 64 << 10;

/// Starts a run of records written at `ts` in `buf` (cleared); its count is set by
/// [`close_run`].
fn start_run(buf: &mut Vec<u8>, ts: i64) {
    buf.clear();
    buf.extend_from_slice(&RUN_MARK);
    buf.extend_from_slice(&ts.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
}

fn push_run(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
    buf.extend_from_slice(value);
}

fn close_run(buf: &mut [u8], count: u32) {
    buf[RUN_COUNT_AT..RUN_HEADER].copy_from_slice(&count.to_le_bytes());
}

/// The little-endian `N` bytes of `raw` at `at`, if it has them.
fn le_at<const N: usize>(raw: &[u8], at: usize) -> Option<[u8; N]> {
    raw.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// The timestamp of an entry (a run or a single record); `None` if it is too short.
fn entry_ts(raw: &[u8]) -> Option<i64> {
    let at = if raw.starts_with(&RUN_MARK) { RUN_MARK.len() } else { 0 };
    le_at(raw, at).map(i64::from_le_bytes)
}

/// How many records an entry holds.
fn entry_records(raw: &[u8]) -> u64 {
    match raw.starts_with(&RUN_MARK) {
        true => le_at(raw, RUN_COUNT_AT).map_or(0, |b| u32::from_le_bytes(b) as u64),
        false => 1,
    }
}

/// Appends to `out` the records of the entry stored under `last` whose offsets are `from` or
/// later, until `out` holds `max`.
fn decode_entry(last: u64, raw: &[u8], from: u64, out: &mut Vec<Stored>, max: usize) -> Result<(), LogError> {
    if !raw.starts_with(&RUN_MARK) {
        if last >= from && out.len() < max {
            out.push(decode_stored(last, raw)?);
        }
        return Ok(());
    }
    let bad = || LogError::Storage(format!("corrupt log run ending at offset {last}"));
    let u32_at = |at: usize| le_at(raw, at).map(|b| u32::from_le_bytes(b) as usize).ok_or_else(bad);
    let ts = entry_ts(raw).ok_or_else(bad)?;
    let count = u32_at(RUN_COUNT_AT)? as u64;
    let first = (last + 1).checked_sub(count).filter(|_| count > 0).ok_or_else(bad)?;
    let mut at = RUN_HEADER;
    for offset in first..=last {
        if out.len() >= max {
            break;
        }
        let klen = u32_at(at)?;
        let key_at = at + 4;
        let vlen = u32_at(key_at + klen)?;
        let value_at = key_at + klen + 4;
        let end = value_at.checked_add(vlen).filter(|&e| e <= raw.len()).ok_or_else(bad)?;
        if offset >= from {
            let key = std::str::from_utf8(&raw[key_at..key_at + klen]).map_err(|_| bad())?;
            out.push(Stored { offset, key: key.to_owned(), value: raw[value_at..end].to_vec(), timestamp_ms: ts });
        }
        at = end;
    }
    Ok(())
}

fn decode_stored(offset: u64, raw: &[u8]) -> Result<Stored, LogError> {
    let bad = || LogError::Storage(format!("corrupt log entry at offset {offset}"));
    let ts = i64::from_le_bytes(le_at(raw, 0).ok_or_else(bad)?);
    let klen = u32::from_le_bytes(le_at(raw, 8).ok_or_else(bad)?) as usize;
    let key = raw.get(12..12 + klen).ok_or_else(bad)?;
    let key = String::from_utf8(key.to_vec()).map_err(|_| bad())?;
    Ok(Stored { offset, key, value: raw[12 + klen..].to_vec(), timestamp_ms: ts })
}

#[async_trait]
impl EventLog for EmbeddedLog {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn append_with_offsets(&self, records: Vec<Record>) -> Result<Vec<u64>, LogError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = self.shared.check_write(&records, 0, "one append")?;
        let started = Instant::now();
        let (done, rx) = oneshot::channel();
        self.writer.send(Command::Append { records, bytes, done }).map_err(|_| LogError::Closed)?;
        let result = rx.await.map_err(|_| LogError::Closed)?;
        metrics::histogram!("herald_log_append_seconds", "backend" => "embedded")
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn read_at(&self, topic: &str, partition: u32, offset: u64) -> Result<Option<Stored>, LogError> {
        self.shared.head(topic, partition)?;
        let shared = self.shared.clone();
        let name = table_name(topic);
        tokio::task::spawn_blocking(move || -> Result<Option<Stored>, LogError> {
            let db = shared.db()?;
            let read = db.begin_read().map_err(storage)?;
            let t = read.open_table(table(&name)).map_err(storage)?;
            // The entry holding `offset` is the first one stored under it or later.
            let Some(entry) = t.range((partition, offset)..=(partition, u64::MAX)).map_err(storage)?.next() else {
                return Ok(None);
            };
            let (k, v) = entry.map_err(storage)?;
            let mut out = Vec::with_capacity(1);
            decode_entry(k.value().1, v.value(), offset, &mut out, 1)?;
            Ok(out.pop().filter(|r| r.offset == offset))
        })
        .await
        .map_err(storage)?
    }

    fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    async fn enforce_retention(&self, retention: &Retention) -> Result<u64, LogError> {
        let shared = self.shared.clone();
        let now = now_ms();
        let consumed_cutoff = now - retention.consumed.as_millis() as i64;
        let by_age: Vec<(String, i64)> =
            retention.by_age.iter().map(|(t, keep)| (t.clone(), now - keep.as_millis() as i64)).collect();
        tokio::task::spawn_blocking(move || trim(&shared, consumed_cutoff, &by_age)).await.map_err(storage)?
    }

    async fn lag(&self, group: &str, assignments: &[Assignment]) -> Result<Vec<super::PartitionLag>, LogError> {
        lag::lag(&self.shared, group, assignments)
    }

    async fn consume(
        &self,
        group: &str,
        assignments: &[Assignment],
    ) -> Result<Vec<Box<dyn PartitionConsumer>>, LogError> {
        for a in assignments {
            self.shared.head(&a.topic, a.partition)?;
        }
        let (shared, owned_group, owned) = (self.shared.clone(), group.to_owned(), assignments.to_vec());
        let committed = tokio::task::spawn_blocking(move || -> Result<Vec<Position>, LogError> {
            let db = shared.db()?;
            let read = db.begin_read().map_err(storage)?;
            let offsets = read.open_table(OFFSETS).map_err(storage)?;
            let metas = read.open_table(OFFSET_META).map_err(storage)?;
            owned
                .iter()
                .map(|a| {
                    let key = (owned_group.as_str(), a.topic.as_str(), a.partition);
                    let committed = offsets.get(key).map_err(storage)?.map(|v| v.value()).unwrap_or(0);
                    Ok(match metas.get(key).map_err(storage)? {
                        Some(meta) => Position::parse(committed, meta.value()),
                        None => Position::at(committed),
                    })
                })
                .collect()
        })
        .await
        .map_err(storage)??;
        let mut consumers: Vec<Box<dyn PartitionConsumer>> = Vec::new();
        for (a, start) in assignments.iter().zip(committed) {
            let head = self.shared.head(&a.topic, a.partition)?;
            consumers.push(Box::new(Consumer {
                shared: self.shared.clone(),
                writer: self.writer.clone(),
                group: group.to_owned(),
                assignment: a.clone(),
                position: start.next_offset,
                start,
                head: head.subscribe(),
            }));
        }
        Ok(consumers)
    }
}

/// Retention, run in a blocking thread. Per partition of a consumed topic, deletes the
/// oldest records while they are older than `consumed_cutoff_ms`, below every group's
/// committed offset, and not the partition's last record (whose offset fixes the next one
/// after a restart). Topics in `by_age` lose their records older than their cutoff, with
/// the same exception for the last record.
fn trim(shared: &Shared, consumed_cutoff_ms: i64, by_age: &[(String, i64)]) -> Result<u64, LogError> {
    let mut limits: Vec<(String, u32, u64, i64)> = Vec::new();
    {
        let db = shared.db()?;
        let read = db.begin_read().map_err(storage)?;
        let offsets = read.open_table(OFFSETS).map_err(storage)?;
        let mut floors: HashMap<(String, u32), u64> = HashMap::new();
        for entry in offsets.iter().map_err(storage)? {
            let (k, v) = entry.map_err(storage)?;
            let (_, topic, partition) = k.value();
            if by_age.iter().any(|(t, _)| t == topic) {
                continue;
            }
            let floor = floors.entry((topic.to_owned(), partition)).or_insert(u64::MAX);
            *floor = (*floor).min(v.value());
        }
        limits.extend(floors.into_iter().map(|((t, p), floor)| (t, p, floor, consumed_cutoff_ms)));
        for (topic, cutoff) in by_age {
            for p in 0..shared.heads.get(topic).map_or(0, |h| h.len() as u32) {
                limits.push((topic.clone(), p, u64::MAX, *cutoff));
            }
        }
    }
    let mut removed = 0u64;
    for (topic, partition, floor, cutoff_ms) in limits {
        let Ok(head) = shared.head(&topic, partition) else { continue };
        let limit = floor.min(head.borrow().saturating_sub(1));
        loop {
            let (entries, records) = trim_chunk(&*shared.db()?, &topic, partition, limit, cutoff_ms)?;
            removed += records;
            if entries < TRIM_CHUNK {
                break;
            }
        }
    }
    metrics::counter!("herald_log_trimmed_records_total").increment(removed);
    Ok(removed)
}

/// Deletes up to `TRIM_CHUNK` entries (runs or single records) of `partition` wholly below
/// `limit` and older than `cutoff_ms`, in one transaction: (entries, records) deleted.
fn trim_chunk(
    db: &Database,
    topic: &str,
    partition: u32,
    limit: u64,
    cutoff_ms: i64,
) -> Result<(usize, u64), LogError> {
    let mut txn = db.begin_write().map_err(storage)?;
    // Made durable by the writer's next checkpoint; losing a trim is harmless.
    txn.set_durability(Durability::None).map_err(storage)?;
    let n = {
        let name = table_name(topic);
        let mut t = txn.open_table(table(&name)).map_err(storage)?;
        let (mut doomed, mut records) = (Vec::new(), 0);
        for entry in t.range((partition, 0)..(partition, limit)).map_err(storage)?.take(TRIM_CHUNK) {
            let (k, v) = entry.map_err(storage)?;
            if entry_ts(v.value()).is_none_or(|ts| ts >= cutoff_ms) {
                break; // records are in time order: the rest are newer
            }
            records += entry_records(v.value());
            doomed.push(k.value().1);
        }
        for offset in &doomed {
            t.remove((partition, *offset)).map_err(storage)?;
        }
        (doomed.len(), records)
    };
    txn.commit().map_err(storage)?;
    Ok(n)
}

struct Consumer {
    shared: Arc<Shared>,
    writer: mpsc::Sender<Command>,
    group: String,
    assignment: Assignment,
    position: u64,
    start: Position,
    head: watch::Receiver<u64>,
}

#[async_trait]
impl PartitionConsumer for Consumer {
    fn assignment(&self) -> &Assignment {
        &self.assignment
    }

    fn start(&self) -> &Position {
        &self.start
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
            let db = shared.db()?;
            let read = db.begin_read().map_err(storage)?;
            let name = table_name(&topic);
            let t = read.open_table(table(&name)).map_err(storage)?;
            let mut out = Vec::new();
            for entry in t.range((partition, position)..=(partition, u64::MAX)).map_err(storage)? {
                if out.len() >= max {
                    break;
                }
                let (k, v) = entry.map_err(storage)?;
                decode_entry(k.value().1, v.value(), position, &mut out, max)?;
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

    async fn unread(&mut self) -> Result<u64, LogError> {
        Ok(self.head.borrow().saturating_sub(self.position))
    }

    async fn commit(&mut self, records: Vec<Record>, position: Position) -> Result<(), LogError> {
        let metadata = position.metadata();
        let (group, topic) = (self.group.clone(), self.assignment.topic.clone());
        let extra = writer::offset_cost(&group, &topic, &metadata);
        let bytes = self.shared.check_write(&records, extra, "one commit")?;
        let (done, rx) = oneshot::channel();
        self.writer
            .send(Command::Commit {
                group,
                topic,
                partition: self.assignment.partition,
                offset: position.next_offset,
                metadata,
                records,
                bytes,
                done,
            })
            .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log written before runs (one entry per record, under its own offset) reads back
    /// with the runs written after it, and continues its offsets.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn single_record_entries_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        let topics = vec!["t.messages".to_owned()];
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(table(&table_name("t.messages"))).unwrap();
                for offset in 0..3u64 {
                    let mut buf = Vec::new();
                    encode_stored(&mut buf, 1_700_000_000_000 + offset as i64, "old.example", &[offset as u8; 5]);
                    t.insert((1, offset), buf.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let log = EmbeddedLog::open(&path, &topics, 2).unwrap();
        let record = |fill: u8| Record {
            topic: "t.messages".into(),
            partition: 1,
            key: "new.example".into(),
            value: vec![fill; 4],
        };
        assert_eq!(log.append_with_offsets(vec![record(3), record(4)]).await.unwrap(), vec![3, 4]);
        let old = log.read_at("t.messages", 1, 1).await.unwrap().unwrap();
        assert_eq!(
            (old.key.as_str(), old.value.as_slice(), old.timestamp_ms),
            ("old.example", &[1u8; 5][..], 1_700_000_000_001)
        );
        let a = Assignment { topic: "t.messages".into(), partition: 1 };
        let mut c = log.consume("g", &[a]).await.unwrap().pop().unwrap();
        c.commit(Vec::new(), Position::at(2)).await.unwrap();
        let mut c =
            log.consume("g", &[Assignment { topic: "t.messages".into(), partition: 1 }]).await.unwrap().pop().unwrap();
        let got: Vec<(u64, String, u8)> = c
            .poll(10, Duration::from_millis(100))
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.offset, r.key, r.value[0]))
            .collect();
        assert_eq!(got, vec![(2, "old.example".into(), 2), (3, "new.example".into(), 3), (4, "new.example".into(), 4)]);
    }

    #[test]
    fn a_corrupt_run_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        start_run(&mut buf, 5);
        push_run(&mut buf, "k", b"value");
        close_run(&mut buf, 2); // says two records, holds one
        let mut out = Vec::new();
        assert!(decode_entry(9, &buf, 0, &mut out, 10).is_err());
        close_run(&mut buf, 11); // more records than offsets before it
        assert!(decode_entry(9, &buf, 0, &mut out, 10).is_err());
        close_run(&mut buf, 1);
        out.clear();
        decode_entry(9, &buf, 0, &mut out, 10).unwrap();
        assert_eq!(
            (out[0].offset, out[0].key.as_str(), out[0].value.as_slice(), out[0].timestamp_ms),
            (9, "k", &b"value"[..], 5)
        );
    }
}

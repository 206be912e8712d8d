//! The embedded log's edges (issue 10, items 2 and 11): records and groups over the
//! write-ahead frame's limits, a group at the cap replayed after a crash, a quick repair
//! after a crash, and space given back to the disk by compaction.
//!
//! A crash is simulated as in `log_conformance.rs`: the files are copied while the log runs
//! (no clean close, no checkpoint since the appends), then the copies are opened.

use herald_engine::log::embedded::{EmbeddedLog, EmbeddedOptions, MAX_GROUP_BYTES};
use herald_engine::log::{Assignment, EventLog, LogError, Record, Retention, Topics, MAX_RECORD_BYTES};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 2;

fn names() -> Vec<String> {
    Topics { prefix: "t".into(), retry_tiers: 1 }.all()
}

/// No checkpoint unless asked: what the write-ahead file holds is what a crash leaves.
fn no_checkpoints() -> EmbeddedOptions {
    EmbeddedOptions {
        checkpoint_interval: Duration::from_secs(3600),
        checkpoint_bytes: u64::MAX,
        compact_when_idle: None,
        ..EmbeddedOptions::default()
    }
}

fn record(topic: &str, partition: u32, fill: u8, len: usize) -> Record {
    Record { topic: topic.into(), partition, key: "k".into(), value: vec![fill; len] }
}

/// Copies the log's files as a crash would leave them.
fn crash_copy(from: &Path, to: &Path) {
    for name in ["log.redb", "log.wal"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

/// Every record of `topic`'s `partition`: (offset, first byte, length).
async fn records(log: &Arc<dyn EventLog>, topic: &str, partition: u32) -> Vec<(u64, u8, usize)> {
    let group = herald_schemas::MessageId::generate().0;
    let mut c = log.consume(&group, &[Assignment { topic: topic.into(), partition }]).await.unwrap().pop().unwrap();
    let mut out = Vec::new();
    loop {
        let got = c.poll(16, Duration::from_millis(200)).await.unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(got.iter().map(|r| (r.offset, r.value[0], r.value.len())));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_limit_is_refused_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> =
        Arc::new(EmbeddedLog::open(&dir.path().join("log.redb"), &names(), PARTITIONS).unwrap());
    let err = log.append(vec![record("t.bodies", 0, 1, MAX_RECORD_BYTES + 1)]).await.unwrap_err();
    assert!(matches!(err, LogError::TooLarge { .. }), "{err}");
    // An append that fits no group is refused whole, not cut into frames.
    let err =
        log.append((0..3).map(|i| record("t.bodies", 0, i, MAX_GROUP_BYTES / 3 + 1)).collect()).await.unwrap_err();
    assert!(matches!(err, LogError::TooLarge { .. }), "{err}");
    assert_eq!(log.append_with_offsets(vec![record("t.bodies", 0, 9, 10)]).await.unwrap(), vec![0]);
    assert_eq!(records(&log, "t.bodies", 0).await, vec![(0, 9, 10)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_at_the_cap_replays_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let log: Arc<dyn EventLog> =
        Arc::new(EmbeddedLog::open_with(&path, &names(), PARTITIONS, no_checkpoints()).unwrap());
    // One append as large as a group may be: two records filling the cap.
    let each = MAX_GROUP_BYTES / 2 - 64;
    let at_cap = vec![record("t.bodies", 1, 1, each), record("t.bodies", 1, 2, each)];
    assert_eq!(log.append_with_offsets(at_cap).await.unwrap(), vec![0, 1]);
    // Three appends of 30 MiB sent together: more than one group holds; each is its frame.
    let big = 30 << 20;
    let appends: Vec<_> = (3..6u8)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(vec![record("t.bodies", 0, i, big)]).await })
        })
        .collect();
    for a in appends {
        a.await.unwrap().unwrap();
    }
    let copy = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), copy.path());
    drop(log);

    let log: Arc<dyn EventLog> =
        Arc::new(EmbeddedLog::open(&copy.path().join("log.redb"), &names(), PARTITIONS).unwrap());
    assert_eq!(records(&log, "t.bodies", 1).await, vec![(0, 1, each), (1, 2, each)]);
    let mut fills: Vec<u8> = records(&log, "t.bodies", 0).await.iter().map(|r| r.1).collect();
    fills.sort();
    assert_eq!(fills, vec![3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_needs_no_full_repair() {
    // Checkpoints record redb's allocator state (quick repair): the file a crash leaves
    // opens without walking the whole database.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    //
    // Checkpoints are triggered by size only (every ~5 appends here), so that none runs
    // while the files are copied: a copy taken during a commit is no state a crash leaves
    // (a killed process keeps every write it finished, and no write it had not begun).
    let options = EmbeddedOptions {
        checkpoint_interval: Duration::from_secs(3600),
        checkpoint_bytes: 50_000,
        ..EmbeddedOptions::default()
    };
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open_with(&path, &names(), PARTITIONS, options).unwrap());
    for i in 0..20u8 {
        log.append(vec![record("t.messages", 0, i, 10_000)]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // the last checkpoint ends
    log.append(vec![record("t.messages", 0, 99, 10)]).await.unwrap(); // under the size: only in the write-ahead file
    let copy = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), copy.path());
    drop(log);

    let repaired = Arc::new(AtomicBool::new(false));
    {
        let flag = repaired.clone();
        let db = redb::Database::builder()
            .set_repair_callback(move |_| flag.store(true, Ordering::SeqCst))
            .create(copy.path().join("log.redb"))
            .unwrap();
        drop(db);
    }
    assert!(!repaired.load(Ordering::SeqCst), "a full repair ran");
    let log: Arc<dyn EventLog> =
        Arc::new(EmbeddedLog::open(&copy.path().join("log.redb"), &names(), PARTITIONS).unwrap());
    assert_eq!(records(&log, "t.messages", 0).await.len(), 21, "and the write-ahead file replayed the rest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_freed_by_retention_goes_back_to_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let options = EmbeddedOptions { compact_when_idle: Some(Duration::from_millis(300)), ..EmbeddedOptions::default() };
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open_with(&path, &names(), PARTITIONS, options).unwrap());
    for i in 0..40u8 {
        log.append(vec![record("t.bodies", u32::from(i % 2), i, 2 << 20)]).await.unwrap();
    }
    let full = std::fs::metadata(&path).unwrap().len();
    assert!(full > 80 << 20, "{full}");
    // Every body but each partition's last is past a zero retention.
    let removed = log
        .enforce_retention(&Retention { consumed: Duration::ZERO, by_age: vec![("t.bodies".into(), Duration::ZERO)] })
        .await
        .unwrap();
    assert_eq!(removed, 38);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = full;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        now = std::fs::metadata(&path).unwrap().len();
        if now < full / 4 {
            break;
        }
    }
    assert!(now < full / 4, "the file stayed at {now} bytes of {full}");
    // Still a working log with what was kept.
    let kept: Vec<u8> = records(&log, "t.bodies", 0).await.iter().map(|r| r.1).collect();
    assert_eq!(kept, vec![38]);
    log.append(vec![record("t.bodies", 0, 7, 100)]).await.unwrap();
}

/// Records of several partitions and topics interleaved in one append (the writer takes the
/// next offset per run of one partition) get each partition's own consecutive offsets, the
/// next append goes on from there, and a crash copy replays the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_partitions_in_one_group_get_their_own_offsets() {
    let (dir, copy) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (names()[0].clone(), names()[1].clone());
    let log: Arc<dyn EventLog> =
        Arc::new(EmbeddedLog::open_with(&dir.path().join("log.redb"), &names(), PARTITIONS, no_checkpoints()).unwrap());
    let first = [(&a, 0, 1), (&a, 1, 2), (&a, 0, 3), (&b, 0, 4), (&a, 1, 5), (&a, 0, 6)];
    log.append(first.iter().map(|(t, p, f)| record(t, *p, *f, 10)).collect()).await.unwrap();
    log.append(vec![record(&a, 0, 7, 10), record(&a, 1, 8, 10)]).await.unwrap();
    let expect = |fills: &[u8]| fills.iter().enumerate().map(|(i, f)| (i as u64, *f, 10)).collect::<Vec<_>>();
    for log in [log.clone(), {
        crash_copy(dir.path(), copy.path());
        Arc::new(EmbeddedLog::open(&copy.path().join("log.redb"), &names(), PARTITIONS).unwrap()) as Arc<dyn EventLog>
    }] {
        assert_eq!(records(&log, &a, 0).await, expect(&[1, 3, 6, 7]));
        assert_eq!(records(&log, &a, 1).await, expect(&[2, 5, 8]));
        assert_eq!(records(&log, &b, 0).await, expect(&[4]));
        assert_eq!(records(&log, &b, 1).await, expect(&[]));
    }
}

/// Records are stored as runs: each partition's records of a group in entries of at most
/// 64 KiB, a larger record alone (`docs/adr/0020-log-runs.md`). Every offset reads back
/// from the middle of a run, by position and by a consumer starting anywhere, after a
/// crash, and retention removes whole runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_read_back_from_any_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let log: Arc<dyn EventLog> =
        Arc::new(EmbeddedLog::open_with(&path, &names(), PARTITIONS, no_checkpoints()).unwrap());
    // One append interleaving both partitions, with a 200 KB record amid 700 small ones
    // (over 64 KiB of them, so partition 0 needs several runs).
    let mut batch = Vec::new();
    for i in 0..700u32 {
        batch.push(record("t.messages", i % 2, (i % 251) as u8, 150 + (i as usize % 7)));
        if i == 301 {
            batch.push(record("t.messages", 0, 0xEE, 200_000));
        }
    }
    let offsets = log.append_with_offsets(batch.clone()).await.unwrap();
    let mut expected: [Vec<(u64, u8, usize)>; 2] = Default::default();
    for (r, &o) in batch.iter().zip(&offsets) {
        assert_eq!(o, expected[r.partition as usize].len() as u64, "offsets are consecutive per partition");
        expected[r.partition as usize].push((o, r.value[0], r.value.len()));
    }
    // A second group continues each partition's offsets.
    let more =
        log.append_with_offsets(vec![record("t.messages", 0, 7, 10), record("t.messages", 1, 8, 11)]).await.unwrap();
    assert_eq!(more, vec![expected[0].len() as u64, expected[1].len() as u64]);
    expected[0].push((more[0], 7, 10));
    expected[1].push((more[1], 8, 11));
    for p in 0..PARTITIONS {
        assert_eq!(records(&log, "t.messages", p).await, expected[p as usize]);
        for &(offset, first, len) in &expected[p as usize] {
            let r = log.read_at("t.messages", p, offset).await.unwrap().expect("every offset reads back");
            assert_eq!((r.offset, r.value[0], r.value.len(), r.key.as_str()), (offset, first, len, "k"));
        }
        let end = expected[p as usize].len() as u64;
        assert!(log.read_at("t.messages", p, end).await.unwrap().is_none(), "nothing past the head");
    }
    // A consumer that committed an offset in the middle of a run starts exactly there.
    let group = "mid";
    let a = Assignment { topic: "t.messages".into(), partition: 0 };
    let mut c = log.consume(group, std::slice::from_ref(&a)).await.unwrap().pop().unwrap();
    let first = c.poll(123, Duration::from_millis(200)).await.unwrap();
    assert_eq!(first.len(), 123, "a poll returns at most what it asked for, across runs");
    c.commit(Vec::new(), herald_engine::log::position::Position::at(123)).await.unwrap();
    let mut c = log.consume(group, std::slice::from_ref(&a)).await.unwrap().pop().unwrap();
    let next = c.poll(5, Duration::from_millis(200)).await.unwrap();
    assert_eq!(next.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![123, 124, 125, 126, 127]);

    // After a crash (no checkpoint: the runs come back from the write-ahead file) the same.
    let copy = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), copy.path());
    let reopened: Arc<dyn EventLog> =
        Arc::new(EmbeddedLog::open(&copy.path().join("log.redb"), &names(), PARTITIONS).unwrap());
    for p in 0..PARTITIONS {
        assert_eq!(records(&reopened, "t.messages", p).await, expected[p as usize]);
    }
    assert_eq!(
        reopened.append_with_offsets(vec![record("t.messages", 0, 1, 1)]).await.unwrap(),
        vec![expected[0].len() as u64]
    );

    // Retention by age removes whole runs below the partition's last record, never the
    // run holding it, and counts records.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let retention = Retention {
        consumed: Duration::from_secs(3600),
        by_age: vec![("t.messages".into(), Duration::from_millis(1))],
    };
    let removed = reopened.enforce_retention(&retention).await.unwrap();
    assert!(removed >= expected[0].len() as u64, "removed {removed}");
    let left = records(&reopened, "t.messages", 0).await;
    assert_eq!(left.last().map(|r| r.0), Some(expected[0].len() as u64), "the last record stays");
    assert!(reopened.read_at("t.messages", 0, 0).await.unwrap().is_none(), "trimmed offsets are gone");
}

//! One conformance suite for every `EventLog` backend: the same assertions run against
//! the embedded log and against a real Kafka broker (`HERALD_TEST_KAFKA=host:port`, set by
//! `ops/scripts/test.sh`; without it the Kafka tests fail rather than skip).

use herald_engine::log::{
    embedded::EmbeddedLog, kafka, Assignment, EventLog, PartitionConsumer, Position, Record, Retention, Stored, Topics,
};
use herald_engine::routing::Router;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 4;

/// Opens the backend under test; calling it again reopens the same log (a restart).
type Opener = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn EventLog>>>>>;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", herald_schemas::MessageId::generate())
}

fn topics(prefix: &str) -> Topics {
    Topics { prefix: prefix.to_owned(), retry_tiers: 1 }
}

fn embedded(dir: &std::path::Path, prefix: &str) -> Opener {
    let path = dir.join("log.redb");
    let names = topics(prefix).all();
    Box::new(move || {
        let (path, names) = (path.clone(), names.clone());
        Box::pin(async move { Arc::new(EmbeddedLog::open(&path, &names, PARTITIONS).unwrap()) as Arc<dyn EventLog> })
    })
}

fn kafka_brokers() -> String {
    std::env::var("HERALD_TEST_KAFKA")
        .expect("HERALD_TEST_KAFKA=host:port must name a real Kafka broker (ops/scripts/test.sh starts one)")
}

fn kafka(prefix: &str) -> Opener {
    let names = topics(prefix).all();
    let brokers = kafka_brokers();
    Box::new(move || {
        let (names, brokers) = (names.clone(), brokers.clone());
        Box::pin(async move {
            let settings = kafka::KafkaSettings::single_broker(brokers, PARTITIONS);
            Arc::new(kafka::KafkaLog::connect(settings, &names).await.unwrap()) as Arc<dyn EventLog>
        })
    })
}

fn record(topic: &str, partition: u32, key: &str, value: String) -> Record {
    Record { topic: topic.to_owned(), partition, key: key.to_owned(), value: value.into_bytes() }
}

/// Polls until `n` records arrived (or 60 s passed).
async fn read_n(consumer: &mut Box<dyn PartitionConsumer>, n: usize) -> Vec<Stored> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(consumer.poll(n - out.len(), Duration::from_millis(500)).await.unwrap());
    }
    out
}

async fn one(log: &Arc<dyn EventLog>, group: &str, topic: &str, partition: u32) -> Box<dyn PartitionConsumer> {
    let mut c = log.consume(group, &[Assignment { topic: topic.to_owned(), partition }]).await.unwrap();
    c.pop().unwrap()
}

/// Retention of consumed records only.
fn kept(secs: u64) -> Retention {
    Retention { consumed: Duration::from_secs(secs), by_age: vec![] }
}

fn text(r: &Stored) -> String {
    String::from_utf8(r.value.clone()).unwrap()
}

async fn ordering_within_a_partition(open: Opener, prefix: &str) {
    let log = open().await;
    let topic = topics(prefix).messages();
    for chunk in 0..5 {
        let batch = (0..20).map(|i| record(&topic, 2, "example.org", format!("m{}", chunk * 20 + i))).collect();
        log.append(batch).await.unwrap();
    }
    let mut c = one(&log, &unique("g"), &topic, 2).await;
    let got = read_n(&mut c, 100).await;
    let values: Vec<String> = got.iter().map(text).collect();
    let expected: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    assert_eq!(values, expected, "records of one partition come back in append order");
    assert!(got.windows(2).all(|w| w[1].offset == w[0].offset + 1), "offsets are consecutive");
    assert!(got.iter().all(|r| r.key == "example.org"));
}

async fn keyed_placement(open: Opener, prefix: &str) {
    let log = open().await;
    let topic = topics(prefix).messages();
    let router = Router::new(PARTITIONS, HashMap::new());
    let domains = ["a.test", "b.test", "c.test", "d.test", "e.test", "gmail.test", "x.example"];
    let mut expected: HashMap<u32, Vec<String>> = HashMap::new();
    let mut batch = Vec::new();
    for i in 0..70 {
        let domain = domains[i % domains.len()];
        let p = router.partition(domain, &format!("id{i}"));
        expected.entry(p).or_default().push(format!("{domain}:{i}"));
        batch.push(record(&topic, p, domain, format!("{domain}:{i}")));
    }
    log.append(batch).await.unwrap();
    let group = unique("g");
    for p in 0..PARTITIONS {
        let want = expected.remove(&p).unwrap_or_default();
        let mut c = one(&log, &group, &topic, p).await;
        let got = read_n(&mut c, want.len()).await;
        // Nothing more than expected is there either.
        let extra = c.poll(10, Duration::from_millis(300)).await.unwrap();
        assert!(extra.is_empty(), "partition {p} holds unexpected records");
        assert_eq!(got.iter().map(text).collect::<Vec<_>>(), want, "partition {p}");
        for r in &got {
            assert_eq!(router.partition(&r.key, "any"), p, "key {} sits in its own partition", r.key);
        }
    }
}

async fn offsets_resume_after_restart(open: Opener, prefix: &str) {
    let topic = topics(prefix).messages();
    let group = unique("g");
    {
        let log = open().await;
        log.append((0..10).map(|i| record(&topic, 1, "k.test", format!("r{i}"))).collect()).await.unwrap();
        let mut c = one(&log, &group, &topic, 1).await;
        let got = read_n(&mut c, 10).await;
        assert_eq!(got.len(), 10);
        c.commit(vec![], Position::at(got[5].offset + 1)).await.unwrap();
    }
    // A new process: everything reopened.
    let log = open().await;
    let mut c = one(&log, &group, &topic, 1).await;
    let got = read_n(&mut c, 4).await;
    assert_eq!(
        got.iter().map(text).collect::<Vec<_>>(),
        vec!["r6", "r7", "r8", "r9"],
        "resumes after the committed offset"
    );
}

async fn no_loss_when_the_consumer_dies_before_commit(open: Opener, prefix: &str) {
    let topic = topics(prefix).messages();
    let group = unique("g");
    let log = open().await;
    log.append((0..6).map(|i| record(&topic, 0, "k.test", format!("r{i}"))).collect()).await.unwrap();
    {
        let mut c = one(&log, &group, &topic, 0).await;
        let first = read_n(&mut c, 3).await;
        c.commit(vec![], Position::at(first[2].offset + 1)).await.unwrap();
        // Processes r3..r5, then dies before committing them.
        let processed = read_n(&mut c, 3).await;
        assert_eq!(processed.len(), 3);
    }
    let mut c = one(&log, &group, &topic, 0).await;
    let again = read_n(&mut c, 3).await;
    assert_eq!(
        again.iter().map(text).collect::<Vec<_>>(),
        vec!["r3", "r4", "r5"],
        "uncommitted records are delivered again"
    );
    let more = c.poll(10, Duration::from_millis(500)).await.unwrap();
    assert!(more.is_empty(), "only the uncommitted records come back");
}

async fn commit_appends_and_commits_together(open: Opener, prefix: &str) {
    let t = topics(prefix);
    let group = unique("g");
    {
        let log = open().await;
        log.append((0..6).map(|i| record(&t.messages(), 2, "k.test", format!("m{i}"))).collect()).await.unwrap();
        let mut c = one(&log, &group, &t.messages(), 2).await;
        assert_eq!(c.start(), &Position::at(0), "a new group starts at the beginning");
        let got = read_n(&mut c, 6).await;
        // m0, m1, m3 and m5 finished (m2 and m4 still in flight): their output and the
        // position go in one commit.
        let out =
            vec![record(&t.attempts(), 2, "k.test", "a0".into()), record(&t.attempts(), 2, "k.test", "a1".into())];
        let position = Position { next_offset: got[2].offset, finished: vec![got[3].offset, got[5].offset] };
        c.commit(out, position).await.unwrap();
    }
    let log = open().await;
    let c = one(&log, &group, &t.messages(), 2).await;
    let start = c.start().clone();
    let mut c = c;
    let again = read_n(&mut c, 4).await;
    assert!(!start.is_done(again[0].offset), "m2 is redone");
    let redone: Vec<String> = again.iter().filter(|r| !start.is_done(r.offset)).map(text).collect();
    assert_eq!(redone, vec!["m2", "m4"], "only the unfinished records are redone; the finished set survives a restart");
    let mut attempts = one(&log, &unique("reader"), &t.attempts(), 2).await;
    assert_eq!(read_n(&mut attempts, 2).await.iter().map(text).collect::<Vec<_>>(), vec!["a0", "a1"]);
}

async fn a_group_member_gets_every_partition_when_alone(open: Opener, prefix: &str) {
    let log = open().await;
    let t = topics(prefix);
    let names = vec![t.messages(), t.attempts()];
    let mut sub = log.subscribe(&unique("g"), &names).await.unwrap();
    let mut owned = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while owned.len() < 2 * PARTITIONS as usize && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Some(herald_engine::log::Change::Assigned(cs))) => {
                owned.extend(cs.iter().map(|c| c.assignment().clone()))
            }
            Ok(Some(herald_engine::log::Change::Revoked(r))) => r.done(vec![]),
            Ok(None) => break,
            Err(_) => {}
        }
    }
    assert_eq!(owned.len(), 2 * PARTITIONS as usize, "one member owns every partition of both topics");
    sub.close().await;
}

async fn reads_by_position(open: Opener, prefix: &str) {
    let log = open().await;
    let topic = topics(prefix).bodies();
    let first = log
        .append_with_offsets(vec![record(&topic, 2, "a", "p0".into()), record(&topic, 2, "b", "p1".into())])
        .await
        .unwrap();
    let second = log.append_with_offsets(vec![record(&topic, 2, "c", "p2".into())]).await.unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(second, vec![first[1] + 1], "offsets follow each other in a partition");
    assert_eq!(first[1], first[0] + 1);
    let got = log.read_at(&topic, 2, first[1]).await.unwrap().expect("the record at that offset");
    assert_eq!((text(&got), got.key.as_str(), got.offset), ("p1".to_owned(), "b", first[1]));
    assert_eq!(text(&log.read_at(&topic, 2, second[0]).await.unwrap().unwrap()), "p2");
    assert!(log.read_at(&topic, 2, second[0] + 100).await.unwrap().is_none(), "never written");
    assert!(log.read_at(&topic, 3, 0).await.unwrap().is_none(), "empty partition");
    // After a restart too (the embedded log reopens its file).
    drop(log);
    let log = open().await;
    assert_eq!(text(&log.read_at(&topic, 2, first[0]).await.unwrap().unwrap()), "p0");
}

/// `unread` counts what a consumer has not read yet (the lag metric's source): all of it at
/// first, what is left after a poll, none at the end, even after a commit's transaction
/// (whose marker takes an offset on Kafka).
async fn unread_counts_what_is_left(open: Opener, prefix: &str) {
    let log = open().await;
    let t = topics(prefix);
    log.append((0..5).map(|i| record(&t.messages(), 1, "k.test", format!("m{i}"))).collect()).await.unwrap();
    let mut c = one(&log, &unique("g"), &t.messages(), 1).await;
    assert_eq!(c.unread().await.unwrap(), 5, "nothing read yet");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < 2 && Instant::now() < deadline {
        got.extend(c.poll(2 - got.len(), Duration::from_secs(1)).await.unwrap());
    }
    assert_eq!(c.unread().await.unwrap(), 3, "two of five read");
    let rest = read_n(&mut c, 3).await;
    let end = rest.last().unwrap().offset + 1;
    c.commit(vec![record(&t.attempts(), 1, "k.test", "a".into())], Position::at(end)).await.unwrap();
    assert!(c.poll(10, Duration::from_millis(500)).await.unwrap().is_empty());
    assert_eq!(c.unread().await.unwrap(), 0, "read to the end");
    let mut attempts = one(&log, &unique("g"), &t.attempts(), 1).await;
    assert_eq!(read_n(&mut attempts, 1).await.len(), 1);
    assert!(attempts.poll(10, Duration::from_millis(500)).await.unwrap().is_empty());
    assert_eq!(attempts.unread().await.unwrap(), 0, "a transaction's marker is not an unread record");
}

macro_rules! conformance {
    ($name:ident, $case:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded_backend() {
                let dir = tempfile::tempdir().unwrap();
                let prefix = unique("conf");
                $case(embedded(dir.path(), &prefix), &prefix).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kafka_backend() {
                let prefix = unique("conf");
                $case(kafka(&prefix), &prefix).await;
            }
        }
    };
}

conformance!(ordering, ordering_within_a_partition);
conformance!(placement, keyed_placement);
conformance!(resume, offsets_resume_after_restart);
conformance!(crash, no_loss_when_the_consumer_dies_before_commit);
conformance!(atomic_commit, commit_appends_and_commits_together);
conformance!(single_member, a_group_member_gets_every_partition_when_alone);
conformance!(positions, reads_by_position);
conformance!(unread, unread_counts_what_is_left);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_append_is_durable_across_reopen() {
    // What an acknowledged append promises: after the log is closed (and the writer
    // thread joined), a reopened log has every record.
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("dur");
    let open = embedded(dir.path(), &prefix);
    let topic = topics(&prefix).messages();
    {
        let log = open().await;
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let (log, topic) = (log.clone(), topic.clone());
                tokio::spawn(
                    async move { log.append(vec![record(&topic, 3, "k.test", format!("c{i}"))]).await.unwrap() },
                )
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
    let log = open().await;
    let mut c = one(&log, "g", &topic, 3).await;
    let mut got: Vec<String> = read_n(&mut c, 50).await.iter().map(text).collect();
    got.sort();
    let mut want: Vec<String> = (0..50).map(|i| format!("c{i}")).collect();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_files_copied_while_running_hold_every_acknowledged_append() {
    // What `kill -9` leaves: the files as they are while the log runs, with no clean
    // close and no checkpoint since the appends. The copies must hold every acknowledged
    // record; the write-ahead file is what carries them.
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("wal");
    let topic = topics(&prefix).messages();
    let log = embedded(dir.path(), &prefix)().await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let (log, topic) = (log.clone(), topic.clone());
            tokio::spawn(async move { log.append(vec![record(&topic, 1, "k.test", format!("w{i}"))]).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let copy = tempfile::tempdir().unwrap();
    for name in ["log.redb", "log.wal"] {
        std::fs::copy(dir.path().join(name), copy.path().join(name)).unwrap();
    }
    let without_wal = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("log.redb"), without_wal.path().join("log.redb")).unwrap();
    drop(log);

    let count = |dir: std::path::PathBuf| {
        let (topic, prefix) = (topic.clone(), prefix.clone());
        async move {
            let log = embedded(&dir, &prefix)().await;
            let mut c = one(&log, "g", &topic, 1).await;
            let mut n = 0;
            loop {
                let got = c.poll(100, Duration::from_millis(200)).await.unwrap();
                if got.is_empty() {
                    return n;
                }
                n += got.len();
            }
        }
    };
    assert_eq!(count(copy.path().to_owned()).await, 40, "every acknowledged append survives");
    assert!(count(without_wal.path().to_owned()).await < 40, "redb alone had not made them durable: the replay did");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_topics_are_created_then_checked() {
    let prefix = unique("chk");
    let names = topics(&prefix).all();
    let settings = |partitions| kafka::KafkaSettings {
        retention: Some(Duration::from_secs(3600)),
        ..kafka::KafkaSettings::single_broker(kafka_brokers(), partitions)
    };
    // Created at the first start, accepted as they are at the next.
    kafka::KafkaLog::connect(settings(PARTITIONS), &names).await.unwrap();
    kafka::KafkaLog::connect(settings(PARTITIONS), &names).await.unwrap();
    // A node configured with another partition count must not start.
    let err = kafka::KafkaLog::connect(settings(PARTITIONS * 2), &names).await.err().expect("mismatch refused");
    assert!(err.to_string().contains(&format!("has {PARTITIONS} partitions")), "{err}");
    // Nor one that asks for more replicas than the topics have.
    let stronger = kafka::KafkaSettings { replication: 2, ..settings(PARTITIONS) };
    let err = kafka::KafkaLog::connect(stronger, &names).await.err().expect("weaker topics refused");
    assert!(err.to_string().contains("has 1 replicas, config asks for 2"), "{err}");
}

/// The operator's librdkafka properties reach the clients: one librdkafka does not know stops
/// the start with its name; known ones (here a client id, and a producer batching property)
/// are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_operator_properties_reach_the_clients() {
    let names = topics(&unique("opt")).all();
    let with = |common: &[(&str, &str)], producer: &[(&str, &str)]| kafka::KafkaSettings {
        options: kafka::ClientOptions {
            common: common.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            producer: producer.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            consumer: Vec::new(),
        },
        ..kafka::KafkaSettings::single_broker(kafka_brokers(), PARTITIONS)
    };
    let err = kafka::KafkaLog::connect(with(&[("no.such.property", "1")], &[]), &names)
        .await
        .err()
        .expect("an unknown property is refused");
    assert!(err.to_string().contains("no.such.property"), "{err}");
    let log = kafka::KafkaLog::connect(with(&[("client.id", "herald-options-test")], &[("linger.ms", "5")]), &names)
        .await
        .unwrap();
    let record = Record { topic: names[0].clone(), partition: 0, key: "k.test".into(), value: b"v".to_vec() };
    log.append(vec![record]).await.unwrap();
    assert!(kafka::ClientOptions { producer: vec![("acks".into(), "1".into())], ..Default::default() }
        .check()
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_retention_keeps_what_is_not_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("ret");
    let open = embedded(dir.path(), &prefix);
    let topic = topics(&prefix).messages();
    {
        let log = open().await;
        // One append per record: a group's records of a partition are one entry (a run),
        // and retention removes whole entries.
        for i in 0..10 {
            log.append(vec![record(&topic, 1, "k.test", format!("r{i}"))]).await.unwrap();
        }
        for i in 0..3 {
            log.append(vec![record(&topic, 2, "k.test", format!("s{i}"))]).await.unwrap();
        }
        let (mut fast, mut slow) = (one(&log, "fast", &topic, 1).await, one(&log, "slow", &topic, 1).await);
        read_n(&mut fast, 10).await;
        fast.commit(vec![], Position::at(8)).await.unwrap();
        read_n(&mut slow, 10).await;
        slow.commit(vec![], Position::at(6)).await.unwrap();
        let mut all = one(&log, "all", &topic, 2).await;
        read_n(&mut all, 3).await;
        all.commit(vec![], Position::at(3)).await.unwrap();
        // Nothing is old enough under a one-hour retention.
        assert_eq!(log.enforce_retention(&kept(3600)).await.unwrap(), 0);
        // Partition 1: below the slowest group (6). Partition 2: all consumed, but the last
        // record stays so the next offset survives a restart.
        assert_eq!(log.enforce_retention(&kept(0)).await.unwrap(), 6 + 2);
        let mut late = one(&log, "late", &topic, 1).await;
        assert_eq!(read_n(&mut late, 4).await.iter().map(text).collect::<Vec<_>>(), vec!["r6", "r7", "r8", "r9"]);
    }
    let log = open().await;
    log.append(vec![record(&topic, 2, "k.test", "s3".into())]).await.unwrap();
    let mut all = one(&log, "all", &topic, 2).await;
    let got = read_n(&mut all, 1).await;
    assert_eq!((got[0].offset, text(&got[0])), (3, "s3".to_owned()), "offsets are not reused after trimming");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bodies_topic_keeps_bodies_long_enough() {
    let week = Some(Duration::from_secs(7 * 86_400));
    let settings = |prefix: &str, retention, bodies_retention| kafka::KafkaSettings {
        retention,
        bodies: Some(kafka::BodiesTopic { topic: topics(prefix).bodies(), retention: bodies_retention }),
        ..kafka::KafkaSettings::single_broker(kafka_brokers(), PARTITIONS)
    };
    // Created by Herald: accepted at the next start.
    let prefix = unique("bod");
    let names = topics(&prefix).all();
    kafka::KafkaLog::connect(settings(&prefix, Some(Duration::from_secs(3600)), week), &names).await.unwrap();
    kafka::KafkaLog::connect(settings(&prefix, Some(Duration::from_secs(3600)), week), &names).await.unwrap();
    // Created with the retention of the other topics (one hour), then asked to keep bodies
    // a week: refused, with the command that fixes it.
    let prefix = unique("bod");
    let names = topics(&prefix).all();
    let plain = kafka::KafkaSettings { bodies: None, ..settings(&prefix, Some(Duration::from_secs(3600)), week) };
    kafka::KafkaLog::connect(plain, &names).await.unwrap();
    let err = kafka::KafkaLog::connect(settings(&prefix, Some(Duration::from_secs(3600)), week), &names)
        .await
        .err()
        .expect("a bodies topic that forgets too soon is refused");
    let text = err.to_string();
    assert!(text.contains("retention.ms is 3600000") && text.contains("kafka-configs.sh"), "{text}");
}

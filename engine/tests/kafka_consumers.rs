//! Kafka consumer groups, transactions and durability settings against the real broker
//! (`HERALD_TEST_KAFKA`, set by `ops/scripts/test.sh`):
//! - two members of a group, one joining and one leaving while records arrive: every
//!   record is processed, none twice, and every output record is appended once
//!   (cooperative rebalances with drain on revoke; no record dropped between assign and
//!   split);
//! - a fatal producer error (librdkafka's fatal-error injection) rebuilds the producer:
//!   appends and transactional commits go on;
//! - a committed offset that retention deleted is an error and a metric, not a silent skip
//!   (`auto.offset.reset=error`);
//! - a busy partition folds its commits into a transaction per commit interval.
//!
//! The prefetch bound has its own binary (`kafka_prefetch.rs`): it measures the process.

use async_trait::async_trait;
use herald_engine::consumer::{self, ChunkHandler, Membership, Owned};
use herald_engine::log::kafka::{KafkaLog, KafkaSettings};
use herald_engine::log::{Assignment, EventLog, LogError, Position, Record, Stored, Topics};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const PARTITIONS: u32 = 4;

fn brokers() -> String {
    std::env::var("HERALD_TEST_KAFKA").expect("HERALD_TEST_KAFKA=host:port must name a real Kafka broker")
}

fn topics(prefix: &str) -> Topics {
    Topics { prefix: prefix.to_owned(), retry_tiers: 1 }
}

fn unique(p: &str) -> String {
    format!("{p}-{}", herald_schemas::MessageId::generate())
}

async fn open(prefix: &str, partitions: u32) -> Arc<KafkaLog> {
    let settings =
        KafkaSettings { drain: Duration::from_secs(5), ..KafkaSettings::single_broker(brokers(), partitions) };
    Arc::new(KafkaLog::connect(settings, &topics(prefix).all()).await.unwrap())
}

fn record(topic: &str, partition: u32, value: String) -> Record {
    Record { topic: topic.to_owned(), partition, key: "k.test".into(), value: value.into_bytes() }
}

/// Counts what it processed (by which member, and when), after `delay` per chunk, and
/// appends one output record per input.
struct Counting {
    member: &'static str,
    output_topic: String,
    delay: Duration,
    seen: Arc<Mutex<HashMap<String, Vec<&'static str>>>>,
    handled: Arc<Mutex<Vec<Instant>>>,
}

#[async_trait]
impl ChunkHandler for Counting {
    type Item = String;
    fn prepare(&self, record: &Stored) -> Option<String> {
        Some(String::from_utf8(record.value.clone()).unwrap())
    }
    async fn handle(&self, a: &Assignment, items: Vec<(u64, String)>) -> Vec<Record> {
        tokio::time::sleep(self.delay).await;
        let (mut seen, mut handled) = (self.seen.lock().unwrap(), self.handled.lock().unwrap());
        items
            .into_iter()
            .map(|(_, v)| {
                seen.entry(v.clone()).or_default().push(self.member);
                handled.push(Instant::now());
                record(&self.output_topic, a.partition, format!("out-{v}"))
            })
            .collect()
    }
}

fn member(
    log: &Arc<KafkaLog>,
    t: &Topics,
    group: &str,
    name: &'static str,
    seen: &Arc<Mutex<HashMap<String, Vec<&'static str>>>>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let handler = Counting {
        member: name,
        output_topic: t.attempts(),
        delay: Duration::from_millis(20),
        seen: seen.clone(),
        handled: Default::default(),
    };
    let settings =
        consumer::Settings { window: 16, concurrency: 4, chunk: 1, drain: Duration::from_secs(5), appends: true };
    start(log, t, group, handler, settings)
}

/// Runs `handler` as a member of `group` on the messages topic until the token is cancelled.
fn start(
    log: &Arc<KafkaLog>,
    t: &Topics,
    group: &str,
    handler: Counting,
    settings: consumer::Settings,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let handler = Arc::new(handler);
    let stop = CancellationToken::new();
    let (log, group, topic, s) = (log.clone() as Arc<dyn EventLog>, group.to_owned(), t.messages(), stop.clone());
    let task = tokio::spawn(async move {
        consumer::run(log, &group, &[topic], &Membership::Group, handler, settings, Owned::default(), s).await.unwrap();
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_and_leave_without_loss_or_duplicates() {
    let prefix = unique("grp");
    let t = topics(&prefix);
    let log = open(&prefix, PARTITIONS).await;
    let group = unique("g");
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let total = 600;
    let produce = |from: usize, to: usize| {
        let (log, topic) = (log.clone(), t.messages());
        async move {
            for i in from..to {
                log.append(vec![record(&topic, (i % PARTITIONS as usize) as u32, format!("r{i}"))]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let (stop_a, task_a) = member(&log, &t, &group, "a", &seen);
    produce(0, 200).await;
    let (stop_b, task_b) = member(&log, &t, &group, "b", &seen); // joins: A hands some over
    produce(200, 400).await;
    stop_a.cancel(); // leaves: B takes everything
    task_a.await.unwrap();
    produce(400, total).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    while seen.lock().unwrap().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_b.cancel();
    task_b.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), total, "every record processed");
    let twice: Vec<_> = seen.iter().filter(|(_, m)| m.len() > 1).collect();
    assert!(twice.is_empty(), "records processed twice across graceful rebalances: {twice:?}");
    let by_b = seen.values().filter(|m| m[0] == "b").count();
    assert!(by_b > 0 && by_b < total, "both members worked ({by_b} by b)");

    // Every output record is there once (read_committed), no aborted copy.
    let mut outputs = Vec::new();
    for p in 0..PARTITIONS {
        let mut c = log.consume(&unique("reader"), &[Assignment { topic: t.attempts(), partition: p }]).await.unwrap();
        let mut c = c.pop().unwrap();
        loop {
            let got = c.poll(500, Duration::from_millis(1500)).await.unwrap();
            if got.is_empty() {
                break;
            }
            outputs.extend(got.into_iter().map(|r| String::from_utf8(r.value).unwrap()));
        }
    }
    assert_eq!(outputs.len(), total, "one output record per input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_rebuilds_the_producers() {
    let prefix = unique("fatal");
    let t = topics(&prefix);
    let log = open(&prefix, PARTITIONS).await;
    log.append(vec![record(&t.messages(), 0, "before".into())]).await.unwrap();
    let mut c =
        log.consume(&unique("g"), &[Assignment { topic: t.messages(), partition: 0 }]).await.unwrap().pop().unwrap();
    let got = c.poll(10, Duration::from_secs(10)).await.unwrap();
    c.commit(vec![record(&t.attempts(), 0, "out-before".into())], Position::at(got[0].offset + 1)).await.unwrap();

    log.inject_fatal_error();
    // Ingestion appends go on (the producer is rebuilt and the append retried).
    log.append(vec![record(&t.messages(), 0, "after".into())]).await.expect("append after a fatal error");
    // A transactional commit fails once (its transaction is gone), then works again.
    let got = c.poll(10, Duration::from_secs(10)).await.unwrap();
    let position = Position::at(got[0].offset + 1);
    let mut committed = false;
    for _ in 0..5 {
        match c.commit(vec![record(&t.attempts(), 0, "out-after".into())], position.clone()).await {
            Ok(()) => {
                committed = true;
                break;
            }
            Err(e) => eprintln!("commit after a fatal error: {e}"),
        }
    }
    assert!(committed, "transactional commits go on after a fatal error");
    let mut r = log
        .consume(&unique("reader"), &[Assignment { topic: t.attempts(), partition: 0 }])
        .await
        .unwrap()
        .pop()
        .unwrap();
    let mut outputs = Vec::new();
    while outputs.len() < 2 {
        let got = r.poll(10, Duration::from_secs(10)).await.unwrap();
        assert!(!got.is_empty(), "outputs readable: {outputs:?}");
        outputs.extend(got.into_iter().map(|r| String::from_utf8(r.value).unwrap()));
    }
    assert_eq!(outputs, vec!["out-before", "out-after"], "each output once; the failed transaction left nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_lost_to_retention_is_an_error_not_a_skip() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let prefix = unique("oor");
    let t = topics(&prefix);
    let log = open(&prefix, PARTITIONS).await;
    let group = unique("g");
    log.append((0..10).map(|i| record(&t.messages(), 1, format!("r{i}"))).collect()).await.unwrap();
    {
        let mut c =
            log.consume(&group, &[Assignment { topic: t.messages(), partition: 1 }]).await.unwrap().pop().unwrap();
        let got = c.poll(2, Duration::from_secs(10)).await.unwrap();
        c.commit(vec![], Position::at(got[got.len() - 1].offset + 1)).await.unwrap();
    }
    // Retention deletes records the group never consumed.
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&t.messages(), 1, rdkafka::Offset::Offset(6)).unwrap();
    admin.delete_records(&tpl, &AdminOptions::new()).await.unwrap();

    let mut c = log.consume(&group, &[Assignment { topic: t.messages(), partition: 1 }]).await.unwrap().pop().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.poll(10, Duration::from_secs(1)).await {
            Err(LogError::OutOfRange { partition: 1, .. }) => break,
            Ok(got) if got.is_empty() && Instant::now() < deadline => continue,
            other => panic!("expected an out-of-range error, got {other:?}"),
        }
    }
}

/// A busy partition commits at most every `commit_interval` (100 ms by default on Kafka):
/// the chunks that finish meanwhile share one transaction. Every transaction leaves one
/// commit marker in the output partition, so the partition's end offset minus its records
/// counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_partition_folds_its_commits_into_few_transactions() {
    let prefix = unique("fold");
    let t = topics(&prefix);
    let log = open(&prefix, PARTITIONS).await;
    assert_eq!(log.commit_interval(), Duration::from_millis(100));
    let total = 400;
    log.append((0..total).map(|i| record(&t.messages(), 2, format!("r{i}"))).collect()).await.unwrap();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let handler = Counting {
        member: "a",
        output_topic: t.attempts(),
        delay: Duration::from_millis(10),
        seen: Default::default(),
        handled: handled.clone(),
    };
    // Chunks of one record, 8 at a time: without the interval, a commit follows every few.
    // The window holds every record, so a window's worth of finished records (which also
    // makes a commit due) never comes: only the interval spaces the commits.
    let settings =
        consumer::Settings { window: 512, concurrency: 8, chunk: 1, drain: Duration::from_secs(5), appends: true };
    let (stop, task) = start(&log, &t, &unique("g"), handler, settings);
    let deadline = Instant::now() + Duration::from_secs(60);
    while handled.lock().unwrap().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let times = handled.lock().unwrap().clone();
    assert_eq!(times.len(), total, "every record handled");
    let busy = times[times.len() - 1].duration_since(times[0]);
    stop.cancel();
    task.await.unwrap();
    let output = Assignment { topic: t.attempts(), partition: 2 };
    let end = log.lag(&unique("probe"), &[output]).await.unwrap()[0].end;
    let transactions = end - total as u64;
    // One per 100 ms of work, the first, the one at the stop, and one for a timer that
    // fires at the edge of the measured span.
    let most = busy.as_millis() as u64 / 100 + 3;
    eprintln!("{transactions} transactions for {total} records handled over {busy:?}");
    assert!(transactions >= 1, "the output records were committed");
    assert!(
        transactions <= most,
        "{transactions} transactions for {total} records handled over {busy:?}: at most {most} expected"
    );
}

//! The Kafka log on rdkafka (vendored librdkafka).
//!
//! Producer: idempotent, `acks=all`, zstd; every record goes to the partition
//! [`crate::routing`] chose, with the recipient domain as its key. An append returns
//! when Kafka has acknowledged every record.
//!
//! Reads by position ([`EventLog::read_at`], for stored bodies): a small pool of consumers
//! without a group, each assigned the one partition at the wanted offset, then unassigned.
//!
//! Consumers: one librdkafka consumer per group, with the node's partitions assigned
//! statically (`[cluster]` in the config) and split into one queue per partition, so each
//! partition gets its own task, as in Vector's Kafka source. Offsets are committed
//! synchronously to the group after processing (`enable.auto.commit=false`).

use super::{check_record, Assignment, EventLog, LogError, PartitionConsumer, Retention, Stored};
use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest event, in bytes: a 25 MiB body plus headroom ([`super::MAX_RECORD_BYTES`]).
pub const MAX_MESSAGE_BYTES: &str = "33554432";
const _: () = assert!(super::MAX_RECORD_BYTES == 33_554_432);
/// Consumers kept for reads by position.
const READERS: usize = 4;
/// Longest wait for one read by position.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Connection settings for the Kafka backend.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub partitions: u32,
    pub replication: i32,
    /// `retention.ms` of topics Herald creates; `None`: the broker's default.
    pub retention: Option<Duration>,
    /// The topic read only by position (stored bodies), whose records must stay at least
    /// as long as a retry may need them.
    pub bodies: Option<BodiesTopic>,
}

/// The bodies topic and how long its records must stay.
#[derive(Debug, Clone)]
pub struct BodiesTopic {
    pub topic: String,
    /// At least this long; `None`: for ever (`retention.ms = -1`).
    pub retention: Option<Duration>,
}

pub struct KafkaLog {
    settings: KafkaSettings,
    producer: FutureProducer,
    /// Idle consumers for [`EventLog::read_at`], and a bound on the busy ones.
    readers: Mutex<Vec<BaseConsumer>>,
    reading: tokio::sync::Semaphore,
}

impl KafkaLog {
    /// Connects, then creates missing topics and checks the partition count of existing ones.
    pub async fn connect(settings: KafkaSettings, topics: &[String]) -> Result<Self, LogError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "zstd")
            .set("linger.ms", "2")
            .set("message.max.bytes", MAX_MESSAGE_BYTES)
            .set("message.timeout.ms", "30000")
            .create()?;
        let log = KafkaLog {
            settings,
            producer,
            readers: Mutex::new(Vec::new()),
            reading: tokio::sync::Semaphore::new(READERS),
        };
        log.ensure_topics(topics).await?;
        Ok(log)
    }

    /// Checks that an existing bodies topic keeps its records long enough, and only deletes
    /// by time: a shorter `retention.ms`, any `retention.bytes` or compaction could drop a
    /// body that a pending retry still needs.
    async fn check_bodies_topic(
        &self,
        admin: &AdminClient<DefaultClientContext>,
        bodies: &BodiesTopic,
    ) -> Result<(), LogError> {
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
        let results = admin.describe_configs([&ResourceSpecifier::Topic(&bodies.topic)], &opts).await?;
        let resource = results
            .into_iter()
            .next()
            .ok_or_else(|| LogError::Topic {
                topic: bodies.topic.clone(),
                problem: "no configuration returned".into(),
            })?
            .map_err(|code| LogError::Topic {
                topic: bodies.topic.clone(),
                problem: format!("describe configs: {code}"),
            })?;
        let value = |name: &str| resource.get(name).and_then(|e| e.value.clone()).unwrap_or_default();
        let need_ms = bodies.retention.map_or(-1, |r| r.as_millis() as i64);
        let have_ms: i64 = value("retention.ms").parse().unwrap_or(0);
        let long_enough = have_ms == -1 || (need_ms != -1 && have_ms >= need_ms);
        let by_bytes: i64 = value("retention.bytes").parse().unwrap_or(-1);
        let policy = value("cleanup.policy");
        let fix = |problem: String| {
            LogError::Topic {
            topic: bodies.topic.clone(),
            problem: format!(
                "{problem}: a retry would lose its message body. Fix it with kafka-configs.sh --alter --entity-type topics --entity-name {} --add-config retention.ms={need_ms},retention.bytes=-1,cleanup.policy=delete",
                bodies.topic
            ),
        }
        };
        if !long_enough {
            return Err(fix(format!("retention.ms is {have_ms}, bodies must stay {need_ms} ms (delivery.max_age_secs + bodies.retention_margin_hours; -1: for ever)")));
        }
        if by_bytes != -1 {
            return Err(fix(format!("retention.bytes is {by_bytes}")));
        }
        if policy.contains("compact") {
            return Err(fix(format!("cleanup.policy is {policy}")));
        }
        Ok(())
    }

    async fn ensure_topics(&self, topics: &[String]) -> Result<(), LogError> {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &self.settings.brokers).create()?;
        // Partition counts of the topics that exist (the metadata itself is not `Sync`).
        let existing: std::collections::HashMap<String, u32> = {
            let metadata = self.producer.client().fetch_metadata(None, Duration::from_secs(10))?;
            metadata
                .topics()
                .iter()
                .filter(|t| t.error().is_none())
                .map(|t| (t.name().to_owned(), t.partitions().len() as u32))
                .collect()
        };
        let mut missing = Vec::new();
        for topic in topics {
            match existing.get(topic) {
                Some(&have) => {
                    if have != self.settings.partitions {
                        return Err(LogError::Topic {
                            topic: topic.clone(),
                            problem: format!("has {have} partitions, config says {}", self.settings.partitions),
                        });
                    }
                    if let Some(bodies) = self.settings.bodies.as_ref().filter(|b| &b.topic == topic) {
                        self.check_bodies_topic(&admin, bodies).await?;
                    }
                }
                _ => missing.push(topic),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let retention_ms = self.settings.retention.map(|r| r.as_millis().to_string());
        let bodies_ms =
            self.settings.bodies.as_ref().map(|b| b.retention.map_or("-1".to_owned(), |r| r.as_millis().to_string()));
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|t| {
                let topic = NewTopic::new(
                    t,
                    self.settings.partitions as i32,
                    TopicReplication::Fixed(self.settings.replication),
                )
                .set("max.message.bytes", MAX_MESSAGE_BYTES);
                let is_bodies = self.settings.bodies.as_ref().is_some_and(|b| &&b.topic == t);
                match (is_bodies, &bodies_ms, &retention_ms) {
                    (true, Some(ms), _) => topic.set("retention.ms", ms).set("cleanup.policy", "delete"),
                    (false, _, Some(ms)) => topic.set("retention.ms", ms),
                    _ => topic,
                }
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics(new.iter(), &opts).await? {
            match result {
                Ok(_) => {}
                Err((topic, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                    tracing::debug!(%topic, "topic created concurrently");
                }
                Err((topic, code)) => return Err(LogError::Topic { topic, problem: format!("cannot create: {code}") }),
            }
        }
        tracing::info!(topics = ?missing, partitions = self.settings.partitions, "created kafka topics");
        Ok(())
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    fn partitions(&self) -> u32 {
        self.settings.partitions
    }

    async fn append_with_offsets(&self, records: Vec<super::Record>) -> Result<Vec<u64>, LogError> {
        for r in &records {
            check_record(r)?;
        }
        let started = Instant::now();
        let result = self.append_all(records).await;
        metrics::histogram!("herald_log_append_seconds", "backend" => "kafka").record(started.elapsed().as_secs_f64());
        result
    }

    async fn read_at(&self, topic: &str, partition: u32, offset: u64) -> Result<Option<Stored>, LogError> {
        let _permit = self.reading.acquire().await.map_err(|_| LogError::Closed)?;
        let idle = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let consumer = match idle {
            Some(c) => c,
            None => self.reader()?,
        };
        let topic = topic.to_owned();
        let (consumer, result) = tokio::task::spawn_blocking(move || {
            let result = read_one(&consumer, &topic, partition, offset);
            (consumer, result)
        })
        .await
        .map_err(|_| LogError::Closed)?;
        self.readers.lock().unwrap_or_else(|p| p.into_inner()).push(consumer);
        result
    }

    async fn consume(
        &self,
        group: &str,
        assignments: &[Assignment],
    ) -> Result<Vec<Box<dyn PartitionConsumer>>, LogError> {
        self.consumers(group, assignments).await
    }

    async fn enforce_retention(&self, _retention: &Retention) -> Result<u64, LogError> {
        Ok(0)
    }
}

impl KafkaLog {
    /// A consumer for reads by position: assigned, never subscribed, never committing.
    fn reader(&self) -> Result<BaseConsumer, LogError> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", &self.settings.brokers)
            .set("group.id", "herald-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("fetch.wait.max.ms", "10")
            .set("fetch.max.bytes", MAX_MESSAGE_BYTES)
            // One record is wanted: fetch little beyond it (Kafka still returns a larger
            // first record whole).
            .set("max.partition.fetch.bytes", "1048576")
            .set("queued.max.messages.kbytes", "32768")
            .create()?)
    }

    async fn append_all(&self, records: Vec<super::Record>) -> Result<Vec<u64>, LogError> {
        let mut pending = Vec::with_capacity(records.len());
        for r in &records {
            let record = FutureRecord::to(&r.topic).partition(r.partition as i32).key(&r.key).payload(&r.value);
            match self.producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                Err((e, _)) => return Err(e.into()),
            }
        }
        let mut offsets = Vec::with_capacity(pending.len());
        for delivery in pending {
            match delivery.await {
                Ok(Ok(delivered)) => offsets.push(delivered.offset as u64),
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => return Err(LogError::Closed),
            }
        }
        Ok(offsets)
    }

    async fn consumers(
        &self,
        group: &str,
        assignments: &[Assignment],
    ) -> Result<Vec<Box<dyn PartitionConsumer>>, LogError> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.settings.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.max.bytes", MAX_MESSAGE_BYTES)
            .set("max.partition.fetch.bytes", MAX_MESSAGE_BYTES)
            .create()?;
        let consumer = Arc::new(consumer);
        let tpl = start_offsets(&consumer, assignments).await?;
        consumer.assign(&tpl)?;
        let mut out: Vec<Box<dyn PartitionConsumer>> = Vec::new();
        for a in assignments {
            let queue = consumer.split_partition_queue(&a.topic, a.partition as i32).ok_or_else(|| {
                LogError::Topic { topic: a.topic.clone(), problem: format!("cannot split partition {}", a.partition) }
            })?;
            out.push(Box::new(KafkaPartitionConsumer { consumer: consumer.clone(), queue, assignment: a.clone() }));
        }
        // The main queue must be polled to serve events; every partition was split off,
        // so it yields no messages. The task ends when the last partition consumer is gone.
        let weak = Arc::downgrade(&consumer);
        tokio::spawn(async move {
            loop {
                let Some(consumer) = weak.upgrade() else { return };
                if let Ok(Err(e)) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
                    tracing::warn!(error = %e, "kafka consumer");
                }
            }
        });
        Ok(out)
    }
}

/// The group's committed offset of every assignment (the beginning where none was
/// committed), asked of the group coordinator explicitly. Assigning `Offset::Stored`
/// instead leaves librdkafka to fetch them itself, and on a cluster whose
/// `__consumer_offsets` does not exist yet that fetch was seen to stall a partition for
/// over a minute. The coordinator is waited for, within bounds.
async fn start_offsets(
    consumer: &Arc<StreamConsumer>,
    assignments: &[Assignment],
) -> Result<TopicPartitionList, LogError> {
    let mut wanted = TopicPartitionList::new();
    for a in assignments {
        wanted.add_partition(&a.topic, a.partition as i32);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut backoff = Duration::from_millis(200);
    let committed = loop {
        let (c, w) = (consumer.clone(), wanted.clone());
        let result = tokio::task::spawn_blocking(move || c.committed_offsets(w, Duration::from_secs(10)))
            .await
            .map_err(|_| LogError::Closed)?;
        match result {
            Ok(committed) => break committed,
            Err(e) if Instant::now() < deadline && is_retriable(&e) => {
                tracing::info!(error = %e, "waiting for the Kafka group coordinator");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut tpl = TopicPartitionList::new();
    for a in assignments {
        let offset = match committed.find_partition(&a.topic, a.partition as i32).map(|e| e.offset()) {
            Some(Offset::Offset(n)) if n >= 0 => Offset::Offset(n),
            _ => Offset::Beginning,
        };
        tpl.add_partition_offset(&a.topic, a.partition as i32, offset)?;
    }
    Ok(tpl)
}

fn is_retriable(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::CoordinatorNotAvailable
                | C::NotCoordinator
                | C::CoordinatorLoadInProgress
                | C::RequestTimedOut
                | C::OperationTimedOut
                | C::NetworkException
                | C::AllBrokersDown
                | C::UnknownTopicOrPartition
                | C::RebalanceInProgress
        )
    )
}

/// Reads the record at `offset`: assigns the partition there, polls until that record (or
/// a later one, when it is gone) arrives, then unassigns. An offset outside the partition's
/// watermarks is not there.
fn read_one(consumer: &BaseConsumer, topic: &str, partition: u32, offset: u64) -> Result<Option<Stored>, LogError> {
    // An offset at or past the high watermark was never written (a fetch there would wait
    // for it); one below the low watermark is gone.
    let (low, high) = consumer.fetch_watermarks(topic, partition as i32, Duration::from_secs(10))?;
    if (offset as i64) < low || offset as i64 >= high {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition as i32, Offset::Offset(offset as i64))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + READ_TIMEOUT;
    let result = loop {
        if Instant::now() >= deadline {
            break Err(LogError::Topic {
                topic: topic.to_owned(),
                problem: format!("no answer reading partition {partition} at offset {offset} within {READ_TIMEOUT:?}"),
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Ok(m)) if m.offset() == offset as i64 => break Ok(Some(to_stored(&m))),
            Some(Ok(m)) if m.offset() > offset as i64 => break Ok(None),
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                use rdkafka::types::RDKafkaErrorCode as C;
                if matches!(e.rdkafka_error_code(), Some(C::OffsetOutOfRange | C::AutoOffsetReset)) {
                    let (low, high) = consumer.fetch_watermarks(topic, partition as i32, Duration::from_secs(10))?;
                    if (offset as i64) < low || offset as i64 >= high {
                        break Ok(None);
                    }
                }
                if is_retriable(&e) {
                    continue;
                }
                break Err(e.into());
            }
        }
    };
    let _ = consumer.unassign();
    result
}

struct KafkaPartitionConsumer {
    consumer: Arc<StreamConsumer>,
    queue: StreamPartitionQueue<rdkafka::consumer::DefaultConsumerContext>,
    assignment: Assignment,
}

fn to_stored(m: &rdkafka::message::BorrowedMessage<'_>) -> Stored {
    Stored {
        offset: m.offset() as u64,
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
        value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
    }
}

#[async_trait]
impl PartitionConsumer for KafkaPartitionConsumer {
    fn assignment(&self) -> &Assignment {
        &self.assignment
    }

    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Stored>, LogError> {
        let mut out = Vec::new();
        match tokio::time::timeout(wait, self.queue.recv()).await {
            Err(_) => return Ok(out),
            Ok(m) => out.push(to_stored(&m?)),
        }
        // Drain what is already buffered, without waiting again.
        while out.len() < max {
            match tokio::time::timeout(Duration::ZERO, self.queue.recv()).await {
                Ok(m) => out.push(to_stored(&m?)),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    async fn commit(&mut self, next_offset: u64) -> Result<(), LogError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.assignment.topic,
            self.assignment.partition as i32,
            Offset::Offset(next_offset as i64),
        )?;
        // A fresh cluster creates `__consumer_offsets` on the first commit and answers
        // "coordinator not available" meanwhile: retry retriable errors for a while.
        let mut backoff = Duration::from_millis(100);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (consumer, tpl) = (self.consumer.clone(), tpl.clone());
            let result = tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
                .await
                .map_err(|_| LogError::Closed)?;
            match result {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline && is_retriable(&e) => {
                    tracing::debug!(error = %e, "offset commit retried");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

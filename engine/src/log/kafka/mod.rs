//! The Kafka log on rdkafka (vendored librdkafka).
//!
//! Producer (`append`, ingestion): idempotent, `acks=all`, zstd; every record goes to the
//! partition [`crate::routing`] chose, with the recipient domain as its key. An append
//! returns when Kafka has acknowledged every record. A fatal producer error (the idempotent
//! producer lost its guarantees) rebuilds the producer and retries the append once.
//!
//! Consumers (`group.rs`): one librdkafka consumer per group membership, subscribed with
//! the cooperative-sticky assignor, `isolation.level=read_committed`,
//! `auto.offset.reset=error`, one split queue (and one task) per assigned partition, and a
//! bounded prefetch per partition. Commits that carry records are Kafka transactions
//! (`txn.rs`): the records and `send_offsets_to_transaction`, committed together, many
//! partitions per transaction (group commit), fenced by the consumer group's generation
//! (KIP-447).
//!
//! Topics (`topics.rs`): created with the configured replication and
//! `min.insync.replicas`; existing ones are checked, the bodies topic's retention too.
//!
//! Reads by position (`read.rs`, [`EventLog::read_at`], for stored bodies): a small pool of
//! consumers without a group, each assigned the one partition at the wanted offset, then
//! unassigned.

mod group;
mod lag;
mod read;
mod topics;
mod txn;

use super::{check_record, Assignment, EventLog, LogError, PartitionConsumer, Retention, Stored, Subscription};
use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

/// Largest event, in bytes: a 25 MiB body plus headroom ([`super::MAX_RECORD_BYTES`]).
pub const MAX_MESSAGE_BYTES: &str = "33554432";
const _: () = assert!(super::MAX_RECORD_BYTES == 33_554_432);

/// Kafka Streams' commit interval under exactly-once, and Herald's default.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// Connection and durability settings for the Kafka backend.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub partitions: u32,
    /// Replication factor of the topics Herald creates; existing topics must have at least
    /// this many replicas.
    pub replication: i32,
    /// `min.insync.replicas` of the topics Herald creates: with `acks=all`, an append is
    /// acknowledged only once this many replicas have it.
    pub min_insync_replicas: i32,
    /// `retention.ms` of topics Herald creates; `None`: the broker's default.
    pub retention: Option<Duration>,
    /// Consumer group session timeout: how long a crashed node keeps its partitions.
    pub session_timeout: Duration,
    /// Bytes prefetched per assigned partition (`queued.max.messages.kbytes`), in KiB.
    pub prefetch_kib: u32,
    /// How long a revoked partition may take to drain before the rebalance goes on.
    pub drain: Duration,
    /// The topic read only by position (stored bodies), whose records must stay at least
    /// as long as a retry may need them.
    pub bodies: Option<BodiesTopic>,
    /// librdkafka properties the operator adds (TLS, SASL, batching, fetch sizes).
    pub options: ClientOptions,
    /// Least time between two commits of a busy partition ([`EventLog::commit_interval`]):
    /// each commit that appends records is a Kafka transaction, a round of coordinator
    /// requests and a marker per partition it wrote.
    pub commit_interval: Duration,
}

/// librdkafka properties set on top of Herald's own: `common` on every client (producers,
/// consumers, the admin client), then `producer` or `consumer`. Keys Herald's guarantees
/// rest on are refused ([`ClientOptions::check`]).
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    pub common: Vec<(String, String)>,
    pub producer: Vec<(String, String)>,
    pub consumer: Vec<(String, String)>,
}

/// Properties Herald sets itself and that its delivery guarantees (or its own settings)
/// depend on: an operator option may not change them.
pub const RESERVED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "transactional.id",
    "transaction.timeout.ms",
    "message.max.bytes",
    "message.timeout.ms",
    "group.id",
    "group.instance.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "isolation.level",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "queued.max.messages.kbytes",
    "fetch.max.bytes",
    "max.partition.fetch.bytes",
    "enable.partition.eof",
];

impl ClientOptions {
    /// Refuses a reserved key, with the Herald setting to use where there is one.
    pub fn check(&self) -> Result<(), String> {
        for (key, _) in self.common.iter().chain(&self.producer).chain(&self.consumer) {
            let key = key.trim();
            if RESERVED_PROPERTIES.contains(&key) {
                let instead = match key {
                    "bootstrap.servers" | "metadata.broker.list" => "; use backend.kafka_brokers",
                    "session.timeout.ms" | "heartbeat.interval.ms" => "; use backend.kafka_session_timeout_ms",
                    "queued.max.messages.kbytes" => "; use backend.kafka_prefetch_kib",
                    _ => "",
                };
                return Err(format!(
                    "the librdkafka property {key:?} is set by Herald and may not be overridden{instead}"
                ));
            }
        }
        Ok(())
    }
}

/// A client config with the brokers and the operator's common properties.
fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.brokers);
    apply(&mut c, &settings.options.common);
    c
}

/// Applies the operator's producer or consumer properties, after Herald's own.
fn apply(c: &mut ClientConfig, options: &[(String, String)]) {
    for (k, v) in options {
        c.set(k, v);
    }
}

/// The bodies topic and how long its records must stay.
#[derive(Debug, Clone)]
pub struct BodiesTopic {
    pub topic: String,
    /// At least this long; `None`: for ever (`retention.ms = -1`).
    pub retention: Option<Duration>,
}

impl KafkaSettings {
    /// Settings for a single test broker: replication 1, `min.insync.replicas` 1.
    pub fn single_broker(brokers: String, partitions: u32) -> Self {
        KafkaSettings {
            brokers,
            partitions,
            replication: 1,
            min_insync_replicas: 1,
            retention: None,
            session_timeout: Duration::from_secs(6),
            prefetch_kib: 4096,
            drain: Duration::from_secs(20),
            bodies: None,
            options: ClientOptions::default(),
            commit_interval: DEFAULT_COMMIT_INTERVAL,
        }
    }
}

pub struct KafkaLog {
    settings: KafkaSettings,
    producer: RwLock<Arc<FutureProducer>>,
    /// Transactional committers of open consumers (for fatal-error injection in tests).
    committers: Mutex<Vec<Weak<txn::Committer>>>,
    /// Idle consumers for [`EventLog::read_at`], and a bound on the busy ones.
    readers: Mutex<Vec<BaseConsumer>>,
    reading: tokio::sync::Semaphore,
}

fn producer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut c = client_config(settings);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "zstd")
        .set("linger.ms", "2")
        .set("message.max.bytes", MAX_MESSAGE_BYTES)
        .set("message.timeout.ms", "30000");
    apply(&mut c, &settings.options.producer);
    c
}

impl KafkaLog {
    /// Connects, then creates missing topics and checks existing ones (partition count,
    /// replication).
    pub async fn connect(settings: KafkaSettings, topics: &[String]) -> Result<Self, LogError> {
        let producer: FutureProducer = producer_config(&settings).create()?;
        let log = KafkaLog {
            settings,
            producer: RwLock::new(Arc::new(producer)),
            committers: Mutex::new(Vec::new()),
            readers: Mutex::new(Vec::new()),
            reading: tokio::sync::Semaphore::new(read::READERS),
        };
        topics::ensure(&log.settings, &log.producer(), topics).await?;
        Ok(log)
    }

    fn producer(&self) -> Arc<FutureProducer> {
        self.producer.read().expect("producer lock").clone()
    }

    /// Replaces the producer after a fatal error (librdkafka's idempotent producer cannot
    /// continue once its sequence numbers are in doubt).
    fn rebuild_producer(&self, failed: &Arc<FutureProducer>) -> Result<(), LogError> {
        let mut slot = self.producer.write().expect("producer lock");
        if Arc::ptr_eq(&slot, failed) {
            let fresh: FutureProducer = producer_config(&self.settings).create()?;
            *slot = Arc::new(fresh);
            metrics::counter!("herald_log_producer_rebuilds_total", "producer" => "idempotent").increment(1);
            tracing::error!("kafka producer hit a fatal error; rebuilt it");
        }
        Ok(())
    }

    /// Raises a fatal error in every producer of this log, as a broker fencing them would
    /// (librdkafka's `rd_kafka_test_fatal_error`). For tests of fatal-error handling.
    #[doc(hidden)]
    pub fn inject_fatal_error(&self) {
        use rdkafka::bindings::rd_kafka_test_fatal_error;
        use rdkafka::types::RDKafkaRespErr;
        let reason = std::ffi::CString::new("injected by a test").expect("no NUL");
        let inject = |p: &FutureProducer| unsafe {
            rd_kafka_test_fatal_error(
                p.client().native_ptr(),
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            );
        };
        inject(&self.producer());
        for c in self.committers.lock().expect("committers lock").iter().filter_map(Weak::upgrade) {
            if let Some(p) = c.current_producer() {
                inject(&p);
            }
        }
    }

    fn register(&self, committer: &Arc<txn::Committer>) {
        let mut all = self.committers.lock().expect("committers lock");
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(committer));
    }

    /// Sends every record, then waits for each acknowledgement; returns their offsets.
    async fn append_all(&self, producer: &FutureProducer, records: &[super::Record]) -> Result<Vec<u64>, LogError> {
        let mut pending = Vec::with_capacity(records.len());
        for r in records {
            let record = FutureRecord::to(&r.topic).partition(r.partition as i32).key(&r.key).payload(&r.value);
            match producer.send_result(record) {
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
}

#[async_trait]
impl EventLog for KafkaLog {
    fn partitions(&self) -> u32 {
        self.settings.partitions
    }

    async fn reachable(&self, timeout: Duration) -> Result<(), String> {
        let producer = self.producer();
        let brokers = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, timeout).map(|m| m.brokers().len())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("kafka: {e}"))?;
        if brokers == 0 {
            return Err("kafka: no broker in the cluster metadata".to_owned());
        }
        Ok(())
    }

    async fn append_with_offsets(&self, records: Vec<super::Record>) -> Result<Vec<u64>, LogError> {
        for r in &records {
            check_record(r)?;
        }
        let started = Instant::now();
        let producer = self.producer();
        let mut result = self.append_all(&producer, &records).await;
        if result.is_err() && producer.client().fatal_error().is_some() {
            // Some records may be stored already; the retry may store them twice, which
            // the at-least-once contract of a failed append allows.
            self.rebuild_producer(&producer)?;
            result = self.append_all(&self.producer(), &records).await;
        }
        metrics::histogram!("herald_log_append_seconds", "backend" => "kafka").record(started.elapsed().as_secs_f64());
        result
    }

    async fn read_at(&self, topic: &str, partition: u32, offset: u64) -> Result<Option<Stored>, LogError> {
        let _permit = self.reading.acquire().await.map_err(|_| LogError::Closed)?;
        let idle = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let consumer = match idle {
            Some(c) => c,
            None => read::reader(&self.settings)?,
        };
        let topic = topic.to_owned();
        let (consumer, result) = tokio::task::spawn_blocking(move || {
            let result = read::read_one(&consumer, &topic, partition, offset);
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
        let (consumers, committer) = group::open_static(&self.settings, group, assignments).await?;
        self.register(&committer);
        Ok(consumers)
    }

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Box<dyn Subscription>, LogError> {
        let (subscription, committer) = group::subscribe(&self.settings, group, topics)?;
        self.register(&committer);
        Ok(subscription)
    }

    async fn will_append(&self, group: &str) {
        let all = self.committers.lock().expect("committers lock");
        for c in all.iter().filter_map(std::sync::Weak::upgrade).filter(|c| c.group() == group) {
            c.start_producer();
        }
    }

    fn commit_interval(&self) -> Duration {
        self.settings.commit_interval
    }

    async fn lag(&self, group: &str, assignments: &[Assignment]) -> Result<Vec<super::PartitionLag>, LogError> {
        lag::lag(&self.settings, group, assignments).await
    }

    async fn enforce_retention(&self, _retention: &Retention) -> Result<u64, LogError> {
        Ok(0)
    }
}

/// Errors worth waiting out (a coordinator moving, a fresh cluster creating
/// `__consumer_offsets`).
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
                | C::NotLeaderForPartition
                | C::LeaderNotAvailable
        )
    )
}

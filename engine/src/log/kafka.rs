//! The Kafka log on rdkafka (vendored librdkafka).
//!
//! Producer: idempotent, `acks=all`, zstd; every record goes to the partition
//! [`crate::routing`] chose, with the recipient domain as its key. An append returns
//! when Kafka has acknowledged every record.
//!
//! Consumers: one librdkafka consumer per group, with the node's partitions assigned
//! statically (`[cluster]` in the config) and split into one queue per partition, so each
//! partition gets its own task, as in Vector's Kafka source. Offsets are committed
//! synchronously to the group after processing (`enable.auto.commit=false`).

use super::{Assignment, EventLog, LogError, PartitionConsumer, Stored};
use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest event, in bytes: a 25 MiB body plus headroom.
pub const MAX_MESSAGE_BYTES: &str = "33554432";

/// Connection settings for the Kafka backend.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub partitions: u32,
    pub replication: i32,
    /// `retention.ms` of topics Herald creates; `None`: the broker's default.
    pub retention: Option<Duration>,
}

mod lag;

pub struct KafkaLog {
    settings: KafkaSettings,
    producer: FutureProducer,
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
        let log = KafkaLog { settings, producer };
        log.ensure_topics(topics).await?;
        Ok(log)
    }

    async fn ensure_topics(&self, topics: &[String]) -> Result<(), LogError> {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &self.settings.brokers).create()?;
        let metadata = self.producer.client().fetch_metadata(None, Duration::from_secs(10))?;
        let mut missing = Vec::new();
        for topic in topics {
            match metadata.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() => {
                    let have = t.partitions().len() as u32;
                    if have != self.settings.partitions {
                        return Err(LogError::Topic {
                            topic: topic.clone(),
                            problem: format!("has {have} partitions, config says {}", self.settings.partitions),
                        });
                    }
                }
                _ => missing.push(topic),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let retention_ms = self.settings.retention.map(|r| r.as_millis().to_string());
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|t| {
                let topic = NewTopic::new(
                    t,
                    self.settings.partitions as i32,
                    TopicReplication::Fixed(self.settings.replication),
                )
                .set("max.message.bytes", MAX_MESSAGE_BYTES);
                match &retention_ms {
                    Some(ms) => topic.set("retention.ms", ms),
                    None => topic,
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

    async fn append(&self, records: Vec<super::Record>) -> Result<(), LogError> {
        let started = Instant::now();
        let result = self.append_all(records).await;
        metrics::histogram!("herald_log_append_seconds", "backend" => "kafka").record(started.elapsed().as_secs_f64());
        result
    }

    async fn lag(&self, group: &str, assignments: &[Assignment]) -> Result<Vec<super::PartitionLag>, LogError> {
        lag::lag(&self.settings.brokers, group, assignments).await
    }

    async fn consume(
        &self,
        group: &str,
        assignments: &[Assignment],
    ) -> Result<Vec<Box<dyn PartitionConsumer>>, LogError> {
        self.consumers(group, assignments).await
    }

    async fn enforce_retention(&self, _retention: Duration) -> Result<u64, LogError> {
        Ok(0)
    }
}

impl KafkaLog {
    async fn append_all(&self, records: Vec<super::Record>) -> Result<(), LogError> {
        let mut pending = Vec::with_capacity(records.len());
        for r in &records {
            let record = FutureRecord::to(&r.topic).partition(r.partition as i32).key(&r.key).payload(&r.value);
            match self.producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                Err((e, _)) => return Err(e.into()),
            }
        }
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => return Err(LogError::Closed),
            }
        }
        Ok(())
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

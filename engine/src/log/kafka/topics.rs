//! Herald's topics on Kafka: created with the configured partitions, replication,
//! `min.insync.replicas`, `max.message.bytes` and `retention.ms`; existing ones must match
//! the partition count and have at least the configured replication, or Herald refuses to
//! start (an acknowledged append must not rest on fewer replicas than the operator asked).

use super::{KafkaSettings, MAX_MESSAGE_BYTES};
use crate::log::LogError;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, Producer};
use std::time::Duration;

pub(super) async fn ensure(
    settings: &KafkaSettings,
    producer: &FutureProducer,
    topics: &[String],
) -> Result<(), LogError> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &settings.brokers).create()?;
    let metadata = producer.client().fetch_metadata(None, Duration::from_secs(10))?;
    let mut missing = Vec::new();
    for topic in topics {
        match metadata.topics().iter().find(|t| t.name() == topic) {
            Some(t) if t.error().is_none() => {
                let have = t.partitions().len() as u32;
                if have != settings.partitions {
                    return Err(LogError::Topic {
                        topic: topic.clone(),
                        problem: format!("has {have} partitions, config says {}", settings.partitions),
                    });
                }
                let replicas = t.partitions().iter().map(|p| p.replicas().len()).min().unwrap_or(0) as i32;
                if replicas < settings.replication {
                    return Err(LogError::Topic {
                        topic: topic.clone(),
                        problem: format!(
                            "has {replicas} replicas, config asks for {} (backend.kafka_replication)",
                            settings.replication
                        ),
                    });
                }
            }
            _ => missing.push(topic),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let retention_ms = settings.retention.map(|r| r.as_millis().to_string());
    let min_insync = settings.min_insync_replicas.to_string();
    let new: Vec<NewTopic> = missing
        .iter()
        .map(|t| {
            let topic = NewTopic::new(t, settings.partitions as i32, TopicReplication::Fixed(settings.replication))
                .set("max.message.bytes", MAX_MESSAGE_BYTES)
                .set("min.insync.replicas", &min_insync);
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
    tracing::info!(topics = ?missing, partitions = settings.partitions, replication = settings.replication,
        min_insync = settings.min_insync_replicas, "created kafka topics");
    Ok(())
}

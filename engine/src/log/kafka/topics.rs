//! Herald's topics on Kafka: created with the configured partitions, replication,
//! `min.insync.replicas`, `max.message.bytes` and `retention.ms`; existing ones must match
//! the partition count and have at least the configured replication, or Herald refuses to
//! start (an acknowledged append must not rest on fewer replicas than the operator asked).
//! The bodies topic is created with its own `retention.ms` (for ever by default) and
//! `cleanup.policy=delete`; an existing one must keep records at least that long, only by
//! time, or Herald refuses to start (a pending retry would lose its body).

use super::{BodiesTopic, KafkaSettings, MAX_MESSAGE_BYTES};
use crate::log::LogError;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, Producer};
use std::collections::HashMap;
use std::time::Duration;

pub(super) async fn ensure(
    settings: &KafkaSettings,
    producer: &FutureProducer,
    topics: &[String],
) -> Result<(), LogError> {
    let admin: AdminClient<DefaultClientContext> = super::client_config(settings).create()?;
    // Partition count and fewest replicas of the topics that exist (the metadata itself is
    // not `Sync`, so it cannot be held across the awaits below).
    let existing: HashMap<String, (u32, i32)> = {
        let metadata = producer.client().fetch_metadata(None, Duration::from_secs(10))?;
        metadata.topics().iter().filter(|t| t.error().is_none()).map(|t| (t.name().to_owned(), shape(t))).collect()
    };
    let mut missing = Vec::new();
    for topic in topics {
        match existing.get(topic) {
            Some(&(have, replicas)) => {
                check_shape(settings, topic, have, replicas)?;
                if let Some(bodies) = settings.bodies.as_ref().filter(|b| &b.topic == topic) {
                    check_bodies_topic(&admin, bodies).await?;
                }
            }
            None => missing.push(topic),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let retention_ms = settings.retention.map(|r| r.as_millis().to_string());
    let min_insync = settings.min_insync_replicas.to_string();
    let bodies_ms =
        settings.bodies.as_ref().map(|b| b.retention.map_or("-1".to_owned(), |r| r.as_millis().to_string()));
    let new: Vec<NewTopic> = missing
        .iter()
        .map(|t| {
            let topic = NewTopic::new(t, settings.partitions as i32, TopicReplication::Fixed(settings.replication))
                .set("max.message.bytes", MAX_MESSAGE_BYTES)
                .set("min.insync.replicas", &min_insync);
            let is_bodies = settings.bodies.as_ref().is_some_and(|b| &&b.topic == t);
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
                // Created meanwhile, or created just before and not yet in the metadata we
                // read: either way it must pass the same checks as a topic we saw.
                tracing::debug!(%topic, "topic created concurrently");
                let (have, replicas) = shape_of(producer, &topic).await?;
                check_shape(settings, &topic, have, replicas)?;
                if let Some(bodies) = settings.bodies.as_ref().filter(|b| b.topic == topic) {
                    check_bodies_topic(&admin, bodies).await?;
                }
            }
            Err((topic, code)) => return Err(LogError::Topic { topic, problem: format!("cannot create: {code}") }),
        }
    }
    tracing::info!(topics = ?missing, partitions = settings.partitions, replication = settings.replication,
        min_insync = settings.min_insync_replicas, "created kafka topics");
    Ok(())
}

/// Partition count and fewest replicas of a topic as the metadata lists it.
fn shape(t: &rdkafka::metadata::MetadataTopic) -> (u32, i32) {
    let replicas = t.partitions().iter().map(|p| p.replicas().len()).min().unwrap_or(0) as i32;
    (t.partitions().len() as u32, replicas)
}

/// Refuses a topic whose partition count differs from the configured one, or that has fewer
/// replicas than configured.
fn check_shape(settings: &KafkaSettings, topic: &str, have: u32, replicas: i32) -> Result<(), LogError> {
    if have != settings.partitions {
        return Err(LogError::Topic {
            topic: topic.to_owned(),
            problem: format!("has {have} partitions, config says {}", settings.partitions),
        });
    }
    if replicas < settings.replication {
        return Err(LogError::Topic {
            topic: topic.to_owned(),
            problem: format!(
                "has {replicas} replicas, config asks for {} (backend.kafka_replication)",
                settings.replication
            ),
        });
    }
    Ok(())
}

/// Partition count and fewest replicas of an existing `topic`. Its metadata can lag just
/// after it was created (missing, or with an error such as `LeaderNotAvailable`): asked
/// again for up to 10 s.
async fn shape_of(producer: &FutureProducer, topic: &str) -> Result<(u32, i32), LogError> {
    for _ in 0..40 {
        let shape = {
            let metadata = producer.client().fetch_metadata(Some(topic), Duration::from_secs(10))?;
            let listed = metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none());
            listed.filter(|t| !t.partitions().is_empty()).map(shape)
        };
        if let Some(shape) = shape {
            return Ok(shape);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(LogError::Topic {
        topic: topic.to_owned(),
        problem: "exists, but its metadata was not available within 10 s".into(),
    })
}

/// Checks that an existing bodies topic keeps its records long enough, and only deletes by
/// time: a shorter `retention.ms`, any `retention.bytes` or compaction could drop a body
/// that a pending retry still needs.
async fn check_bodies_topic(admin: &AdminClient<DefaultClientContext>, bodies: &BodiesTopic) -> Result<(), LogError> {
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    // A topic created a moment ago may be described before its configuration reaches the
    // broker that answers (no `retention.ms` at all): ask again, for up to 10 s.
    let mut tries = 0;
    let resource = loop {
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
            });
        let described = resource.as_ref().is_ok_and(|r| r.get("retention.ms").is_some_and(|e| e.value.is_some()));
        tries += 1;
        if described || tries >= 20 {
            break resource?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let value = |name: &str| resource.get(name).and_then(|e| e.value.clone()).unwrap_or_default();
    let need_ms = bodies.retention.map_or(-1, |r| r.as_millis() as i64);
    let have_ms: i64 = value("retention.ms").parse().unwrap_or(0);
    let long_enough = have_ms == -1 || (need_ms != -1 && have_ms >= need_ms);
    let by_bytes: i64 = value("retention.bytes").parse().unwrap_or(-1);
    let policy = value("cleanup.policy");
    let fix = |problem: String| {
        let command = format!(
            "kafka-configs.sh --alter --entity-type topics --entity-name {} \
             --add-config retention.ms={need_ms},retention.bytes=-1,cleanup.policy=delete",
            bodies.topic
        );
        let problem = format!("{problem}: a retry would lose its message body. Fix it with {command}");
        LogError::Topic { topic: bodies.topic.clone(), problem }
    };
    if !long_enough {
        return Err(fix(format!(
            "retention.ms is {have_ms}, bodies must stay {need_ms} ms (delivery.max_age_secs + bodies.retention_margin_hours; -1: for ever)"
        )));
    }
    if by_bytes != -1 {
        return Err(fix(format!("retention.bytes is {by_bytes}")));
    }
    if policy.contains("compact") {
        return Err(fix(format!("cleanup.policy is {policy}")));
    }
    Ok(())
}

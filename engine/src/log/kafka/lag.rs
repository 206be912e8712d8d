//! Log lag on Kafka: the high watermarks against a group's committed offsets, asked with a
//! short-lived consumer of that group that never joins it (no subscription, no commits).

use super::KafkaSettings;
use crate::log::{Assignment, LogError, PartitionLag};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

pub(super) async fn lag(
    settings: &KafkaSettings,
    group: &str,
    assignments: &[Assignment],
) -> Result<Vec<PartitionLag>, LogError> {
    let mut config = super::client_config(settings);
    config.set("group.id", group).set("enable.auto.commit", "false");
    let assignments = assignments.to_vec();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let mut tpl = TopicPartitionList::new();
        for a in &assignments {
            tpl.add_partition(&a.topic, a.partition as i32);
        }
        let timeout = Duration::from_secs(5);
        let committed = consumer.committed_offsets(tpl, timeout)?;
        let mut out = Vec::with_capacity(assignments.len());
        for a in &assignments {
            let (low, high) = consumer.fetch_watermarks(&a.topic, a.partition as i32, timeout)?;
            // A group that never committed starts at the oldest record kept.
            let committed = match committed.find_partition(&a.topic, a.partition as i32).map(|e| e.offset()) {
                Some(Offset::Offset(n)) if n >= 0 => n as u64,
                _ => low.max(0) as u64,
            };
            out.push(PartitionLag {
                topic: a.topic.clone(),
                partition: a.partition,
                end: high.max(0) as u64,
                committed,
            });
        }
        Ok(out)
    })
    .await
    .map_err(|_| LogError::Closed)?
}

//! Reads by position ([`EventLog::read_at`](crate::log::EventLog::read_at)), for topics no
//! consumer group reads (the stored bodies): a consumer without a group membership is
//! assigned the one partition at the wanted offset, polled until that record (or a later
//! one) arrives, then unassigned and kept for the next read.

use super::group::to_stored;
use super::{is_retriable, KafkaSettings, MAX_MESSAGE_BYTES};
use crate::log::{LogError, Stored};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// Consumers kept for reads by position (and the most reads at once).
pub(super) const READERS: usize = 4;
/// Longest wait for one read by position.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// A consumer for reads by position: assigned, never subscribed, never committing.
pub(super) fn reader(settings: &KafkaSettings) -> Result<BaseConsumer, LogError> {
    Ok(super::client_config(settings)
        .set("group.id", "herald-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", "10")
        .set("fetch.max.bytes", MAX_MESSAGE_BYTES)
        // One record is wanted: fetch little beyond it (Kafka still returns a larger first
        // record whole).
        .set("max.partition.fetch.bytes", "1048576")
        .set("queued.max.messages.kbytes", "32768")
        .create()?)
}

/// The partition's low and high watermarks, asked again while the broker answers with a
/// passing error (a partition just created has no leader for a moment), for up to 10 s.
fn watermarks(consumer: &BaseConsumer, topic: &str, partition: u32) -> Result<(i64, i64), LogError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match consumer.fetch_watermarks(topic, partition as i32, Duration::from_secs(10)) {
            Ok(w) => return Ok(w),
            Err(e) if is_retriable(&e) && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads the record at `offset`: assigns the partition there, polls until that record (or
/// a later one, when it is gone) arrives, then unassigns. An offset outside the partition's
/// watermarks is not there.
pub(super) fn read_one(
    consumer: &BaseConsumer,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Result<Option<Stored>, LogError> {
    // An offset at or past the high watermark was never written (a fetch there would wait
    // for it); one below the low watermark is gone.
    let (low, high) = watermarks(consumer, topic, partition)?;
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
                    let (low, high) = watermarks(consumer, topic, partition)?;
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

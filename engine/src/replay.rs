//! Rebuilding a projection from the log (`herald replay`): every record of the
//! projection's topics, from the first one still in the log, through the projector's own
//! [`ChunkHandler`], into the store. The replay reads as a fresh consumer group that never
//! commits, so the live groups' positions are untouched and a replay can be run again;
//! projections are idempotent (the store skips what it already has), so replaying into a
//! store that already holds some of the events is safe. It stops when every partition has
//! been read to the end it had when the replay reached it.

use crate::consumer::ChunkHandler;
use crate::log::{Assignment, EventLog, LogError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a replay did.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// Records read.
    pub records: u64,
    /// Records the handler applied (records it does not project are skipped).
    pub applied: u64,
    pub elapsed: Duration,
}

impl Report {
    /// Records read per second.
    pub fn per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Replays every partition of `topics` through `handler`, `chunk` records at a time per
/// partition (all partitions at once), reading as consumer group `group` (use a name no
/// live group has: it starts at the beginning of the log and never commits).
pub async fn replay<H: ChunkHandler>(
    log: Arc<dyn EventLog>,
    group: &str,
    topics: &[String],
    handler: Arc<H>,
    chunk: usize,
) -> Result<Report, LogError> {
    let started = Instant::now();
    let assignments: Vec<Assignment> = topics
        .iter()
        .flat_map(|t| (0..log.partitions()).map(move |partition| Assignment { topic: t.clone(), partition }))
        .collect();
    let consumers = log.consume(group, &assignments).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for mut consumer in consumers {
        let handler = handler.clone();
        tasks.spawn(async move {
            let (mut records, mut applied, mut empty_polls) = (0u64, 0u64, 0u32);
            loop {
                let batch = consumer.poll(chunk, Duration::from_millis(200)).await?;
                if batch.is_empty() {
                    // At the end; or only offsets no consumer sees are left (Kafka
                    // transaction markers, aborted records) when nothing comes for 5 s.
                    empty_polls += 1;
                    if empty_polls >= 25 || consumer.unread().await? == 0 {
                        return Ok::<_, LogError>((records, applied));
                    }
                    continue;
                }
                empty_polls = 0;
                records += batch.len() as u64;
                let items: Vec<_> = batch.iter().filter_map(|r| handler.prepare(r).map(|i| (r.offset, i))).collect();
                applied += items.len() as u64;
                if !items.is_empty() {
                    // A projector's output records (none today) are not appended again.
                    let _ = handler.handle(consumer.assignment(), items).await;
                }
            }
        });
    }
    let mut report = Report { records: 0, applied: 0, elapsed: Duration::ZERO };
    while let Some(done) = tasks.join_next().await {
        let (records, applied) = done.map_err(|e| LogError::Storage(format!("replay task: {e}")))??;
        report.records += records;
        report.applied += applied;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

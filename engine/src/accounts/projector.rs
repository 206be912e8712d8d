//! The account projector: reads `<prefix>.accounts` and folds each event into the
//! account's stored row ([`super::state::apply`]), committing offsets only after the store
//! has them. Events of one account share a partition, and each partition has one task, so
//! the read-fold-write of an account never races.

use super::directory::AccountCache;
use super::state;
use crate::log::{Assignment, EventLog, LogError, PartitionConsumer};
use crate::store::accounts::AccountStore;
use herald_schemas::{decode, Event};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const GROUP: &str = "herald-account-projector";

pub async fn run(
    log: Arc<dyn EventLog>,
    store: Arc<dyn AccountStore>,
    topic: String,
    partitions: &[u32],
    cache: AccountCache,
    shutdown: CancellationToken,
) -> Result<(), LogError> {
    let assignments: Vec<Assignment> =
        partitions.iter().map(|&partition| Assignment { topic: topic.clone(), partition }).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for consumer in log.consume(GROUP, &assignments).await? {
        tasks.spawn(partition_loop(consumer, store.clone(), cache.clone(), shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn partition_loop(
    mut consumer: Box<dyn PartitionConsumer>,
    store: Arc<dyn AccountStore>,
    cache: AccountCache,
    shutdown: CancellationToken,
) {
    let partition = consumer.assignment().partition;
    loop {
        let records = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = consumer.poll(256, Duration::from_secs(1)) => match r {
                Ok(r) if r.is_empty() => continue,
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "account projector poll failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let next_offset = records.last().map(|r| r.offset + 1).unwrap_or(0);
        for record in &records {
            let event = match decode(&record.value) {
                Ok(Event::Account(e)) => e,
                Ok(other) => {
                    tracing::warn!(
                        event = other.event_type(),
                        offset = record.offset,
                        "unexpected event on the accounts topic; skipped"
                    );
                    continue;
                }
                Err(e) => {
                    metrics::counter!("herald_projector_poison_records_total").increment(1);
                    tracing::error!(error = %e, offset = record.offset, "undecodable record; skipped");
                    continue;
                }
            };
            let mut backoff = Duration::from_millis(100);
            loop {
                let result = async {
                    let current = store.account(event.account()).await?;
                    if let Some(next) = state::apply(current.as_ref(), &event, record.offset) {
                        store.put_account(&next, partition).await?;
                    }
                    Ok::<(), crate::store::StoreError>(())
                }
                .await;
                match result {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "projecting an account event failed; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
            metrics::counter!("herald_account_events_total", "type" => event.event_type()).increment(1);
        }
        cache.changed.notify_one();
        if let Err(e) = consumer.commit(next_offset).await {
            tracing::warn!(error = %e, "account projector commit failed");
        }
    }
}

//! The engagement projection: reads `<prefix>.engagement` (opens, clicks, unsubscriptions
//! appended by the tracking server) and applies each event to the [`ProjectionStore`] as an
//! [`EngagementRow`], committing offsets only after the store has them. The loop has the
//! projector's shape, so it moves to the shared consumer runtime with the others.

use crate::log::{Assignment, EventLog, LogError, PartitionConsumer};
use crate::projector::rfc3339;
use crate::store::{EngagementKind, EngagementRow, ProjectionStore};
use herald_schemas::{decode, Client, EngagementEvent, Event};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const GROUP: &str = "herald-engagement-projector";

fn client(c: &Client) -> serde_json::Value {
    json!({
        "user_agent": c.user_agent,
        "client_ip": c.ip,
        "machine": c.machine.is_some(),
        "machine_reason": c.machine.map(|m| m.as_str()),
    })
}

/// What an engagement event contributes to the projection.
pub fn project(event: &EngagementEvent) -> EngagementRow {
    let c = event.client();
    let mut detail = json!({ "type": event.event_type(), "at": rfc3339(event.at()), "event_id": event.event_id() });
    let (kind, url) = match event {
        EngagementEvent::MessageOpened(_) => (EngagementKind::Opened, None),
        EngagementEvent::LinkClicked(e) => {
            detail["url"] = json!(e.url);
            detail["link_index"] = json!(e.link_index);
            (EngagementKind::Clicked, Some(e.url.clone()))
        }
        EngagementEvent::RecipientUnsubscribed(_) => (EngagementKind::Unsubscribed, None),
    };
    if let (Some(d), serde_json::Value::Object(extra)) = (detail.as_object_mut(), client(c)) {
        d.extend(extra);
    }
    EngagementRow {
        account: event.account().clone(),
        message_id: event.message_id().clone(),
        event_id: event.event_id().to_owned(),
        kind,
        at: event.at(),
        machine: c.machine.is_some(),
        url,
        detail,
    }
}

/// Projects `topic`'s `partitions` until `shutdown`.
pub async fn run(
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    topic: String,
    partitions: &[u32],
    shutdown: CancellationToken,
) -> Result<(), LogError> {
    let assignments: Vec<Assignment> =
        partitions.iter().map(|&partition| Assignment { topic: topic.clone(), partition }).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for consumer in log.consume(GROUP, &assignments).await? {
        tasks.spawn(partition_loop(consumer, store.clone(), shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn partition_loop(
    mut consumer: Box<dyn PartitionConsumer>,
    store: Arc<dyn ProjectionStore>,
    shutdown: CancellationToken,
) {
    loop {
        let records = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = consumer.poll(1024, Duration::from_secs(1)) => match r {
                Ok(r) if r.is_empty() => continue,
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "engagement projector poll failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let next_offset = records.last().map(|r| r.offset + 1).unwrap_or(0);
        let batch: Vec<EngagementRow> = records
            .iter()
            .filter_map(|r| match decode(&r.value) {
                Ok(Event::Engagement(e)) => Some(project(&e)),
                Ok(other) => {
                    tracing::warn!(
                        event = other.event_type(),
                        offset = r.offset,
                        "unexpected event on the engagement topic; skipped"
                    );
                    None
                }
                Err(e) => {
                    metrics::counter!("herald_projector_poison_records_total").increment(1);
                    tracing::error!(error = %e, offset = r.offset, "undecodable record; skipped");
                    None
                }
            })
            .collect();
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = store.apply_engagement(&batch).await {
            tracing::error!(error = %e, "engagement projection write failed; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        for row in &batch {
            metrics::counter!("herald_engagement_events_total", "kind" => row.kind.as_str(), "machine" => if row.machine { "true" } else { "false" }).increment(1);
        }
        if let Err(e) = consumer.commit(next_offset).await {
            tracing::warn!(error = %e, "engagement projector commit failed");
        }
    }
}

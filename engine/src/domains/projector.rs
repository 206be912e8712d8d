//! The domain projector: reads `<prefix>.domains` and folds each event into the domain's
//! stored state ([`super::state::apply`]), committing offsets only after the store has
//! them. Events of one domain share a partition, and each partition has one task, so the
//! read-fold-write of a domain never races.

use super::cache::DomainCache;
use super::state;
use crate::consumer::{self, ChunkHandler, Membership, Owned};
use crate::log::{Assignment, EventLog, LogError, Record, Stored};
use crate::store::ProjectionStore;
use async_trait::async_trait;
use herald_schemas::{decode, DomainEvent, Event};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The role in the domain projector's consumer group name (`<prefix>-domain-projector`).
pub const ROLE: &str = "domain-projector";

/// Runs the domain projector for the partitions of `topic` this node owns (`owned` follows
/// them, for the maintenance loop) until `shutdown`.
pub async fn run(
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    topics: &crate::log::Topics,
    membership: &Membership,
    cache: DomainCache,
    owned: Owned,
    shutdown: CancellationToken,
) -> Result<(), LogError> {
    // One chunk at a time per partition: a domain's events are folded in order.
    let settings = consumer::Settings::in_order(256);
    let handler = Arc::new(DomainProjector { store, cache });
    let (group, topic) = (topics.group(ROLE), topics.domains());
    consumer::run(log, &group, &[topic], membership, handler, settings, owned, shutdown).await
}

struct DomainProjector {
    store: Arc<dyn ProjectionStore>,
    cache: DomainCache,
}

#[async_trait]
impl ChunkHandler for DomainProjector {
    type Item = DomainEvent;

    fn prepare(&self, record: &Stored) -> Option<DomainEvent> {
        match decode(&record.value) {
            Ok(Event::Domain(e)) => Some(e),
            Ok(other) => {
                tracing::warn!(
                    event = other.event_type(),
                    offset = record.offset,
                    "unexpected event on the domains topic; skipped"
                );
                None
            }
            Err(e) => {
                metrics::counter!("herald_projector_poison_records_total").increment(1);
                tracing::error!(error = %e, offset = record.offset, "undecodable record; skipped");
                None
            }
        }
    }

    async fn handle(&self, _: &Assignment, items: Vec<(u64, DomainEvent)>) -> Vec<Record> {
        for (offset, event) in items {
            consumer::until_ok("projecting a domain event", || async {
                let current = self.store.domain(event.domain()).await?;
                if let Some(next) = state::apply(current.as_ref(), &event, offset) {
                    self.store.put_domain(&next).await?;
                }
                Ok::<(), crate::store::StoreError>(())
            })
            .await;
            metrics::counter!("herald_domain_events_total", "type" => event.event_type()).increment(1);
        }
        self.cache.changed.notify_one();
        Vec::new()
    }
}

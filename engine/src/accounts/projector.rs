//! The account projector: a [`ChunkHandler`] on `<prefix>.accounts` that folds each event
//! into the account's stored row ([`super::state::apply`]); the consumer runtime commits
//! the partition's position only after the store has the rows. Events of one account share
//! a partition, and each partition is handled one chunk at a time
//! ([`consumer::Settings::in_order`]), so the read-fold-write of an account never races.

use super::directory::AccountCache;
use super::state;
use crate::consumer::{self, ChunkHandler, Membership, Owned};
use crate::log::{Assignment, EventLog, LogError, Record, Stored, Topics};
use crate::store::accounts::AccountStore;
use async_trait::async_trait;
use herald_schemas::{decode, AccountEvent, Event};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The role in the account projector's consumer group name (`<prefix>-account-projector`).
pub const ROLE: &str = "account-projector";

/// Runs the account projector for the partitions of the accounts topic this node owns,
/// until `shutdown`. Each chunk it applies wakes this node's [`AccountCache`].
pub async fn run(
    log: Arc<dyn EventLog>,
    store: Arc<dyn AccountStore>,
    topics: &Topics,
    membership: &Membership,
    cache: AccountCache,
    shutdown: CancellationToken,
) -> Result<(), LogError> {
    let settings = consumer::Settings::in_order(256);
    let handler = Arc::new(AccountProjector { store, cache });
    let (group, topic) = (topics.group(ROLE), topics.accounts());
    consumer::run(log, &group, &[topic], membership, handler, settings, Owned::default(), shutdown).await
}

struct AccountProjector {
    store: Arc<dyn AccountStore>,
    cache: AccountCache,
}

#[async_trait]
impl ChunkHandler for AccountProjector {
    type Item = AccountEvent;

    fn prepare(&self, record: &Stored) -> Option<AccountEvent> {
        match decode(&record.value) {
            Ok(Event::Account(e)) => Some(e),
            Ok(other) => {
                tracing::warn!(
                    event = other.event_type(),
                    offset = record.offset,
                    "unexpected event on the accounts topic; skipped"
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

    async fn handle(&self, assignment: &Assignment, items: Vec<(u64, AccountEvent)>) -> Vec<Record> {
        for (offset, event) in items {
            consumer::until_ok("projecting an account event", || async {
                let current = self.store.account(event.account()).await?;
                if let Some(next) = state::apply(current.as_ref(), &event, offset) {
                    self.store.put_account(&next, assignment.partition).await?;
                }
                Ok::<(), crate::store::StoreError>(())
            })
            .await;
            metrics::counter!("herald_account_events_total", "type" => event.event_type()).increment(1);
        }
        self.cache.changed.notify_one();
        Vec::new()
    }
}

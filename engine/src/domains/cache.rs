//! The sender domains as this node last read them from the projection store: the DNS zone
//! and DKIM signing read this snapshot, never the store on their hot paths. It is refreshed
//! when the local domain projector applied something, and on a short interval (another
//! node's projector may have written the shared store).

use super::state::DomainState;
use crate::store::ProjectionStore;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// Live (not removed) domains by punycode name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub domains: HashMap<String, DomainState>,
}

#[derive(Clone)]
pub struct DomainCache {
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
    /// Poked by the local projector after it stored domain states.
    pub changed: Arc<Notify>,
}

impl Default for DomainCache {
    fn default() -> Self {
        DomainCache { tx: Arc::new(watch::channel(Arc::new(Snapshot::default())).0), changed: Arc::new(Notify::new()) }
    }
}

impl DomainCache {
    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Re-reads the store; subscribers are woken only if something changed.
    pub async fn refresh(&self, store: &dyn ProjectionStore) -> Result<(), crate::store::StoreError> {
        let domains: HashMap<String, DomainState> =
            store.domains().await?.into_iter().filter(|d| !d.removed).map(|d| (d.domain.clone(), d)).collect();
        let next = Snapshot { domains };
        self.tx.send_if_modified(|current| {
            if **current == next {
                false
            } else {
                *current = Arc::new(next);
                true
            }
        });
        Ok(())
    }

    /// Refreshes on every local change and every `interval`, until `shutdown`.
    pub async fn run(self, store: Arc<dyn ProjectionStore>, interval: Duration, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.refresh(store.as_ref()).await {
                tracing::warn!(error = %e, "reading sender domains failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

//! The embedded projection store on redb. Exactly-once: an event already stored is
//! skipped in the same transaction that would have counted it.

use super::{DomainState, Kind, MessageView, Projected, ProjectionStore, Stats, StoreError};
use async_trait::async_trait;
use herald_schemas::{AccountId, MessageId, Timestamp};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;

mod feedback;

/// (account, message id, seq) → JSON of [`Projected`].
const EVENTS: TableDefinition<(&str, &str, u32), &[u8]> = TableDefinition::new("message_events");
/// (account, hour start in ms, kind) → count.
const COUNTS: TableDefinition<(&str, i64, &str), u64> = TableDefinition::new("hourly_counts");
/// Punycode domain → JSON of [`DomainState`].
const DOMAINS: TableDefinition<&str, &[u8]> = TableDefinition::new("sender_domains");

fn err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Embedded(e.to_string())
}

pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl EmbeddedStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(EVENTS).map_err(err)?;
        txn.open_table(COUNTS).map_err(err)?;
        txn.open_table(DOMAINS).map_err(err)?;
        feedback::create_tables(&txn)?;
        txn.commit().map_err(err)?;
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(err)?
    }
}

#[async_trait]
impl ProjectionStore for EmbeddedStore {
    async fn apply(&self, batch: &[Projected]) -> Result<(), StoreError> {
        let batch = batch.to_vec();
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(err)?;
            txn.set_durability(Durability::Immediate).map_err(err)?;
            {
                let mut events = txn.open_table(EVENTS).map_err(err)?;
                let mut counts = txn.open_table(COUNTS).map_err(err)?;
                for p in &batch {
                    let key = (p.account.0.as_str(), p.message_id.0.as_str(), p.seq);
                    if events.get(key).map_err(err)?.is_some() {
                        continue;
                    }
                    let json = serde_json::to_vec(p).map_err(err)?;
                    events.insert(key, json.as_slice()).map_err(err)?;
                    if !p.kind.counted() {
                        continue;
                    }
                    let ckey = (p.account.0.as_str(), p.at.hour_bucket(), p.kind.as_str());
                    let n = counts.get(ckey).map_err(err)?.map(|v| v.value()).unwrap_or(0);
                    counts.insert(ckey, n + 1).map_err(err)?;
                }
            }
            txn.commit().map_err(err)
        })
        .await
    }

    async fn message(&self, account: &AccountId, id: &MessageId) -> Result<Option<MessageView>, StoreError> {
        let (account, id) = (account.0.clone(), id.0.clone());
        self.blocking(move |db| {
            let read = db.begin_read().map_err(err)?;
            let events = read.open_table(EVENTS).map_err(err)?;
            let mut out = Vec::new();
            for entry in events
                .range((account.as_str(), id.as_str(), 0)..=(account.as_str(), id.as_str(), u32::MAX))
                .map_err(err)?
            {
                let (_, v) = entry.map_err(err)?;
                out.push(serde_json::from_slice::<Projected>(v.value()).map_err(err)?);
            }
            Ok(super::view(out))
        })
        .await
    }

    async fn stats(&self, account: &AccountId, from: Timestamp, to: Timestamp) -> Result<Stats, StoreError> {
        let account = account.0.clone();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(err)?;
            let counts = read.open_table(COUNTS).map_err(err)?;
            let mut stats = Stats::default();
            let lo = (account.as_str(), from.hour_bucket(), "");
            let hi = (account.as_str(), to.millis(), "");
            for entry in counts.range(lo..hi).map_err(err)? {
                let (k, v) = entry.map_err(err)?;
                if let Some(kind) = Kind::parse(k.value().2) {
                    stats.add(kind, v.value());
                }
            }
            Ok(stats)
        })
        .await
    }

    async fn domain(&self, domain: &str) -> Result<Option<DomainState>, StoreError> {
        let domain = domain.to_owned();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(err)?;
            let table = read.open_table(DOMAINS).map_err(err)?;
            match table.get(domain.as_str()).map_err(err)? {
                Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(err)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn put_domain(&self, state: &DomainState) -> Result<(), StoreError> {
        let json = serde_json::to_vec(state).map_err(err)?;
        let domain = state.domain.clone();
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(err)?;
            txn.set_durability(Durability::Immediate).map_err(err)?;
            txn.open_table(DOMAINS).map_err(err)?.insert(domain.as_str(), json.as_slice()).map_err(err)?;
            txn.commit().map_err(err)
        })
        .await
    }

    async fn domains(&self) -> Result<Vec<DomainState>, StoreError> {
        self.blocking(move |db| {
            let read = db.begin_read().map_err(err)?;
            let table = read.open_table(DOMAINS).map_err(err)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(err)? {
                let (_, v) = entry.map_err(err)?;
                out.push(serde_json::from_slice(v.value()).map_err(err)?);
            }
            Ok(out)
        })
        .await
    }
}

//! The webhook read models on redb: two tables in the projection file.

use super::{err, EmbeddedStore};
use crate::store::webhooks::{DeliveryRow, FeedPage, FeedQuery, FeedRow, WebhookStore, FEED_SCAN_BUDGET};
use crate::store::StoreError;
use crate::webhooks::endpoints::Endpoint;
use async_trait::async_trait;
use herald_schemas::Timestamp;
use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

/// endpoint id → JSON of [`Endpoint`].
const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhook_endpoints");
/// (endpoint id, at ms, webhook id, attempt) → JSON of [`DeliveryRow`].
const DELIVERIES: TableDefinition<(&str, i64, &str, u32), &[u8]> = TableDefinition::new("webhook_deliveries");

/// (account, at ms, id) → JSON of [`FeedRow`].
const FEED: TableDefinition<(&str, i64, &str), &[u8]> = TableDefinition::new("event_feed");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(FEED).map_err(err)?;
    txn.open_table(ENDPOINTS).map_err(err)?;
    txn.open_table(DELIVERIES).map_err(err)?;
    Ok(())
}

#[async_trait]
impl WebhookStore for EmbeddedStore {
    async fn put_endpoint(&self, id: &str, endpoint: Option<&Endpoint>) -> Result<(), StoreError> {
        let (id, json) = (id.to_owned(), endpoint.map(serde_json::to_vec).transpose().map_err(err)?);
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(err)?;
            txn.set_durability(Durability::Immediate).map_err(err)?;
            {
                let mut t = txn.open_table(ENDPOINTS).map_err(err)?;
                match &json {
                    Some(j) => t.insert(id.as_str(), j.as_slice()).map_err(err)?,
                    None => t.remove(id.as_str()).map_err(err)?,
                };
            }
            txn.commit().map_err(err)
        })
        .await
    }

    async fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, StoreError> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(err)?;
            let t = read.open_table(ENDPOINTS).map_err(err)?;
            match t.get(id.as_str()).map_err(err)? {
                Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(err)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        self.blocking(move |db| {
            let read = db.begin_read().map_err(err)?;
            let t = read.open_table(ENDPOINTS).map_err(err)?;
            let mut out = Vec::new();
            for entry in t.iter().map_err(err)? {
                let (_, v) = entry.map_err(err)?;
                out.push(serde_json::from_slice(v.value()).map_err(err)?);
            }
            Ok(out)
        })
        .await
    }

    async fn put_deliveries(&self, rows: Vec<DeliveryRow>) -> Result<(), StoreError> {
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(err)?;
            txn.set_durability(Durability::Immediate).map_err(err)?;
            {
                let mut t = txn.open_table(DELIVERIES).map_err(err)?;
                for r in &rows {
                    let json = serde_json::to_vec(r).map_err(err)?;
                    t.insert(
                        (r.endpoint_id.as_str(), r.at.millis(), r.webhook_id.as_str(), r.attempt),
                        json.as_slice(),
                    )
                    .map_err(err)?;
                }
            }
            txn.commit().map_err(err)
        })
        .await
    }

    async fn deliveries(
        &self,
        endpoint_id: &str,
        before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let (id, before) = (endpoint_id.to_owned(), before.map(|t| t.millis()).unwrap_or(i64::MAX));
        self.blocking(move |db| {
            let read = db.begin_read().map_err(err)?;
            let t = read.open_table(DELIVERIES).map_err(err)?;
            let mut out = Vec::new();
            let range = t.range((id.as_str(), i64::MIN, "", 0u32)..(id.as_str(), before, "", 0u32)).map_err(err)?;
            for entry in range.rev() {
                let (k, v) = entry.map_err(err)?;
                let mut row: DeliveryRow = serde_json::from_slice(v.value()).map_err(err)?;
                row.endpoint_id = k.value().0.to_owned();
                out.push(row);
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn put_feed(&self, rows: &[FeedRow]) -> Result<(), StoreError> {
        let rows = rows.to_vec();
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(err)?;
            txn.set_durability(Durability::Immediate).map_err(err)?;
            {
                let mut t = txn.open_table(FEED).map_err(err)?;
                for r in &rows {
                    let json = serde_json::to_vec(r).map_err(err)?;
                    t.insert((r.account.0.as_str(), r.at.millis(), r.id.as_str()), json.as_slice()).map_err(err)?;
                }
            }
            txn.commit().map_err(err)
        })
        .await
    }

    async fn feed(&self, account: &herald_schemas::AccountId, q: &FeedQuery) -> Result<FeedPage, StoreError> {
        let (account, q) = (account.clone(), q.clone());
        self.blocking(move |db| {
            let read = db.begin_read().map_err(err)?;
            let t = read.open_table(FEED).map_err(err)?;
            let (start_at, start_id) = q.after.clone().unwrap_or((q.from.millis(), String::new()));
            let range = t
                .range((account.0.as_str(), start_at, start_id.as_str())..(account.0.as_str(), q.to.millis(), ""))
                .map_err(err)?;
            let (mut items, mut scanned) = (Vec::new(), 0usize);
            for entry in range {
                let (k, v) = entry.map_err(err)?;
                let (_, at, id) = k.value();
                if q.after.as_ref().is_some_and(|(a, i)| *a == at && i == id) {
                    continue;
                }
                scanned += 1;
                let mut row: FeedRow = serde_json::from_slice(v.value()).map_err(err)?;
                row.account = account.clone();
                let pos = (at, id.to_owned());
                if q.matches(&row) {
                    items.push(row);
                }
                if items.len() >= q.limit || scanned >= FEED_SCAN_BUDGET {
                    return Ok(FeedPage { items, next: Some(pos) });
                }
            }
            Ok(FeedPage { items, next: None })
        })
        .await
    }
}

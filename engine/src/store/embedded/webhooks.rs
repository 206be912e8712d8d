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
/// (endpoint id, at ms, webhook id, attempt) → the rest of the [`DeliveryRow`]
/// ([`encode_delivery`]; rows written before it are JSON of the whole row).
const DELIVERIES: TableDefinition<(&str, i64, &str, u32), &[u8]> = TableDefinition::new("webhook_deliveries");

/// (account, at ms, id) → JSON of [`FeedRow`].
const FEED: TableDefinition<(&str, i64, &str), &[u8]> = TableDefinition::new("event_feed");

/// Format of a delivery value: a version byte, then bincode of [`StoredDelivery`]. A JSON
/// row (an earlier build's) starts with `{`, which is never a version.
const DELIVERY_V1: u8 = 1;

/// What a delivery row holds besides its key.
#[derive(bincode::Decode)]
struct StoredDelivery {
    event_type: String,
    status: Option<u16>,
    error: Option<String>,
    outcome: String,
    duration_ms: u64,
}

/// [`StoredDelivery`], borrowed from the row (the same encoding).
#[derive(bincode::Encode)]
struct StoringDelivery<'a> {
    event_type: &'a str,
    status: Option<u16>,
    error: Option<&'a str>,
    outcome: &'a str,
    duration_ms: u64,
}

/// The value of a delivery row: about a quarter of its JSON, so a page holds twice the rows
/// and the projector writes (and splits) half the pages.
fn encode_delivery(r: &DeliveryRow, buf: &mut Vec<u8>) -> Result<(), StoreError> {
    let v = StoringDelivery {
        event_type: &r.event_type,
        status: r.status,
        error: r.error.as_deref(),
        outcome: &r.outcome,
        duration_ms: r.duration_ms,
    };
    buf.clear();
    buf.push(DELIVERY_V1);
    bincode::encode_into_std_write(v, buf, bincode::config::standard()).map_err(err)?;
    Ok(())
}

/// The row of a delivery's key and value (either format).
fn decode_delivery(key: (&str, i64, &str, u32), value: &[u8]) -> Result<DeliveryRow, StoreError> {
    let (endpoint_id, at, webhook_id, attempt) = key;
    let mut row = match value.split_first() {
        Some((&DELIVERY_V1, rest)) => {
            let (v, _): (StoredDelivery, _) =
                bincode::decode_from_slice(rest, bincode::config::standard()).map_err(err)?;
            DeliveryRow {
                endpoint_id: String::new(),
                webhook_id: webhook_id.to_owned(),
                event_type: v.event_type,
                attempt,
                status: v.status,
                error: v.error,
                outcome: v.outcome,
                duration_ms: v.duration_ms,
                at: Timestamp(at),
            }
        }
        _ => serde_json::from_slice(value).map_err(err)?,
    };
    row.endpoint_id = endpoint_id.to_owned();
    Ok(row)
}

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
                let mut value = Vec::with_capacity(64);
                for r in &rows {
                    encode_delivery(r, &mut value)?;
                    t.insert(
                        (r.endpoint_id.as_str(), r.at.millis(), r.webhook_id.as_str(), r.attempt),
                        value.as_slice(),
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
                out.push(decode_delivery(k.value(), v.value())?);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::webhooks::WebhookStore;

    fn row(webhook_id: &str, at: i64, attempt: u32, error: Option<&str>) -> DeliveryRow {
        DeliveryRow {
            endpoint_id: "ep_1".into(),
            webhook_id: webhook_id.into(),
            event_type: "message.delivered".into(),
            attempt,
            status: error.map_or(Some(204), |_| None),
            error: error.map(str::to_owned),
            outcome: if error.is_some() { "retrying" } else { "delivered" }.into(),
            duration_ms: 12,
            at: Timestamp(at),
        }
    }

    #[tokio::test]
    async fn delivery_rows_read_back_newest_first_in_either_format() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("p.redb")).unwrap();
        let (new1, new2) = (row("msg_a", 1_000, 1, Some("could not connect")), row("msg_b", 3_000, 2, None));
        store.put_deliveries(vec![new1.clone(), new2.clone()]).await.unwrap();
        // A row an earlier build wrote: JSON of the whole row.
        let old = row("msg_c", 2_000, 1, None);
        let json = serde_json::to_vec(&old).unwrap();
        store
            .blocking(move |db| {
                let txn = db.begin_write().map_err(err)?;
                txn.open_table(DELIVERIES)
                    .map_err(err)?
                    .insert(("ep_1", 2_000, "msg_c", 1), json.as_slice())
                    .map_err(err)?;
                txn.commit().map_err(err)
            })
            .await
            .unwrap();
        assert_eq!(store.deliveries("ep_1", None, 10).await.unwrap(), vec![new2.clone(), old, new1]);
        assert_eq!(store.deliveries("ep_1", Some(Timestamp(3_000)), 1).await.unwrap().len(), 1);
        assert!(store.deliveries("ep_2", None, 10).await.unwrap().is_empty());
    }
}

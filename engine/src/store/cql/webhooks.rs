//! The webhook read models on CQL (tables `webhook_endpoints`, `webhook_deliveries` in
//! `ops/cql/schema.cql`); deliveries are partitioned per endpoint and UTC day.

use super::{err, CqlStore};
use crate::store::webhooks::{
    DeliveryRow, FeedPage, FeedQuery, FeedRow, WebhookStore, DELIVERY_TTL_DAYS, FEED_SCAN_BUDGET,
};
use crate::store::StoreError;
use crate::webhooks::endpoints::Endpoint;
use async_trait::async_trait;
use futures::StreamExt;
use herald_schemas::Timestamp;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

pub(super) struct Statements {
    put: PreparedStatement,
    delete: PreparedStatement,
    get: PreparedStatement,
    all: PreparedStatement,
    put_delivery: PreparedStatement,
    list: PreparedStatement,
    put_feed: PreparedStatement,
    feed: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Statements, StoreError> {
        let p = |cql: String| async move { session.prepare(cql).await.map_err(err) };
        let mut all = p(format!("SELECT state FROM {ks}.webhook_endpoints")).await?;
        all.set_page_size(1000);
        Ok(Statements {
            put: p(format!("INSERT INTO {ks}.webhook_endpoints (id, account, state) VALUES (?, ?, ?)")).await?,
            delete: p(format!("DELETE FROM {ks}.webhook_endpoints WHERE id = ?")).await?,
            get: p(format!("SELECT state FROM {ks}.webhook_endpoints WHERE id = ?")).await?,
            all,
            put_delivery: p(format!(
                "INSERT INTO {ks}.webhook_deliveries (endpoint_id, day, at, webhook_id, attempt, row) VALUES (?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            list: p(format!(
                "SELECT row FROM {ks}.webhook_deliveries WHERE endpoint_id = ? AND day = ? AND at < ? LIMIT ?"
            ))
            .await?,
            put_feed: p(format!("INSERT INTO {ks}.event_feed (account, hour, at, id, row) VALUES (?, ?, ?, ?, ?)"))
                .await?,
            feed: p(format!(
                "SELECT at, id, row FROM {ks}.event_feed WHERE account = ? AND hour = ? AND (at, id) > (?, ?) AND at < ? LIMIT ?"
            ))
            .await?,
        })
    }
}

#[async_trait]
impl WebhookStore for CqlStore {
    async fn put_endpoint(&self, id: &str, endpoint: Option<&Endpoint>) -> Result<(), StoreError> {
        let s = &self.webhooks;
        match endpoint {
            Some(e) => {
                let json = serde_json::to_string(e).map_err(err)?;
                self.session.execute_unpaged(&s.put, (id, e.account.0.as_str(), json)).await.map_err(err)?;
            }
            None => {
                self.session.execute_unpaged(&s.delete, (id,)).await.map_err(err)?;
            }
        }
        Ok(())
    }

    async fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, StoreError> {
        let result = self
            .session
            .execute_unpaged(&self.webhooks.get, (id,))
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        match result.maybe_first_row::<(String,)>().map_err(err)? {
            Some((json,)) => Ok(Some(serde_json::from_str(&json).map_err(err)?)),
            None => Ok(None),
        }
    }

    async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        let mut rows = self
            .session
            .execute_iter(self.webhooks.all.clone(), &[])
            .await
            .map_err(err)?
            .rows_stream::<(String,)>()
            .map_err(err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await {
            let (json,) = row.map_err(err)?;
            match serde_json::from_str(&json) {
                Ok(e) => out.push(e),
                Err(e) => tracing::error!(error = %e, "unreadable webhook endpoint row; skipped"),
            }
        }
        Ok(out)
    }

    async fn put_deliveries(&self, rows: Vec<DeliveryRow>) -> Result<(), StoreError> {
        let writes = rows.iter().map(|r| async move {
            let json = serde_json::to_string(r).map_err(err)?;
            let day = r.at.millis().div_euclid(DAY_MS) * DAY_MS;
            let values = (r.endpoint_id.as_str(), day, r.at.millis(), r.webhook_id.as_str(), r.attempt as i32, json);
            self.session.execute_unpaged(&self.webhooks.put_delivery, values).await.map_err(err).map(|_| ())
        });
        for done in futures::future::join_all(writes).await {
            done?;
        }
        Ok(())
    }

    async fn deliveries(
        &self,
        endpoint_id: &str,
        before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let before = before.map(|t| t.millis()).unwrap_or_else(|| Timestamp::now().millis() + 1);
        let mut day = (before - 1).div_euclid(DAY_MS) * DAY_MS;
        let oldest = day - DELIVERY_TTL_DAYS * DAY_MS;
        let mut out = Vec::new();
        while out.len() < limit && day >= oldest {
            let want = (limit - out.len()) as i32;
            let result = self
                .session
                .execute_unpaged(&self.webhooks.list, (endpoint_id, day, before, want))
                .await
                .map_err(err)?
                .into_rows_result()
                .map_err(err)?;
            for row in result.rows::<(String,)>().map_err(err)? {
                let (json,) = row.map_err(err)?;
                let mut r: DeliveryRow = serde_json::from_str(&json).map_err(err)?;
                r.endpoint_id = endpoint_id.to_owned();
                out.push(r);
            }
            day -= DAY_MS;
        }
        Ok(out)
    }

    async fn put_feed(&self, rows: &[FeedRow]) -> Result<(), StoreError> {
        let writes = rows.iter().map(|r| async move {
            let json = serde_json::to_string(r).map_err(err)?;
            let hour = r.at.millis().div_euclid(HOUR_MS) * HOUR_MS;
            let values = (r.account.0.as_str(), hour, r.at.millis(), r.id.as_str(), json);
            self.session.execute_unpaged(&self.webhooks.put_feed, values).await.map_err(err).map(|_| ())
        });
        for done in futures::future::join_all(writes).await {
            done?;
        }
        Ok(())
    }

    async fn feed(&self, account: &herald_schemas::AccountId, q: &FeedQuery) -> Result<FeedPage, StoreError> {
        // Walk the hours of the range in order; within an hour, rows after the position.
        let (mut at, mut id) = q.after.clone().unwrap_or((q.from.millis() - 1, String::from("\u{10ffff}")));
        let mut hour = at.max(q.from.millis()).div_euclid(HOUR_MS) * HOUR_MS;
        let (mut items, mut scanned) = (Vec::new(), 0usize);
        while hour < q.to.millis() {
            let want = (q.limit - items.len()).clamp(1, FEED_SCAN_BUDGET) as i32;
            let values = (account.0.as_str(), hour, at, id.as_str(), q.to.millis(), want);
            let result = self
                .session
                .execute_unpaged(&self.webhooks.feed, values)
                .await
                .map_err(err)?
                .into_rows_result()
                .map_err(err)?;
            let mut got = 0;
            for row in result.rows::<(i64, String, String)>().map_err(err)? {
                let (row_at, row_id, json) = row.map_err(err)?;
                got += 1;
                scanned += 1;
                let mut r: FeedRow = serde_json::from_str(&json).map_err(err)?;
                r.account = account.clone();
                (at, id) = (row_at, row_id);
                if q.matches(&r) {
                    items.push(r);
                }
                if items.len() >= q.limit || scanned >= FEED_SCAN_BUDGET {
                    return Ok(FeedPage { items, next: Some((at, id)) });
                }
            }
            if got < want {
                hour += HOUR_MS;
            }
        }
        Ok(FeedPage { items, next: None })
    }
}

//! The CQL projection store (ScyllaDB, or Apache Cassandra, which speaks the same
//! protocol). Schema: `ops/cql/schema.cql`, applied at start (`IF NOT EXISTS`).
//!
//! Idempotence: an event row is looked up before it is written and counted; since every
//! `(account, message_id, seq)` comes from exactly one log partition, read by exactly one
//! projector task, there is no race between the look-up and the write. A crash between the
//! row write and the counter update loses at most that batch's increments (counters may
//! undercount by one batch per crash; statuses are always exact).

use super::{
    Claim, DomainState, HourStats, IdempotencyRecord, Kind, MessageView, Projected, ProjectionStore, Stats, StoreError,
};
use async_trait::async_trait;
use herald_schemas::{AccountId, MessageId, Timestamp};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::Counter;

mod accounts;

/// The schema, shipped for operators under `ops/cql/` and applied by [`CqlStore::connect`].
pub const SCHEMA: &str = include_str!("../../../ops/cql/schema.cql");

fn err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Cql(e.to_string())
}

pub struct CqlStore {
    session: Session,
    exists: PreparedStatement,
    insert: PreparedStatement,
    count: [PreparedStatement; 4],
    select_events: PreparedStatement,
    select_counts: PreparedStatement,
    select_domain: PreparedStatement,
    insert_domain: PreparedStatement,
    select_domains: PreparedStatement,
    claim_key: PreparedStatement,
    replace_key: PreparedStatement,
    release_key: PreparedStatement,
    select_hours: PreparedStatement,
    index_recipient: PreparedStatement,
    select_recipient: PreparedStatement,
    accounts: accounts::Statements,
}

impl CqlStore {
    /// Connects to `nodes`, applies the schema with `keyspace` substituted for `herald`.
    pub async fn connect(nodes: &[String], keyspace: &str) -> Result<Self, StoreError> {
        let session = SessionBuilder::new().known_nodes(nodes).build().await.map_err(err)?;
        for statement in strip_comments(SCHEMA).split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let statement = statement
                .replace("herald.", &format!("{keyspace}."))
                .replace("KEYSPACE IF NOT EXISTS herald ", &format!("KEYSPACE IF NOT EXISTS {keyspace} "));
            session.query_unpaged(statement, &[]).await.map_err(err)?;
        }
        session.await_schema_agreement().await.map_err(err)?;
        let ks = keyspace;
        let prepare = |cql: String| {
            let session = &session;
            async move { session.prepare(cql).await.map_err(err) }
        };
        let counter =
            |col: &str| format!("UPDATE {ks}.hourly_counts SET {col} = {col} + 1 WHERE account = ? AND hour = ?");
        Ok(CqlStore {
            exists: prepare(format!("SELECT seq FROM {ks}.message_events WHERE account = ? AND message_id = ? AND seq = ?")).await?,
            insert: prepare(format!(
                "INSERT INTO {ks}.message_events (account, message_id, seq, recipient, kind, at, detail) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            count: [
                prepare(counter("accepted")).await?,
                prepare(counter("delivered")).await?,
                prepare(counter("deferred")).await?,
                prepare(counter("failed")).await?,
            ],
            select_events: prepare(format!(
                "SELECT seq, recipient, kind, at, detail FROM {ks}.message_events WHERE account = ? AND message_id = ?"
            ))
            .await?,
            select_counts: prepare(format!(
                "SELECT accepted, delivered, deferred, failed FROM {ks}.hourly_counts WHERE account = ? AND hour >= ? AND hour < ?"
            ))
            .await?,
            select_domain: prepare(format!("SELECT state FROM {ks}.sender_domains WHERE domain = ?")).await?,
            insert_domain: prepare(format!("INSERT INTO {ks}.sender_domains (domain, account, state) VALUES (?, ?, ?)")).await?,
            select_domains: prepare(format!("SELECT state FROM {ks}.sender_domains")).await?,
            claim_key: prepare(format!(
                "INSERT INTO {ks}.idempotency_keys (account, key, claim, record) VALUES (?, ?, ?, ?) IF NOT EXISTS USING TTL ?"
            ))
            .await?,
            replace_key: prepare(format!(
                "UPDATE {ks}.idempotency_keys USING TTL ? SET claim = ?, record = ? WHERE account = ? AND key = ? IF claim = ?"
            ))
            .await?,
            release_key: prepare(format!("DELETE FROM {ks}.idempotency_keys WHERE account = ? AND key = ? IF claim = ?"))
                .await?,
            select_hours: prepare(format!(
                "SELECT hour, accepted, delivered, deferred, failed FROM {ks}.hourly_counts WHERE account = ? AND hour >= ? AND hour < ?"
            ))
            .await?,
            index_recipient: prepare(format!(
                "INSERT INTO {ks}.messages_by_recipient (account, recipient, at, message_id) VALUES (?, ?, ?, ?)"
            ))
            .await?,
            select_recipient: prepare(format!(
                "SELECT message_id FROM {ks}.messages_by_recipient WHERE account = ? AND recipient = ? AND at < ? LIMIT ?"
            ))
            .await?,
            accounts: accounts::Statements::prepare(&session, ks).await?,
            session,
        })
    }
}

/// `[applied]` of a lightweight transaction's result, and the `record` column it returns
/// when not applied (the row that is there).
fn lwt_outcome(result: scylla::response::query_result::QueryResult) -> Result<(bool, Option<String>), StoreError> {
    let rows = result.into_rows_result().map_err(err)?;
    let specs = rows.column_specs();
    let applied_at = specs.get_by_name("[applied]").map(|(i, _)| i).unwrap_or(0);
    let record_at = specs.get_by_name("record").map(|(i, _)| i);
    let row = rows.maybe_first_row::<scylla::value::Row>().map_err(err)?.ok_or_else(|| err("empty LWT result"))?;
    let applied = row.columns.get(applied_at).cloned().flatten().and_then(|v| v.as_boolean()).unwrap_or(false);
    let record = record_at.and_then(|i| row.columns.get(i).cloned().flatten()).and_then(|v| v.into_string());
    Ok((applied, record))
}

fn ttl_secs(ttl: std::time::Duration) -> i32 {
    ttl.as_secs().clamp(1, i32::MAX as u64) as i32
}

fn strip_comments(s: &str) -> String {
    s.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n").trim().to_owned()
}

fn counter_index(kind: Kind) -> usize {
    match kind {
        Kind::Accepted => 0,
        Kind::Delivered => 1,
        Kind::Deferred => 2,
        Kind::Failed => 3,
    }
}

#[async_trait]
impl ProjectionStore for CqlStore {
    async fn apply(&self, batch: &[Projected]) -> Result<(), StoreError> {
        // Copies of one event inside a batch (redelivery) must not race each other.
        let mut seen = std::collections::HashSet::new();
        let unique = batch.iter().filter(|p| seen.insert((&p.account, &p.message_id, p.seq)));
        let writes = unique.map(|p| async move {
            let key = (p.account.0.as_str(), p.message_id.0.as_str(), p.seq as i32);
            let found = self.session.execute_unpaged(&self.exists, key).await.map_err(err)?;
            let rows = found.into_rows_result().map_err(err)?;
            if rows.rows_num() > 0 {
                return Ok(());
            }
            let detail = serde_json::to_string(&p.detail).map_err(err)?;
            let row = (key.0, key.1, key.2, p.recipient.as_str(), p.kind.as_str(), p.at.millis(), detail);
            self.session.execute_unpaged(&self.insert, row).await.map_err(err)?;
            if p.kind == Kind::Accepted {
                let r = p.recipient.to_lowercase();
                let index = (key.0, r.as_str(), p.at.millis(), key.1);
                self.session.execute_unpaged(&self.index_recipient, index).await.map_err(err)?;
            }
            self.session
                .execute_unpaged(&self.count[counter_index(p.kind)], (key.0, p.at.hour_bucket()))
                .await
                .map_err(err)?;
            Ok::<(), StoreError>(())
        });
        for result in futures::future::join_all(writes).await {
            result?;
        }
        Ok(())
    }

    async fn message(&self, account: &AccountId, id: &MessageId) -> Result<Option<MessageView>, StoreError> {
        let result = self
            .session
            .execute_unpaged(&self.select_events, (account.0.as_str(), id.0.as_str()))
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let mut events = Vec::new();
        for row in result.rows::<(i32, String, String, i64, String)>().map_err(err)? {
            let (seq, recipient, kind, at, detail) = row.map_err(err)?;
            events.push(Projected {
                account: account.clone(),
                message_id: id.clone(),
                seq: seq as u32,
                recipient,
                kind: Kind::parse(&kind).ok_or_else(|| err(format!("unknown kind {kind}")))?,
                at: Timestamp(at),
                detail: serde_json::from_str(&detail).map_err(err)?,
            });
        }
        Ok(super::view(events))
    }

    async fn stats(&self, account: &AccountId, from: Timestamp, to: Timestamp) -> Result<Stats, StoreError> {
        let result = self
            .session
            .execute_unpaged(&self.select_counts, (account.0.as_str(), from.hour_bucket(), to.millis()))
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let mut stats = Stats::default();
        type Counts = (
            Option<scylla::value::Counter>,
            Option<scylla::value::Counter>,
            Option<scylla::value::Counter>,
            Option<scylla::value::Counter>,
        );
        for row in result.rows::<Counts>().map_err(err)? {
            let (a, d, f, x) = row.map_err(err)?;
            let n = |c: Option<scylla::value::Counter>| c.map(|c| c.0.max(0) as u64).unwrap_or(0);
            stats.add(Kind::Accepted, n(a));
            stats.add(Kind::Delivered, n(d));
            stats.add(Kind::Deferred, n(f));
            stats.add(Kind::Failed, n(x));
        }
        Ok(stats)
    }

    async fn hourly(&self, account: &AccountId, from: Timestamp, to: Timestamp) -> Result<Vec<HourStats>, StoreError> {
        let mut pager = self
            .session
            .execute_iter(self.select_hours.clone(), (account.0.as_str(), from.hour_bucket(), to.millis()))
            .await
            .map_err(err)?
            .rows_stream::<(i64, Option<Counter>, Option<Counter>, Option<Counter>, Option<Counter>)>()
            .map_err(err)?;
        let n = |c: Option<Counter>| c.map(|c| c.0.max(0) as u64).unwrap_or(0);
        let mut out = Vec::new();
        use futures::StreamExt;
        while let Some(row) = pager.next().await {
            let (hour, a, d, f, x) = row.map_err(err)?;
            let stats = Stats { accepted: n(a), delivered: n(d), deferred: n(f), failed: n(x) };
            out.push(HourStats { hour, stats });
        }
        Ok(out)
    }

    async fn messages_to(
        &self,
        account: &AccountId,
        recipient: &str,
        before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<MessageView>, StoreError> {
        let before = before.map(|t| t.millis()).unwrap_or(i64::MAX);
        let limit = limit.clamp(1, i32::MAX as usize) as i32;
        let values = (account.0.as_str(), recipient.to_lowercase(), before, limit);
        let result = self
            .session
            .execute_unpaged(&self.select_recipient, values)
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let ids: Vec<String> =
            result.rows::<(String,)>().map_err(err)?.map(|r| r.map(|r| r.0)).collect::<Result<_, _>>().map_err(err)?;
        let ids: Vec<MessageId> = ids.into_iter().map(MessageId).collect();
        let views = futures::future::join_all(ids.iter().map(|id| self.message(account, id))).await;
        let mut out = Vec::with_capacity(views.len());
        for v in views {
            out.extend(v?);
        }
        Ok(out)
    }

    async fn domain(&self, domain: &str) -> Result<Option<DomainState>, StoreError> {
        let result = self
            .session
            .execute_unpaged(&self.select_domain, (domain,))
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let mut rows = result.rows::<(String,)>().map_err(err)?;
        match rows.next() {
            Some(row) => Ok(Some(serde_json::from_str(&row.map_err(err)?.0).map_err(err)?)),
            None => Ok(None),
        }
    }

    async fn put_domain(&self, state: &DomainState) -> Result<(), StoreError> {
        let json = serde_json::to_string(state).map_err(err)?;
        self.session
            .execute_unpaged(&self.insert_domain, (state.domain.as_str(), state.account.0.as_str(), json))
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn domains(&self) -> Result<Vec<DomainState>, StoreError> {
        // Sender domains are few (thousands): a full read, paged by the driver.
        let mut out = Vec::new();
        let mut pager = self
            .session
            .execute_iter(self.select_domains.clone(), ())
            .await
            .map_err(err)?
            .rows_stream::<(String,)>()
            .map_err(err)?;
        use futures::StreamExt;
        while let Some(row) = pager.next().await {
            out.push(serde_json::from_str(&row.map_err(err)?.0).map_err(err)?);
        }
        Ok(out)
    }

    async fn claim_idempotency(
        &self,
        account: &AccountId,
        key: &str,
        record: &IdempotencyRecord,
        ttl: std::time::Duration,
    ) -> Result<Claim, StoreError> {
        let json = serde_json::to_string(record).map_err(err)?;
        let values = (account.0.as_str(), key, record.claim.as_str(), json, ttl_secs(ttl));
        let result = self.session.execute_unpaged(&self.claim_key, values).await.map_err(err)?;
        match lwt_outcome(result)? {
            (true, _) => Ok(Claim::Won),
            (false, Some(held)) => Ok(Claim::Held(serde_json::from_str(&held).map_err(err)?)),
            (false, None) => Err(err("a claimed idempotency key has no record")),
        }
    }

    async fn replace_idempotency(
        &self,
        account: &AccountId,
        key: &str,
        claim: &str,
        record: &IdempotencyRecord,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(record).map_err(err)?;
        let values = (ttl_secs(ttl), record.claim.as_str(), json, account.0.as_str(), key, claim);
        let result = self.session.execute_unpaged(&self.replace_key, values).await.map_err(err)?;
        Ok(lwt_outcome(result)?.0)
    }

    async fn release_idempotency(&self, account: &AccountId, key: &str, claim: &str) -> Result<(), StoreError> {
        self.session.execute_unpaged(&self.release_key, (account.0.as_str(), key, claim)).await.map_err(err)?;
        Ok(())
    }
}

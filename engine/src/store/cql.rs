//! The CQL projection store (ScyllaDB, or Apache Cassandra, which speaks the same
//! protocol). Schema: `ops/cql/schema.cql`, applied at start (`IF NOT EXISTS`).
//!
//! Idempotence: an event row is looked up before it is written and counted; since every
//! `(account, message_id, seq)` comes from exactly one log partition, read by exactly one
//! projector task, there is no race between the look-up and the write. The batch's new
//! events are then counted with one update per (counter, account, hour) cell and batch, not
//! one per event: every message of an account in one hour increments the same cell, and
//! counter updates are Cassandra's dearest writes. A crash between the row writes and the
//! counter updates loses at most that batch's increments (counters may undercount by one
//! batch per crash; statuses are always exact).

use super::{
    Claim, Counter, DomainState, EngagementKind, EngagementRow, Firsts, HourStats, IdempotencyRecord, Kind, LinkStats,
    MessageView, Projected, ProjectedThrough, ProjectionStore, Stats, StoreError,
};
use async_trait::async_trait;
use herald_schemas::{AccountId, MessageId, Timestamp};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::prepared::PreparedStatement;

mod accounts;
mod feedback;
mod webhooks;

/// The schema, shipped for operators under `ops/cql/` and applied by [`CqlStore::connect`].
pub const SCHEMA: &str = include_str!("../../../ops/cql/schema.cql");

type Count = scylla::value::Counter;

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
    feedback: feedback::Statements,
    webhooks: webhooks::Statements,
    claim_key: PreparedStatement,
    replace_key: PreparedStatement,
    release_key: PreparedStatement,
    index_recipient: PreparedStatement,
    select_recipient: PreparedStatement,
    select_mark: PreparedStatement,
    insert_mark: PreparedStatement,
    /// Whether this store has kept projection marks since its first event (a partition
    /// without a mark was then never applied).
    marks_since_start: bool,
    accounts: accounts::Statements,
    engagement: Engagement,
}

/// The statements of the engagement tables.
struct Engagement {
    exists: PreparedStatement,
    insert: PreparedStatement,
    select: PreparedStatement,
    first_exists: PreparedStatement,
    first_insert: PreparedStatement,
    count: Vec<(Counter, PreparedStatement)>,
    link_count: PreparedStatement,
    select_counts: PreparedStatement,
    select_links: PreparedStatement,
}

const DAY: i64 = 86_400_000;

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
            |col: &str| format!("UPDATE {ks}.hourly_counts SET {col} = {col} + ? WHERE account = ? AND hour = ?");
        CqlStore {
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
                "SELECT hour, accepted, delivered, deferred, failed FROM {ks}.hourly_counts WHERE account = ? AND hour >= ? AND hour < ?"
            ))
            .await?,
            select_domain: prepare(format!("SELECT state FROM {ks}.sender_domains WHERE domain = ?")).await?,
            insert_domain: prepare(format!("INSERT INTO {ks}.sender_domains (domain, account, state) VALUES (?, ?, ?)")).await?,
            select_domains: prepare(format!("SELECT state FROM {ks}.sender_domains")).await?,
            feedback: feedback::Statements::prepare(&session, ks).await?,
            webhooks: webhooks::Statements::prepare(&session, ks).await?,
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
            index_recipient: prepare(format!(
                "INSERT INTO {ks}.messages_by_recipient (account, recipient, at, message_id) VALUES (?, ?, ?, ?)"
            ))
            .await?,
            select_recipient: prepare(format!(
                "SELECT message_id FROM {ks}.messages_by_recipient WHERE account = ? AND recipient = ? AND at < ? LIMIT ?"
            ))
            .await?,
            select_mark: prepare(format!("SELECT through FROM {ks}.projection_marks WHERE topic = ? AND partition = ?"))
                .await?,
            insert_mark: prepare(format!("INSERT INTO {ks}.projection_marks (topic, partition, through) VALUES (?, ?, ?)"))
                .await?,
            marks_since_start: false,
            accounts: accounts::Statements::prepare(&session, ks).await?,
            engagement: Engagement::prepare(&session, ks).await?,
            session,
        }
        .with_marks_state(ks)
        .await
    }

    /// A partition's projection mark, if it has one.
    async fn mark(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        let result = self.session.execute_unpaged(&self.select_mark, (topic, partition)).await.map_err(err)?;
        let rows = result.into_rows_result().map_err(err)?;
        Ok(rows.maybe_first_row::<(i64,)>().map_err(err)?.map(|(t,)| t))
    }

    /// Finds out whether marks were kept since the store's first event: a store with no
    /// event yet gets the sentinel row (`topic` '', `partition` -1) that says so for good;
    /// one projected into by an earlier version has events and no sentinel.
    async fn with_marks_state(mut self, ks: &str) -> Result<Self, StoreError> {
        if self.mark(MARKS_SENTINEL, -1).await?.is_none() {
            let any = self
                .session
                .query_unpaged(format!("SELECT seq FROM {ks}.message_events LIMIT 1"), &[])
                .await
                .map_err(err)?;
            if any.into_rows_result().map_err(err)?.rows_num() > 0 {
                return Ok(self);
            }
            self.session.execute_unpaged(&self.insert_mark, (MARKS_SENTINEL, -1i32, 0i64)).await.map_err(err)?;
        }
        self.marks_since_start = true;
        Ok(self)
    }
}

/// The topic of the row that says the store has kept marks since it was created.
const MARKS_SENTINEL: &str = "";

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

impl Engagement {
    async fn prepare(session: &Session, ks: &str) -> Result<Self, StoreError> {
        let p = |cql: String| async move { session.prepare(cql).await.map_err(err) };
        let mut count = Vec::new();
        for c in Counter::ALL {
            let col = c.as_str();
            let cql = format!("UPDATE {ks}.engagement_counts SET {col} = {col} + 1 WHERE account = ? AND hour = ?");
            count.push((c, p(cql).await?));
        }
        Ok(Engagement {
            exists: p(format!(
                "SELECT event_id FROM {ks}.engagement_events WHERE account = ? AND message_id = ? AND event_id = ?"
            ))
            .await?,
            insert: p(format!(
                "INSERT INTO {ks}.engagement_events (account, message_id, event_id, row) VALUES (?, ?, ?, ?)"
            ))
            .await?,
            select: p(format!("SELECT row FROM {ks}.engagement_events WHERE account = ? AND message_id = ?")).await?,
            first_exists: p(format!(
                "SELECT what FROM {ks}.engagement_firsts WHERE account = ? AND message_id = ? AND what = ?"
            ))
            .await?,
            first_insert: p(format!("INSERT INTO {ks}.engagement_firsts (account, message_id, what) VALUES (?, ?, ?)"))
                .await?,
            count,
            link_count: p(format!(
                "UPDATE {ks}.link_counts SET clicks = clicks + 1, unique_clicks = unique_clicks + ? \
                 WHERE account = ? AND day = ? AND hour = ? AND url = ?"
            ))
            .await?,
            select_counts: p(format!(
                "SELECT hour, opened, unique_opened, clicked, unique_clicked, unsubscribed FROM {ks}.engagement_counts \
                 WHERE account = ? AND hour >= ? AND hour < ?"
            ))
            .await?,
            select_links: p(format!(
                "SELECT url, clicks, unique_clicks FROM {ks}.link_counts WHERE account = ? AND day = ? AND hour >= ? AND hour < ?"
            ))
            .await?,
        })
    }
}

impl CqlStore {
    /// Claims a "first of" marker; `true` when it was not there yet.
    async fn claim(&self, row: &EngagementRow, what: Option<String>) -> Result<bool, StoreError> {
        let Some(what) = what else { return Ok(false) };
        let key = (row.account.0.as_str(), row.message_id.0.as_str(), what.as_str());
        let found = self.session.execute_unpaged(&self.engagement.first_exists, key).await.map_err(err)?;
        if found.into_rows_result().map_err(err)?.rows_num() > 0 {
            return Ok(false);
        }
        self.session.execute_unpaged(&self.engagement.first_insert, key).await.map_err(err)?;
        Ok(true)
    }

    /// One engagement row: skipped when stored already, else stored and counted.
    async fn apply_row(&self, row: &EngagementRow) -> Result<(), StoreError> {
        let e = &self.engagement;
        let key = (row.account.0.as_str(), row.message_id.0.as_str(), row.event_id.as_str());
        let found = self.session.execute_unpaged(&e.exists, key).await.map_err(err)?;
        if found.into_rows_result().map_err(err)?.rows_num() > 0 {
            return Ok(());
        }
        let json = serde_json::to_string(row).map_err(err)?;
        self.session.execute_unpaged(&e.insert, (key.0, key.1, key.2, json)).await.map_err(err)?;
        let (message, url) = row.first_keys();
        let first = Firsts { message: self.claim(row, message).await?, url: self.claim(row, url).await? };
        let hour = row.at.hour_bucket();
        for counter in row.counters(first) {
            let statement = &e.count.iter().find(|(c, _)| *c == counter).expect("every counter prepared").1;
            self.session.execute_unpaged(statement, (key.0, hour)).await.map_err(err)?;
        }
        if let (EngagementKind::Clicked, Some(url)) = (row.kind, &row.url) {
            let unique = scylla::value::Counter(first.url as i64);
            let day = hour.div_euclid(DAY) * DAY;
            self.session.execute_unpaged(&e.link_count, (unique, key.0, day, hour, url.as_str())).await.map_err(err)?;
        }
        Ok(())
    }
}

fn strip_comments(s: &str) -> String {
    s.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n").trim().to_owned()
}

impl CqlStore {
    /// The counter update of `kind`; `None` for kinds without a counter.
    fn counter(&self, kind: Kind) -> Option<&PreparedStatement> {
        match kind {
            Kind::Accepted => Some(&self.count[0]),
            Kind::Delivered => Some(&self.count[1]),
            Kind::Deferred => Some(&self.count[2]),
            Kind::Failed => Some(&self.count[3]),
            Kind::Info => None,
            other => self.feedback.count.get(other.as_str()),
        }
    }
}

#[async_trait]
impl ProjectionStore for CqlStore {
    async fn apply(&self, batch: &[Projected]) -> Result<(), StoreError> {
        self.apply_from(batch, batch.len()).await
    }

    fn skips_reads(&self) -> bool {
        true
    }

    /// Events from `unseen_from` on were never applied (`docs/adr/0021-projection-marks.md`):
    /// they are written without the read that keeps a re-applied event from being counted
    /// twice.
    async fn apply_from(&self, batch: &[Projected], unseen_from: usize) -> Result<(), StoreError> {
        // Copies of one event inside a batch (redelivery) must not race each other.
        let mut seen = std::collections::HashSet::new();
        let unique = batch.iter().enumerate().filter(|(_, p)| seen.insert((&p.account, &p.message_id, p.seq)));
        let writes = unique.map(|(i, p)| async move {
            let key = (p.account.0.as_str(), p.message_id.0.as_str(), p.seq as i32);
            if i < unseen_from {
                let found = self.session.execute_unpaged(&self.exists, key).await.map_err(err)?;
                let rows = found.into_rows_result().map_err(err)?;
                if rows.rows_num() > 0 {
                    return Ok(None);
                }
            }
            let detail = serde_json::to_string(&p.detail).map_err(err)?;
            let row = (key.0, key.1, key.2, p.recipient.as_str(), p.kind.as_str(), p.at.millis(), detail);
            self.session.execute_unpaged(&self.insert, row).await.map_err(err)?;
            if p.kind == Kind::Accepted {
                let r = p.recipient.to_lowercase();
                let index = (key.0, r.as_str(), p.at.millis(), key.1);
                self.session.execute_unpaged(&self.index_recipient, index).await.map_err(err)?;
            }
            Ok::<_, StoreError>(Some(p))
        });
        // The batch's new events, counted once per (counter, account, hour): one counter
        // update per cell and batch, not one per event (every message of an account in the
        // same hour increments the same cell, a hot spot for Cassandra's counters).
        let mut counts: std::collections::HashMap<(Kind, &str, i64), i64> = std::collections::HashMap::new();
        for result in futures::future::join_all(writes).await {
            if let Some(p) = result? {
                *counts.entry((p.kind, p.account.0.as_str(), p.at.hour_bucket())).or_default() += 1;
            }
        }
        let updates = counts.into_iter().filter_map(|((kind, account, hour), n)| {
            let counter = self.counter(kind)?;
            Some(async move {
                let values = (scylla::value::Counter(n), account, hour);
                self.session.execute_unpaged(counter, values).await.map_err(err).map(|_| ())
            })
        });
        for result in futures::future::join_all(updates).await {
            result?;
        }
        Ok(())
    }

    async fn projected_through(&self, topic: &str, partition: u32) -> Result<ProjectedThrough, StoreError> {
        Ok(match self.mark(topic, partition as i32).await? {
            Some(through) => ProjectedThrough::Through(through.max(0) as u64),
            None if self.marks_since_start => ProjectedThrough::Never,
            None => ProjectedThrough::Unknown,
        })
    }

    async fn set_projected_through(&self, topic: &str, partition: u32, through: u64) -> Result<(), StoreError> {
        let values = (topic, partition as i32, through.min(i64::MAX as u64) as i64);
        self.session.execute_unpaged(&self.insert_mark, values).await.map_err(err).map(|_| ())
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
        let rows = self
            .session
            .execute_unpaged(&self.engagement.select, (account.0.as_str(), id.0.as_str()))
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let mut engagement = Vec::new();
        for row in rows.rows::<(String,)>().map_err(err)? {
            engagement.push(serde_json::from_str(&row.map_err(err)?.0).map_err(err)?);
        }
        Ok(super::view(events, engagement))
    }

    async fn stats(&self, account: &AccountId, from: Timestamp, to: Timestamp) -> Result<Stats, StoreError> {
        let mut stats = Stats::default();
        for hour in self.hourly(account, from, to).await? {
            stats.merge(&hour.stats);
        }
        Ok(stats)
    }

    async fn hourly(&self, account: &AccountId, from: Timestamp, to: Timestamp) -> Result<Vec<HourStats>, StoreError> {
        let mut hours: std::collections::BTreeMap<i64, Stats> = Default::default();
        let range = (account.0.as_str(), from.hour_bucket(), to.millis());
        let n = |c: Option<Count>| c.map(|c| c.0.max(0) as u64).unwrap_or(0);
        type Four = (i64, Option<Count>, Option<Count>, Option<Count>, Option<Count>);
        let rows = |statement| async move {
            self.session.execute_unpaged(statement, range).await.map_err(err)?.into_rows_result().map_err(err)
        };
        let result = rows(&self.select_counts).await?;
        for row in result.rows::<Four>().map_err(err)? {
            let (hour, a, d, f, x) = row.map_err(err)?;
            let stats = hours.entry(hour).or_default();
            for (kind, v) in
                [Kind::Accepted, Kind::Delivered, Kind::Deferred, Kind::Failed].into_iter().zip([a, d, f, x])
            {
                stats.add(kind, n(v));
            }
        }
        let result = rows(&self.feedback.select_counts).await?;
        for row in result.rows::<Four>().map_err(err)? {
            let (hour, b, t, c, x) = row.map_err(err)?;
            let stats = hours.entry(hour).or_default();
            for (kind, v) in
                [Kind::Bounced, Kind::SoftBounced, Kind::Complained, Kind::Suppressed].into_iter().zip([b, t, c, x])
            {
                stats.add(kind, n(v));
            }
        }
        let result = rows(&self.engagement.select_counts).await?;
        type Five = (i64, Option<Count>, Option<Count>, Option<Count>, Option<Count>, Option<Count>);
        for row in result.rows::<Five>().map_err(err)? {
            let (hour, o, uo, c, uc, u) = row.map_err(err)?;
            let stats = hours.entry(hour).or_default();
            for (counter, v) in Counter::ALL.into_iter().zip([o, uo, c, uc, u]) {
                stats.add_named(counter.as_str(), n(v));
            }
        }
        Ok(hours.into_iter().map(|(hour, stats)| HourStats { hour, stats }).collect())
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

    async fn apply_engagement(&self, batch: &[EngagementRow]) -> Result<(), StoreError> {
        // Rows of one message in order (their firsts depend on each other); messages at once.
        let mut by_message: std::collections::HashMap<(&str, &str), Vec<&EngagementRow>> = Default::default();
        let mut seen = std::collections::HashSet::new();
        for row in batch.iter().filter(|r| seen.insert((&r.account, &r.message_id, &r.event_id))) {
            by_message.entry((row.account.0.as_str(), row.message_id.0.as_str())).or_default().push(row);
        }
        let work = by_message.into_values().map(|rows| async move {
            for row in rows {
                self.apply_row(row).await?;
            }
            Ok::<(), StoreError>(())
        });
        for result in futures::future::join_all(work).await {
            result?;
        }
        Ok(())
    }

    async fn links(&self, account: &AccountId, from: Timestamp, to: Timestamp) -> Result<Vec<LinkStats>, StoreError> {
        let mut rows = Vec::new();
        let (lo, hi) = (from.hour_bucket(), to.millis());
        let mut day = lo.div_euclid(DAY) * DAY;
        while day < hi {
            let result = self
                .session
                .execute_unpaged(&self.engagement.select_links, (account.0.as_str(), day, lo, hi))
                .await
                .map_err(err)?
                .into_rows_result()
                .map_err(err)?;
            for row in result.rows::<(String, Option<Count>, Option<Count>)>().map_err(err)? {
                let (url, c, u) = row.map_err(err)?;
                let n = |c: Option<Count>| c.map(|c| c.0.max(0) as u64).unwrap_or(0);
                rows.push((url, n(c), n(u)));
            }
            day += DAY;
        }
        Ok(super::top_links(rows))
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

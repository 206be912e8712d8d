//! The feedback read models on CQL (tables in `ops/cql/schema.cql`). Suppressions are
//! spread over [`BUCKETS`] partitions per account; bounces over one partition per account
//! and UTC day.

use super::{err, CqlStore};
use crate::store::feedback::{
    cursor, BounceRow, FeedbackChange, FeedbackStore, Page, SoftFailure, Suppression, SCAN_BUDGET,
};
use crate::store::{Kind, StoreError};
use async_trait::async_trait;
use futures::StreamExt;
use herald_schemas::{AccountId, BounceClass, MessageId, SuppressionReason, Timestamp};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use std::collections::HashMap;

/// Partitions per account of the suppression list.
pub const BUCKETS: i32 = 16;
const DAY_MS: i64 = 86_400_000;

/// Prepared statements of the feedback tables.
pub(super) struct Statements {
    put: PreparedStatement,
    delete: PreparedStatement,
    get: PreparedStatement,
    list: PreparedStatement,
    scan: PreparedStatement,
    put_bounce: PreparedStatement,
    list_bounces: PreparedStatement,
    get_soft: PreparedStatement,
    put_soft: PreparedStatement,
    delete_soft: PreparedStatement,
    claim_secret: PreparedStatement,
    /// Counters of the feedback kinds.
    pub(super) count: HashMap<&'static str, PreparedStatement>,
    pub(super) select_counts: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Statements, StoreError> {
        let p = |cql: String| async move { session.prepare(cql).await.map_err(err) };
        let cols = "reason, message_id, detail, expires_at, created_at, id";
        let mut scan = p(format!("SELECT account, address, expires_at FROM {ks}.suppressions")).await?;
        scan.set_page_size(5000);
        let mut count = HashMap::new();
        for (kind, col) in [
            (Kind::Bounced, "bounced_permanent"),
            (Kind::SoftBounced, "bounced_transient"),
            (Kind::Complained, "complained"),
            (Kind::Suppressed, "suppressed"),
        ] {
            let cql =
                format!("UPDATE {ks}.hourly_feedback_counts SET {col} = {col} + ? WHERE account = ? AND hour = ?");
            count.insert(kind.as_str(), p(cql).await?);
        }
        Ok(Statements {
            put: p(format!(
                "INSERT INTO {ks}.suppressions (account, bucket, address, {cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            delete: p(format!("DELETE FROM {ks}.suppressions WHERE account = ? AND bucket = ? AND address = ?")).await?,
            get: p(format!("SELECT {cols} FROM {ks}.suppressions WHERE account = ? AND bucket = ? AND address = ?"))
                .await?,
            list: p(format!(
                "SELECT address, {cols} FROM {ks}.suppressions WHERE account = ? AND bucket = ? AND address > ? LIMIT ?"
            ))
            .await?,
            scan,
            put_bounce: p(format!("INSERT INTO {ks}.bounces (account, day, at, id, row) VALUES (?, ?, ?, ?, ?)"))
                .await?,
            list_bounces: p(format!(
                "SELECT at, id, row FROM {ks}.bounces WHERE account = ? AND day = ? AND (at, id) > (?, ?) AND (at) < (?) LIMIT ?"
            ))
            .await?,
            get_soft: p(format!("SELECT history FROM {ks}.soft_failures WHERE account = ? AND address = ?")).await?,
            put_soft: p(format!("INSERT INTO {ks}.soft_failures (account, address, history) VALUES (?, ?, ?)")).await?,
            delete_soft: p(format!("DELETE FROM {ks}.soft_failures WHERE account = ? AND address = ?")).await?,
            claim_secret: p(format!("INSERT INTO {ks}.secrets (name, value) VALUES (?, ?) IF NOT EXISTS")).await?,
            count,
            select_counts: p(format!(
                "SELECT hour, bounced_permanent, bounced_transient, complained, suppressed FROM {ks}.hourly_feedback_counts WHERE account = ? AND hour >= ? AND hour < ?"
            ))
            .await?,
        })
    }
}

/// The bucket of an address: FNV-1a, stable across builds.
pub fn bucket(address: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in address.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % BUCKETS as u32) as i32
}

type Row = (String, Option<String>, String, Option<i64>, i64, String);

fn suppression(account: &AccountId, address: String, row: Row) -> Result<Suppression, StoreError> {
    let (reason, message_id, detail, expires_at, created_at, id) = row;
    Ok(Suppression {
        account: account.clone(),
        address,
        reason: SuppressionReason::parse(&reason).ok_or_else(|| err(format!("unknown reason {reason}")))?,
        message_id: message_id.map(MessageId),
        detail,
        expires_at: expires_at.map(Timestamp),
        created_at: Timestamp(created_at),
        id,
    })
}

impl CqlStore {
    async fn write_change(&self, change: &FeedbackChange) -> Result<(), StoreError> {
        let st = &self.feedback;
        match change {
            FeedbackChange::Suppress(s) => {
                let values = (
                    s.account.0.as_str(),
                    bucket(&s.address),
                    s.address.as_str(),
                    s.reason.as_str(),
                    s.message_id.as_ref().map(|m| m.0.as_str()),
                    s.detail.as_str(),
                    s.expires_at.map(|t| t.millis()),
                    s.created_at.millis(),
                    s.id.as_str(),
                );
                self.session.execute_unpaged(&st.put, values).await.map_err(err)?;
            }
            FeedbackChange::Lift { account, address } => {
                let values = (account.0.as_str(), bucket(address), address.as_str());
                self.session.execute_unpaged(&st.delete, values).await.map_err(err)?;
            }
            FeedbackChange::Bounce(b) => {
                let row = serde_json::to_string(b).map_err(err)?;
                let day = b.at.millis().div_euclid(DAY_MS) * DAY_MS;
                let values = (b.account.0.as_str(), day, b.at.millis(), b.key(), row);
                self.session.execute_unpaged(&st.put_bounce, values).await.map_err(err)?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl FeedbackStore for CqlStore {
    async fn apply_feedback(&self, changes: &[FeedbackChange]) -> Result<(), StoreError> {
        // Only the last change of each address counts; bounces are independent rows. So
        // everything can be written concurrently without reordering anything that matters.
        let mut last: HashMap<(&AccountId, &str), usize> = HashMap::new();
        for (i, c) in changes.iter().enumerate() {
            match c {
                FeedbackChange::Suppress(s) => last.insert((&s.account, s.address.as_str()), i),
                FeedbackChange::Lift { account, address } => last.insert((account, address.as_str()), i),
                FeedbackChange::Bounce(_) => None,
            };
        }
        let writes = changes.iter().enumerate().filter(|(i, c)| match c {
            FeedbackChange::Suppress(s) => last.get(&(&s.account, s.address.as_str())) == Some(i),
            FeedbackChange::Lift { account, address } => last.get(&(account, address.as_str())) == Some(i),
            FeedbackChange::Bounce(_) => true,
        });
        for r in futures::future::join_all(writes.map(|(_, c)| self.write_change(c))).await {
            r?;
        }
        Ok(())
    }

    async fn suppression(&self, account: &AccountId, address: &str) -> Result<Option<Suppression>, StoreError> {
        let result = self
            .session
            .execute_unpaged(&self.feedback.get, (account.0.as_str(), bucket(address), address))
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let mut rows = result.rows::<Row>().map_err(err)?;
        match rows.next() {
            Some(row) => Ok(Some(suppression(account, address.to_owned(), row.map_err(err)?)?)),
            None => Ok(None),
        }
    }

    async fn suppressions(
        &self,
        account: &AccountId,
        reason: Option<SuppressionReason>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Suppression>, StoreError> {
        let (mut b, mut from): (i32, String) = match after {
            Some(c) => cursor::decode(c)?,
            None => (0, String::new()),
        };
        let mut items = Vec::new();
        let mut scanned = 0usize;
        while b < BUCKETS {
            let want = (limit - items.len()).clamp(1, SCAN_BUDGET) as i32;
            let result = self
                .session
                .execute_unpaged(&self.feedback.list, (account.0.as_str(), b, from.as_str(), want))
                .await
                .map_err(err)?
                .into_rows_result()
                .map_err(err)?;
            let mut got = 0;
            for row in
                result.rows::<(String, String, Option<String>, String, Option<i64>, i64, String)>().map_err(err)?
            {
                let (address, r, m, d, e, c, id) = row.map_err(err)?;
                got += 1;
                scanned += 1;
                from = address.clone();
                let s = suppression(account, address, (r, m, d, e, c, id))?;
                if reason.is_none_or(|want| s.reason == want) {
                    items.push(s);
                }
            }
            if got < want {
                b += 1;
                from = String::new();
            }
            if items.len() >= limit || scanned >= SCAN_BUDGET {
                let next = (b < BUCKETS).then(|| cursor::encode(&(b, from.clone())));
                return Ok(Page { items, next });
            }
        }
        Ok(Page { items, next: None })
    }

    async fn scan_suppressions(
        &self,
        each: &mut (dyn for<'a, 'b> FnMut(&'a AccountId, &'b str, Option<Timestamp>) + Send),
    ) -> Result<u64, StoreError> {
        let mut rows = self
            .session
            .execute_iter(self.feedback.scan.clone(), ())
            .await
            .map_err(err)?
            .rows_stream::<(String, String, Option<i64>)>()
            .map_err(err)?;
        let mut n = 0;
        let mut account = AccountId(String::new());
        while let Some(row) = rows.next().await {
            let (a, address, expires) = row.map_err(err)?;
            if account.0 != a {
                account = AccountId(a);
            }
            each(&account, &address, expires.map(Timestamp));
            n += 1;
        }
        Ok(n)
    }

    async fn bounces(
        &self,
        account: &AccountId,
        from: Timestamp,
        to: Timestamp,
        class: Option<BounceClass>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<BounceRow>, StoreError> {
        let (mut at, mut id): (i64, String) = match after {
            Some(c) => cursor::decode(c)?,
            None => (from.millis() - 1, String::from("\u{10ffff}")),
        };
        let last_day = (to.millis() - 1).div_euclid(DAY_MS) * DAY_MS;
        let mut day = at.max(from.millis()).div_euclid(DAY_MS) * DAY_MS;
        let mut items = Vec::new();
        let mut scanned = 0usize;
        while day <= last_day {
            let want = (limit - items.len()).clamp(1, SCAN_BUDGET) as i32;
            let values = (account.0.as_str(), day, at, id.as_str(), to.millis(), want);
            let result = self
                .session
                .execute_unpaged(&self.feedback.list_bounces, values)
                .await
                .map_err(err)?
                .into_rows_result()
                .map_err(err)?;
            let mut got = 0;
            for row in result.rows::<(i64, String, String)>().map_err(err)? {
                let (row_at, row_id, json) = row.map_err(err)?;
                got += 1;
                scanned += 1;
                let mut b: BounceRow = serde_json::from_str(&json)
                    .unwrap_or_else(|_| BounceRow::unreadable(BounceRow::id_of_key(&row_id), row_at));
                b.account = account.clone();
                (at, id) = (row_at, row_id);
                if class.is_none_or(|c| b.class == c) {
                    items.push(b);
                }
            }
            if got < want {
                day += DAY_MS;
                (at, id) = (day - 1, String::from("\u{10ffff}"));
            }
            if items.len() >= limit || scanned >= SCAN_BUDGET {
                let next = (day <= last_day).then(|| cursor::encode(&(at, id.clone())));
                return Ok(Page { items, next });
            }
        }
        Ok(Page { items, next: None })
    }

    async fn soft_failures(&self, account: &AccountId, address: &str) -> Result<Vec<SoftFailure>, StoreError> {
        let result = self
            .session
            .execute_unpaged(&self.feedback.get_soft, (account.0.as_str(), address))
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let mut rows = result.rows::<(String,)>().map_err(err)?;
        match rows.next() {
            Some(row) => serde_json::from_str(&row.map_err(err)?.0).map_err(err),
            None => Ok(vec![]),
        }
    }

    async fn put_soft_failures(
        &self,
        account: &AccountId,
        address: &str,
        failures: &[SoftFailure],
    ) -> Result<(), StoreError> {
        if failures.is_empty() {
            self.session
                .execute_unpaged(&self.feedback.delete_soft, (account.0.as_str(), address))
                .await
                .map_err(err)?;
        } else {
            let json = serde_json::to_string(failures).map_err(err)?;
            self.session
                .execute_unpaged(&self.feedback.put_soft, (account.0.as_str(), address, json))
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    async fn shared_secret(&self, name: &str, candidate: &str) -> Result<String, StoreError> {
        let result = self.session.execute_unpaged(&self.feedback.claim_secret, (name, candidate)).await.map_err(err)?;
        let rows = result.into_rows_result().map_err(err)?;
        let at = |column: &str| rows.column_specs().get_by_name(column).map(|(i, _)| i);
        let (applied_at, value_at) = (at("[applied]").unwrap_or(0), at("value"));
        let row = rows.maybe_first_row::<scylla::value::Row>().map_err(err)?.ok_or_else(|| err("empty LWT result"))?;
        let applied = row.columns.get(applied_at).cloned().flatten().and_then(|v| v.as_boolean()).unwrap_or(false);
        if applied {
            return Ok(candidate.to_owned());
        }
        value_at
            .and_then(|i| row.columns.get(i).cloned().flatten())
            .and_then(|v| v.into_string())
            .ok_or_else(|| err(format!("the stored secret {name} has no value")))
    }
}

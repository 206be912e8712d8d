//! The embedded projection store on redb. Exactly-once: an event already stored is
//! skipped in the same transaction that would have counted it.

use super::{
    Claim, DomainState, EngagementRow, Firsts, HourStats, IdempotencyRecord, Kind, LinkStats, MessageView, Projected,
    ProjectionStore, Stats, StoreError,
};
use async_trait::async_trait;
use herald_schemas::{AccountId, MessageId, Timestamp};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;

mod accounts;
mod feedback;
mod webhooks;

/// (account, message id, seq) → JSON of [`Projected`].
const EVENTS: TableDefinition<(&str, &str, u32), &[u8]> = TableDefinition::new("message_events");
/// (account, hour start in ms, kind) → count.
const COUNTS: TableDefinition<(&str, i64, &str), u64> = TableDefinition::new("hourly_counts");
/// Punycode domain → JSON of [`DomainState`].
const DOMAINS: TableDefinition<&str, &[u8]> = TableDefinition::new("sender_domains");
/// (account, idempotency key) → (expiry in ms, JSON of [`IdempotencyRecord`]).
const IDEMPOTENCY: TableDefinition<(&str, &str), (i64, &[u8])> = TableDefinition::new("idempotency_keys");
/// (expiry in ms, account, key): the expiry index, oldest first, for purging.
const IDEMPOTENCY_EXPIRY: TableDefinition<(i64, &str, &str), ()> = TableDefinition::new("idempotency_expiry");
/// (account, lower-cased recipient, accepted at in ms, message id): message search.
const RECIPIENTS: TableDefinition<(&str, &str, i64, &str), ()> = TableDefinition::new("messages_by_recipient");
/// Expired keys removed per claim (bounded work; claims outpace expiries).
const PURGE_PER_CLAIM: usize = 16;
/// (account, message id, event id) → JSON of [`EngagementRow`].
const ENGAGEMENT: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("engagement_events");
/// (account, message id, what) → (): the "first of" markers of unique counts.
const FIRSTS: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("engagement_firsts");
/// (account, hour start in ms, url) → (clicks, unique clicks).
const LINKS: TableDefinition<(&str, i64, &str), (u64, u64)> = TableDefinition::new("link_counts");

fn err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Embedded(e.to_string())
}

pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl EmbeddedStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, 64 << 20)
    }

    /// Opens with redb's page cache limited to `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        let db = Database::builder().set_cache_size(cache_bytes).create(path).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(EVENTS).map_err(err)?;
        txn.open_table(COUNTS).map_err(err)?;
        txn.open_table(DOMAINS).map_err(err)?;
        feedback::create_tables(&txn)?;
        webhooks::create_tables(&txn)?;
        txn.open_table(IDEMPOTENCY).map_err(err)?;
        txn.open_table(IDEMPOTENCY_EXPIRY).map_err(err)?;
        txn.open_table(RECIPIENTS).map_err(err)?;
        accounts::create_tables(&txn)?;
        txn.open_table(ENGAGEMENT).map_err(err)?;
        txn.open_table(FIRSTS).map_err(err)?;
        txn.open_table(LINKS).map_err(err)?;
        txn.commit().map_err(err)?;
        // A file just created is only durable once its directory is.
        crate::log::embedded::sync_dir(path).map_err(err)?;
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

/// The live record of `(account, key)` at `now`, if any.
fn live_record(
    table: &impl ReadableTable<(&'static str, &'static str), (i64, &'static [u8])>,
    account: &str,
    key: &str,
    now: i64,
) -> Result<Option<(i64, IdempotencyRecord)>, StoreError> {
    match table.get((account, key)).map_err(err)? {
        Some(v) => {
            let (expires, json) = v.value();
            if expires <= now {
                return Ok(None);
            }
            Ok(Some((expires, serde_json::from_slice(json).map_err(err)?)))
        }
        None => Ok(None),
    }
}

/// Writes `record` for `(account, key)` until `expires`, replacing any older row.
fn put_record(
    txn: &redb::WriteTransaction,
    account: &str,
    key: &str,
    record: &IdempotencyRecord,
    expires: i64,
) -> Result<(), StoreError> {
    let json = serde_json::to_vec(record).map_err(err)?;
    let mut table = txn.open_table(IDEMPOTENCY).map_err(err)?;
    let mut index = txn.open_table(IDEMPOTENCY_EXPIRY).map_err(err)?;
    if let Some(old) = table.insert((account, key), (expires, json.as_slice())).map_err(err)? {
        index.remove((old.value().0, account, key)).map_err(err)?;
    }
    index.insert((expires, account, key), ()).map_err(err)?;
    Ok(())
}

/// Removes up to [`PURGE_PER_CLAIM`] expired keys.
fn purge_expired(txn: &redb::WriteTransaction, now: i64) -> Result<(), StoreError> {
    let mut table = txn.open_table(IDEMPOTENCY).map_err(err)?;
    let mut index = txn.open_table(IDEMPOTENCY_EXPIRY).map_err(err)?;
    let expired: Vec<(i64, String, String)> = index
        .range((i64::MIN, "", "")..(now, "", ""))
        .map_err(err)?
        .take(PURGE_PER_CLAIM)
        .map(|e| e.map(|(k, _)| (k.value().0, k.value().1.to_owned(), k.value().2.to_owned())))
        .collect::<Result<_, _>>()
        .map_err(err)?;
    for (expires, account, key) in expired {
        index.remove((expires, account.as_str(), key.as_str())).map_err(err)?;
        let current = table.get((account.as_str(), key.as_str())).map_err(err)?.map(|v| v.value().0);
        if current == Some(expires) {
            table.remove((account.as_str(), key.as_str())).map_err(err)?;
        }
    }
    Ok(())
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
                let mut recipients = txn.open_table(RECIPIENTS).map_err(err)?;
                for p in &batch {
                    let key = (p.account.0.as_str(), p.message_id.0.as_str(), p.seq);
                    if events.get(key).map_err(err)?.is_some() {
                        continue;
                    }
                    let json = serde_json::to_vec(p).map_err(err)?;
                    events.insert(key, json.as_slice()).map_err(err)?;
                    if p.kind == Kind::Accepted {
                        let r = p.recipient.to_lowercase();
                        let rkey = (p.account.0.as_str(), r.as_str(), p.at.millis(), p.message_id.0.as_str());
                        recipients.insert(rkey, ()).map_err(err)?;
                    }
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
            let table = read.open_table(ENGAGEMENT).map_err(err)?;
            let mut engagement = Vec::new();
            for entry in table.range((account.as_str(), id.as_str(), "")..).map_err(err)? {
                let (k, v) = entry.map_err(err)?;
                let (a, m, _) = k.value();
                if a != account || m != id {
                    break;
                }
                engagement.push(serde_json::from_slice::<EngagementRow>(v.value()).map_err(err)?);
            }
            Ok(super::view(out, engagement))
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
                stats.add_named(k.value().2, v.value());
            }
            Ok(stats)
        })
        .await
    }

    async fn hourly(&self, account: &AccountId, from: Timestamp, to: Timestamp) -> Result<Vec<HourStats>, StoreError> {
        let account = account.0.clone();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(err)?;
            let counts = read.open_table(COUNTS).map_err(err)?;
            let mut out: Vec<HourStats> = Vec::new();
            let lo = (account.as_str(), from.hour_bucket(), "");
            let hi = (account.as_str(), to.millis(), "");
            for entry in counts.range(lo..hi).map_err(err)? {
                let (k, v) = entry.map_err(err)?;
                let (_, hour, name) = k.value();
                if out.last().is_none_or(|h| h.hour != hour) {
                    out.push(HourStats { hour, stats: Stats::default() });
                }
                out.last_mut().expect("pushed").stats.add_named(name, v.value());
            }
            Ok(out)
        })
        .await
    }

    async fn apply_engagement(&self, batch: &[EngagementRow]) -> Result<(), StoreError> {
        let batch = batch.to_vec();
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(err)?;
            txn.set_durability(Durability::Immediate).map_err(err)?;
            {
                let mut events = txn.open_table(ENGAGEMENT).map_err(err)?;
                let mut firsts = txn.open_table(FIRSTS).map_err(err)?;
                let mut counts = txn.open_table(COUNTS).map_err(err)?;
                let mut links = txn.open_table(LINKS).map_err(err)?;
                for row in &batch {
                    let (account, id) = (row.account.0.as_str(), row.message_id.0.as_str());
                    let key = (account, id, row.event_id.as_str());
                    if events.get(key).map_err(err)?.is_some() {
                        continue;
                    }
                    events.insert(key, serde_json::to_vec(row).map_err(err)?.as_slice()).map_err(err)?;
                    let mut claim = |what: Option<String>| -> Result<bool, StoreError> {
                        let Some(what) = what else { return Ok(false) };
                        Ok(firsts.insert((account, id, what.as_str()), ()).map_err(err)?.is_none())
                    };
                    let (message, url) = row.first_keys();
                    let first = Firsts { message: claim(message)?, url: claim(url)? };
                    let hour = row.at.hour_bucket();
                    for counter in row.counters(first) {
                        let ckey = (account, hour, counter.as_str());
                        let n = counts.get(ckey).map_err(err)?.map(|v| v.value()).unwrap_or(0);
                        counts.insert(ckey, n + 1).map_err(err)?;
                    }
                    if let (super::EngagementKind::Clicked, Some(url)) = (row.kind, &row.url) {
                        let lkey = (account, hour, url.as_str());
                        let (c, u) = links.get(lkey).map_err(err)?.map(|v| v.value()).unwrap_or((0, 0));
                        links.insert(lkey, (c + 1, u + first.url as u64)).map_err(err)?;
                    }
                }
            }
            txn.commit().map_err(err)
        })
        .await
    }

    async fn messages_to(
        &self,
        account: &AccountId,
        recipient: &str,
        before: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<MessageView>, StoreError> {
        let (owner, account, recipient) = (account.clone(), account.0.clone(), recipient.to_lowercase());
        let before = before.map(|t| t.millis()).unwrap_or(i64::MAX);
        let ids: Vec<String> = self
            .blocking(move |db| {
                let read = db.begin_read().map_err(err)?;
                let index = read.open_table(RECIPIENTS).map_err(err)?;
                let lo = (account.as_str(), recipient.as_str(), i64::MIN, "");
                let hi = (account.as_str(), recipient.as_str(), before, "");
                let mut ids = Vec::new();
                for entry in index.range(lo..hi).map_err(err)?.rev().take(limit) {
                    let (k, _) = entry.map_err(err)?;
                    ids.push(k.value().3.to_owned());
                }
                Ok(ids)
            })
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(v) = self.message(&owner, &MessageId(id)).await? {
                out.push(v);
            }
        }
        Ok(out)
    }

    async fn links(&self, account: &AccountId, from: Timestamp, to: Timestamp) -> Result<Vec<LinkStats>, StoreError> {
        let account = account.0.clone();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(err)?;
            let table = read.open_table(LINKS).map_err(err)?;
            let mut rows = Vec::new();
            for entry in table
                .range((account.as_str(), from.hour_bucket(), "")..(account.as_str(), to.millis(), ""))
                .map_err(err)?
            {
                let (k, v) = entry.map_err(err)?;
                let (clicks, unique) = v.value();
                rows.push((k.value().2.to_owned(), clicks, unique));
            }
            Ok(super::top_links(rows))
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

    async fn claim_idempotency(
        &self,
        account: &AccountId,
        key: &str,
        record: &IdempotencyRecord,
        ttl: std::time::Duration,
    ) -> Result<Claim, StoreError> {
        let (account, key, record) = (account.0.clone(), key.to_owned(), record.clone());
        self.blocking(move |db| {
            let now = Timestamp::now().millis();
            let mut txn = db.begin_write().map_err(err)?;
            txn.set_durability(Durability::Immediate).map_err(err)?;
            let held = live_record(&txn.open_table(IDEMPOTENCY).map_err(err)?, &account, &key, now)?;
            if let Some((_, held)) = held {
                return Ok(Claim::Held(held));
            }
            purge_expired(&txn, now)?;
            put_record(&txn, &account, &key, &record, now + ttl.as_millis() as i64)?;
            txn.commit().map_err(err)?;
            Ok(Claim::Won)
        })
        .await
    }

    async fn replace_idempotency(
        &self,
        account: &AccountId,
        key: &str,
        claim: &str,
        record: &IdempotencyRecord,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let (account, key, claim, record) = (account.0.clone(), key.to_owned(), claim.to_owned(), record.clone());
        self.blocking(move |db| {
            let now = Timestamp::now().millis();
            let mut txn = db.begin_write().map_err(err)?;
            txn.set_durability(Durability::Immediate).map_err(err)?;
            let held = live_record(&txn.open_table(IDEMPOTENCY).map_err(err)?, &account, &key, now)?;
            if held.is_none_or(|(_, h)| h.claim != claim) {
                return Ok(false);
            }
            put_record(&txn, &account, &key, &record, now + ttl.as_millis() as i64)?;
            txn.commit().map_err(err)?;
            Ok(true)
        })
        .await
    }

    async fn release_idempotency(&self, account: &AccountId, key: &str, claim: &str) -> Result<(), StoreError> {
        let (account, key, claim) = (account.0.clone(), key.to_owned(), claim.to_owned());
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(err)?;
            txn.set_durability(Durability::Immediate).map_err(err)?;
            {
                let mut table = txn.open_table(IDEMPOTENCY).map_err(err)?;
                let held = match table.get((account.as_str(), key.as_str())).map_err(err)? {
                    Some(v) => {
                        let (expires, json) = v.value();
                        let record: IdempotencyRecord = serde_json::from_slice(json).map_err(err)?;
                        (record.claim == claim).then_some(expires)
                    }
                    None => None,
                };
                if let Some(expires) = held {
                    table.remove((account.as_str(), key.as_str())).map_err(err)?;
                    txn.open_table(IDEMPOTENCY_EXPIRY)
                        .map_err(err)?
                        .remove((expires, account.as_str(), key.as_str()))
                        .map_err(err)?;
                }
            }
            txn.commit().map_err(err)
        })
        .await
    }
}

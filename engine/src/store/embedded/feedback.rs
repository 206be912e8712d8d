//! The feedback read models on redb: three tables in the projection file.

use super::{err, EmbeddedStore};
use crate::store::feedback::{
    cursor, BounceRow, FeedbackChange, FeedbackStore, Page, SoftFailure, Suppression, SCAN_BUDGET,
};
use crate::store::StoreError;
use async_trait::async_trait;
use herald_schemas::{AccountId, BounceClass, SuppressionReason, Timestamp};
use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

/// (account, address) → JSON of [`Suppression`].
const SUPPRESSIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("suppressions");
/// (account, at ms, bounce id) → JSON of [`BounceRow`].
const BOUNCES: TableDefinition<(&str, i64, &str), &[u8]> = TableDefinition::new("bounces");
/// (account, address) → JSON list of [`SoftFailure`].
const SOFT: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("soft_failures");
/// name → secret ([`FeedbackStore::shared_secret`]).
const SECRETS: TableDefinition<&str, &str> = TableDefinition::new("secrets");

/// Rows read per blocking call of a full scan.
const SCAN_CHUNK: usize = 10_000;

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(SUPPRESSIONS).map_err(err)?;
    txn.open_table(BOUNCES).map_err(err)?;
    txn.open_table(SOFT).map_err(err)?;
    txn.open_table(SECRETS).map_err(err)?;
    Ok(())
}

#[async_trait]
impl FeedbackStore for EmbeddedStore {
    async fn apply_feedback(&self, changes: &[FeedbackChange]) -> Result<(), StoreError> {
        let changes = changes.to_vec();
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(err)?;
            txn.set_durability(Durability::Immediate).map_err(err)?;
            {
                let mut sup = txn.open_table(SUPPRESSIONS).map_err(err)?;
                let mut bounces = txn.open_table(BOUNCES).map_err(err)?;
                for change in &changes {
                    match change {
                        FeedbackChange::Suppress(s) => {
                            let json = serde_json::to_vec(&Stored::from(s)).map_err(err)?;
                            sup.insert((s.account.0.as_str(), s.address.as_str()), json.as_slice()).map_err(err)?;
                        }
                        FeedbackChange::Lift { account, address } => {
                            sup.remove((account.0.as_str(), address.as_str())).map_err(err)?;
                        }
                        FeedbackChange::Bounce(b) => {
                            let json = serde_json::to_vec(&StoredBounce::from(b)).map_err(err)?;
                            bounces
                                .insert((b.account.0.as_str(), b.at.millis(), b.key().as_str()), json.as_slice())
                                .map_err(err)?;
                        }
                    }
                }
            }
            txn.commit().map_err(err)
        })
        .await
    }

    async fn suppression(&self, account: &AccountId, address: &str) -> Result<Option<Suppression>, StoreError> {
        let (account, address) = (account.clone(), address.to_owned());
        self.blocking(move |db| {
            let read = db.begin_read().map_err(err)?;
            let table = read.open_table(SUPPRESSIONS).map_err(err)?;
            match table.get((account.0.as_str(), address.as_str())).map_err(err)? {
                Some(v) => Ok(Some(serde_json::from_slice::<Stored>(v.value()).map_err(err)?.into(account, address))),
                None => Ok(None),
            }
        })
        .await
    }

    async fn suppressions(
        &self,
        account: &AccountId,
        reason: Option<SuppressionReason>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Suppression>, StoreError> {
        let start: String = match after {
            Some(c) => cursor::decode(c)?,
            None => String::new(),
        };
        let account = account.clone();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(err)?;
            let table = read.open_table(SUPPRESSIONS).map_err(err)?;
            let mut items = Vec::new();
            let mut scanned = 0usize;
            for entry in table.range((account.0.as_str(), start.as_str())..).map_err(err)? {
                let (k, v) = entry.map_err(err)?;
                let (acct, address) = k.value();
                if acct != account.0 {
                    return Ok(Page { items, next: None });
                }
                if address == start {
                    continue;
                }
                scanned += 1;
                let s =
                    serde_json::from_slice::<Stored>(v.value()).map_err(err)?.into(account.clone(), address.to_owned());
                if reason.is_none_or(|r| s.reason == r) {
                    items.push(s);
                }
                if items.len() >= limit || scanned >= SCAN_BUDGET {
                    return Ok(Page { items, next: Some(cursor::encode(&address)) });
                }
            }
            Ok(Page { items, next: None })
        })
        .await
    }

    async fn scan_suppressions(
        &self,
        each: &mut (dyn for<'a, 'b> FnMut(&'a AccountId, &'b str, Option<Timestamp>) + Send),
    ) -> Result<u64, StoreError> {
        let mut from: Option<(String, String)> = None;
        let mut total = 0u64;
        loop {
            let start = from.clone();
            let chunk = self
                .blocking(move |db| {
                    let read = db.begin_read().map_err(err)?;
                    let table = read.open_table(SUPPRESSIONS).map_err(err)?;
                    let mut out = Vec::with_capacity(SCAN_CHUNK);
                    let range = match &start {
                        Some((a, b)) => table.range((a.as_str(), b.as_str())..).map_err(err)?,
                        None => table.range::<(&str, &str)>(..).map_err(err)?,
                    };
                    for entry in range {
                        let (k, v) = entry.map_err(err)?;
                        let (a, b) = k.value();
                        if start.as_ref().is_some_and(|(sa, sb)| sa == a && sb == b) {
                            continue;
                        }
                        let s: Stored = serde_json::from_slice(v.value()).map_err(err)?;
                        out.push((a.to_owned(), b.to_owned(), s.expires_at));
                        if out.len() >= SCAN_CHUNK {
                            break;
                        }
                    }
                    Ok(out)
                })
                .await?;
            let done = chunk.len() < SCAN_CHUNK;
            for (a, b, expires) in &chunk {
                each(&AccountId(a.clone()), b, *expires);
            }
            total += chunk.len() as u64;
            if done {
                return Ok(total);
            }
            from = chunk.last().map(|(a, b, _)| (a.clone(), b.clone()));
        }
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
        let start: Option<(i64, String)> = after.map(cursor::decode).transpose()?;
        let account = account.clone();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(err)?;
            let table = read.open_table(BOUNCES).map_err(err)?;
            let (lo_at, lo_id) = start.clone().unwrap_or((from.millis(), String::new()));
            let lo = (account.0.as_str(), lo_at.max(from.millis()), lo_id.as_str());
            let hi = (account.0.as_str(), to.millis(), "");
            let mut items = Vec::new();
            let mut scanned = 0usize;
            for entry in table.range(lo..hi).map_err(err)? {
                let (k, v) = entry.map_err(err)?;
                let (_, at, id) = k.value();
                if start.as_ref().is_some_and(|(sa, sid)| *sa == at && sid == id) {
                    continue;
                }
                scanned += 1;
                let row = serde_json::from_slice::<StoredBounce>(v.value()).map_err(err)?.into(account.clone(), at, id);
                if class.is_none_or(|c| row.class == c) {
                    items.push(row);
                }
                if items.len() >= limit || scanned >= SCAN_BUDGET {
                    return Ok(Page { items, next: Some(cursor::encode(&(at, id))) });
                }
            }
            Ok(Page { items, next: None })
        })
        .await
    }

    async fn soft_failures(&self, account: &AccountId, address: &str) -> Result<Vec<SoftFailure>, StoreError> {
        let (account, address) = (account.0.clone(), address.to_owned());
        self.blocking(move |db| {
            let read = db.begin_read().map_err(err)?;
            let table = read.open_table(SOFT).map_err(err)?;
            match table.get((account.as_str(), address.as_str())).map_err(err)? {
                Some(v) => serde_json::from_slice(v.value()).map_err(err),
                None => Ok(vec![]),
            }
        })
        .await
    }

    async fn put_soft_failures(
        &self,
        account: &AccountId,
        address: &str,
        failures: &[SoftFailure],
    ) -> Result<(), StoreError> {
        let (account, address) = (account.0.clone(), address.to_owned());
        let json = serde_json::to_vec(failures).map_err(err)?;
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(err)?;
            txn.set_durability(Durability::Immediate).map_err(err)?;
            {
                let mut table = txn.open_table(SOFT).map_err(err)?;
                if json == b"[]" {
                    table.remove((account.as_str(), address.as_str())).map_err(err)?;
                } else {
                    table.insert((account.as_str(), address.as_str()), json.as_slice()).map_err(err)?;
                }
            }
            txn.commit().map_err(err)
        })
        .await
    }

    async fn shared_secret(&self, name: &str, candidate: &str) -> Result<String, StoreError> {
        let (name, candidate) = (name.to_owned(), candidate.to_owned());
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(err)?;
            txn.set_durability(Durability::Immediate).map_err(err)?;
            let value = {
                let mut table = txn.open_table(SECRETS).map_err(err)?;
                let stored = table.get(name.as_str()).map_err(err)?.map(|v| v.value().to_owned());
                match stored {
                    Some(v) => v,
                    None => {
                        table.insert(name.as_str(), candidate.as_str()).map_err(err)?;
                        candidate
                    }
                }
            };
            txn.commit().map_err(err)?;
            Ok(value)
        })
        .await
    }
}

/// A suppression as stored (the key holds account and address).
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    reason: SuppressionReason,
    message_id: Option<herald_schemas::MessageId>,
    detail: String,
    expires_at: Option<Timestamp>,
    created_at: Timestamp,
    id: String,
}

impl From<&Suppression> for Stored {
    fn from(s: &Suppression) -> Self {
        Stored {
            reason: s.reason,
            message_id: s.message_id.clone(),
            detail: s.detail.clone(),
            expires_at: s.expires_at,
            created_at: s.created_at,
            id: s.id.clone(),
        }
    }
}

impl Stored {
    fn into(self, account: AccountId, address: String) -> Suppression {
        Suppression {
            account,
            address,
            reason: self.reason,
            message_id: self.message_id,
            detail: self.detail,
            expires_at: self.expires_at,
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// A bounce as stored: the row without its key.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredBounce(serde_json::Value);

impl From<&BounceRow> for StoredBounce {
    fn from(b: &BounceRow) -> Self {
        StoredBounce(serde_json::to_value(b).unwrap_or_default())
    }
}

impl StoredBounce {
    fn into(self, account: AccountId, at: i64, id: &str) -> BounceRow {
        let mut v = self.0;
        v["at"] = serde_json::json!(at);
        let id = BounceRow::id_of_key(id);
        v["id"] = serde_json::json!(id);
        let mut row: BounceRow = serde_json::from_value(v).unwrap_or_else(|_| BounceRow::unreadable(id, at));
        row.account = account;
        row
    }
}

impl BounceRow {
    /// A placeholder for a row this build cannot read (kept so a listing never fails).
    pub(crate) fn unreadable(id: &str, at: i64) -> BounceRow {
        BounceRow {
            account: AccountId(String::new()),
            id: id.to_owned(),
            message_id: herald_schemas::MessageId(String::new()),
            recipient: String::new(),
            bounce_type: herald_schemas::BounceType::Undetermined,
            class: BounceClass::Uncategorized,
            action: herald_schemas::BounceAction::Failed,
            code: None,
            enhanced: None,
            diagnostic: "(unreadable row)".into(),
            remote_mta: None,
            reporting_mta: None,
            source: herald_schemas::BounceSource::Dsn,
            at: Timestamp(at),
        }
    }
}

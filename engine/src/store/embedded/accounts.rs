//! [`AccountStore`] on the embedded redb store: rows as JSON, positions beside them, both
//! written in one transaction.

use super::{err, EmbeddedStore};
use crate::accounts::state::AccountState;
use crate::store::accounts::AccountStore;
use crate::store::StoreError;
use async_trait::async_trait;
use herald_schemas::AccountId;
use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};

/// Account id → JSON of [`AccountState`].
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// Partition of `<prefix>.accounts` → offset of the last row written from it.
const POSITIONS: TableDefinition<u32, u64> = TableDefinition::new("account_positions");

pub(super) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ACCOUNTS).map_err(err)?;
    txn.open_table(POSITIONS).map_err(err)?;
    Ok(())
}

#[async_trait]
impl AccountStore for EmbeddedStore {
    async fn account(&self, id: &AccountId) -> Result<Option<AccountState>, StoreError> {
        let id = id.0.clone();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(err)?;
            let table = read.open_table(ACCOUNTS).map_err(err)?;
            match table.get(id.as_str()).map_err(err)? {
                Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(err)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn put_account(&self, state: &AccountState, partition: u32) -> Result<(), StoreError> {
        let json = serde_json::to_vec(state).map_err(err)?;
        let (id, position) = (state.id.0.clone(), state.position);
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(err)?;
            txn.set_durability(Durability::Immediate).map_err(err)?;
            txn.open_table(ACCOUNTS).map_err(err)?.insert(id.as_str(), json.as_slice()).map_err(err)?;
            txn.open_table(POSITIONS).map_err(err)?.insert(partition, position).map_err(err)?;
            txn.commit().map_err(err)
        })
        .await
    }

    async fn accounts(&self) -> Result<Vec<AccountState>, StoreError> {
        self.blocking(move |db| {
            let read = db.begin_read().map_err(err)?;
            let table = read.open_table(ACCOUNTS).map_err(err)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(err)? {
                let (_, v) = entry.map_err(err)?;
                out.push(serde_json::from_slice(v.value()).map_err(err)?);
            }
            Ok(out)
        })
        .await
    }

    async fn account_positions(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        self.blocking(move |db| {
            let read = db.begin_read().map_err(err)?;
            let table = read.open_table(POSITIONS).map_err(err)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(err)? {
                let (k, v) = entry.map_err(err)?;
                out.push((k.value(), v.value()));
            }
            Ok(out)
        })
        .await
    }
}

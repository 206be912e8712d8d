//! [`AccountStore`] on CQL: `accounts` rows (JSON state) and `account_positions`, all in
//! one CQL partition so the cache's poll is a single-partition read.

use super::{err, CqlStore};
use crate::accounts::state::AccountState;
use crate::store::accounts::AccountStore;
use crate::store::StoreError;
use async_trait::async_trait;
use futures::StreamExt;
use herald_schemas::AccountId;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

pub(super) struct Statements {
    select: PreparedStatement,
    insert: PreparedStatement,
    select_all: PreparedStatement,
    put_position: PreparedStatement,
    positions: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Self, StoreError> {
        let p = |cql: String| async move { session.prepare(cql).await.map_err(err) };
        Ok(Statements {
            select: p(format!("SELECT state FROM {ks}.accounts WHERE id = ?")).await?,
            insert: p(format!("INSERT INTO {ks}.accounts (id, state) VALUES (?, ?)")).await?,
            select_all: p(format!("SELECT state FROM {ks}.accounts")).await?,
            put_position: p(format!(
                "INSERT INTO {ks}.account_positions (shard, log_partition, log_offset) VALUES (0, ?, ?)"
            ))
            .await?,
            positions: p(format!("SELECT log_partition, log_offset FROM {ks}.account_positions WHERE shard = 0"))
                .await?,
        })
    }
}

#[async_trait]
impl AccountStore for CqlStore {
    async fn account(&self, id: &AccountId) -> Result<Option<AccountState>, StoreError> {
        let result = self
            .session
            .execute_unpaged(&self.accounts.select, (id.0.as_str(),))
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

    async fn put_account(&self, state: &AccountState, partition: u32) -> Result<(), StoreError> {
        let json = serde_json::to_string(state).map_err(err)?;
        self.session.execute_unpaged(&self.accounts.insert, (state.id.0.as_str(), json)).await.map_err(err)?;
        // After the row: a cache that sees the new position reads the new row.
        self.session
            .execute_unpaged(&self.accounts.put_position, (partition as i32, state.position as i64))
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn accounts(&self) -> Result<Vec<AccountState>, StoreError> {
        let mut out = Vec::new();
        let mut pager = self
            .session
            .execute_iter(self.accounts.select_all.clone(), ())
            .await
            .map_err(err)?
            .rows_stream::<(String,)>()
            .map_err(err)?;
        while let Some(row) = pager.next().await {
            out.push(serde_json::from_str(&row.map_err(err)?.0).map_err(err)?);
        }
        Ok(out)
    }

    async fn account_positions(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        let result = self
            .session
            .execute_unpaged(&self.accounts.positions, ())
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let mut out = vec![];
        for row in result.rows::<(i32, i64)>().map_err(err)? {
            let (p, o) = row.map_err(err)?;
            out.push((p as u32, o as u64));
        }
        Ok(out)
    }
}

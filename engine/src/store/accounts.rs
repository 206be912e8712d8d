//! The accounts read model: one row per account (its settings, status, API key digests and
//! SMTP users, tombstones included), written only by the account projector
//! (`crate::accounts::projector`), one task per partition of `<prefix>.accounts`; every
//! event of one account is on one partition, so writes of one account never race.
//! Beside the rows, the offset each partition's projector last wrote: a node's account
//! cache polls these few numbers and re-reads the rows only when one moved.
//! Backends: `embedded/accounts.rs`, `cql/accounts.rs`.

use super::StoreError;
use crate::accounts::state::AccountState;
use async_trait::async_trait;
use herald_schemas::AccountId;

#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// One account (a deleted one as its tombstone); `None` if never created.
    async fn account(&self, id: &AccountId) -> Result<Option<AccountState>, StoreError>;

    /// Replaces the account's row and records `state.position` as the offset `partition`'s
    /// projector reached. Durable on return.
    async fn put_account(&self, state: &AccountState, partition: u32) -> Result<(), StoreError>;

    /// Every account, tombstones included.
    async fn accounts(&self) -> Result<Vec<AccountState>, StoreError>;

    /// `(partition, offset)` of the last account row written per partition.
    async fn account_positions(&self) -> Result<Vec<(u32, u64)>, StoreError>;
}

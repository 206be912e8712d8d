//! Accounts as data: customer accounts, their API keys and SMTP users are events on
//! `<prefix>.accounts`, projected into the store, and held by every node as a snapshot
//! that follows changes within about a second. The config's `[[accounts]]` entries still
//! define accounts (bootstrap); the API can change them. See
//! `docs/adr/0014-accounts-as-events.md`.
//!
//! - [`state`]: one account's row, folded from its events (pure);
//! - [`keys`]: API key generation, digests, scopes;
//! - [`directory`]: the node's snapshot (rows merged with the config, indexed), its cache;
//! - [`projector`]: the accounts topic into the store;
//! - [`service`]: the commands (append, then read back the projection).

pub mod directory;
pub mod keys;
pub mod projector;
pub mod service;
pub mod state;

pub use directory::{AccountCache, Bootstrap, Gate, KeyRefused, Principal, Snapshot, Source};
pub use keys::{Scope, Scopes};
pub use service::{AccountError, AccountInfo, AccountPatch, Accounts, IssuedKey, KeyInfo, NewKeyRequest, UserInfo};

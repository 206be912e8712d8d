//! Herald's engine: everything between ingestion and the outside world.
//!
//! - [`log`]: the event log trait and its backends (embedded redb, Kafka);
//! - [`store`]: the projection store trait and its backends (embedded redb, CQL);
//! - [`submit`]: appending accepted messages (used by every ingestion path);
//! - [`worker`] and [`delivery`]: consuming partitions and delivering over SMTP;
//! - [`projector`]: turning the log into the read models queries use;
//! - [`domains`]: sender domains (keys, rotation, Herald's DNS zone, verification);
//! - [`accounts`]: accounts, API keys and SMTP users as events, and each node's snapshot;
//! - [`routing`] and [`retry`]: pure decisions (partitioning, backoff), kept apart from I/O.

pub mod accounts;
pub mod delivery;
pub mod domains;
pub mod log;
pub mod projector;
pub mod retry;
pub mod routing;
pub mod store;
pub mod submit;
pub mod worker;

//! Herald's engine: everything between ingestion and the outside world.
//!
//! - [`log`]: the event log trait and its backends (embedded redb, Kafka);
//! - [`store`]: the projection store trait and its backends (embedded redb, CQL);
//! - [`submit`]: appending accepted messages (used by every ingestion path), and [`bodies`]:
//!   message bodies stored once per request and read back for delivery;
//! - [`worker`] and [`delivery`]: consuming partitions and delivering over SMTP;
//! - [`rewrite`]: send-time rewriting before signing (CSS, click and open tracking, unsubscribe);
//! - [`projector`]: turning the log into the read models queries use; [`engagement`]: the same
//!   for opens, clicks and unsubscriptions; [`replay`]: rebuilding a projection from the log;
//! - [`domains`]: sender domains (keys, rotation, Herald's DNS zone, verification);
//! - [`accounts`]: accounts, API keys and SMTP users as events, and each node's snapshot;
//! - [`shaping`]: provider limits, adaptive backoff, source pools and warm-up;
//! - [`webhooks`]: customers' endpoints, signed and durable delivery of their events;
//! - [`routing`] and [`retry`]: pure decisions (partitioning, backoff), kept apart from I/O;
//! - [`metrics`]: every metric the engine records, with its help text (`docs/metrics.md`).

pub mod accounts;
pub mod bodies;
pub mod consumer;
pub mod delivery;
pub mod domains;
pub mod engagement;
pub mod feedback;
pub mod log;
pub mod metrics;
pub mod projector;
pub mod replay;
pub mod reports;
pub mod retry;
pub mod rewrite;
pub mod routing;
pub mod shaping;
pub mod store;
pub mod submit;
pub mod webhooks;
pub mod worker;

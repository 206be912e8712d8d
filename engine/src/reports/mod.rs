//! Bounce reports by email: per account, a digest of each interval's bounces and
//! complaints, sent to the account's `report_email` as a normal message through Herald
//! itself (appended to the log like any accepted message). See
//! `docs/adr/0018-bounce-reports-by-email.md`.
//!
//! - [`interval`]: the boundaries, wall-clock multiples of the interval (pure);
//! - [`digest`]: the counts, the list and the message (pure);
//! - [`runner`]: the loop on every node, the claim that makes one report per interval.

pub mod digest;
pub mod interval;
pub mod runner;

pub use runner::{Reporter, Settings};

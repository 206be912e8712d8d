//! Sender domains: a customer's domain Herald signs for, with keys Herald generates and
//! rotates, records the customer publishes once (CNAMEs into Herald's zone), Herald's own
//! authoritative zone, and verification.
//!
//! - [`name`]: IDN/punycode, syntax, public suffixes;
//! - [`keys`]: key generation (aws-lc-rs), and the private-key files from before ADR 0017;
//! - [`vault`]: master keys, sealing private keys for the log (ADR 0017);
//! - [`state`]: the projection of a domain's events, rotation steps (pure);
//! - [`records`], [`spf`]: what the customer publishes, SPF merging;
//! - [`zone`], [`dns`]: Herald's zone as data, and the hickory-server that serves it;
//! - [`lookup`], [`verify`], [`check`]: resolving, verification, diagnostics;
//! - [`service`]: the commands (append, then read back the projection);
//! - [`projector`], [`cache`], [`signing`]: the domains topic into the store, the node's
//!   snapshot of it, and signing with the keys of verified domains.

pub mod cache;
pub mod check;
pub mod dns;
pub mod keys;
pub mod lookup;
pub mod name;
pub mod projector;
pub mod records;
pub mod service;
pub mod signing;
pub mod spf;
pub mod state;
pub mod vault;
pub mod verify;
pub mod zone;

pub use service::{AddDomain, DomainError, DomainSettings, Domains, Reseal, UpdateDomain};

//! Bounces, complaints and the suppression list. Pure parsing and decisions live apart
//! from I/O:
//!
//! - [`verp`]: the VERP return path and its HMAC'd token;
//! - [`classify`]: the bounce classifier and its shipped rule file (`rules.toml`);
//! - [`dsn`], [`arf`], [`report`]: RFC 3464 DSNs, RFC 5965 complaints, plain-text bounces
//!   and auto-replies;
//! - [`policy`]: who is suppressed and for how long; [`rows`]: events as projection rows;
//! - [`sending`]: what the worker asks and says (the suppression check before an attempt,
//!   the classification of a refusal after it);
//! - [`receive`]: a message received by the bounce MX, turned into events;
//! - [`index`]: the node's in-memory suppression index;
//! - [`projector`]: `<prefix>.feedback` into the stores, and the suppression decisions;
//! - [`service`]: the suppression-list and bounce-list commands of the API.

pub mod arf;
pub mod classify;
pub mod dsn;
pub mod index;
pub mod policy;
pub mod projector;
pub mod receive;
pub mod report;
pub mod rows;
pub mod sending;
pub mod service;
pub mod verp;

use crate::log::{Record, Topics};
use crate::routing::Router;
use herald_schemas::{encode, Event, FeedbackEvent};

/// The log record of a feedback event: on the partition of its recipient (every event of
/// one recipient on one partition, in order), keyed by the recipient's domain.
pub fn record(topics: &Topics, router: &Router, event: FeedbackEvent) -> Record {
    let recipient = policy::normalize(event.recipient());
    let domain = recipient.rsplit_once('@').map(|(_, d)| d).unwrap_or("").to_owned();
    Record {
        topic: topics.feedback(),
        partition: router.partition(&domain, &recipient),
        key: domain,
        value: encode(&Event::Feedback(event)),
    }
}

//! Appending accepted messages: the one path both REST and SMTP ingestion use.
//!
//! [`Submitter::place_body`] first decides how the body travels (inline, or stored once
//! on `<prefix>.bodies`, see [`crate::bodies`]) and holds a request to the fan-out limit;
//! [`Submitter::submit`] then appends the per-recipient events in one call.

use crate::bodies::{BodySettings, BodyStore};
use crate::log::{EventLog, LogError, Record, Topics};
use crate::routing::Router;
use herald_schemas::{encode, AccountId, Body, Event, MessageAccepted};
use std::sync::Arc;
use thiserror::Error;

/// Why a request was not accepted.
#[derive(Debug, Error)]
pub enum SubmitError {
    /// Body × recipients over `max_fanout_bytes`: REST 422 `fanout_too_large`, SMTP 552 5.3.4.
    #[error(
        "the message ({body} bytes) to {recipients} recipients makes {total} bytes to send; one request may send at most {limit}"
    )]
    FanoutTooLarge { body: u64, recipients: usize, total: u64, limit: u64 },
    /// The log did not take it: REST 503, SMTP 451; nothing was acknowledged.
    #[error(transparent)]
    Log(#[from] LogError),
}

#[derive(Clone)]
pub struct Submitter {
    log: Arc<dyn EventLog>,
    topics: Topics,
    router: Router,
    bodies: Arc<BodyStore>,
    max_fanout_bytes: u64,
}

impl Submitter {
    /// With the default body settings and no fan-out limit.
    pub fn new(log: Arc<dyn EventLog>, topics: Topics, router: Router) -> Self {
        let bodies = Arc::new(BodyStore::new(log.clone(), topics.bodies(), BodySettings::default()));
        Submitter { log, topics, router, bodies, max_fanout_bytes: u64::MAX }
    }

    /// Places bodies through `bodies` and refuses requests whose body × recipients is over
    /// `max_fanout_bytes`.
    pub fn with_bodies(mut self, bodies: Arc<BodyStore>, max_fanout_bytes: u64) -> Self {
        self.bodies = bodies;
        self.max_fanout_bytes = max_fanout_bytes;
        self
    }

    /// Why the log cannot take appends right now, if it cannot.
    pub fn log_failure(&self) -> Option<String> {
        self.log.failure()
    }

    /// Whether the log can take appends, asking the cluster if there is one (`/readyz`).
    pub async fn log_reachable(&self, timeout: std::time::Duration) -> Result<(), String> {
        self.log.reachable(timeout).await
    }

    /// Checks the fan-out limit, then returns how `body` travels to `recipients`
    /// recipients: inline, or stored once (durable on return).
    pub async fn place_body(&self, account: &AccountId, body: Vec<u8>, recipients: usize) -> Result<Body, SubmitError> {
        let total = (body.len() as u64).saturating_mul(recipients as u64);
        if total > self.max_fanout_bytes {
            metrics::counter!("herald_ingest_refused_fanout_total").increment(1);
            return Err(SubmitError::FanoutTooLarge {
                body: body.len() as u64,
                recipients,
                total,
                limit: self.max_fanout_bytes,
            });
        }
        Ok(self.bodies.place(account, body, recipients).await?)
    }

    /// Appends one `MessageAccepted` per message, each on its recipient domain's partition.
    /// On `Ok`, every one is durable; on `Err`, none may be reported as accepted.
    pub async fn submit(&self, messages: Vec<MessageAccepted>) -> Result<(), LogError> {
        let topic = self.topics.messages();
        let records = messages
            .into_iter()
            .map(|m| Record {
                topic: topic.clone(),
                partition: self.router.partition(&m.recipient_domain, &m.message_id.0),
                key: m.recipient_domain.clone(),
                value: encode(&Event::MessageAccepted(m)),
            })
            .collect::<Vec<_>>();
        let n = records.len() as u64;
        self.log.append(records).await?;
        metrics::counter!("herald_ingest_accepted_messages_total").increment(n);
        Ok(())
    }
}

//! Message bodies stored once per request (`docs/adr/0007-bodies-stored-once.md`).
//!
//! Ingestion calls [`BodyStore::place`] before it builds the per-recipient events: a single
//! recipient, or a fan-out whose body × recipients stays under `inline_below_bytes`, keeps
//! the body inline in each event (one append, as before); anything larger appends one
//! `BodyStored` record to `<prefix>.bodies`, durable before any event refers to it, and the
//! events carry a [`BodyRef`] (partition, offset, length, SHA-256).
//!
//! The delivery side calls [`BodyStore::resolve`] just before signing. Stored bodies are
//! read by position ([`EventLog::read_at`]) through a cache bounded in bytes, which loads
//! each body once however many recipients ask for it at the same time (a campaign to
//! 10,000 recipients reads its body once per node). A record that is missing, of another
//! account, or whose bytes do not hash to the reference is [`BodyError::Gone`] (the attempt
//! fails permanently); a log that does not answer is [`BodyError::Unavailable`] (the attempt
//! is deferred).

use crate::log::{EventLog, LogError, Record};
use crate::routing::Router;
use herald_schemas::{decode, encode, AccountId, Body, BodyRef, BodyStored, Event, Timestamp};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;

/// How bodies are placed and cached.
#[derive(Debug, Clone, Copy)]
pub struct BodySettings {
    /// A fan-out whose body × recipients is below this keeps the body in every event.
    pub inline_below_bytes: u64,
    /// Bytes of stored bodies each node keeps in memory for delivery.
    pub cache_bytes: u64,
}

impl Default for BodySettings {
    fn default() -> Self {
        BodySettings { inline_below_bytes: 64 * 1024, cache_bytes: 64 << 20 }
    }
}

/// Why a body could not be had for an attempt.
#[derive(Debug, Clone, Error)]
pub enum BodyError {
    /// The log did not answer; a later attempt may succeed.
    #[error("the message body could not be read from the log ({0})")]
    Unavailable(String),
    /// The record is not there any more (retention), or is not the body referred to.
    #[error("the message body is no longer in the log ({0})")]
    Gone(String),
}

/// A body ready to sign and send.
pub enum Resolved<'a> {
    Inline(&'a [u8]),
    Stored(Arc<[u8]>),
}

impl Deref for Resolved<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Resolved::Inline(b) => b,
            Resolved::Stored(b) => b,
        }
    }
}

#[derive(Clone)]
struct Cached {
    account: AccountId,
    data: Arc<[u8]>,
}

pub struct BodyStore {
    log: Arc<dyn EventLog>,
    topic: String,
    router: Router,
    settings: BodySettings,
    cache: moka::future::Cache<BodyRef, Cached>,
}

impl BodyStore {
    /// Bodies on `topic` (`Topics::bodies`) of `log`.
    pub fn new(log: Arc<dyn EventLog>, topic: String, settings: BodySettings) -> Self {
        let router = Router::new(log.partitions(), Default::default());
        let cache = moka::future::Cache::builder()
            .max_capacity(settings.cache_bytes)
            .weigher(|_, v: &Cached| u32::try_from(v.data.len()).unwrap_or(u32::MAX))
            .build();
        BodyStore { log, topic, router, settings, cache }
    }

    /// How `body` travels to `recipients` recipients: inline, or stored once now (durable
    /// on return) and referred to.
    pub async fn place(&self, account: &AccountId, body: Vec<u8>, recipients: usize) -> Result<Body, LogError> {
        let total = (body.len() as u64).saturating_mul(recipients as u64);
        if recipients <= 1 || total < self.settings.inline_below_bytes {
            return Ok(Body::Inline(body));
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
        let sha256: [u8; 32] = digest.as_ref().try_into().expect("SHA-256 is 32 bytes");
        let key: String = hex::encode(sha256);
        let partition = self.router.key_partition(&key);
        let len = body.len() as u64;
        let value = encode(&Event::Body(BodyStored {
            account: account.clone(),
            sha256,
            data: body,
            stored_at: Timestamp::now(),
        }));
        let record = Record { topic: self.topic.clone(), partition, key, value };
        let offsets = self.log.append_with_offsets(vec![record]).await?;
        let offset = *offsets.first().ok_or_else(|| LogError::Storage("the append returned no offset".into()))?;
        metrics::counter!("herald_bodies_stored_total").increment(1);
        metrics::counter!("herald_bodies_stored_bytes_total").increment(len);
        Ok(Body::Stored(BodyRef { partition, offset, len, sha256 }))
    }

    /// The bytes of `body`, for a message of `account`.
    pub async fn resolve<'a>(&self, account: &AccountId, body: &'a Body) -> Result<Resolved<'a>, BodyError> {
        let r = match body {
            Body::Inline(b) => return Ok(Resolved::Inline(b)),
            Body::Stored(r) => *r,
        };
        let cached = self.cache.try_get_with(r, self.load(r)).await.map_err(|e: Arc<BodyError>| (*e).clone())?;
        if &cached.account != account {
            return Err(BodyError::Gone(format!(
                "{} partition {} offset {} belongs to another account",
                self.topic, r.partition, r.offset
            )));
        }
        Ok(Resolved::Stored(cached.data))
    }

    async fn load(&self, r: BodyRef) -> Result<Cached, BodyError> {
        let started = Instant::now();
        let at = || format!("{} partition {} offset {}", self.topic, r.partition, r.offset);
        let stored = self
            .log
            .read_at(&self.topic, r.partition, r.offset)
            .await
            .map_err(|e| BodyError::Unavailable(format!("{}: {e}", at())))?
            .ok_or_else(|| BodyError::Gone(format!("{} holds nothing, past retention", at())))?;
        metrics::histogram!("herald_bodies_read_seconds").record(started.elapsed().as_secs_f64());
        let body = match decode(&stored.value) {
            Ok(Event::Body(b)) => b,
            Ok(other) => return Err(BodyError::Gone(format!("{} holds a {} event", at(), other.event_type()))),
            Err(e) => return Err(BodyError::Gone(format!("{} does not decode: {e}", at()))),
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body.data);
        if body.sha256 != r.sha256 || digest.as_ref() != r.sha256 || body.data.len() as u64 != r.len {
            return Err(BodyError::Gone(format!("{} holds another body", at())));
        }
        metrics::counter!("herald_bodies_loaded_total").increment(1);
        Ok(Cached { account: body.account, data: body.data.into() })
    }
}

//! `Idempotency-Key` on `POST /v1/send` (draft-ietf-httpapi-idempotency-key-header, and
//! Stripe's behaviour): a client that lost the reply can send the same request again with
//! the same key and get the first reply back, and nothing is sent twice.
//!
//! Keys are per account and kept 24 hours in the projection store, claimed atomically
//! ([`ProjectionStore::claim_idempotency`]: one redb write transaction, or a CQL lightweight
//! transaction, so two nodes receiving the same key at once cannot both win). Only a
//! request that passed every check claims its key (a refused request can be corrected and
//! sent again with the same key). The claim stores the request's fingerprint and its 202
//! reply (the message ids are chosen before the append), then the messages are appended,
//! then the record is marked done. A second request with the key gets:
//! - the first reply (202, `Idempotent-Replayed: true`) when the fingerprints match and the
//!   first request was accepted: marked done, or its messages visible in the projection
//!   (the holder died after its append);
//! - 422 `idempotency_key_reused` when the request differs;
//! - 409 `idempotency_key_in_use` while the first request is still running. A holder that
//!   died before its append leaves the key in that state for [`LEASE`], after which the
//!   next request takes the key over (conditionally on the dead holder's claim).
//!
//! A request whose append failed (503) releases its key.

use super::ApiError;
use axum::http::{HeaderMap, StatusCode};
use herald_engine::store::{Claim, IdempotencyRecord, ProjectionStore};
use herald_schemas::{AccountId, MessageId, Timestamp};
use std::time::Duration;

/// How long a key is remembered.
pub const TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a key stays held by a request that neither finished nor showed its messages
/// (far longer than an append can take: Kafka's delivery timeout is 30 s).
pub const LEASE: Duration = Duration::from_secs(300);
/// Longest key accepted.
pub const MAX_KEY: usize = 255;

fn count(outcome: &'static str) {
    metrics::counter!("herald_http_idempotency_requests_total", "outcome" => outcome).increment(1);
}

/// The request's key, if it sent one. Accepts the draft's structured-field string
/// (`"abc"`) and a bare token (`abc`, as Stripe's clients send).
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_KEY} visible ASCII characters, such as a UUID"),
        )
    };
    let raw = value.to_str().map_err(|_| bad())?.trim();
    let key = raw.strip_prefix('"').and_then(|k| k.strip_suffix('"')).unwrap_or(raw);
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(key.to_owned()))
}

/// SHA-256 (hex) over the parts of a request, each length-prefixed.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part);
    }
    hex::encode(ctx.finish())
}

/// What to do with a request that carries a key.
pub enum Begin {
    /// The key is this request's: append, then [`Held::finish`].
    Fresh(Held),
    /// An earlier request with this key was accepted: send its reply again.
    Replay(String),
}

/// A key this request holds.
pub struct Held {
    account: AccountId,
    key: String,
    record: IdempotencyRecord,
}

fn unavailable(e: herald_engine::store::StoreError) -> ApiError {
    tracing::warn!(error = %e, "idempotency key store failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the Idempotency-Key could not be checked because the store is unavailable; nothing was sent, try again",
    )
}

/// Claims `key` for a request with `fingerprint`, whose reply will be `response` and whose
/// first message is `probe`.
pub async fn begin(
    store: &dyn ProjectionStore,
    account: &AccountId,
    key: String,
    fingerprint: String,
    response: String,
    probe: MessageId,
) -> Result<Begin, ApiError> {
    let now = Timestamp::now();
    let claim = uuid::Uuid::now_v7().to_string();
    let record = IdempotencyRecord { fingerprint, claim, response, probe, done: false, claimed_at: now };
    let held = match store.claim_idempotency(account, &key, &record, TTL).await.map_err(unavailable)? {
        Claim::Won => {
            count("new");
            return Ok(Begin::Fresh(Held { account: account.clone(), key, record }));
        }
        Claim::Held(held) => held,
    };
    if held.fingerprint != record.fingerprint {
        count("reused");
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request in the last 24 hours; use a new key for a new request",
        ));
    }
    if held.done {
        count("replayed");
        return Ok(Begin::Replay(held.response));
    }
    if store.message(account, &held.probe).await.map_err(unavailable)?.is_some() {
        // The holder appended its messages but did not live to mark the key done.
        let done = IdempotencyRecord { done: true, ..held.clone() };
        let _ = store.replace_idempotency(account, &key, &held.claim, &done, TTL).await;
        count("replayed");
        return Ok(Begin::Replay(held.response));
    }
    let age = Duration::from_millis(now.millis().saturating_sub(held.claimed_at.millis()).max(0) as u64);
    if age > LEASE && store.replace_idempotency(account, &key, &held.claim, &record, TTL).await.map_err(unavailable)? {
        tracing::warn!(%account, "idempotency key taken over from a request that never finished");
        count("taken_over");
        return Ok(Begin::Fresh(Held { account: account.clone(), key, record }));
    }
    count("in_progress");
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_key_in_use",
        "a request with this Idempotency-Key is still being processed; retry shortly",
    ))
}

impl Held {
    /// Marks the key done after a successful append, or frees it after a failed one.
    pub async fn finish(self, store: &dyn ProjectionStore, accepted: bool) {
        let Held { account, key, record } = self;
        let result = if accepted {
            let done = IdempotencyRecord { done: true, ..record.clone() };
            store.replace_idempotency(&account, &key, &record.claim, &done, TTL).await.map(|_| ())
        } else {
            store.release_idempotency(&account, &key, &record.claim).await
        };
        if let Err(e) = result {
            // Accepted: a retry still finds the messages through the probe. Refused: the
            // key frees itself after the lease.
            tracing::warn!(error = %e, accepted, "finishing an idempotency key failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_engine::store::{embedded::EmbeddedStore, Projected};

    fn store() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("p.redb")).unwrap();
        (dir, store)
    }

    async fn begin_with(store: &EmbeddedStore, fingerprint: &str, probe: &str) -> Result<Begin, ApiError> {
        let account = AccountId("acme".into());
        let response = format!("reply for {probe}");
        begin(store, &account, "k".into(), fingerprint.into(), response, MessageId(probe.into())).await
    }

    /// A holder that has not finished: 409 while its lease runs; the reply once its
    /// messages are visible; 422 for another request.
    #[tokio::test]
    async fn a_request_in_progress_gets_409_then_its_reply() {
        let (_dir, store) = store();
        let Ok(Begin::Fresh(_held)) = begin_with(&store, "f", "m1").await else { panic!("first claim") };
        let e = begin_with(&store, "f", "m2").await.err().unwrap();
        assert_eq!((e.status, e.code), (StatusCode::CONFLICT, "idempotency_key_in_use"));
        let e = begin_with(&store, "other", "m2").await.err().unwrap();
        assert_eq!((e.status, e.code), (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"));
        // The holder died after its append: the projection shows its first message.
        let accepted = Projected {
            account: AccountId("acme".into()),
            message_id: MessageId("m1".into()),
            seq: 0,
            recipient: "r@x.test".into(),
            kind: herald_engine::store::Kind::Accepted,
            at: Timestamp::now(),
            detail: serde_json::json!({}),
        };
        store.apply(&[accepted]).await.unwrap();
        let Ok(Begin::Replay(reply)) = begin_with(&store, "f", "m3").await else { panic!("replay") };
        assert_eq!(reply, "reply for m1");
    }

    /// A holder that died before its append: after the lease, the next request takes over.
    #[tokio::test]
    async fn a_dead_holder_is_taken_over_after_the_lease() {
        let (_dir, store) = store();
        let account = AccountId("acme".into());
        let stale = IdempotencyRecord {
            fingerprint: "f".into(),
            claim: "dead".into(),
            response: "never sent".into(),
            probe: MessageId("m0".into()),
            done: false,
            claimed_at: Timestamp(Timestamp::now().millis() - LEASE.as_millis() as i64 - 1000),
        };
        assert_eq!(store.claim_idempotency(&account, "k", &stale, TTL).await.unwrap(), Claim::Won);
        let Ok(Begin::Fresh(held)) = begin_with(&store, "f", "m1").await else { panic!("taken over") };
        held.finish(&store, true).await;
        let Ok(Begin::Replay(reply)) = begin_with(&store, "f", "m2").await else { panic!("replay") };
        assert_eq!(reply, "reply for m1");
    }

    /// A failed append frees the key for the retry.
    #[tokio::test]
    async fn a_failed_append_releases_the_key() {
        let (_dir, store) = store();
        let Ok(Begin::Fresh(held)) = begin_with(&store, "f", "m1").await else { panic!("claim") };
        held.finish(&store, false).await;
        assert!(matches!(begin_with(&store, "f", "m2").await, Ok(Begin::Fresh(_))));
    }

    #[test]
    fn keys_and_fingerprints() {
        let mut h = HeaderMap::new();
        assert_eq!(key(&h).unwrap(), None);
        h.insert("idempotency-key", "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"".parse().unwrap());
        assert_eq!(key(&h).unwrap().as_deref(), Some("8e03978e-40d5-43e8-bc93-6894a57f9324"));
        h.insert("idempotency-key", "plain-token".parse().unwrap());
        assert_eq!(key(&h).unwrap().as_deref(), Some("plain-token"));
        for bad in ["\"\"", "with space", &"x".repeat(256)] {
            h.insert("idempotency-key", bad.parse().unwrap());
            assert_eq!(key(&h).unwrap_err().code, "invalid_idempotency_key", "{bad}");
        }
        let f = |parts: &[&[u8]]| fingerprint(parts.iter().copied());
        assert_eq!(f(&[b"ab", b"c"]).len(), 64);
        assert_ne!(f(&[b"ab", b"c"]), f(&[b"a", b"bc"]), "parts are length-prefixed");
    }
}

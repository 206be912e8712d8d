//! The node's suppression index: what the worker asks before every attempt. In memory, so
//! a check costs a hash and a probe whatever the size of the lists; one per node, fed
//! from the projection store at start and then from the feedback topic.
//!
//! An entry is the 64-bit SipHash (random keys per process) of `(account, address)`, and
//! the expiry when it has one: a set of `u64` for entries without expiry and a small map for
//! the others, about 19 MB per million entries (see `docs/benchmarks.md`). Two different
//! addresses share a hash with probability ~n/2^64 per check (5·10^-14 at a million
//! entries): a false suppression that rare is accepted; a missed one cannot happen.
//!
//! Loading: the store's entries first (they include everything the log no longer holds),
//! then the whole retained feedback topic, replayed in order with a consumer group of its
//! own that never commits. Every event of one recipient is on one partition, so the replay
//! ends in the same state as the projection. The index is ready once the replay reached
//! the end of every partition; the worker waits for that before its first attempt.

use crate::log::{Assignment, EventLog};
use crate::store::feedback::FeedbackStore;
use herald_schemas::{decode, AccountId, Event, FeedbackEvent, Timestamp};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The keys are already uniform hashes: hash them no further.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type Build = BuildHasherDefault<Identity>;

#[derive(Default)]
struct Entries {
    permanent: HashSet<u64, Build>,
    /// Expiry in epoch milliseconds.
    expiring: HashMap<u64, i64, Build>,
}

pub struct SuppressionIndex {
    keys: RandomState,
    entries: RwLock<Entries>,
    ready: watch::Sender<bool>,
}

impl Default for SuppressionIndex {
    fn default() -> Self {
        SuppressionIndex { keys: RandomState::new(), entries: RwLock::default(), ready: watch::channel(false).0 }
    }
}

impl SuppressionIndex {
    pub fn new() -> Arc<SuppressionIndex> {
        Arc::new(SuppressionIndex::default())
    }

    /// The key of `(account, address)`, the address compared without case.
    fn key(&self, account: &str, address: &str) -> u64 {
        let mut h = self.keys.build_hasher();
        h.write(account.as_bytes());
        h.write_u8(0xff);
        if address.is_ascii() {
            for chunk in address.as_bytes().chunks(64) {
                let mut buf = [0u8; 64];
                for (d, s) in buf.iter_mut().zip(chunk) {
                    *d = s.to_ascii_lowercase();
                }
                h.write(&buf[..chunk.len()]);
            }
        } else {
            h.write(super::policy::normalize(address).as_bytes());
        }
        h.finish()
    }

    /// Puts (or replaces) an entry.
    pub fn insert(&self, account: &AccountId, address: &str, expires_at: Option<Timestamp>) {
        let key = self.key(&account.0, address.trim());
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        match expires_at {
            None => {
                e.expiring.remove(&key);
                e.permanent.insert(key);
            }
            Some(t) => {
                e.permanent.remove(&key);
                e.expiring.insert(key, t.millis());
            }
        }
    }

    pub fn remove(&self, account: &AccountId, address: &str) {
        let key = self.key(&account.0, address.trim());
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        e.permanent.remove(&key);
        e.expiring.remove(&key);
    }

    /// Applies a list change; other events are ignored.
    pub fn apply(&self, event: &FeedbackEvent) {
        match event {
            FeedbackEvent::RecipientSuppressed(s) => self.insert(&s.account, &s.recipient, s.expires_at),
            FeedbackEvent::SuppressionLifted(l) => self.remove(&l.account, &l.recipient),
            _ => {}
        }
    }

    /// Whether `recipient` is suppressed for `account` at `now`.
    pub fn is_suppressed(&self, account: &AccountId, recipient: &str, now: Timestamp) -> bool {
        let key = self.key(&account.0, recipient.trim());
        let e = self.entries.read().unwrap_or_else(|p| p.into_inner());
        e.permanent.contains(&key) || e.expiring.get(&key).is_some_and(|t| *t > now.millis())
    }

    /// Entries held (expired ones included until replaced or lifted).
    pub fn len(&self) -> usize {
        let e = self.entries.read().unwrap_or_else(|p| p.into_inner());
        e.permanent.len() + e.expiring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the tables hold (capacity, not length), for the memory gauge.
    pub fn memory_bytes(&self) -> usize {
        let e = self.entries.read().unwrap_or_else(|p| p.into_inner());
        e.permanent.capacity() * (std::mem::size_of::<u64>() + 1) + e.expiring.capacity() * (16 + 1)
    }

    /// Waits until the index is loaded and caught up with the log.
    pub async fn ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Loads the store's entries (all accounts). Returns how many.
    pub async fn load(&self, store: &dyn FeedbackStore) -> Result<u64, crate::store::StoreError> {
        let mut batch: Vec<(AccountId, String, Option<Timestamp>)> = Vec::with_capacity(4096);
        let flush = |batch: &mut Vec<(AccountId, String, Option<Timestamp>)>| {
            for (a, addr, exp) in batch.drain(..) {
                self.insert(&a, &addr, exp);
            }
        };
        let n = store
            .scan_suppressions(&mut |account, address, expires| {
                batch.push((account.clone(), address.to_owned(), expires));
                if batch.len() >= 4096 {
                    flush(&mut batch);
                }
            })
            .await?;
        flush(&mut batch);
        Ok(n)
    }

    /// Loads from `store`, replays `topic` (all `partitions`) and follows it until
    /// `shutdown`. Marks the index ready once caught up. Retries the load until it works.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn FeedbackStore>,
        log: Arc<dyn EventLog>,
        topic: String,
        partitions: u32,
        shutdown: CancellationToken,
    ) {
        let started = std::time::Instant::now();
        let loaded = loop {
            match self.load(store.as_ref()).await {
                Ok(n) => break n,
                Err(e) => {
                    tracing::warn!(error = %e, "loading the suppression index failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            }
        };
        let group = format!("herald-suppression-index-{}", herald_schemas::MessageId::generate());
        let assignments: Vec<Assignment> =
            (0..partitions).map(|partition| Assignment { topic: topic.clone(), partition }).collect();
        let consumers = loop {
            match log.consume(&group, &assignments).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(error = %e, "following the feedback topic failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            }
        };
        let behind = Arc::new(AtomicUsize::new(consumers.len()));
        let mut tasks = tokio::task::JoinSet::new();
        for mut consumer in consumers {
            let (index, behind, shutdown) = (self.clone(), behind.clone(), shutdown.clone());
            tasks.spawn(async move {
                let mut caught_up = false;
                loop {
                    let polled = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = consumer.poll(4096, Duration::from_millis(200)) => r,
                    };
                    match polled {
                        Ok(records) if records.is_empty() && !caught_up => {
                            caught_up = true;
                            if behind.fetch_sub(1, Ordering::SeqCst) == 1 {
                                index.mark_ready(started, loaded);
                            }
                        }
                        Ok(records) => {
                            let changed = !records.is_empty();
                            for r in records {
                                if let Ok(Event::Feedback(e)) = decode(&r.value) {
                                    index.apply(&e);
                                }
                            }
                            if changed && index.is_ready() {
                                index.gauges();
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "suppression index poll failed");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            });
        }
        if behind.load(Ordering::SeqCst) == 0 {
            self.mark_ready(started, loaded);
        }
        while tasks.join_next().await.is_some() {}
    }

    fn mark_ready(&self, started: std::time::Instant, loaded: u64) {
        tracing::info!(from_store = loaded, entries = self.len(), elapsed = ?started.elapsed(), "suppression index ready");
        self.gauges();
        self.ready.send_replace(true);
    }

    fn gauges(&self) {
        metrics::gauge!("herald_suppression_index_entries").set(self.len() as f64);
        metrics::gauge!("herald_suppression_index_bytes").set(self.memory_bytes() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_insensitive_per_account_with_expiry() {
        let idx = SuppressionIndex::default();
        let (a, b) = (AccountId("a".into()), AccountId("b".into()));
        idx.insert(&a, "bob@example.org", None);
        idx.insert(&a, "temp@example.org", Some(Timestamp(100)));
        idx.insert(&a, "jürgen@exämple.test", None);
        let now = Timestamp(50);
        assert!(idx.is_suppressed(&a, "Bob@Example.ORG", now));
        assert!(idx.is_suppressed(&a, "JÜRGEN@EXÄMPLE.TEST", now));
        assert!(!idx.is_suppressed(&b, "bob@example.org", now), "another account's list");
        assert!(idx.is_suppressed(&a, "temp@example.org", now));
        assert!(!idx.is_suppressed(&a, "temp@example.org", Timestamp(100)), "expired");
        idx.insert(&a, "temp@example.org", None);
        assert!(idx.is_suppressed(&a, "temp@example.org", Timestamp(1000)), "made permanent");
        idx.remove(&a, "BOB@example.org");
        assert!(!idx.is_suppressed(&a, "bob@example.org", now));
        assert_eq!(idx.len(), 2);
    }
}

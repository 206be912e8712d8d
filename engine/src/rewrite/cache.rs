//! Prepared bodies by key, so a campaign's body is parsed, inlined and link-scanned once.
//! Bounded by bytes; the least recently used entries go first. Concurrent deliveries of the
//! same new body wait for one preparation instead of each doing it.

use super::Prepared;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// What a prepared body depends on besides the tracking host (checked on use).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// XXH3-128 of the message bytes.
    pub hash: u128,
    pub account: String,
    /// The options and settings that change the result, as bits.
    pub flags: u8,
}

struct Entry {
    cell: Arc<OnceLock<Arc<Prepared>>>,
    last_used: u64,
    size: usize,
}

pub struct Cache {
    inner: Mutex<Inner>,
    limit: usize,
}

struct Inner {
    map: HashMap<Key, Entry>,
    bytes: usize,
    tick: u64,
}

impl Cache {
    /// A cache holding about `limit` bytes of prepared bodies.
    pub fn new(limit: usize) -> Self {
        Cache { inner: Mutex::new(Inner { map: HashMap::new(), bytes: 0, tick: 0 }), limit }
    }

    /// The prepared body for `key`: cached when `valid` accepts it, else made by `prepare`
    /// (once, however many callers ask at the same time).
    pub fn get(
        &self,
        key: Key,
        valid: impl Fn(&Prepared) -> bool,
        prepare: impl FnOnce() -> Prepared,
    ) -> (Arc<Prepared>, bool) {
        let cell = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.tick += 1;
            let tick = inner.tick;
            let stale = inner.map.get(&key).and_then(|e| e.cell.get()).is_some_and(|p| !valid(p));
            if stale {
                if let Some(old) = inner.map.remove(&key) {
                    inner.bytes -= old.size;
                }
            }
            let entry = inner.map.entry(key.clone()).or_insert_with(|| Entry {
                cell: Arc::new(OnceLock::new()),
                last_used: tick,
                size: 0,
            });
            entry.last_used = tick;
            entry.cell.clone()
        };
        let mut made = false;
        let prepared = cell
            .get_or_init(|| {
                made = true;
                Arc::new(prepare())
            })
            .clone();
        if made {
            self.account(&key, &cell, prepared.size());
        }
        (prepared, !made)
    }

    fn account(&self, key: &Key, cell: &Arc<OnceLock<Arc<Prepared>>>, size: usize) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = inner.map.get_mut(key).filter(|e| Arc::ptr_eq(&e.cell, cell)) else { return };
        entry.size = size;
        inner.bytes += size;
        while inner.bytes > self.limit && inner.map.len() > 1 {
            let oldest = inner.map.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            if let Some(e) = inner.map.remove(&oldest) {
                inner.bytes -= e.size;
            }
        }
        metrics::gauge!("herald_rewrite_cache_bytes").set(inner.bytes as f64);
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

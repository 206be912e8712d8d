//! An account's sending limits, enforced at ingestion on both channels (REST 429, SMTP
//! 451 4.7.1). Both count messages as the log does: one per recipient.
//!
//! - **Per second** (`messages_per_second`): a token bucket per account on this node
//!   (governor), with a burst of one second's worth. With several nodes behind a load
//!   balancer each node allows the rate: divide it by the node count if it must hold for
//!   the cluster.
//! - **Per day** (`messages_per_day`): the messages accepted in the current hour and the 23
//!   before, cluster-wide, read from the projection's hourly counters at most once a
//!   second per account, plus what this node accepted in the last
//!   [`RECENT`] (not projected yet, perhaps). Both parts may count the same messages for a
//!   few seconds, so the limit errs on the side of refusing early, by at most a few seconds
//!   of traffic; several nodes can each accept up to the projection lag's worth over it.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use herald_engine::store::ProjectionStore;
use herald_schemas::{AccountId, AccountLimits, Timestamp};
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long this node remembers what it accepted, beside the projection's count.
pub const RECENT: Duration = Duration::from_secs(10);
/// How often the projection's count of an account is read again.
const REREAD: Duration = Duration::from_secs(1);

/// Why a request was refused by a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    #[error("the account may send {limit} messages per second; try again in a second")]
    Rate { limit: u32 },
    #[error("this request has {n} recipients but the account may send only {limit} messages per second; split it")]
    RateBurst { n: u32, limit: u32 },
    #[error("the account may send {limit} messages in 24 hours and has sent {sent}; try again later")]
    Daily { limit: u64, sent: u64 },
    /// The projection could not be read to check the daily limit.
    #[error("the daily limit could not be checked")]
    Unavailable,
}

struct Daily {
    base: u64,
    read_at: Instant,
    recent: VecDeque<(Instant, u64)>,
}

/// The limits of every account, on this node.
pub struct Limits {
    /// `None`: only what this node accepted counts (tests, a node without a store).
    store: Option<Arc<dyn ProjectionStore>>,
    rates: Mutex<HashMap<AccountId, (u32, Arc<DefaultDirectRateLimiter>)>>,
    daily: Mutex<HashMap<AccountId, Daily>>,
}

impl Limits {
    pub fn new(store: Arc<dyn ProjectionStore>) -> Self {
        Limits { store: Some(store), rates: Mutex::default(), daily: Mutex::default() }
    }

    /// Limits counting only this node's acceptances (the daily limit then forgets after
    /// [`RECENT`]): for tests of other stages.
    pub fn local() -> Self {
        Limits { store: None, rates: Mutex::default(), daily: Mutex::default() }
    }

    /// Takes `n` messages from the account's per-second budget.
    pub fn rate(&self, account: &AccountId, limits: &AccountLimits, n: usize) -> Result<(), Exceeded> {
        let Some(limit) = limits.messages_per_second.and_then(NonZeroU32::new) else { return Ok(()) };
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        if n32 > limit.get() {
            return Err(Exceeded::RateBurst { n: n32, limit: limit.get() });
        }
        let limiter = {
            let mut rates = self.rates.lock().expect("rates lock");
            match rates.get(account) {
                Some((l, r)) if *l == limit.get() => r.clone(),
                _ => {
                    let r = Arc::new(RateLimiter::direct(Quota::per_second(limit)));
                    rates.insert(account.clone(), (limit.get(), r.clone()));
                    r
                }
            }
        };
        match NonZeroU32::new(n32).map(|n| limiter.check_n(n)) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(_) => Err(Exceeded::Rate { limit: limit.get() }),
        }
    }

    /// Reserves `n` messages of the account's daily budget (released by nothing: a refused
    /// append only makes the limit a little stricter for a few seconds).
    pub async fn daily(&self, account: &AccountId, limits: &AccountLimits, n: usize) -> Result<(), Exceeded> {
        let Some(limit) = limits.messages_per_day else { return Ok(()) };
        let n = n as u64;
        let stale = {
            let daily = self.daily.lock().expect("daily lock");
            daily.get(account).is_none_or(|d| d.read_at.elapsed() >= REREAD)
        };
        if stale {
            let now = Timestamp::now();
            let from = Timestamp(now.millis() - 23 * 3_600_000);
            let counted = match &self.store {
                Some(store) => store.stats(account, from, Timestamp(now.millis() + 1)).await.map(|s| s.accepted),
                None => Ok(0),
            };
            let base = match counted {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "daily limit: reading the counters failed");
                    return Err(Exceeded::Unavailable);
                }
            };
            let mut daily = self.daily.lock().expect("daily lock");
            let d = daily.entry(account.clone()).or_insert(Daily {
                base,
                read_at: Instant::now(),
                recent: VecDeque::new(),
            });
            d.base = base;
            d.read_at = Instant::now();
        }
        let mut daily = self.daily.lock().expect("daily lock");
        let d = daily.get_mut(account).expect("entry made above");
        while d.recent.front().is_some_and(|(t, _)| t.elapsed() > RECENT) {
            d.recent.pop_front();
        }
        let sent = d.base + d.recent.iter().map(|(_, k)| k).sum::<u64>();
        if sent + n > limit {
            return Err(Exceeded::Daily { limit, sent });
        }
        d.recent.push_back((Instant::now(), n));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_engine::store::{embedded::EmbeddedStore, Kind, Projected};

    #[test]
    fn per_second() {
        let dir = tempfile::tempdir().unwrap();
        let l = Limits::new(Arc::new(EmbeddedStore::open(&dir.path().join("p.redb")).unwrap()));
        let a = AccountId("a".into());
        let limits = AccountLimits { messages_per_second: Some(3), messages_per_day: None };
        assert!(l.rate(&a, &limits, 2).is_ok());
        assert_eq!(l.rate(&a, &limits, 2), Err(Exceeded::Rate { limit: 3 }));
        assert!(l.rate(&a, &limits, 1).is_ok());
        assert_eq!(l.rate(&a, &limits, 4), Err(Exceeded::RateBurst { n: 4, limit: 3 }));
        assert!(l.rate(&AccountId("b".into()), &limits, 3).is_ok(), "per account");
        assert!(l.rate(&a, &AccountLimits::default(), 1000).is_ok(), "no limit");
    }

    #[tokio::test]
    async fn per_day_counts_the_projection_and_recent_acceptances() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("p.redb")).unwrap());
        let a = AccountId("a".into());
        let now = Timestamp::now().millis();
        let accepted = |i: u32, at: i64| Projected {
            account: a.clone(),
            message_id: herald_schemas::MessageId(format!("m{i}")),
            seq: 0,
            recipient: "r@x.test".into(),
            kind: Kind::Accepted,
            at: Timestamp(at),
            detail: serde_json::Value::Null,
        };
        // Six accepted in the last hours, four more than a day ago (not counted).
        let mut batch: Vec<Projected> = (0..6).map(|i| accepted(i, now - 3_600_000 * i as i64)).collect();
        batch.extend((6..10).map(|i| accepted(i, now - 30 * 3_600_000)));
        store.apply(&batch).await.unwrap();
        let l = Limits::new(store);
        let limits = AccountLimits { messages_per_day: Some(10), messages_per_second: None };
        assert!(l.daily(&a, &limits, 3).await.is_ok());
        assert_eq!(l.daily(&a, &limits, 2).await, Err(Exceeded::Daily { limit: 10, sent: 9 }));
        assert!(l.daily(&a, &limits, 1).await.is_ok());
        assert!(l.daily(&a, &limits, 1).await.is_err());
        assert!(l.daily(&AccountId("b".into()), &limits, 10).await.is_ok());
    }
}

//! Session limits shared by all connections: concurrent connections (global and per
//! client IP), per-account message rate (governor), AUTH failures per client IP.

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use herald_schemas::AccountId;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts open connections; a [`Slot`] frees its place on drop.
#[derive(Default)]
pub struct Connections {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

pub struct Slot {
    owner: Arc<Connections>,
    ip: IpAddr,
}

impl Connections {
    /// A slot for `ip`, or `None` when `max_total` or `max_per_ip` are reached.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, max_total: usize, max_per_ip: usize) -> Option<Slot> {
        let mut map = self.per_ip.lock().expect("connections lock");
        let total: usize = map.values().sum();
        let mine = map.get(&ip).copied().unwrap_or(0);
        if total >= max_total || mine >= max_per_ip {
            return None;
        }
        map.insert(ip, mine + 1);
        Some(Slot { owner: self.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.owner.per_ip.lock().expect("connections lock");
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Messages per second per account; `None` when unlimited.
pub struct AccountRate(Option<DefaultKeyedRateLimiter<AccountId>>);

impl AccountRate {
    pub fn new(per_second: u32, burst: u32) -> Self {
        AccountRate(NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        }))
    }

    /// Takes one message from `account`'s budget; false when exhausted.
    pub fn allow(&self, account: &AccountId) -> bool {
        match &self.0 {
            None => true,
            Some(l) => {
                if l.len() > 10_000 {
                    l.retain_recent();
                }
                l.check_key(account).is_ok()
            }
        }
    }
}

/// AUTH failures per client IP within a window; an IP over the limit is locked out.
#[derive(Default)]
pub struct AuthFailures {
    by_ip: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthFailures {
    /// Records one failure; returns the failures of `ip` within `window`.
    pub fn record(&self, ip: IpAddr, window: Duration) -> u32 {
        let mut map = self.by_ip.lock().expect("auth failures lock");
        let now = Instant::now();
        map.retain(|_, (_, since)| now.duration_since(*since) < window);
        let entry = map.entry(ip).or_insert((0, now));
        entry.0 += 1;
        entry.0
    }

    /// Failures of `ip` within `window`.
    pub fn count(&self, ip: IpAddr, window: Duration) -> u32 {
        let map = self.by_ip.lock().expect("auth failures lock");
        map.get(&ip).filter(|(_, since)| since.elapsed() < window).map_or(0, |(n, _)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_released() {
        let c = Arc::new(Connections::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = c.acquire(ip, 10, 1).unwrap();
        assert!(c.acquire(ip, 10, 1).is_none());
        drop(a);
        assert!(c.acquire(ip, 10, 1).is_some());
    }

    #[test]
    fn rate_limits_per_account() {
        let r = AccountRate::new(1, 2);
        let a = AccountId("a".into());
        assert!(r.allow(&a) && r.allow(&a));
        assert!(!r.allow(&a));
        assert!(r.allow(&AccountId("b".into())));
        assert!(AccountRate::new(0, 0).allow(&a));
    }
}

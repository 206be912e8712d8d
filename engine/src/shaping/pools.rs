//! Source addresses, pools and warm-up.
//!
//! A pool (`[[pools]]`) is a set of sources, each an address Herald binds its outgoing
//! connections to and the EHLO name it announces from there. An account names its pool
//! (`[[accounts]] pool`); the others use the default pool, so one customer's reputation
//! stays on that customer's addresses. Within a pool, sources take turns by weight
//! (smooth weighted round robin), skipping those that may not send to the provider now.
//!
//! A source may have a warm-up schedule: a cap on messages per day per provider, from a
//! list (`[50, 100, 200]`) or a growth (`{ start = 50, factor = 2, until = 100000 }`). Day 1
//! is the day of the source's first use (recorded in the log, so every node and every
//! restart agrees), and days are 24-hour periods from that moment. After the schedule,
//! there is no cap. Pure: no I/O.

use herald_schemas::{AccountId, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

const DAY_MS: i64 = 86_400_000;

/// A warm-up schedule as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WarmupSpec {
    /// Day N's cap is the N-th number; no cap after the list.
    List(Vec<u64>),
    /// `{ start, factor, until }`: see [`Growth`].
    Growth(Growth),
}

/// `start` on day 1, multiplied by `factor` each day, until the cap passes `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Growth {
    pub start: u64,
    pub factor: f64,
    pub until: u64,
}

/// One source of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// The local address outgoing connections are bound to.
    pub ip: IpAddr,
    /// The name announced in EHLO from this address (its reverse DNS should match).
    pub ehlo: String,
    /// Share of the pool's messages (relative to the other sources).
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupSpec>,
}

fn one() -> u32 {
    1
}

/// `[[pools]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub name: String,
    /// The pool of accounts that name none (one pool at most; a pool named `default` is
    /// the default too).
    #[serde(default)]
    pub default: bool,
    pub sources: Vec<SourceSpec>,
}

/// A compiled warm-up schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Warmup(Vec<u64>);

impl Warmup {
    pub fn compile(spec: &WarmupSpec) -> Result<Warmup, String> {
        match spec {
            WarmupSpec::List(days) if days.is_empty() || days.contains(&0) => {
                Err("warmup: give a non-empty list of daily caps above zero".into())
            }
            WarmupSpec::List(days) => Ok(Warmup(days.clone())),
            WarmupSpec::Growth(Growth { start, factor, until }) => {
                if *start == 0 || !(factor.is_finite() && *factor > 1.0) || until < start {
                    return Err("warmup: start >= 1, factor > 1 and until >= start".into());
                }
                let mut days = vec![];
                let mut cap = *start as f64;
                while cap < *until as f64 && days.len() < 365 {
                    days.push(cap.round() as u64);
                    cap *= factor;
                }
                Ok(Warmup(days))
            }
        }
    }

    /// The cap of `day` (1-based); `None` once the schedule is over.
    pub fn cap(&self, day: u32) -> Option<u64> {
        self.0.get((day.max(1) - 1) as usize).copied()
    }

    pub fn days(&self) -> usize {
        self.0.len()
    }
}

/// The warm-up day of `now` for a source first used at `first` (day 1 is the first 24 h).
pub fn day_of(first: Timestamp, now: Timestamp) -> u32 {
    ((now.0 - first.0).max(0) / DAY_MS + 1).min(u32::MAX as i64) as u32
}

/// When `day` ends.
pub fn day_end(first: Timestamp, day: u32) -> Timestamp {
    Timestamp(first.0 + day as i64 * DAY_MS)
}

/// A source address.
#[derive(Debug)]
pub struct Source {
    /// `None`: the system picks the address (no pool configured).
    pub ip: Option<IpAddr>,
    pub ehlo: String,
    pub weight: u32,
    pub warmup: Option<Warmup>,
    pub pool: String,
    /// The address as text, or `default`: the label in metrics, events and the API.
    pub label: String,
}

/// A pool and its turn.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub sources: Vec<Arc<Source>>,
    /// Smooth weighted round robin: each source's current weight.
    current: Mutex<Vec<i64>>,
}

impl Pool {
    fn new(name: String, sources: Vec<Arc<Source>>) -> Pool {
        let current = Mutex::new(vec![0; sources.len()]);
        Pool { name, sources, current }
    }

    /// The next source by weight among those `eligible` says may send now; `None` when
    /// none may. Over many picks each eligible source gets its weight's share, spread
    /// evenly (nginx's smooth weighted round robin).
    pub fn pick(&self, mut eligible: impl FnMut(&Source) -> bool) -> Option<Arc<Source>> {
        let mut current = self.current.lock().expect("pool turn poisoned");
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, s) in self.sources.iter().enumerate() {
            if !eligible(s) {
                continue;
            }
            current[i] += s.weight as i64;
            total += s.weight as i64;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        current[b] -= total;
        Some(self.sources[b].clone())
    }
}

/// The pool an account names now, as the account model holds it (set through the admin
/// API); `None`: what the config says.
pub type AccountPool = Arc<dyn Fn(&AccountId) -> Option<String> + Send + Sync>;

/// Every pool, and which account uses which.
pub struct Pools {
    pools: HashMap<String, Arc<Pool>>,
    default: Arc<Pool>,
    accounts: HashMap<AccountId, Arc<Pool>>,
    live: Option<AccountPool>,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools").field("pools", &self.pools.keys()).field("accounts", &self.accounts.len()).finish()
    }
}

impl Pools {
    /// Compiles `specs`; `accounts` are (account, the pool it names). Without pools, one
    /// implicit pool `default` with the system's address and `helo` as EHLO name.
    pub fn new(specs: &[PoolSpec], helo: &str, accounts: &[(AccountId, Option<String>)]) -> Result<Pools, String> {
        let mut pools = HashMap::new();
        let mut seen_ips = HashMap::new();
        let mut default = None;
        for p in specs {
            if p.sources.is_empty() {
                return Err(format!("pool {}: no sources", p.name));
            }
            let mut sources = vec![];
            for s in &p.sources {
                if let Some(other) = seen_ips.insert(s.ip, p.name.clone()) {
                    return Err(format!("source {} is in two pools ({other} and {})", s.ip, p.name));
                }
                if s.ehlo.trim().is_empty() || s.ehlo.contains(char::is_whitespace) {
                    return Err(format!("pool {}: source {} needs an EHLO name", p.name, s.ip));
                }
                if s.weight == 0 {
                    return Err(format!("pool {}: source {}: weight must be at least 1", p.name, s.ip));
                }
                let warmup = s
                    .warmup
                    .as_ref()
                    .map(Warmup::compile)
                    .transpose()
                    .map_err(|e| format!("pool {}: source {}: {e}", p.name, s.ip))?;
                sources.push(Arc::new(Source {
                    ip: Some(s.ip),
                    ehlo: s.ehlo.clone(),
                    weight: s.weight,
                    warmup,
                    pool: p.name.clone(),
                    label: s.ip.to_string(),
                }));
            }
            let pool = Arc::new(Pool::new(p.name.clone(), sources));
            if (p.default || p.name == "default") && default.replace(pool.clone()).is_some() {
                return Err("more than one default pool".into());
            }
            if pools.insert(p.name.clone(), pool).is_some() {
                return Err(format!("two pools named {}", p.name));
            }
        }
        let default = match default {
            Some(d) => d,
            None if specs.is_empty() => Arc::new(Pool::new(
                "default".into(),
                vec![Arc::new(Source {
                    ip: None,
                    ehlo: helo.to_owned(),
                    weight: 1,
                    warmup: None,
                    pool: "default".into(),
                    label: "default".into(),
                })],
            )),
            None => {
                if let Some((a, _)) = accounts.iter().find(|(_, p)| p.is_none()) {
                    return Err(format!(
                        "account {} names no pool and there is no default pool (mark one `default = true`)",
                        a.0
                    ));
                }
                pools.values().next().cloned().expect("specs is not empty")
            }
        };
        let mut by_account = HashMap::new();
        for (account, name) in accounts {
            if let Some(name) = name {
                let pool = pools
                    .get(name)
                    .ok_or_else(|| format!("account {} names pool {name}, which does not exist", account.0))?;
                by_account.insert(account.clone(), pool.clone());
            }
        }
        Ok(Pools { pools, default, accounts: by_account, live: None })
    }

    /// Looks an account's pool up in the account model first (`live`), then in the config.
    pub fn with_account_pools(mut self, live: AccountPool) -> Self {
        self.live = Some(live);
        self
    }

    /// The pool `account` sends from. The one place that knows where an account's pool is
    /// configured: the account model (admin API), else `[[accounts]] pool`, else the
    /// default pool. A name no pool has (a pool removed from the config) means the default.
    pub fn for_account(&self, account: &AccountId) -> &Arc<Pool> {
        if let Some(pool) = self.live.as_ref().and_then(|f| f(account)).and_then(|name| self.pools.get(&name)) {
            return pool;
        }
        self.accounts.get(account).unwrap_or(&self.default)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.get(name)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools
            .values()
            .chain((!self.pools.values().any(|p| Arc::ptr_eq(p, &self.default))).then_some(&self.default))
    }

    /// Every configured source address (what `_spf.<zone>` and diagnostics list).
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self.pools.values().flat_map(|p| p.sources.iter().filter_map(|s| s.ip)).collect();
        ips.sort();
        ips.dedup();
        ips
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Vec<PoolSpec> {
        #[derive(Deserialize)]
        struct F {
            pools: Vec<PoolSpec>,
        }
        toml::from_str::<F>(text).unwrap().pools
    }

    #[test]
    fn weighted_turns_are_smooth_and_skip_the_ineligible() {
        let pools = Pools::new(
            &spec(
                r#"
                [[pools]]
                name = "shared"
                default = true
                sources = [{ ip = "127.0.0.2", ehlo = "a.test", weight = 3 }, { ip = "127.0.0.3", ehlo = "b.test" }]
                "#,
            ),
            "helo.test",
            &[],
        )
        .unwrap();
        let pool = pools.for_account(&AccountId("anyone".into()));
        let picks: String =
            (0..8).map(|_| if pool.pick(|_| true).unwrap().label == "127.0.0.2" { 'a' } else { 'b' }).collect();
        assert_eq!(picks, "aabaaaba");
        let only_b: Vec<String> =
            (0..3).map(|_| pool.pick(|s| s.label == "127.0.0.3").unwrap().label.clone()).collect();
        assert_eq!(only_b, vec!["127.0.0.3"; 3]);
        assert!(pool.pick(|_| false).is_none());
        assert_eq!(pools.addresses().len(), 2);
    }

    #[test]
    fn accounts_pools_and_the_default() {
        let specs = spec(
            r#"
            [[pools]]
            name = "acme"
            sources = [{ ip = "127.0.0.2", ehlo = "acme.test" }]
            [[pools]]
            name = "default"
            sources = [{ ip = "127.0.0.3", ehlo = "shared.test" }]
            "#,
        );
        let acme = AccountId("acme".into());
        let pools = Pools::new(&specs, "h", &[(acme.clone(), Some("acme".into()))]).unwrap();
        assert_eq!(pools.for_account(&acme).name, "acme");
        assert_eq!(pools.for_account(&AccountId("other".into())).name, "default");
        let err = Pools::new(&specs, "h", &[(acme.clone(), Some("nope".into()))]).unwrap_err();
        assert!(err.contains("nope"), "{err}");
        let none = Pools::new(&[], "mta.test", &[]).unwrap();
        let s = none.for_account(&acme).pick(|_| true).unwrap();
        assert_eq!((s.ip, s.ehlo.as_str(), s.label.as_str()), (None, "mta.test", "default"));
        assert!(none.addresses().is_empty());
        let no_default = spec("[[pools]]\nname = \"x\"\nsources = [{ ip = \"127.0.0.2\", ehlo = \"x.test\" }]\n");
        assert!(Pools::new(&no_default, "h", &[(acme, None)]).unwrap_err().contains("no default pool"));
        let twice = spec("[[pools]]\nname = \"x\"\nsources = [{ ip = \"127.0.0.2\", ehlo = \"x.test\" }]\n[[pools]]\nname = \"y\"\nsources = [{ ip = \"127.0.0.2\", ehlo = \"y.test\" }]\n");
        assert!(Pools::new(&twice, "h", &[]).unwrap_err().contains("two pools"));
    }

    #[test]
    fn the_account_model_names_the_pool_before_the_config() {
        let specs = spec(
            "[[pools]]\nname = \"acme\"\nsources = [{ ip = \"127.0.0.2\", ehlo = \"a.test\" }]\n[[pools]]\nname = \"default\"\nsources = [{ ip = \"127.0.0.3\", ehlo = \"d.test\" }]\n",
        );
        let (acme, other, gone) = (AccountId("acme".into()), AccountId("other".into()), AccountId("gone".into()));
        let pools = Pools::new(&specs, "h", &[(acme.clone(), Some("acme".into()))]).unwrap().with_account_pools(
            Arc::new(|a: &AccountId| match a.0.as_str() {
                "other" => Some("acme".into()),
                "gone" => Some("removed-pool".into()),
                _ => None,
            }),
        );
        assert_eq!(pools.for_account(&other).name, "acme", "set through the admin API");
        assert_eq!(pools.for_account(&acme).name, "acme", "the config's, when the model names none");
        assert_eq!(pools.for_account(&gone).name, "default", "a pool no longer configured");
    }

    #[test]
    fn warmup_schedules_and_days() {
        let list = Warmup::compile(&WarmupSpec::List(vec![50, 100])).unwrap();
        assert_eq!((list.cap(1), list.cap(2), list.cap(3)), (Some(50), Some(100), None));
        let growth = Warmup::compile(&WarmupSpec::Growth(Growth { start: 50, factor: 2.0, until: 1000 })).unwrap();
        assert_eq!(growth.0, vec![50, 100, 200, 400, 800]);
        assert!(Warmup::compile(&WarmupSpec::List(vec![])).is_err());
        assert!(Warmup::compile(&WarmupSpec::Growth(Growth { start: 50, factor: 1.0, until: 100 })).is_err());
        let first = Timestamp(1_000_000);
        assert_eq!(day_of(first, first), 1);
        assert_eq!(day_of(first, Timestamp(first.0 + DAY_MS - 1)), 1);
        assert_eq!(day_of(first, Timestamp(first.0 + DAY_MS)), 2);
        assert_eq!(day_end(first, 1), Timestamp(first.0 + DAY_MS));
        let parsed = spec("[[pools]]\nname = \"w\"\nsources = [{ ip = \"127.0.0.2\", ehlo = \"w.test\", warmup = { start = 50, factor = 2.0, until = 400 } }, { ip = \"127.0.0.3\", ehlo = \"v.test\", warmup = [10, 20] }]\n");
        assert_eq!(parsed[0].sources[1].warmup, Some(WarmupSpec::List(vec![10, 20])));
        let pools = Pools::new(&parsed, "h", &[]).unwrap();
        assert_eq!(pools.get("w").unwrap().sources[0].warmup.as_ref().unwrap().days(), 3);
    }
}

//! The accounts as this node sees them: the projection's rows merged with the
//! `[[accounts]]` entries of the config (bootstrap), indexed for the hot paths (an API key's
//! digest, an SMTP user name, a relay network). Ingestion and the delivery workers read the
//! [`Snapshot`] and never the store.
//!
//! Merge rules (see `docs/adr/0014-accounts-as-events.md`):
//! - an account with a row in the projection takes its settings and status from the row;
//!   a deleted row hides the account even if the config still lists it;
//! - an account only in the config is active, with the config's settings;
//! - credentials are the union of the row's live ones and the config's, except a config key
//!   or user that the row has a record of (revoked, removed, or replaced through the API).
//!
//! [`AccountCache`] keeps the current snapshot: it polls the store's per-partition
//! positions on a short interval and rebuilds only when one moved, so every node sees a
//! change within about one interval of the projector writing it.

use super::keys::{self, Scopes};
use super::state::{AccountState, Status};
use crate::store::accounts::AccountStore;
use herald_schemas::{AccountId, AccountOrigin, AccountSettings, Timestamp};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// An `[[accounts]]` entry of the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    pub id: AccountId,
    pub settings: AccountSettings,
    /// Keys in clear, as written in the config; they have every scope.
    pub api_keys: Vec<String>,
    /// `(username, argon2 PHC hash)`.
    pub smtp_users: Vec<(String, String)>,
    /// Seconds per bounce-report interval; `None`: the default.
    pub report_interval_secs: Option<u32>,
}

/// Where the account's current definition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Only the config's `[[accounts]]` (never changed through the API).
    Config,
    /// The projection (created through the API, or a config account changed through it).
    Api,
}

/// One account, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub settings: AccountSettings,
    pub status: Status,
    pub suspended_reason: Option<String>,
    pub source: Source,
    /// Where it was first defined (config accounts changed through the API say `config`).
    pub origin: AccountOrigin,
    pub created_at: Option<Timestamp>,
    /// `settings.relay_networks`, parsed (unparsable entries are left out and logged).
    pub relay_networks: Vec<ipnet::IpNet>,
    /// Seconds per bounce-report interval; `None`: the default.
    pub report_interval_secs: Option<u32>,
}

/// What a valid API key stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub account: AccountId,
    pub key_id: String,
    pub scopes: Scopes,
}

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefused {
    Unknown,
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyEntry {
    principal: Principal,
    expires_at: Option<Timestamp>,
}

/// What a delivery worker does with a queued message of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Deliver,
    /// Suspended: keep the message, without an attempt, and look again later.
    Hold,
    /// Deleted: fail the message without sending it.
    Drop,
}

/// The accounts at one moment, indexed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub accounts: HashMap<AccountId, Arc<Account>>,
    deleted: HashSet<AccountId>,
    keys: HashMap<[u8; 32], KeyEntry>,
    smtp_users: HashMap<String, (AccountId, String)>,
    relays: Vec<(ipnet::IpNet, AccountId)>,
}

fn networks(id: &AccountId, list: &[String]) -> Vec<ipnet::IpNet> {
    list.iter()
        .filter_map(|s| match parse_network(s) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(account = %id, error = %e, "relay network ignored");
                None
            }
        })
        .collect()
}

/// A relay network as an `IpNet` (a bare address is a /32 or /128).
pub fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("relay_networks: `{s}` is not a network (10.1.2.0/24) or an address"))
}

fn from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

impl Snapshot {
    /// Merges the config's accounts with the projection's rows (see the module doc).
    pub fn build(bootstrap: &[Bootstrap], rows: Vec<AccountState>) -> Snapshot {
        let mut snap = Snapshot::default();
        let rows: HashMap<AccountId, AccountState> = rows.into_iter().map(|r| (r.id.clone(), r)).collect();
        for row in rows.values() {
            if row.deleted {
                snap.deleted.insert(row.id.clone());
                continue;
            }
            snap.add_account(Account {
                id: row.id.clone(),
                settings: row.settings.clone(),
                status: row.status,
                suspended_reason: row.suspended_reason.clone(),
                source: Source::Api,
                origin: row.origin,
                created_at: Some(row.created_at),
                relay_networks: networks(&row.id, &row.settings.relay_networks),
                report_interval_secs: row.report_interval_secs,
            });
            for k in row.live_keys() {
                let Some(digest) = from_hex(&k.sha256) else { continue };
                let principal =
                    Principal { account: row.id.clone(), key_id: k.key_id.clone(), scopes: Scopes::lenient(&k.scopes) };
                snap.keys.insert(digest, KeyEntry { principal, expires_at: k.expires_at });
            }
            for u in row.live_users() {
                snap.add_user(&row.id, &u.username, &u.password_hash);
            }
        }
        for b in bootstrap {
            let row = rows.get(&b.id);
            if row.is_some_and(|r| r.deleted) {
                continue;
            }
            if row.is_none() {
                snap.add_account(Account {
                    id: b.id.clone(),
                    settings: b.settings.clone(),
                    status: Status::Active,
                    suspended_reason: None,
                    source: Source::Config,
                    origin: AccountOrigin::Config,
                    created_at: None,
                    relay_networks: networks(&b.id, &b.settings.relay_networks),
                    report_interval_secs: b.report_interval_secs,
                });
            }
            for key in &b.api_keys {
                let key_id = keys::config_key_id(key);
                if row.is_some_and(|r| r.keys.iter().any(|k| k.key_id == key_id)) {
                    continue;
                }
                let principal = Principal { account: b.id.clone(), key_id, scopes: Scopes::all() };
                snap.keys.entry(keys::digest(key)).or_insert(KeyEntry { principal, expires_at: None });
            }
            for (user, hash) in &b.smtp_users {
                if row.is_some_and(|r| r.smtp_users.iter().any(|u| &u.username == user)) {
                    continue;
                }
                snap.add_user(&b.id, user, hash);
            }
        }
        snap
    }

    fn add_account(&mut self, a: Account) {
        for n in &a.relay_networks {
            self.relays.push((*n, a.id.clone()));
        }
        self.accounts.insert(a.id.clone(), Arc::new(a));
    }

    fn add_user(&mut self, account: &AccountId, user: &str, hash: &str) {
        match self.smtp_users.get(user) {
            Some((other, _)) if other != account => {
                tracing::warn!(user, account = %account, other = %other, "SMTP user name used by two accounts; the first one keeps it");
            }
            _ => {
                self.smtp_users.insert(user.to_owned(), (account.clone(), hash.to_owned()));
            }
        }
    }

    /// The principal of an API key, or why it is refused.
    pub fn authenticate(&self, key: &str, now: Timestamp) -> Result<&Principal, KeyRefused> {
        let entry = self.keys.get(&keys::digest(key)).ok_or(KeyRefused::Unknown)?;
        if !self.accounts.contains_key(&entry.principal.account) {
            return Err(KeyRefused::Unknown);
        }
        if entry.expires_at.is_some_and(|t| t <= now) {
            return Err(KeyRefused::Expired);
        }
        Ok(&entry.principal)
    }

    pub fn account(&self, id: &AccountId) -> Option<&Arc<Account>> {
        self.accounts.get(id)
    }

    /// The account and argon2 hash of an SMTP user.
    pub fn smtp_user(&self, username: &str) -> Option<(&AccountId, &str)> {
        self.smtp_users.get(username).map(|(a, h)| (a, h.as_str()))
    }

    /// The account whose relay networks contain `ip` (smart-host mode); the most specific
    /// network wins.
    pub fn relay_account(&self, ip: IpAddr) -> Option<&AccountId> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.relays.iter().filter(|(n, _)| n.contains(&ip)).max_by_key(|(n, _)| n.prefix_len()).map(|(_, a)| a)
    }

    /// What a delivery worker does with `account`'s queued mail. An account nobody knows
    /// (mail accepted before accounts were managed, or by an older config) is delivered.
    pub fn gate(&self, account: &AccountId) -> Gate {
        if self.deleted.contains(account) && !self.accounts.contains_key(account) {
            return Gate::Drop;
        }
        match self.accounts.get(account) {
            Some(a) if a.status == Status::Suspended => Gate::Hold,
            _ => Gate::Deliver,
        }
    }
}

/// The store's per-partition positions (`(partition, offset)`) a snapshot was built from.
type Positions = Vec<(u32, u64)>;

/// The node's current [`Snapshot`], shared by everything that needs accounts.
#[derive(Clone)]
pub struct AccountCache {
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
    bootstrap: Arc<Vec<Bootstrap>>,
    positions: Arc<std::sync::Mutex<Option<Positions>>>,
    /// Poked by the local projector and by commands, to refresh at once.
    pub changed: Arc<Notify>,
}

impl AccountCache {
    /// A cache that knows the config's accounts until the first refresh.
    pub fn new(bootstrap: Vec<Bootstrap>) -> Self {
        let first = Snapshot::build(&bootstrap, vec![]);
        AccountCache {
            tx: Arc::new(watch::channel(Arc::new(first)).0),
            bootstrap: Arc::new(bootstrap),
            positions: Default::default(),
            changed: Arc::new(Notify::new()),
        }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    pub fn bootstrap(&self) -> &[Bootstrap] {
        &self.bootstrap
    }

    /// Re-reads the accounts if the store's positions moved (or `force`).
    pub async fn refresh(&self, store: &dyn AccountStore, force: bool) -> Result<(), crate::store::StoreError> {
        let mut positions = store.account_positions().await?;
        positions.sort_unstable();
        if !force && self.positions.lock().expect("positions lock").as_ref() == Some(&positions) {
            return Ok(());
        }
        let rows = store.accounts().await?;
        let next = Snapshot::build(&self.bootstrap, rows);
        metrics::gauge!("herald_accounts_known").set(next.accounts.len() as f64);
        metrics::counter!("herald_accounts_cache_rebuilds_total").increment(1);
        self.tx.send_if_modified(|current| {
            if **current == next {
                false
            } else {
                *current = Arc::new(next);
                true
            }
        });
        *self.positions.lock().expect("positions lock") = Some(positions);
        Ok(())
    }

    /// Refreshes on every local change and every `interval`, until `shutdown`.
    pub async fn run(self, store: Arc<dyn AccountStore>, interval: Duration, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.refresh(store.as_ref(), false).await {
                tracing::warn!(error = %e, "reading accounts failed; keeping the last snapshot");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::state::{ApiKeyState, SmtpUserState};

    fn boot(id: &str, key: &str) -> Bootstrap {
        Bootstrap {
            id: AccountId(id.into()),
            settings: AccountSettings { name: id.into(), ..Default::default() },
            api_keys: vec![key.into()],
            smtp_users: vec![(format!("{id}-user"), "$argon2id$config".into())],
            report_interval_secs: None,
        }
    }

    fn row(id: &str) -> AccountState {
        AccountState {
            id: AccountId(id.into()),
            settings: AccountSettings { name: format!("{id} (api)"), ..Default::default() },
            status: Status::Active,
            suspended_reason: None,
            suspended_at: None,
            origin: AccountOrigin::Api,
            request_id: "r".into(),
            created_at: Timestamp(1),
            updated_at: Timestamp(1),
            keys: vec![],
            smtp_users: vec![],
            deleted: false,
            report_interval_secs: None,
            position: 1,
        }
    }

    fn key_state(key_id: &str, key: &str, revoked: bool) -> ApiKeyState {
        ApiKeyState {
            key_id: key_id.into(),
            name: "k".into(),
            prefix: keys::prefix(key),
            sha256: crate::accounts::state::hex(&keys::digest(key)),
            scopes: vec!["read".into()],
            expires_at: Some(Timestamp(100)),
            created_at: Timestamp(1),
            revoked_at: revoked.then_some(Timestamp(2)),
        }
    }

    #[test]
    fn config_accounts_until_the_api_changes_them() {
        let now = Timestamp(50);
        let snap = Snapshot::build(&[boot("acme", "cfg-acme")], vec![]);
        let p = snap.authenticate("cfg-acme", now).unwrap();
        assert_eq!((p.account.0.as_str(), p.scopes), ("acme", Scopes::all()));
        assert_eq!(snap.account(&AccountId("acme".into())).unwrap().source, Source::Config);
        assert_eq!(snap.authenticate("nope", now), Err(KeyRefused::Unknown));

        // The API suspended it and revoked its config key; it issued another key.
        let mut r = row("acme");
        r.origin = AccountOrigin::Config;
        r.status = Status::Suspended;
        r.keys = vec![
            ApiKeyState { sha256: String::new(), ..key_state(&keys::config_key_id("cfg-acme"), "x", true) },
            key_state("key_1", "hrld_new", false),
        ];
        r.smtp_users = vec![SmtpUserState {
            username: "api-user".into(),
            password_hash: "$a".into(),
            added_at: now,
            removed_at: None,
        }];
        let snap = Snapshot::build(&[boot("acme", "cfg-acme")], vec![r.clone()]);
        let a = snap.account(&AccountId("acme".into())).unwrap();
        assert_eq!((a.source, a.status, a.settings.name.as_str()), (Source::Api, Status::Suspended, "acme (api)"));
        assert_eq!(snap.authenticate("cfg-acme", now), Err(KeyRefused::Unknown), "revoked config key");
        let p = snap.authenticate("hrld_new", now).unwrap();
        assert_eq!(p.scopes.names(), vec!["read"]);
        assert_eq!(snap.authenticate("hrld_new", Timestamp(100)), Err(KeyRefused::Expired));
        assert!(snap.smtp_user("acme-user").is_some(), "config users stay unless the API removed them");
        assert!(snap.smtp_user("api-user").is_some());
        assert_eq!(snap.gate(&AccountId("acme".into())), Gate::Hold);

        // Deleted through the API: gone, even though the config lists it.
        r.deleted = true;
        let snap = Snapshot::build(&[boot("acme", "cfg-acme")], vec![r]);
        assert!(snap.account(&AccountId("acme".into())).is_none());
        assert_eq!(snap.authenticate("hrld_new", now), Err(KeyRefused::Unknown));
        assert!(snap.smtp_user("acme-user").is_none());
        assert_eq!(snap.gate(&AccountId("acme".into())), Gate::Drop);
        assert_eq!(snap.gate(&AccountId("stranger".into())), Gate::Deliver);
    }

    #[test]
    fn relay_networks_most_specific_wins() {
        let mut wide = boot("wide", "k1");
        wide.settings.relay_networks = vec!["10.0.0.0/8".into(), "not a network".into()];
        let mut narrow = boot("narrow", "k2");
        narrow.settings.relay_networks = vec!["10.1.2.3".into()];
        let snap = Snapshot::build(&[wide, narrow], vec![]);
        assert_eq!(snap.relay_account("10.1.2.3".parse().unwrap()).unwrap().0, "narrow");
        assert_eq!(snap.relay_account("::ffff:10.9.9.9".parse().unwrap()).unwrap().0, "wide");
        assert!(snap.relay_account("192.0.2.1".parse().unwrap()).is_none());
    }
}

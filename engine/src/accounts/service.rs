//! Account commands (create, update, suspend, resume, delete; issue and revoke API keys;
//! add and remove SMTP users) and queries, for the admin API and the CLI over it. A command
//! checks the projection, appends its event to `<prefix>.accounts` (keyed by the account
//! id), then waits until the projection shows it, so the caller reads its own write; every
//! node's cache sees it within one refresh interval.
//!
//! An account defined only in the config has no row: the first command that changes it
//! records it first (`AccountCreated` with origin `config` and the config's settings).

use super::directory::{parse_network, AccountCache, Bootstrap, Source};
use super::keys::{self, NewKey, Scopes};
use super::state::{AccountState, Status};
use crate::log::{EventLog, Record};
use crate::routing::Router;
use crate::store::accounts::AccountStore;
use herald_schemas::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Errors of account commands; each says which reply it becomes.
#[derive(Debug, Error)]
pub enum AccountError {
    /// 404 `account_not_found`.
    #[error("no account `{0}`")]
    NotFound(String),
    /// 409 `account_exists`.
    #[error("account `{0}` exists already")]
    Exists(String),
    /// 404 `key_not_found`.
    #[error("account `{account}` has no API key `{key_id}`")]
    KeyNotFound { account: String, key_id: String },
    /// 404 `smtp_user_not_found`.
    #[error("account `{account}` has no SMTP user `{username}`")]
    UserNotFound { account: String, username: String },
    /// 409 `smtp_user_taken`.
    #[error("the SMTP user name `{0}` belongs to another account")]
    UserTaken(String),
    /// 422 `invalid_request`.
    #[error("{0}")]
    Invalid(String),
    /// 503 `log_unavailable`: nothing was appended.
    #[error("event log: {0}")]
    Log(#[from] crate::log::LogError),
    /// 503 `store_unavailable`.
    #[error("projection store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// 503 `projection_lag`: the event is in the log; its effect will show shortly.
    #[error("the change to account `{0}` is recorded but not yet visible; read it again shortly")]
    Lag(String),
}

/// A change of an account's settings; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct AccountPatch {
    pub name: Option<String>,
    pub pool: Option<Option<String>>,
    pub defaults: Option<AccountDefaults>,
    pub messages_per_day: Option<Option<u64>>,
    pub messages_per_second: Option<Option<u32>>,
    pub from_domains: Option<FromDomainsPolicy>,
    pub report_email: Option<Option<String>>,
    pub relay_networks: Option<Vec<String>>,
    /// Seconds per bounce-report interval (`Some(None)`: back to the default). Recorded by
    /// its own event (`ReportIntervalSet`), not in the settings.
    pub report_interval_secs: Option<Option<u32>>,
}

impl AccountPatch {
    pub fn apply(self, mut s: AccountSettings) -> AccountSettings {
        if let Some(v) = self.name {
            s.name = v;
        }
        if let Some(v) = self.pool {
            s.pool = v;
        }
        if let Some(v) = self.defaults {
            s.defaults = v;
        }
        if let Some(v) = self.messages_per_day {
            s.limits.messages_per_day = v;
        }
        if let Some(v) = self.messages_per_second {
            s.limits.messages_per_second = v;
        }
        if let Some(v) = self.from_domains {
            s.from_domains = v;
        }
        if let Some(v) = self.report_email {
            s.report_email = v;
        }
        if let Some(v) = self.relay_networks {
            s.relay_networks = v;
        }
        s
    }
}

/// An API key as listed (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub key_id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<Timestamp>,
    pub created_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub source: Source,
}

/// An SMTP user as listed (never the hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub added_at: Option<Timestamp>,
    pub source: Source,
}

/// An account as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    pub id: AccountId,
    pub settings: AccountSettings,
    pub status: Status,
    pub suspended_reason: Option<String>,
    pub suspended_at: Option<Timestamp>,
    pub source: Source,
    pub origin: AccountOrigin,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
    /// Revoked keys included (with `revoked_at`).
    pub keys: Vec<KeyInfo>,
    /// Live users only.
    pub smtp_users: Vec<UserInfo>,
    /// Seconds per bounce-report interval; `None`: the default.
    pub report_interval_secs: Option<u32>,
}

/// A key just issued: the only time the key is ever shown.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub key: String,
    pub info: KeyInfo,
}

/// What `create_key` needs.
#[derive(Debug, Clone, Default)]
pub struct NewKeyRequest {
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<Timestamp>,
}

pub struct Accounts {
    log: Arc<dyn EventLog>,
    topic: String,
    router: Router,
    store: Arc<dyn AccountStore>,
    cache: AccountCache,
    /// How long a command waits for the projection to show its event.
    wait: Duration,
    /// The report intervals an operator may set, in seconds (inclusive).
    report_intervals: (u32, u32),
}

/// Report intervals an operator may set unless told otherwise: 5 minutes to 7 days.
pub const REPORT_INTERVALS: (u32, u32) = (300, 7 * 86_400);

/// Account ids: 1-64 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn check_id(id: &str) -> Result<(), AccountError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(AccountError::Invalid(format!(
            "account id `{id:.80}` must be 1-64 lower-case letters, digits, `.`, `_` or `-`, starting with a letter or digit"
        )))
    }
}

/// Checks settings an operator gives.
pub fn check_settings(s: &AccountSettings) -> Result<(), AccountError> {
    let invalid = |m: String| Err(AccountError::Invalid(m));
    if s.name.chars().count() > 200 || s.name.chars().any(char::is_control) {
        return invalid("`name` must be at most 200 characters, without control characters".into());
    }
    if let Some(pool) = &s.pool {
        let ok = !pool.is_empty()
            && pool.len() <= 64
            && pool.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return invalid(format!("`pool` `{pool:.80}` must be 1-64 letters, digits, `.`, `_` or `-`"));
        }
    }
    if let Some(email) = &s.report_email {
        let ok = email.len() <= 254
            && email.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
            && !email.chars().any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c));
        if !ok {
            return invalid(format!("`report_email` `{email:.80}` is not an email address"));
        }
    }
    if s.limits.messages_per_day == Some(0) || s.limits.messages_per_second == Some(0) {
        return invalid("limits must be at least 1 (leave them out, or null, for no limit)".into());
    }
    if s.relay_networks.len() > 256 {
        return invalid("at most 256 `relay_networks`".into());
    }
    for n in &s.relay_networks {
        parse_network(n).map_err(AccountError::Invalid)?;
    }
    Ok(())
}

fn check_username(u: &str) -> Result<(), AccountError> {
    if u.is_empty() || u.len() > 254 || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AccountError::Invalid(
            "`username` must be 1-254 characters without spaces or control characters".into(),
        ));
    }
    Ok(())
}

fn user_source(row: Option<&AccountState>, name: &str) -> Option<Source> {
    row.and_then(|r| r.smtp_users.iter().find(|u| u.username == name)).map(|_| Source::Api)
}

impl Accounts {
    pub fn new(
        log: Arc<dyn EventLog>,
        topic: String,
        router: Router,
        store: Arc<dyn AccountStore>,
        cache: AccountCache,
        wait: Duration,
    ) -> Self {
        Accounts { log, topic, router, store, cache, wait, report_intervals: REPORT_INTERVALS }
    }

    /// Accepts report intervals of `min..=max` seconds (`[reports] min_interval_secs`).
    pub fn with_report_intervals(mut self, min: u32, max: u32) -> Self {
        self.report_intervals = (min, max.max(min));
        self
    }

    fn check_report_interval(&self, secs: Option<u32>) -> Result<(), AccountError> {
        let (min, max) = self.report_intervals;
        match secs {
            Some(s) if s < min || s > max => Err(AccountError::Invalid(format!(
                "`report_interval_secs` must be between {min} and {max} seconds (null: the default)"
            ))),
            _ => Ok(()),
        }
    }

    pub fn cache(&self) -> &AccountCache {
        &self.cache
    }

    fn bootstrap(&self, id: &AccountId) -> Option<&Bootstrap> {
        self.cache.bootstrap().iter().find(|b| &b.id == id)
    }

    async fn append(&self, events: Vec<AccountEvent>) -> Result<(), AccountError> {
        let records = events
            .into_iter()
            .map(|event| {
                let key = event.account().0.clone();
                Record {
                    topic: self.topic.clone(),
                    partition: self.router.key_partition(&key),
                    key,
                    value: encode(&Event::Account(event)),
                }
            })
            .collect();
        self.log.append(records).await?;
        Ok(())
    }

    /// Waits until the stored row of `id` satisfies `done`; pokes the local cache.
    async fn wait_for(
        &self,
        id: &AccountId,
        done: impl Fn(Option<&AccountState>) -> bool,
    ) -> Result<Option<AccountState>, AccountError> {
        let deadline = Instant::now() + self.wait;
        loop {
            let current = self.store.account(id).await?;
            if done(current.as_ref()) {
                self.cache.changed.notify_one();
                return Ok(current);
            }
            if Instant::now() >= deadline {
                return Err(AccountError::Lag(id.0.clone()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The row (if any, not deleted) and the config entry (if any) of a live account.
    async fn load(&self, id: &AccountId) -> Result<(Option<AccountState>, Option<&Bootstrap>), AccountError> {
        let row = self.store.account(id).await?;
        let boot = self.bootstrap(id);
        match &row {
            Some(r) if r.deleted => Err(AccountError::NotFound(id.0.clone())),
            None if boot.is_none() => Err(AccountError::NotFound(id.0.clone())),
            _ => Ok((row, boot)),
        }
    }

    /// The account's row, recording a config-only account first.
    async fn row(&self, actor: &str, id: &AccountId) -> Result<AccountState, AccountError> {
        let (row, boot) = self.load(id).await?;
        if let Some(r) = row {
            return Ok(r);
        }
        let boot = boot.expect("load checked it");
        let request_id = MessageId::generate().0;
        let mut events = vec![AccountEvent::Created(AccountCreated {
            account: id.clone(),
            settings: boot.settings.clone(),
            origin: AccountOrigin::Config,
            request_id,
            actor: actor.to_owned(),
            created_at: Timestamp::now(),
        })];
        // The config's report interval is not in the settings: recorded beside them, in
        // the same append (one partition, in order).
        if boot.report_interval_secs.is_some() {
            events.push(AccountEvent::ReportIntervalSet(ReportIntervalSet {
                account: id.clone(),
                interval_secs: boot.report_interval_secs,
                actor: actor.to_owned(),
                set_at: Timestamp::now(),
            }));
        }
        let with_interval = boot.report_interval_secs.is_some();
        self.append(events).await?;
        if with_interval {
            return self
                .wait_for(id, |r| r.is_some_and(|r| r.deleted || r.report_interval_secs.is_some()))
                .await?
                .filter(|r| !r.deleted)
                .ok_or_else(|| AccountError::NotFound(id.0.clone()));
        }
        self.wait_for(id, |r| r.is_some())
            .await?
            .filter(|r| !r.deleted)
            .ok_or_else(|| AccountError::NotFound(id.0.clone()))
    }

    fn info(row: Option<&AccountState>, boot: Option<&Bootstrap>) -> AccountInfo {
        let mut keys: Vec<KeyInfo> = vec![];
        let mut users: Vec<UserInfo> = vec![];
        if let Some(b) = boot {
            for k in &b.api_keys {
                let key_id = keys::config_key_id(k);
                if row.is_some_and(|r| r.keys.iter().any(|x| x.key_id == key_id)) {
                    continue;
                }
                keys.push(KeyInfo {
                    key_id,
                    name: "from the config".into(),
                    prefix: keys::prefix(k),
                    scopes: Scopes::all().names(),
                    expires_at: None,
                    created_at: None,
                    revoked_at: None,
                    source: Source::Config,
                });
            }
            for (u, _) in &b.smtp_users {
                if user_source(row, u).is_none() {
                    users.push(UserInfo { username: u.clone(), added_at: None, source: Source::Config });
                }
            }
        }
        if let Some(r) = row {
            keys.extend(r.keys.iter().map(|k| KeyInfo {
                key_id: k.key_id.clone(),
                name: k.name.clone(),
                prefix: k.prefix.clone(),
                scopes: k.scopes.clone(),
                expires_at: k.expires_at,
                created_at: (!k.sha256.is_empty()).then_some(k.created_at),
                revoked_at: k.revoked_at,
                source: if k.sha256.is_empty() { Source::Config } else { Source::Api },
            }));
            users.extend(r.live_users().map(|u| UserInfo {
                username: u.username.clone(),
                added_at: Some(u.added_at),
                source: Source::Api,
            }));
        }
        users.sort_by(|a, b| a.username.cmp(&b.username));
        match row {
            Some(r) => AccountInfo {
                id: r.id.clone(),
                settings: r.settings.clone(),
                status: r.status,
                suspended_reason: r.suspended_reason.clone(),
                suspended_at: r.suspended_at,
                source: Source::Api,
                origin: r.origin,
                created_at: Some(r.created_at),
                updated_at: Some(r.updated_at),
                keys,
                smtp_users: users,
                report_interval_secs: r.report_interval_secs,
            },
            None => {
                let b = boot.expect("a config account");
                AccountInfo {
                    id: b.id.clone(),
                    settings: b.settings.clone(),
                    status: Status::Active,
                    suspended_reason: None,
                    suspended_at: None,
                    source: Source::Config,
                    origin: AccountOrigin::Config,
                    created_at: None,
                    updated_at: None,
                    keys,
                    smtp_users: users,
                    report_interval_secs: b.report_interval_secs,
                }
            }
        }
    }

    pub async fn get(&self, id: &AccountId) -> Result<AccountInfo, AccountError> {
        let (row, boot) = self.load(id).await?;
        Ok(Self::info(row.as_ref(), boot))
    }

    /// Every live account, sorted by id.
    pub async fn list(&self) -> Result<Vec<AccountInfo>, AccountError> {
        let rows = self.store.accounts().await?;
        let mut out: Vec<AccountInfo> =
            rows.iter().filter(|r| !r.deleted).map(|r| Self::info(Some(r), self.bootstrap(&r.id))).collect();
        for b in self.cache.bootstrap() {
            if !rows.iter().any(|r| r.id == b.id) {
                out.push(Self::info(None, Some(b)));
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Creates an account; `id` `None` picks one (`acct_…`); `report_interval_secs`
    /// `None`: the default.
    pub async fn create(
        &self,
        actor: &str,
        id: Option<String>,
        settings: AccountSettings,
        report_interval_secs: Option<u32>,
    ) -> Result<AccountInfo, AccountError> {
        let id = id.unwrap_or_else(|| format!("acct_{}", &MessageId::generate().0[20..]));
        check_id(&id)?;
        check_settings(&settings)?;
        self.check_report_interval(report_interval_secs)?;
        let id = AccountId(id);
        let existing = self.store.account(&id).await?;
        if existing.as_ref().is_some_and(|r| !r.deleted) || (existing.is_none() && self.bootstrap(&id).is_some()) {
            return Err(AccountError::Exists(id.0));
        }
        let request_id = MessageId::generate().0;
        let mut events = vec![AccountEvent::Created(AccountCreated {
            account: id.clone(),
            settings,
            origin: AccountOrigin::Api,
            request_id: request_id.clone(),
            actor: actor.to_owned(),
            created_at: Timestamp::now(),
        })];
        if report_interval_secs.is_some() {
            events.push(AccountEvent::ReportIntervalSet(ReportIntervalSet {
                account: id.clone(),
                interval_secs: report_interval_secs,
                actor: actor.to_owned(),
                set_at: Timestamp::now(),
            }));
        }
        self.append(events).await?;
        let mine = |r: &AccountState| {
            !r.deleted && r.request_id == request_id && r.report_interval_secs == report_interval_secs
        };
        let row = self.wait_for(&id, |r| r.is_some_and(mine) || raced(r, &request_id)).await?;
        match row {
            Some(r) if r.request_id == request_id => {
                tracing::info!(account = %id, actor, "account created");
                Ok(Self::info(Some(&r), None))
            }
            _ => Err(AccountError::Exists(id.0)),
        }
    }

    /// Appends `event` built from the current row and waits for it.
    async fn change(
        &self,
        actor: &str,
        id: &AccountId,
        event: impl FnOnce(&AccountState) -> Result<Option<AccountEvent>, AccountError>,
    ) -> Result<AccountState, AccountError> {
        let row = self.row(actor, id).await?;
        let Some(event) = event(&row)? else { return Ok(row) };
        self.append(vec![event]).await?;
        let position = row.position;
        self.wait_for(id, |r| r.is_some_and(|r| r.position > position))
            .await?
            .ok_or_else(|| AccountError::Lag(id.0.clone()))
    }

    pub async fn update(
        &self,
        actor: &str,
        id: &AccountId,
        mut patch: AccountPatch,
    ) -> Result<AccountInfo, AccountError> {
        let interval = patch.report_interval_secs.take();
        if let Some(secs) = interval {
            self.check_report_interval(secs)?;
        }
        let mut row = self
            .change(actor, id, |row| {
                let settings = patch.apply(row.settings.clone());
                check_settings(&settings)?;
                if settings == row.settings {
                    return Ok(None);
                }
                Ok(Some(AccountEvent::Updated(AccountUpdated {
                    account: id.clone(),
                    settings,
                    actor: actor.to_owned(),
                    updated_at: Timestamp::now(),
                })))
            })
            .await?;
        if let Some(secs) = interval.filter(|s| *s != row.report_interval_secs) {
            row = self
                .change(actor, id, |_| {
                    Ok(Some(AccountEvent::ReportIntervalSet(ReportIntervalSet {
                        account: id.clone(),
                        interval_secs: secs,
                        actor: actor.to_owned(),
                        set_at: Timestamp::now(),
                    })))
                })
                .await?;
        }
        Ok(Self::info(Some(&row), self.bootstrap(id)))
    }

    pub async fn suspend(&self, actor: &str, id: &AccountId, reason: String) -> Result<AccountInfo, AccountError> {
        if reason.chars().count() > 500 {
            return Err(AccountError::Invalid("`reason` must be at most 500 characters".into()));
        }
        let row = self
            .change(actor, id, |row| {
                if row.status == Status::Suspended && row.suspended_reason.as_deref() == Some(reason.as_str()) {
                    return Ok(None);
                }
                Ok(Some(AccountEvent::Suspended(AccountSuspended {
                    account: id.clone(),
                    reason,
                    actor: actor.to_owned(),
                    suspended_at: Timestamp::now(),
                })))
            })
            .await?;
        tracing::info!(account = %id, actor, "account suspended");
        Ok(Self::info(Some(&row), self.bootstrap(id)))
    }

    pub async fn resume(&self, actor: &str, id: &AccountId) -> Result<AccountInfo, AccountError> {
        let row = self
            .change(actor, id, |row| {
                if row.status == Status::Active {
                    return Ok(None);
                }
                Ok(Some(AccountEvent::Resumed(AccountResumed {
                    account: id.clone(),
                    actor: actor.to_owned(),
                    resumed_at: Timestamp::now(),
                })))
            })
            .await?;
        tracing::info!(account = %id, actor, "account resumed");
        Ok(Self::info(Some(&row), self.bootstrap(id)))
    }

    pub async fn delete(&self, actor: &str, id: &AccountId) -> Result<(), AccountError> {
        self.change(actor, id, |_| {
            Ok(Some(AccountEvent::Deleted(AccountDeleted {
                account: id.clone(),
                actor: actor.to_owned(),
                deleted_at: Timestamp::now(),
            })))
        })
        .await?;
        tracing::info!(account = %id, actor, "account deleted");
        Ok(())
    }

    pub async fn keys(&self, id: &AccountId) -> Result<Vec<KeyInfo>, AccountError> {
        Ok(self.get(id).await?.keys)
    }

    /// Issues a key; the key is in the result and nowhere else.
    pub async fn create_key(&self, actor: &str, id: &AccountId, req: NewKeyRequest) -> Result<IssuedKey, AccountError> {
        let scopes = Scopes::parse(&req.scopes).map_err(AccountError::Invalid)?;
        if scopes == Scopes::default() {
            return Err(AccountError::Invalid("`scopes` must name at least one scope".into()));
        }
        if req.name.chars().count() > 200 || req.name.chars().any(char::is_control) {
            return Err(AccountError::Invalid("`name` must be at most 200 characters".into()));
        }
        if req.expires_at.is_some_and(|t| t <= Timestamp::now()) {
            return Err(AccountError::Invalid("`expires_at` must be in the future".into()));
        }
        let NewKey { key, key_id, prefix, sha256 } = keys::generate();
        let row = self
            .change(actor, id, |_| {
                Ok(Some(AccountEvent::KeyCreated(ApiKeyCreated {
                    account: id.clone(),
                    key_id: key_id.clone(),
                    name: req.name.clone(),
                    prefix: prefix.clone(),
                    sha256: sha256.to_vec(),
                    scopes: scopes.names(),
                    expires_at: req.expires_at,
                    actor: actor.to_owned(),
                    created_at: Timestamp::now(),
                })))
            })
            .await?;
        let info = Self::info(Some(&row), None)
            .keys
            .into_iter()
            .find(|k| k.key_id == key_id)
            .ok_or_else(|| AccountError::Lag(id.0.clone()))?;
        tracing::info!(account = %id, key_id, actor, "API key issued");
        Ok(IssuedKey { key, info })
    }

    pub async fn revoke_key(&self, actor: &str, id: &AccountId, key_id: &str) -> Result<(), AccountError> {
        let info = self.get(id).await?;
        match info.keys.iter().find(|k| k.key_id == key_id) {
            Some(k) if k.revoked_at.is_none() => {}
            _ => return Err(AccountError::KeyNotFound { account: id.0.clone(), key_id: key_id.to_owned() }),
        }
        self.change(actor, id, |_| {
            Ok(Some(AccountEvent::KeyRevoked(ApiKeyRevoked {
                account: id.clone(),
                key_id: key_id.to_owned(),
                actor: actor.to_owned(),
                revoked_at: Timestamp::now(),
            })))
        })
        .await?;
        tracing::info!(account = %id, key_id, actor, "API key revoked");
        Ok(())
    }

    /// Adds (or replaces the password of) an SMTP user; `password_hash` is an argon2 PHC
    /// string.
    pub async fn add_user(
        &self,
        actor: &str,
        id: &AccountId,
        username: &str,
        password_hash: String,
    ) -> Result<UserInfo, AccountError> {
        check_username(username)?;
        if argon2_phc(&password_hash).is_none() {
            return Err(AccountError::Invalid("`password_hash` is not an argon2 PHC string".into()));
        }
        self.load(id).await?;
        if let Some((owner, _)) = self.cache.current().smtp_user(username) {
            if owner != id {
                return Err(AccountError::UserTaken(username.to_owned()));
            }
        }
        for r in self.store.accounts().await? {
            if &r.id != id && !r.deleted && r.live_users().any(|u| u.username == username) {
                return Err(AccountError::UserTaken(username.to_owned()));
            }
        }
        let row = self
            .change(actor, id, |_| {
                Ok(Some(AccountEvent::SmtpUserAdded(SmtpUserAdded {
                    account: id.clone(),
                    username: username.to_owned(),
                    password_hash,
                    actor: actor.to_owned(),
                    added_at: Timestamp::now(),
                })))
            })
            .await?;
        let added = row.live_users().find(|u| u.username == username).map(|u| u.added_at);
        tracing::info!(account = %id, username, actor, "SMTP user added");
        Ok(UserInfo { username: username.to_owned(), added_at: added, source: Source::Api })
    }

    pub async fn users(&self, id: &AccountId) -> Result<Vec<UserInfo>, AccountError> {
        Ok(self.get(id).await?.smtp_users)
    }

    pub async fn remove_user(&self, actor: &str, id: &AccountId, username: &str) -> Result<(), AccountError> {
        let info = self.get(id).await?;
        if !info.smtp_users.iter().any(|u| u.username == username) {
            return Err(AccountError::UserNotFound { account: id.0.clone(), username: username.to_owned() });
        }
        self.change(actor, id, |_| {
            Ok(Some(AccountEvent::SmtpUserRemoved(SmtpUserRemoved {
                account: id.clone(),
                username: username.to_owned(),
                actor: actor.to_owned(),
                removed_at: Timestamp::now(),
            })))
        })
        .await?;
        tracing::info!(account = %id, username, actor, "SMTP user removed");
        Ok(())
    }
}

/// Another request's creation won the id.
fn raced(row: Option<&AccountState>, request_id: &str) -> bool {
    row.is_some_and(|r| !r.deleted && r.request_id != request_id)
}

/// Whether `phc` parses as an argon2 PHC string (`$argon2id$…`).
fn argon2_phc(phc: &str) -> Option<()> {
    let rest = phc.strip_prefix('$')?;
    let (alg, _) = rest.split_once('$')?;
    matches!(alg, "argon2id" | "argon2i" | "argon2d").then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_settings_are_checked() {
        assert!(check_id("acme").is_ok() && check_id("acct_0a1b").is_ok() && check_id("a.b-c").is_ok());
        for bad in ["", "Acme", "-x", "a b", &"x".repeat(65), "ä"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
        let ok = AccountSettings {
            name: "Acme".into(),
            pool: Some("warm-1".into()),
            report_email: Some("ops@acme.example".into()),
            relay_networks: vec!["10.0.0.0/8".into(), "2001:db8::1".into()],
            ..Default::default()
        };
        assert!(check_settings(&ok).is_ok());
        let bad = [
            AccountSettings { pool: Some("a b".into()), ..ok.clone() },
            AccountSettings { report_email: Some("nobody".into()), ..ok.clone() },
            AccountSettings { relay_networks: vec!["10.0.0.0/33".into()], ..ok.clone() },
            AccountSettings {
                limits: AccountLimits { messages_per_day: Some(0), messages_per_second: None },
                ..ok.clone()
            },
            AccountSettings { name: "a\u{7}".into(), ..ok.clone() },
        ];
        for b in bad {
            assert!(check_settings(&b).is_err(), "{b:?}");
        }
        assert!(argon2_phc("$argon2id$v=19$m=1,t=1,p=1$salt$hash").is_some());
        assert!(argon2_phc("$2b$10$bcrypt").is_none() && argon2_phc("plain").is_none());
    }

    #[test]
    fn patches_keep_what_they_do_not_name() {
        let s = AccountSettings { name: "a".into(), pool: Some("p".into()), ..Default::default() };
        let p = AccountPatch { pool: Some(None), messages_per_day: Some(Some(5)), ..Default::default() };
        let n = p.apply(s);
        assert_eq!((n.name.as_str(), n.pool, n.limits.messages_per_day), ("a", None, Some(5)));
    }
}

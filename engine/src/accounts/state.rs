//! The state of one account as the projection keeps it, folded from its events
//! ([`apply`], pure). A deleted account stays as a tombstone, and so do revoked keys and
//! removed SMTP users: a replay cannot resurrect them, and an `[[accounts]]` entry of the
//! config cannot bring back what the API took away.

use herald_schemas::{AccountEvent, AccountId, AccountOrigin, AccountSettings, Timestamp};
use serde::{Deserialize, Serialize};

/// Whether an account may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    /// Sends refused (REST 403 `account_suspended`, SMTP 550 5.7.1); queued mail waits.
    Suspended,
}

/// An API key as stored: its digest, never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyState {
    pub key_id: String,
    pub name: String,
    pub prefix: String,
    /// Lower-case hex SHA-256 of the key; empty for the tombstone of a config key revoked
    /// through the API (its digest is in the config).
    pub sha256: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// An SMTP AUTH user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpUserState {
    pub username: String,
    /// Argon2 PHC string; empty for the tombstone of a config user removed through the API.
    pub password_hash: String,
    pub added_at: Timestamp,
    pub removed_at: Option<Timestamp>,
}

/// One account as the projection keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    pub id: AccountId,
    pub settings: AccountSettings,
    pub status: Status,
    pub suspended_reason: Option<String>,
    pub suspended_at: Option<Timestamp>,
    pub origin: AccountOrigin,
    pub request_id: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Keys in the order issued, revoked ones included.
    pub keys: Vec<ApiKeyState>,
    /// SMTP users, removed ones included.
    pub smtp_users: Vec<SmtpUserState>,
    pub deleted: bool,
    /// Seconds per bounce-report interval (`ReportIntervalSet`); `None`: the default.
    #[serde(default)]
    pub report_interval_secs: Option<u32>,
    /// Log offset of the last event applied (an account's events are on one partition).
    pub position: u64,
}

impl AccountState {
    /// Live keys (not revoked; expiry is checked at use).
    pub fn live_keys(&self) -> impl Iterator<Item = &ApiKeyState> {
        self.keys.iter().filter(|k| k.revoked_at.is_none() && !k.sha256.is_empty())
    }

    /// Live SMTP users.
    pub fn live_users(&self) -> impl Iterator<Item = &SmtpUserState> {
        self.smtp_users.iter().filter(|u| u.removed_at.is_none() && !u.password_hash.is_empty())
    }
}

/// The state after `event` (read at `offset`), or `None` when the event changes nothing:
/// a replay (offset already applied), a creation of an account that exists, a change to
/// an account that does not exist or was deleted, a key id issued twice.
pub fn apply(current: Option<&AccountState>, event: &AccountEvent, offset: u64) -> Option<AccountState> {
    if current.is_some_and(|c| offset <= c.position) {
        return None;
    }
    if let AccountEvent::Created(e) = event {
        // A config account is recorded only if nothing exists under its id (not even a
        // tombstone); an API creation may reuse the id of a deleted account.
        let allowed = match (current, e.origin) {
            (None, _) => true,
            (Some(c), AccountOrigin::Api) => c.deleted,
            (Some(_), AccountOrigin::Config) => false,
        };
        if !allowed {
            return None;
        }
        return Some(AccountState {
            id: e.account.clone(),
            settings: e.settings.clone(),
            status: Status::Active,
            suspended_reason: None,
            suspended_at: None,
            origin: e.origin,
            request_id: e.request_id.clone(),
            created_at: e.created_at,
            updated_at: e.created_at,
            keys: vec![],
            smtp_users: vec![],
            deleted: false,
            report_interval_secs: None,
            position: offset,
        });
    }
    let current = current.filter(|c| !c.deleted && &c.id == event.account())?;
    let mut next = current.clone();
    next.position = offset;
    match event {
        AccountEvent::Created(_) => unreachable!("handled above"),
        AccountEvent::Updated(e) => {
            next.settings = e.settings.clone();
            next.updated_at = e.updated_at;
        }
        AccountEvent::Suspended(e) => {
            next.status = Status::Suspended;
            next.suspended_reason = Some(e.reason.clone());
            next.suspended_at = Some(e.suspended_at);
            next.updated_at = e.suspended_at;
        }
        AccountEvent::Resumed(e) => {
            next.status = Status::Active;
            next.suspended_reason = None;
            next.suspended_at = None;
            next.updated_at = e.resumed_at;
        }
        AccountEvent::Deleted(e) => {
            next.deleted = true;
            next.updated_at = e.deleted_at;
            for k in next.keys.iter_mut().filter(|k| k.revoked_at.is_none()) {
                k.revoked_at = Some(e.deleted_at);
            }
            for u in next.smtp_users.iter_mut().filter(|u| u.removed_at.is_none()) {
                u.removed_at = Some(e.deleted_at);
            }
        }
        AccountEvent::KeyCreated(e) => {
            if next.keys.iter().any(|k| k.key_id == e.key_id) {
                return None;
            }
            next.keys.push(ApiKeyState {
                key_id: e.key_id.clone(),
                name: e.name.clone(),
                prefix: e.prefix.clone(),
                sha256: hex(&e.sha256),
                scopes: e.scopes.clone(),
                expires_at: e.expires_at,
                created_at: e.created_at,
                revoked_at: None,
            });
        }
        AccountEvent::KeyRevoked(e) => match next.keys.iter_mut().find(|k| k.key_id == e.key_id) {
            Some(k) if k.revoked_at.is_some() => return None,
            Some(k) => k.revoked_at = Some(e.revoked_at),
            // A config key (not issued by event): keep a tombstone under its id.
            None => next.keys.push(ApiKeyState {
                key_id: e.key_id.clone(),
                name: String::new(),
                prefix: String::new(),
                sha256: String::new(),
                scopes: vec![],
                expires_at: None,
                created_at: e.revoked_at,
                revoked_at: Some(e.revoked_at),
            }),
        },
        AccountEvent::SmtpUserAdded(e) => {
            let user = SmtpUserState {
                username: e.username.clone(),
                password_hash: e.password_hash.clone(),
                added_at: e.added_at,
                removed_at: None,
            };
            match next.smtp_users.iter_mut().find(|u| u.username == e.username) {
                Some(u) => *u = user,
                None => next.smtp_users.push(user),
            }
        }
        AccountEvent::SmtpUserRemoved(e) => match next.smtp_users.iter_mut().find(|u| u.username == e.username) {
            Some(u) if u.removed_at.is_some() => return None,
            Some(u) => u.removed_at = Some(e.removed_at),
            None => next.smtp_users.push(SmtpUserState {
                username: e.username.clone(),
                password_hash: String::new(),
                added_at: e.removed_at,
                removed_at: Some(e.removed_at),
            }),
        },
        AccountEvent::ReportIntervalSet(e) => {
            next.report_interval_secs = e.interval_secs;
            next.updated_at = e.set_at;
        }
    }
    Some(next)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_schemas::*;

    fn id() -> AccountId {
        AccountId("acme".into())
    }

    fn created(origin: AccountOrigin, request: &str) -> AccountEvent {
        AccountEvent::Created(AccountCreated {
            account: id(),
            settings: AccountSettings { name: "Acme".into(), ..Default::default() },
            origin,
            request_id: request.into(),
            actor: "test".into(),
            created_at: Timestamp(1),
        })
    }

    fn key(key_id: &str) -> AccountEvent {
        AccountEvent::KeyCreated(ApiKeyCreated {
            account: id(),
            key_id: key_id.into(),
            name: "k".into(),
            prefix: "hrld_ab".into(),
            sha256: vec![0xab; 32],
            scopes: vec!["send".into()],
            expires_at: None,
            actor: "test".into(),
            created_at: Timestamp(2),
        })
    }

    fn fold(events: &[AccountEvent]) -> Option<AccountState> {
        let mut state: Option<AccountState> = None;
        for (i, e) in events.iter().enumerate() {
            if let Some(next) = apply(state.as_ref(), e, i as u64 + 1) {
                state = Some(next);
            }
        }
        state
    }

    #[test]
    fn lifecycle() {
        let deleted =
            AccountEvent::Deleted(AccountDeleted { account: id(), actor: "t".into(), deleted_at: Timestamp(9) });
        let suspended = AccountEvent::Suspended(AccountSuspended {
            account: id(),
            reason: "abuse".into(),
            actor: "t".into(),
            suspended_at: Timestamp(3),
        });
        let s = fold(&[created(AccountOrigin::Api, "r1"), key("key_1"), suspended.clone()]).unwrap();
        assert_eq!(s.status, Status::Suspended);
        assert_eq!(s.suspended_reason.as_deref(), Some("abuse"));
        assert_eq!(s.live_keys().count(), 1);
        assert_eq!(s.keys[0].sha256, "ab".repeat(32));

        let s = fold(&[created(AccountOrigin::Api, "r1"), key("key_1"), deleted.clone()]).unwrap();
        assert!(s.deleted && s.live_keys().count() == 0, "deletion revokes every key");
        // Changes to a deleted account are ignored; only an API creation revives the id.
        let s2 = apply(Some(&s), &suspended, 10);
        assert!(s2.is_none());
        assert!(apply(Some(&s), &created(AccountOrigin::Config, "r2"), 11).is_none(), "config never revives");
        let revived = apply(Some(&s), &created(AccountOrigin::Api, "r3"), 12).unwrap();
        assert!(!revived.deleted && revived.keys.is_empty() && revived.request_id == "r3");
    }

    #[test]
    fn the_report_interval_is_set_and_reset() {
        let set = |secs: Option<u32>| {
            AccountEvent::ReportIntervalSet(ReportIntervalSet {
                account: id(),
                interval_secs: secs,
                actor: "t".into(),
                set_at: Timestamp(4),
            })
        };
        let s = fold(&[created(AccountOrigin::Api, "r1"), set(Some(86_400))]).unwrap();
        assert_eq!((s.report_interval_secs, s.updated_at), (Some(86_400), Timestamp(4)));
        let s = fold(&[created(AccountOrigin::Api, "r1"), set(Some(86_400)), set(None)]).unwrap();
        assert_eq!(s.report_interval_secs, None);
        assert!(apply(None, &set(Some(60)), 1).is_none(), "no account");
    }

    #[test]
    fn replays_and_duplicates_change_nothing() {
        let s = fold(&[created(AccountOrigin::Api, "r1"), key("key_1")]).unwrap();
        assert!(apply(Some(&s), &key("key_2"), 2).is_none(), "offset already applied");
        assert!(apply(Some(&s), &key("key_1"), 3).is_none(), "key id issued twice");
        assert!(apply(Some(&s), &created(AccountOrigin::Api, "r9"), 4).is_none(), "second creation");
        assert!(apply(None, &key("key_1"), 1).is_none(), "no account");
    }

    #[test]
    fn config_credentials_leave_tombstones() {
        let s = fold(&[
            created(AccountOrigin::Config, "r1"),
            AccountEvent::KeyRevoked(ApiKeyRevoked {
                account: id(),
                key_id: "cfg_0123".into(),
                actor: "t".into(),
                revoked_at: Timestamp(5),
            }),
            AccountEvent::SmtpUserRemoved(SmtpUserRemoved {
                account: id(),
                username: "relay".into(),
                actor: "t".into(),
                removed_at: Timestamp(6),
            }),
        ])
        .unwrap();
        assert_eq!(s.keys.len(), 1);
        assert!(s.keys[0].revoked_at.is_some() && s.live_keys().count() == 0);
        assert_eq!(s.smtp_users.len(), 1);
        assert_eq!(s.live_users().count(), 0);
        let added = AccountEvent::SmtpUserAdded(SmtpUserAdded {
            account: id(),
            username: "relay".into(),
            password_hash: "$argon2id$x".into(),
            actor: "t".into(),
            added_at: Timestamp(7),
        });
        let s = apply(Some(&s), &added, 10).unwrap();
        assert_eq!(s.live_users().count(), 1, "adding the user again replaces the tombstone");
    }
}

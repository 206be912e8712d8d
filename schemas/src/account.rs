//! Account events: customer accounts, their API keys and SMTP users, appended to
//! `<prefix>.accounts` keyed by the account id, so every event of one account is on one
//! partition, in order. The current state is a projection of them
//! (`herald_engine::accounts::state`); every node keeps a snapshot of that projection.
//!
//! Secrets never travel in events: an API key is carried as its SHA-256 digest, an SMTP
//! password as its argon2 PHC string.

use crate::{AccountId, Timestamp};
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Which From domains an account may send from (see `ingest/src/sender.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FromDomainsPolicy {
    /// Not set: `any` for an account a static `[[dkim]]` key names, else `verified`.
    #[default]
    Default,
    /// Only its verified sender domains (and the domains of static keys naming it).
    Verified,
    /// Any domain nobody else has proven.
    Any,
}

/// Send options applied to the account's messages that do not set them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct AccountDefaults {
    pub inline_css: bool,
    pub click_tracking: bool,
    pub opens_tracking: bool,
    pub bounce_tracking: bool,
    pub list_unsubscribe: bool,
}

/// Sending limits, enforced at ingestion. `None`: no limit of the account's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct AccountLimits {
    /// Messages (one per recipient) in any 24 hours.
    pub messages_per_day: Option<u64>,
    /// Messages (one per recipient) per second, per node.
    pub messages_per_second: Option<u32>,
}

/// Everything about an account an operator sets; replaced as a whole by `AccountUpdated`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct AccountSettings {
    /// A name for people (the id is for programs).
    pub name: String,
    /// The sending pool (IP pool) its mail leaves from; `None`: the default pool.
    pub pool: Option<String>,
    pub defaults: AccountDefaults,
    pub limits: AccountLimits,
    pub from_domains: FromDomainsPolicy,
    /// Where reports for the account (DMARC aggregates, complaints digests) go.
    pub report_email: Option<String>,
    /// Smart-host mode: networks (`10.1.2.0/24`, or one address) that may send over SMTP
    /// without AUTH, as this account.
    pub relay_networks: Vec<String>,
}

/// Where an account was first defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountOrigin {
    /// `POST /v1/admin/accounts` (or the CLI over it).
    Api,
    /// An `[[accounts]]` entry of the config, recorded the first time the API changed it.
    Config,
}

/// An account was created.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct AccountCreated {
    pub account: AccountId,
    pub settings: AccountSettings,
    pub origin: AccountOrigin,
    /// Unique per request, so the caller can tell its own creation in the projection.
    pub request_id: String,
    /// Who did it: `operator:<label>`, `config`.
    pub actor: String,
    pub created_at: Timestamp,
}

/// An account's settings were replaced.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct AccountUpdated {
    pub account: AccountId,
    pub settings: AccountSettings,
    pub actor: String,
    pub updated_at: Timestamp,
}

/// The account may no longer send; its queued mail waits.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct AccountSuspended {
    pub account: AccountId,
    pub reason: String,
    pub actor: String,
    pub suspended_at: Timestamp,
}

/// A suspended account may send again; its held mail goes out.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct AccountResumed {
    pub account: AccountId,
    pub actor: String,
    pub resumed_at: Timestamp,
}

/// The account is gone: its keys and users stop working and its queued mail is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct AccountDeleted {
    pub account: AccountId,
    pub actor: String,
    pub deleted_at: Timestamp,
}

/// An API key was issued. The key itself was shown once, to the caller; only its digest
/// is kept.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ApiKeyCreated {
    pub account: AccountId,
    /// Public, stable id of the key (`key_…`), used to list and revoke it.
    pub key_id: String,
    /// A label for people.
    pub name: String,
    /// The first characters of the key, shown in listings so people can tell keys apart.
    pub prefix: String,
    /// SHA-256 of the whole key.
    pub sha256: Vec<u8>,
    /// What the key may do: `send`, `read`, `domains`, `suppressions`, `webhooks`.
    pub scopes: Vec<String>,
    pub expires_at: Option<Timestamp>,
    pub actor: String,
    pub created_at: Timestamp,
}

/// An API key stopped working.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ApiKeyRevoked {
    pub account: AccountId,
    pub key_id: String,
    pub actor: String,
    pub revoked_at: Timestamp,
}

/// An SMTP AUTH user was added (or its password replaced).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SmtpUserAdded {
    pub account: AccountId,
    pub username: String,
    /// Argon2 PHC string (`$argon2id$…`).
    pub password_hash: String,
    pub actor: String,
    pub added_at: Timestamp,
}

/// An SMTP AUTH user was removed.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SmtpUserRemoved {
    pub account: AccountId,
    pub username: String,
    pub actor: String,
    pub removed_at: Timestamp,
}

/// How often the account's bounce and complaint digest is sent (`report_email`) changed.
/// Kept out of [`AccountSettings`] (whose shape is frozen in shipped frames): a new event
/// instead of a schema version.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ReportIntervalSet {
    pub account: AccountId,
    /// Length of one report interval in seconds; intervals start at wall-clock multiples
    /// of it since the Unix epoch. `None`: the service default (`[reports] interval_secs`).
    pub interval_secs: Option<u32>,
    pub actor: String,
    pub set_at: Timestamp,
}

/// Every account event.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum AccountEvent {
    Created(AccountCreated),
    Updated(AccountUpdated),
    Suspended(AccountSuspended),
    Resumed(AccountResumed),
    Deleted(AccountDeleted),
    KeyCreated(ApiKeyCreated),
    KeyRevoked(ApiKeyRevoked),
    SmtpUserAdded(SmtpUserAdded),
    SmtpUserRemoved(SmtpUserRemoved),
    /// Index 9.
    ReportIntervalSet(ReportIntervalSet),
}

impl AccountEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Created(_) => "account.created",
            AccountEvent::Updated(_) => "account.updated",
            AccountEvent::Suspended(_) => "account.suspended",
            AccountEvent::Resumed(_) => "account.resumed",
            AccountEvent::Deleted(_) => "account.deleted",
            AccountEvent::KeyCreated(_) => "account.api_key_created",
            AccountEvent::KeyRevoked(_) => "account.api_key_revoked",
            AccountEvent::SmtpUserAdded(_) => "account.smtp_user_added",
            AccountEvent::SmtpUserRemoved(_) => "account.smtp_user_removed",
            AccountEvent::ReportIntervalSet(_) => "account.report_interval_set",
        }
    }

    /// The account, which is also the partition key.
    pub fn account(&self) -> &AccountId {
        match self {
            AccountEvent::Created(e) => &e.account,
            AccountEvent::Updated(e) => &e.account,
            AccountEvent::Suspended(e) => &e.account,
            AccountEvent::Resumed(e) => &e.account,
            AccountEvent::Deleted(e) => &e.account,
            AccountEvent::KeyCreated(e) => &e.account,
            AccountEvent::KeyRevoked(e) => &e.account,
            AccountEvent::SmtpUserAdded(e) => &e.account,
            AccountEvent::SmtpUserRemoved(e) => &e.account,
            AccountEvent::ReportIntervalSet(e) => &e.account,
        }
    }
}

impl From<AccountDefaults> for crate::SendOptions {
    fn from(d: AccountDefaults) -> Self {
        crate::SendOptions {
            inline_css: d.inline_css,
            click_tracking: d.click_tracking,
            opens_tracking: d.opens_tracking,
            bounce_tracking: d.bounce_tracking,
            list_unsubscribe: d.list_unsubscribe,
        }
    }
}

//! Sender-domain events: a domain claimed by an account, its DKIM keys published,
//! activated and retired, its DNS verified, and its removal. All are appended to the
//! `<prefix>.domains` topic keyed by the (punycode) domain, so every event of one domain is
//! on one partition, in order; the current state is a projection of them
//! (`herald_engine::domains::state`).

use crate::{AccountId, Timestamp};
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Signature algorithm of a DKIM key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    RsaSha256,
    Ed25519Sha256,
}

impl KeyAlgorithm {
    /// `k=` of the DKIM key record.
    pub fn dns_k(self) -> &'static str {
        match self {
            KeyAlgorithm::RsaSha256 => "rsa",
            KeyAlgorithm::Ed25519Sha256 => "ed25519",
        }
    }
}

/// One DKIM key as published. The private half is never in this struct: it travels sealed
/// in a [`DomainKeysSealed`] event (or, before ADR 0017, was a file named `key_file` under
/// `<data_dir>/dkim/<domain>/`).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct DkimKey {
    /// `s=`: the slot's selector for this algorithm (`hd1`/`hd2` RSA, `he1`/`he2` Ed25519).
    pub selector: String,
    pub algorithm: KeyAlgorithm,
    /// Base64 `p=` value: SubjectPublicKeyInfo DER (RSA) or the raw 32-byte key (Ed25519).
    pub public_key: String,
    /// Stable name of the key: names its sealed private half (and, before ADR 0017, the
    /// PKCS#8 PEM file under `<data_dir>/dkim/<domain>/`).
    pub key_file: String,
    pub created_at: Timestamp,
}

/// An account claimed a sender domain. The first `DomainAdded` of a domain that is not
/// currently claimed wins; a later one from another account is ignored by the projection.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DomainAdded {
    pub account: AccountId,
    /// Lower-case ASCII (punycode) name.
    pub domain: String,
    /// Opaque, stable label naming this domain inside Herald's zone.
    pub token: String,
    /// Label of the return-path domain (`bounce` → `bounce.<domain>`).
    pub bounce_label: String,
    /// Label of the tracking domain (`clicks` → `clicks.<domain>`).
    pub tracking_label: String,
    /// `rua=` of the suggested DMARC record (a `mailto:` URI), if the customer chose one.
    pub dmarc_rua: Option<String>,
    /// HTTPS URL of an SVG logo for the optional BIMI record.
    pub bimi_logo: Option<String>,
    /// Keys of slot 1, signing from the start (once the domain is verified).
    pub keys: Vec<DkimKey>,
    /// Unique per request, so the caller can tell its own claim in the projection.
    pub request_id: String,
    pub added_at: Timestamp,
}

/// New keys published in the idle selector slot; they sign from `activate_at` on.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DomainKeysPublished {
    pub account: AccountId,
    pub domain: String,
    /// 1 or 2.
    pub slot: u8,
    pub keys: Vec<DkimKey>,
    pub published_at: Timestamp,
    pub activate_at: Timestamp,
}

/// Signing switched to `slot`; the previous slot stays published until `retire_at`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DomainKeysActivated {
    pub account: AccountId,
    pub domain: String,
    pub slot: u8,
    pub activated_at: Timestamp,
    pub retire_at: Timestamp,
}

/// The keys of `slot` are withdrawn from DNS (the grace period after a rotation ended).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DomainKeysRetired {
    pub account: AccountId,
    pub domain: String,
    pub slot: u8,
    pub retired_at: Timestamp,
}

/// Result of checking one DNS record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    Ok,
    Missing,
    WrongValue,
    Conflict,
    /// Timeout, SERVFAIL or another DNS failure: nothing can be said about the record.
    Unreachable,
}

/// One record the customer publishes, as found in DNS.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct RecordCheck {
    /// `dkim`, `spf`, `dmarc`, `bounce`, `tracking`, `bimi`.
    pub record: String,
    /// Owner name queried.
    pub name: String,
    pub result: CheckResult,
    /// Whether the domain's status depends on it.
    pub required: bool,
    /// What was expected, in zone-file form.
    pub expected: String,
    /// What was found.
    pub found: Vec<String>,
    /// A sentence an operator would say after running dig.
    pub message: String,
}

/// Verification state of a sender domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationStatus {
    /// Never verified yet.
    Pending,
    /// Every required record was right at the last check.
    Verified,
    /// Was verified; a later check found a required record broken.
    Failing,
}

/// A verification ran; appended when the status or the findings changed, and on request.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DomainVerified {
    pub account: AccountId,
    pub domain: String,
    pub status: VerificationStatus,
    pub checks: Vec<RecordCheck>,
    pub checked_at: Timestamp,
}

/// Settings of a domain changed (tracking label, DMARC rua, BIMI logo).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DomainUpdated {
    pub account: AccountId,
    pub domain: String,
    pub tracking_label: String,
    pub dmarc_rua: Option<String>,
    pub bimi_logo: Option<String>,
    pub updated_at: Timestamp,
}

/// The account released the domain: Herald stops signing and publishing for it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DomainRemoved {
    pub account: AccountId,
    pub domain: String,
    pub removed_at: Timestamp,
}

/// One DKIM private key sealed with AES-256-GCM under a master key (ADR 0017). The
/// associated data binds it to its domain and `key_file`, so a ciphertext moved to another
/// domain or key does not open.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct SealedKey {
    /// The [`DkimKey::key_file`] of the published key this is the private half of.
    pub key_file: String,
    /// Id of the master key that sealed it (a positive integer of the node's keyring).
    pub master_key_id: u32,
    /// The 96-bit GCM nonce, random per sealing.
    pub nonce: Vec<u8>,
    /// The PKCS#8 DER private key, encrypted, followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// Private keys of a domain's published keys, sealed under a master key, so every node can
/// sign without a shared disk. Appended right after the `DomainAdded` or
/// `DomainKeysPublished` that published the keys, again when a key file from before ADR
/// 0017 is migrated, and again when the keys are re-wrapped under a newer master key. A
/// later seal of the same `key_file` replaces the earlier one.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DomainKeysSealed {
    pub account: AccountId,
    pub domain: String,
    pub keys: Vec<SealedKey>,
    pub sealed_at: Timestamp,
}

/// Every sender-domain event. New variants go at the end (old frames keep decoding).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum DomainEvent {
    Added(DomainAdded),
    KeysPublished(DomainKeysPublished),
    KeysActivated(DomainKeysActivated),
    KeysRetired(DomainKeysRetired),
    Verified(DomainVerified),
    Updated(DomainUpdated),
    Removed(DomainRemoved),
    KeysSealed(DomainKeysSealed),
}

impl DomainEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            DomainEvent::Added(_) => "domain.added",
            DomainEvent::KeysPublished(_) => "domain.keys_published",
            DomainEvent::KeysActivated(_) => "domain.keys_activated",
            DomainEvent::KeysRetired(_) => "domain.keys_retired",
            DomainEvent::Verified(_) => "domain.verified",
            DomainEvent::Updated(_) => "domain.updated",
            DomainEvent::Removed(_) => "domain.removed",
            DomainEvent::KeysSealed(_) => "domain.keys_sealed",
        }
    }

    pub fn account(&self) -> &AccountId {
        match self {
            DomainEvent::Added(e) => &e.account,
            DomainEvent::KeysPublished(e) => &e.account,
            DomainEvent::KeysActivated(e) => &e.account,
            DomainEvent::KeysRetired(e) => &e.account,
            DomainEvent::Verified(e) => &e.account,
            DomainEvent::Updated(e) => &e.account,
            DomainEvent::Removed(e) => &e.account,
            DomainEvent::KeysSealed(e) => &e.account,
        }
    }

    /// The partition key: the punycode domain.
    pub fn domain(&self) -> &str {
        match self {
            DomainEvent::Added(e) => &e.domain,
            DomainEvent::KeysPublished(e) => &e.domain,
            DomainEvent::KeysActivated(e) => &e.domain,
            DomainEvent::KeysRetired(e) => &e.domain,
            DomainEvent::Verified(e) => &e.domain,
            DomainEvent::Updated(e) => &e.domain,
            DomainEvent::Removed(e) => &e.domain,
            DomainEvent::KeysSealed(e) => &e.domain,
        }
    }
}

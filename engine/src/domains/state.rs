//! The current state of a sender domain, folded from its events, and the rotation
//! schedule as pure decisions over that state.
//!
//! Key slots: every domain has two selector slots, 1 and 2. The customer publishes CNAMEs
//! for both once; rotation alternates between them: new keys are published in the idle
//! slot, signing switches to it after the propagation delay, and the old slot's keys stay
//! published for the grace period, then are withdrawn. The CNAMEs never change.

use herald_schemas::{
    AccountId, CheckResult, DkimKey, DomainEvent, KeyAlgorithm, RecordCheck, SealedKey, Timestamp, VerificationStatus,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingKeys {
    pub slot: u8,
    pub activate_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiringKeys {
    pub slot: u8,
    pub retire_at: Timestamp,
}

/// One sender domain as the projection keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainState {
    pub domain: String,
    pub account: AccountId,
    pub token: String,
    pub bounce_label: String,
    pub tracking_label: String,
    pub dmarc_rua: Option<String>,
    pub bimi_logo: Option<String>,
    pub request_id: String,
    pub added_at: Timestamp,
    /// Published keys of slot 1 and slot 2 (empty: nothing published in that slot).
    pub slots: [Vec<DkimKey>; 2],
    /// The slot that signs.
    pub active_slot: u8,
    pub pending: Option<PendingKeys>,
    pub retiring: Option<RetiringKeys>,
    /// When the active slot started signing.
    pub rotated_at: Timestamp,
    pub status: VerificationStatus,
    pub checks: Vec<RecordCheck>,
    pub checked_at: Option<Timestamp>,
    /// A removed domain stays as a tombstone, so replays cannot resurrect it.
    pub removed: bool,
    /// Private halves of the published keys, sealed under a master key (ADR 0017), one per
    /// `key_file`. Never leaves the engine: no API view includes it.
    #[serde(default)]
    pub sealed: Vec<SealedKey>,
    /// Log offset of the last event applied (events are on one partition, in order).
    pub position: u64,
}

impl DomainState {
    /// Keys that sign now.
    pub fn signing_keys(&self) -> &[DkimKey] {
        &self.slots[slot_index(self.active_slot)]
    }

    /// Every published key, with its slot.
    pub fn published(&self) -> impl Iterator<Item = (u8, &DkimKey)> {
        self.slots.iter().enumerate().flat_map(|(i, keys)| keys.iter().map(move |k| (i as u8 + 1, k)))
    }

    /// Algorithms the domain signs with (RSA, plus Ed25519 when enabled).
    pub fn algorithms(&self) -> Vec<KeyAlgorithm> {
        let mut algs: Vec<KeyAlgorithm> = self.signing_keys().iter().map(|k| k.algorithm).collect();
        algs.dedup();
        algs
    }

    pub fn bounce_domain(&self) -> String {
        format!("{}.{}", self.bounce_label, self.domain)
    }

    pub fn tracking_domain(&self) -> String {
        format!("{}.{}", self.tracking_label, self.domain)
    }

    /// The sealed private half of the published key `key_file`.
    pub fn sealed_key(&self, key_file: &str) -> Option<&SealedKey> {
        self.sealed.iter().find(|k| k.key_file == key_file)
    }

    /// Drops sealed keys whose key is no longer published.
    fn prune_sealed(&mut self) {
        let published: Vec<String> = self.published().map(|(_, k)| k.key_file.clone()).collect();
        self.sealed.retain(|k| published.contains(&k.key_file));
    }

    pub fn is_verified(&self) -> bool {
        !self.removed && self.status == VerificationStatus::Verified
    }
}

fn slot_index(slot: u8) -> usize {
    if slot == 2 {
        1
    } else {
        0
    }
}

/// The slot that does not sign.
pub fn idle_slot(active: u8) -> u8 {
    if active == 2 {
        1
    } else {
        2
    }
}

/// Applies `event`, read at `offset`, to `current`. Returns the new state to store, or
/// `None` when the event changes nothing (already applied, or refused: a claim of a domain
/// another account holds, a stale rotation step).
pub fn apply(current: Option<&DomainState>, event: &DomainEvent, offset: u64) -> Option<DomainState> {
    if current.is_some_and(|s| s.position >= offset) {
        return None;
    }
    if let DomainEvent::Added(e) = event {
        if current.is_some_and(|s| !s.removed) {
            return None; // already claimed (by this account or another): the first claim stands
        }
        return Some(DomainState {
            domain: e.domain.clone(),
            account: e.account.clone(),
            token: e.token.clone(),
            bounce_label: e.bounce_label.clone(),
            tracking_label: e.tracking_label.clone(),
            dmarc_rua: e.dmarc_rua.clone(),
            bimi_logo: e.bimi_logo.clone(),
            request_id: e.request_id.clone(),
            added_at: e.added_at,
            slots: [e.keys.clone(), vec![]],
            active_slot: 1,
            pending: None,
            retiring: None,
            rotated_at: e.added_at,
            status: VerificationStatus::Pending,
            checks: vec![],
            checked_at: None,
            removed: false,
            sealed: vec![],
            position: offset,
        });
    }
    let current = current?;
    if current.removed || &current.account != event.account() {
        return None;
    }
    let mut s = current.clone();
    s.position = offset;
    match event {
        DomainEvent::Added(_) => return None,
        DomainEvent::KeysPublished(e) => {
            let retiring_there = s.retiring.is_some_and(|r| r.slot == e.slot);
            if e.slot == s.active_slot || s.pending.is_some() || retiring_there || !(1..=2).contains(&e.slot) {
                return None;
            }
            s.slots[slot_index(e.slot)] = e.keys.clone();
            s.pending = Some(PendingKeys { slot: e.slot, activate_at: e.activate_at });
            s.prune_sealed();
        }
        DomainEvent::KeysActivated(e) => {
            if s.pending.map(|p| p.slot) != Some(e.slot) {
                return None;
            }
            s.retiring = Some(RetiringKeys { slot: s.active_slot, retire_at: e.retire_at });
            s.active_slot = e.slot;
            s.pending = None;
            s.rotated_at = e.activated_at;
        }
        DomainEvent::KeysRetired(e) => {
            if s.retiring.map(|r| r.slot) != Some(e.slot) {
                return None;
            }
            s.slots[slot_index(e.slot)].clear();
            s.retiring = None;
            s.prune_sealed();
        }
        DomainEvent::Verified(e) => {
            s.status = e.status;
            s.checks = e.checks.clone();
            s.checked_at = Some(e.checked_at);
        }
        DomainEvent::Updated(e) => {
            s.tracking_label = e.tracking_label.clone();
            s.dmarc_rua = e.dmarc_rua.clone();
            s.bimi_logo = e.bimi_logo.clone();
        }
        DomainEvent::Removed(_) => {
            s.removed = true;
            s.status = VerificationStatus::Pending;
            s.sealed.clear();
        }
        DomainEvent::KeysSealed(e) => {
            for key in &e.keys {
                if !s.published().any(|(_, k)| k.key_file == key.key_file) {
                    continue; // not (or no longer) published: nothing signs with it
                }
                s.sealed.retain(|k| k.key_file != key.key_file);
                s.sealed.push(key.clone());
            }
        }
    }
    Some(s)
}

/// Rotation timing.
#[derive(Debug, Clone, Copy)]
pub struct RotationPolicy {
    /// Time between rotations; zero: only manual rotations.
    pub interval: Duration,
    /// How long new keys are published before they sign.
    pub propagation_delay: Duration,
    /// How long old keys stay published after signing moved on.
    pub grace: Duration,
}

/// The next rotation step due for a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Generate keys and publish them in `slot` (the idle one).
    Publish { slot: u8 },
    /// Sign with `slot` from now on.
    Activate { slot: u8 },
    /// Withdraw the keys of `slot`.
    Retire { slot: u8 },
}

/// What the periodic task should do for `s` at `now`, if anything.
pub fn due_step(s: &DomainState, now: Timestamp, policy: &RotationPolicy) -> Option<Step> {
    if s.removed {
        return None;
    }
    if let Some(r) = s.retiring {
        if now >= r.retire_at {
            return Some(Step::Retire { slot: r.slot });
        }
    }
    if let Some(p) = s.pending {
        return (now >= p.activate_at).then_some(Step::Activate { slot: p.slot });
    }
    if s.retiring.is_none() && !policy.interval.is_zero() && now >= s.rotated_at.saturating_add(policy.interval) {
        return Some(Step::Publish { slot: idle_slot(s.active_slot) });
    }
    None
}

/// Whether a manual rotation may start now: `Err` says until when it may not.
pub fn can_rotate(s: &DomainState) -> Result<u8, String> {
    if let Some(p) = s.pending {
        return Err(format!(
            "keys for slot {} are already published and start signing at {}",
            p.slot,
            crate::projector::rfc3339(p.activate_at)
        ));
    }
    if let Some(r) = s.retiring {
        return Err(format!(
            "the previous keys (slot {}) stay published for messages in flight until {}; rotate after that",
            r.slot,
            crate::projector::rfc3339(r.retire_at)
        ));
    }
    Ok(idle_slot(s.active_slot))
}

/// The status after a check: all required records right → verified; a broken one →
/// failing (or still pending if never verified). A check that could not reach DNS decides
/// nothing: the status stays as it was.
pub fn next_status(previous: VerificationStatus, checks: &[RecordCheck]) -> VerificationStatus {
    let required = || checks.iter().filter(|c| c.required);
    if required().any(|c| c.result == CheckResult::Unreachable) {
        return previous;
    }
    if required().all(|c| c.result == CheckResult::Ok) {
        return VerificationStatus::Verified;
    }
    match previous {
        VerificationStatus::Pending => VerificationStatus::Pending,
        _ => VerificationStatus::Failing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_schemas::*;

    fn key(selector: &str) -> DkimKey {
        DkimKey {
            selector: selector.into(),
            algorithm: KeyAlgorithm::RsaSha256,
            public_key: format!("p-{selector}"),
            key_file: format!("{selector}.pem"),
            created_at: Timestamp(0),
        }
    }

    fn added(account: &str) -> DomainEvent {
        DomainEvent::Added(DomainAdded {
            account: AccountId(account.into()),
            domain: "sender.test".into(),
            token: "tok".into(),
            bounce_label: "bounce".into(),
            tracking_label: "clicks".into(),
            dmarc_rua: None,
            bimi_logo: None,
            keys: vec![key("hd1")],
            request_id: account.into(),
            added_at: Timestamp(1000),
        })
    }

    fn acme() -> AccountId {
        AccountId("acme".into())
    }

    const DAY: u64 = 86_400;

    fn policy() -> RotationPolicy {
        RotationPolicy {
            interval: Duration::from_secs(30 * DAY),
            propagation_delay: Duration::from_secs(DAY),
            grace: Duration::from_secs(7 * DAY),
        }
    }

    fn at_days(d: u64) -> Timestamp {
        Timestamp(1000 + (d * DAY * 1000) as i64)
    }

    #[test]
    fn first_claim_wins_and_replays_change_nothing() {
        let s = apply(None, &added("acme"), 0).unwrap();
        assert_eq!(s.account, acme());
        assert_eq!(s.signing_keys()[0].selector, "hd1");
        assert!(apply(Some(&s), &added("other"), 1).is_none(), "another account's claim is ignored");
        assert!(apply(Some(&s), &added("acme"), 0).is_none(), "a replay is ignored");
        let removed = DomainEvent::Removed(DomainRemoved {
            account: AccountId("other".into()),
            domain: "sender.test".into(),
            removed_at: Timestamp(5),
        });
        assert!(apply(Some(&s), &removed, 2).is_none(), "another account cannot remove it");
        let removed = DomainEvent::Removed(DomainRemoved {
            account: acme(),
            domain: "sender.test".into(),
            removed_at: Timestamp(5),
        });
        let gone = apply(Some(&s), &removed, 3).unwrap();
        assert!(gone.removed);
        let reclaimed = apply(Some(&gone), &added("other"), 4).unwrap();
        assert_eq!(reclaimed.account, AccountId("other".into()));
    }

    #[test]
    fn rotation_publishes_in_the_idle_slot_then_activates_then_retires() {
        let p = policy();
        let mut s = apply(None, &added("acme"), 0).unwrap();
        assert_eq!(due_step(&s, at_days(29), &p), None);
        assert_eq!(due_step(&s, at_days(30), &p), Some(Step::Publish { slot: 2 }));
        let publish = DomainEvent::KeysPublished(DomainKeysPublished {
            account: acme(),
            domain: "sender.test".into(),
            slot: 2,
            keys: vec![key("hd2")],
            published_at: at_days(30),
            activate_at: at_days(31),
        });
        s = apply(Some(&s), &publish, 1).unwrap();
        assert_eq!(s.published().count(), 2, "both slots published during propagation");
        assert_eq!(s.signing_keys()[0].selector, "hd1", "old key still signs");
        assert!(can_rotate(&s).unwrap_err().contains("already published"));
        assert_eq!(due_step(&s, at_days(30), &p), None);
        assert_eq!(due_step(&s, at_days(31), &p), Some(Step::Activate { slot: 2 }));
        let activate = DomainEvent::KeysActivated(DomainKeysActivated {
            account: acme(),
            domain: "sender.test".into(),
            slot: 2,
            activated_at: at_days(31),
            retire_at: at_days(38),
        });
        s = apply(Some(&s), &activate, 2).unwrap();
        assert_eq!(s.active_slot, 2);
        assert_eq!(s.signing_keys()[0].selector, "hd2");
        assert_eq!(s.published().count(), 2, "old key stays published for the grace period");
        assert!(can_rotate(&s).is_err());
        assert_eq!(due_step(&s, at_days(37), &p), None);
        assert_eq!(due_step(&s, at_days(38), &p), Some(Step::Retire { slot: 1 }));
        let retire = DomainEvent::KeysRetired(DomainKeysRetired {
            account: acme(),
            domain: "sender.test".into(),
            slot: 1,
            retired_at: at_days(38),
        });
        s = apply(Some(&s), &retire, 3).unwrap();
        assert_eq!(s.published().map(|(slot, _)| slot).collect::<Vec<_>>(), vec![2]);
        assert_eq!(can_rotate(&s), Ok(1), "the next rotation goes back to slot 1");
        assert_eq!(due_step(&s, at_days(60), &p), None);
        assert_eq!(due_step(&s, at_days(61), &p), Some(Step::Publish { slot: 1 }));
        // A stale step (activating a slot that is not pending) is refused.
        assert!(apply(Some(&s), &activate, 4).is_none());
        assert_eq!(due_step(&s, at_days(61), &RotationPolicy { interval: Duration::ZERO, ..p }), None);
    }

    fn sealed(key_file: &str, id: u32) -> SealedKey {
        SealedKey { key_file: key_file.into(), master_key_id: id, nonce: vec![0; 12], ciphertext: vec![1; 20] }
    }

    fn seal(keys: Vec<SealedKey>) -> DomainEvent {
        DomainEvent::KeysSealed(DomainKeysSealed {
            account: acme(),
            domain: "sender.test".into(),
            keys,
            sealed_at: Timestamp(2000),
        })
    }

    #[test]
    fn sealed_keys_follow_the_published_keys() {
        let s = apply(None, &added("acme"), 0).unwrap();
        assert!(apply(None, &seal(vec![sealed("hd1.pem", 1)]), 0).is_none(), "nothing to seal before the claim");
        let s = apply(Some(&s), &seal(vec![sealed("hd1.pem", 1), sealed("unknown.pem", 1)]), 1).unwrap();
        assert_eq!(s.sealed, vec![sealed("hd1.pem", 1)], "only published keys are kept");
        let other = DomainEvent::KeysSealed(DomainKeysSealed {
            account: AccountId("other".into()),
            domain: "sender.test".into(),
            keys: vec![sealed("hd1.pem", 9)],
            sealed_at: Timestamp(2000),
        });
        assert!(apply(Some(&s), &other, 2).is_none(), "another account cannot replace a key");
        let s = apply(Some(&s), &seal(vec![sealed("hd1.pem", 2)]), 3).unwrap();
        assert_eq!(s.sealed_key("hd1.pem").map(|k| k.master_key_id), Some(2), "a re-wrap replaces");
        assert_eq!(s.sealed.len(), 1);
        let json = serde_json::to_value(&s).unwrap();
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("sealed");
        let read: DomainState = serde_json::from_value(old).unwrap();
        assert!(read.sealed.is_empty(), "rows written before ADR 0017 still read");
        let removed = DomainEvent::Removed(DomainRemoved {
            account: acme(),
            domain: "sender.test".into(),
            removed_at: Timestamp(5),
        });
        assert!(apply(Some(&s), &removed, 4).unwrap().sealed.is_empty(), "removal forgets the keys");
    }

    #[test]
    fn status_transitions() {
        let check = |required, result| RecordCheck {
            record: "spf".into(),
            name: "x".into(),
            result,
            required,
            expected: String::new(),
            found: vec![],
            message: String::new(),
        };
        use CheckResult::*;
        use VerificationStatus::*;
        assert_eq!(next_status(Pending, &[check(true, Ok), check(false, Missing)]), Verified);
        assert_eq!(next_status(Pending, &[check(true, Missing)]), Pending);
        assert_eq!(next_status(Verified, &[check(true, WrongValue)]), Failing);
        assert_eq!(next_status(Failing, &[check(true, Ok)]), Verified);
        assert_eq!(
            next_status(Verified, &[check(true, Unreachable), check(true, Missing)]),
            Verified,
            "DNS trouble decides nothing"
        );
        assert_eq!(next_status(Pending, &[check(true, Unreachable)]), Pending);
    }
}

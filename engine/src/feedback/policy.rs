//! Who gets suppressed, and for how long. Pure decisions over one event and what is
//! known about its recipient; the feedback projector applies them.
//!
//! - a permanent bounce that ended a message (invalid recipient, bad domain, inactive
//!   mailbox): suppressed until lifted;
//! - a complaint of any feedback type but `not-spam`: suppressed until lifted;
//! - an unsubscribe (the engagement events): suppressed until lifted ([`unsubscribed`]);
//! - `soft_threshold` transient failures of the `soft_classes` within `soft_window`:
//!   suppressed for `soft_duration`.
//!
//! An automatic decision never weakens an entry already in force: a permanent entry is
//! not replaced by an expiring one, nor a later expiry by an earlier one.

use crate::store::feedback::{SoftFailure, Suppression};
use herald_schemas::{
    AccountId, BounceAction, BounceClass, BounceReceived, BounceType, ComplaintReceived, MessageId,
    RecipientSuppressed, SuppressionReason, Timestamp,
};
use std::time::Duration;

/// The thresholds (`[bounces]` in the config).
#[derive(Debug, Clone)]
pub struct SuppressionPolicy {
    /// Suppress on a permanent bounce.
    pub hard_bounces: bool,
    /// Suppress on a complaint (never on `not-spam`).
    pub complaints: bool,
    /// Classes of transient failures that count towards the soft rule.
    pub soft_classes: Vec<BounceClass>,
    /// Failures within the window that suppress; 0 turns the rule off.
    pub soft_threshold: u32,
    pub soft_window: Duration,
    /// How long a soft suppression lasts.
    pub soft_duration: Duration,
}

impl Default for SuppressionPolicy {
    fn default() -> Self {
        SuppressionPolicy {
            hard_bounces: true,
            complaints: true,
            soft_classes: vec![BounceClass::Quota, BounceClass::MessageExpired, BounceClass::Uncategorized],
            soft_threshold: 3,
            soft_window: Duration::from_secs(7 * 86_400),
            soft_duration: Duration::from_secs(30 * 86_400),
        }
    }
}

/// The form every list compares addresses in: trimmed, without angle brackets, lower-case.
pub fn normalize(address: &str) -> String {
    address.trim().trim_start_matches('<').trim_end_matches('>').trim().to_lowercase()
}

/// What a bounce means for the soft rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SoftStep {
    /// The bounce does not count.
    Ignore,
    /// It counts: store `history` (pruned to the window, this bounce added); `suppress` when
    /// the threshold is reached.
    Count { history: Vec<SoftFailure>, suppress: bool },
}

impl SuppressionPolicy {
    /// The suppression a bounce causes at once, if any.
    pub fn on_bounce(&self, e: &BounceReceived) -> Option<RecipientSuppressed> {
        if !self.hard_bounces || e.action != BounceAction::Failed || e.bounce_type != BounceType::Permanent {
            return None;
        }
        Some(RecipientSuppressed {
            account: e.account.clone(),
            recipient: normalize(&e.recipient),
            reason: SuppressionReason::HardBounce,
            message_id: Some(e.message_id.clone()),
            detail: describe(e),
            expires_at: None,
            id: format!("hard-{}-{}", e.message_id, e.id),
            suppressed_at: e.received_at,
        })
    }

    /// How a bounce counts towards the soft rule, given the recipient's `history`.
    pub fn soft_step(&self, e: &BounceReceived, history: &[SoftFailure]) -> SoftStep {
        let counts = self.soft_threshold > 0
            && e.action == BounceAction::Failed
            && e.bounce_type != BounceType::Permanent
            && self.soft_classes.contains(&e.class);
        if !counts {
            return SoftStep::Ignore;
        }
        let key = format!("{}/{}", e.message_id, e.id);
        let since = e.received_at.millis() - self.soft_window.as_millis() as i64;
        let mut kept: Vec<SoftFailure> = history.iter().filter(|(_, at)| at.millis() > since).cloned().collect();
        if !kept.iter().any(|(id, _)| *id == key) {
            kept.push((key, e.received_at));
        }
        kept.sort_by_key(|(_, at)| *at);
        let suppress = kept.len() as u32 >= self.soft_threshold;
        SoftStep::Count { history: kept, suppress }
    }

    /// The expiring suppression of the soft rule, once [`SoftStep::Count`] says so.
    pub fn soft_suppression(&self, e: &BounceReceived, failures: usize) -> RecipientSuppressed {
        let days = self.soft_window.as_secs() / 86_400;
        RecipientSuppressed {
            account: e.account.clone(),
            recipient: normalize(&e.recipient),
            reason: SuppressionReason::SoftBounces,
            message_id: Some(e.message_id.clone()),
            detail: format!("{failures} transient failures within {days} days; last: {}", describe(e)),
            expires_at: Some(e.received_at.saturating_add(self.soft_duration)),
            id: format!("soft-{}-{}", e.message_id, e.id),
            suppressed_at: e.received_at,
        }
    }

    /// The suppression a complaint causes, if any.
    pub fn on_complaint(&self, e: &ComplaintReceived) -> Option<RecipientSuppressed> {
        if !self.complaints || e.feedback_type == "not-spam" {
            return None;
        }
        Some(RecipientSuppressed {
            account: e.account.clone(),
            recipient: normalize(&e.recipient),
            reason: SuppressionReason::Complaint,
            message_id: Some(e.message_id.clone()),
            detail: format!(
                "complaint ({}) from {}",
                e.feedback_type,
                e.user_agent.as_deref().unwrap_or("a feedback loop")
            ),
            expires_at: None,
            id: format!("complaint-{}-{}", e.message_id, e.id),
            suppressed_at: e.received_at,
        })
    }
}

/// The suppression an unsubscribe (`RecipientUnsubscribed`, read by the feedback projector
/// from the engagement topic) makes: until lifted, with a stable id from the event.
pub fn unsubscribed(
    account: &AccountId,
    recipient: &str,
    message_id: Option<&MessageId>,
    id: &str,
    at: Timestamp,
) -> RecipientSuppressed {
    RecipientSuppressed {
        account: account.clone(),
        recipient: normalize(recipient),
        reason: SuppressionReason::Unsubscribe,
        message_id: message_id.cloned(),
        detail: "the recipient unsubscribed".into(),
        expires_at: None,
        id: format!("unsubscribe-{id}"),
        suppressed_at: at,
    }
}

/// Whether writing `new` would strengthen (or create) the entry in force at `now`.
pub fn strengthens(current: Option<&Suppression>, new: &RecipientSuppressed, now: Timestamp) -> bool {
    match current {
        Some(c) if c.active(now) => match (c.expires_at, new.expires_at) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(old), Some(new)) => new > old,
        },
        _ => true,
    }
}

fn describe(e: &BounceReceived) -> String {
    let code = e.code.map(|c| format!("{c} ")).unwrap_or_default();
    let enhanced = e.enhanced.as_deref().map(|x| format!("{x} ")).unwrap_or_default();
    let text: String = e.diagnostic.chars().take(300).collect();
    format!("{} bounce ({}): {code}{enhanced}{text}", e.bounce_type.as_str(), e.class.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_schemas::BounceSource;

    fn bounce(id: &str, class: BounceClass, t: BounceType, action: BounceAction, at: i64) -> BounceReceived {
        BounceReceived {
            account: AccountId("a".into()),
            message_id: MessageId(format!("m-{id}")),
            recipient: "Bob@Example.org".into(),
            recipient_domain: "example.org".into(),
            bounce_type: t,
            class,
            action,
            code: Some(550),
            enhanced: Some("5.1.1".into()),
            diagnostic: "user unknown".into(),
            remote_mta: None,
            reporting_mta: None,
            source: BounceSource::Dsn,
            id: id.into(),
            received_at: Timestamp(at),
        }
    }

    #[test]
    fn hard_bounces_suppress_delays_do_not() {
        let p = SuppressionPolicy::default();
        let s = p
            .on_bounce(&bounce("1", BounceClass::InvalidRecipient, BounceType::Permanent, BounceAction::Failed, 5))
            .unwrap();
        assert_eq!(
            (s.recipient.as_str(), s.reason, s.expires_at),
            ("bob@example.org", SuppressionReason::HardBounce, None)
        );
        assert!(p
            .on_bounce(&bounce("2", BounceClass::Quota, BounceType::Transient, BounceAction::Failed, 5))
            .is_none());
        assert!(p
            .on_bounce(&bounce("3", BounceClass::InvalidRecipient, BounceType::Transient, BounceAction::Delayed, 5))
            .is_none());
    }

    #[test]
    fn three_soft_failures_in_the_window_suppress_for_a_while() {
        let p = SuppressionPolicy::default();
        let day = 86_400_000;
        let mut history = vec![];
        for (i, at) in [0, 8 * day, 9 * day, 10 * day].iter().enumerate() {
            let b = bounce(&i.to_string(), BounceClass::Quota, BounceType::Transient, BounceAction::Failed, *at);
            let SoftStep::Count { history: h, suppress } = p.soft_step(&b, &history) else { panic!() };
            // The first failure left the window before the fourth.
            assert_eq!(suppress, i == 3, "failure {i}: {h:?}");
            history = h;
            if suppress {
                let s = p.soft_suppression(&b, history.len());
                assert_eq!(s.expires_at, Some(Timestamp(10 * day + 30 * day)));
            }
        }
        // The same bounce again (a replay) does not count twice.
        let b = bounce("3", BounceClass::Quota, BounceType::Transient, BounceAction::Failed, 10 * day);
        let SoftStep::Count { history: again, .. } = p.soft_step(&b, &history) else { panic!() };
        assert_eq!(again.len(), history.len());
        let policy_block = bounce("9", BounceClass::Policy, BounceType::Transient, BounceAction::Failed, 0);
        assert_eq!(p.soft_step(&policy_block, &[]), SoftStep::Ignore, "the sender's problem never counts");
    }

    #[test]
    fn not_spam_never_suppresses_and_nothing_weakens() {
        let p = SuppressionPolicy::default();
        let mut c = ComplaintReceived {
            account: AccountId("a".into()),
            message_id: MessageId("m".into()),
            recipient: "x@y.test".into(),
            recipient_domain: "y.test".into(),
            feedback_type: "not-spam".into(),
            user_agent: None,
            reporting_mta: None,
            arrival_date: None,
            id: "c".into(),
            received_at: Timestamp(1),
        };
        assert!(p.on_complaint(&c).is_none());
        c.feedback_type = "abuse".into();
        let s = p.on_complaint(&c).unwrap();
        let permanent = crate::feedback::rows::suppression(&s);
        let soft =
            p.soft_suppression(&bounce("1", BounceClass::Quota, BounceType::Transient, BounceAction::Failed, 5), 3);
        assert!(!strengthens(Some(&permanent), &soft, Timestamp(10)));
        assert!(strengthens(Some(&crate::feedback::rows::suppression(&soft)), &s, Timestamp(10)));
        assert!(strengthens(None, &soft, Timestamp(10)));
        let mut expired = crate::feedback::rows::suppression(&soft);
        expired.expires_at = Some(Timestamp(0));
        assert!(strengthens(Some(&expired), &soft, Timestamp(10)));
    }
}

//! Feedback events as projection rows: what `GET /v1/messages/{id}` shows (and counts),
//! the bounce list, and suppression-list entries. Pure.

use crate::projector::rfc3339;
use crate::store::feedback::{BounceRow, Suppression};
use crate::store::{feedback_seq, Kind, Projected};
use herald_schemas::{BounceAction, BounceReceived, BounceType, FeedbackEvent, RecipientSuppressed};
use serde_json::json;

/// The message-view row of a feedback event; `None` for list changes made by hand.
pub fn message_row(event: &FeedbackEvent) -> Option<Projected> {
    match event {
        FeedbackEvent::BounceReceived(e) => {
            let kind = match (e.action, e.bounce_type) {
                (BounceAction::Delayed, _) => Kind::Info,
                (BounceAction::Failed, BounceType::Permanent) => Kind::Bounced,
                (BounceAction::Failed, _) => Kind::SoftBounced,
            };
            Some(Projected {
                account: e.account.clone(),
                message_id: e.message_id.clone(),
                seq: feedback_seq(&e.id),
                recipient: e.recipient.clone(),
                kind,
                at: e.received_at,
                detail: json!({
                    "type": "bounce.received",
                    "at": rfc3339(e.received_at),
                    "bounce_type": e.bounce_type,
                    "class": e.class,
                    "action": e.action,
                    "source": e.source,
                    "code": e.code,
                    "enhanced": e.enhanced,
                    "diagnostic": e.diagnostic,
                    "remote_mta": e.remote_mta,
                    "reporting_mta": e.reporting_mta,
                }),
            })
        }
        FeedbackEvent::ComplaintReceived(e) => Some(Projected {
            account: e.account.clone(),
            message_id: e.message_id.clone(),
            seq: feedback_seq(&e.id),
            recipient: e.recipient.clone(),
            kind: if e.feedback_type == "not-spam" { Kind::Info } else { Kind::Complained },
            at: e.received_at,
            detail: json!({
                "type": "complaint.received",
                "at": rfc3339(e.received_at),
                "feedback_type": e.feedback_type,
                "user_agent": e.user_agent,
                "reporting_mta": e.reporting_mta,
                "arrival_date": e.arrival_date.map(rfc3339),
            }),
        }),
        FeedbackEvent::MessageSuppressed(e) => Some(Projected {
            account: e.account.clone(),
            message_id: e.message_id.clone(),
            seq: feedback_seq(&format!("suppressed-{}", e.attempt)),
            recipient: e.recipient.clone(),
            kind: Kind::Suppressed,
            at: e.suppressed_at,
            detail: json!({
                "type": "message.suppressed",
                "at": rfc3339(e.suppressed_at),
                "reason": e.reason,
                "attempt": e.attempt,
            }),
        }),
        FeedbackEvent::RecipientSuppressed(e) => e.message_id.as_ref().map(|id| Projected {
            account: e.account.clone(),
            message_id: id.clone(),
            seq: feedback_seq(&e.id),
            recipient: e.recipient.clone(),
            kind: Kind::Info,
            at: e.suppressed_at,
            detail: json!({
                "type": "recipient.suppressed",
                "at": rfc3339(e.suppressed_at),
                "reason": e.reason,
                "detail": e.detail,
                "expires_at": e.expires_at.map(rfc3339),
            }),
        }),
        FeedbackEvent::SuppressionLifted(_) => None,
    }
}

/// The bounce-list row of a bounce.
pub fn bounce_row(e: &BounceReceived) -> BounceRow {
    BounceRow {
        account: e.account.clone(),
        id: e.id.clone(),
        message_id: e.message_id.clone(),
        recipient: e.recipient.clone(),
        bounce_type: e.bounce_type,
        class: e.class,
        action: e.action,
        code: e.code,
        enhanced: e.enhanced.clone(),
        diagnostic: e.diagnostic.clone(),
        remote_mta: e.remote_mta.clone(),
        reporting_mta: e.reporting_mta.clone(),
        source: e.source,
        at: e.received_at,
    }
}

/// The list entry a suppression event puts.
pub fn suppression(e: &RecipientSuppressed) -> Suppression {
    Suppression {
        account: e.account.clone(),
        address: e.recipient.clone(),
        reason: e.reason,
        message_id: e.message_id.clone(),
        detail: e.detail.clone(),
        expires_at: e.expires_at,
        created_at: e.suppressed_at,
        id: e.id.clone(),
    }
}

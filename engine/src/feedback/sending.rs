//! What the delivery worker asks and says about feedback, in two calls it makes around an
//! attempt (kept here so the worker loop stays small and portable):
//!
//! - [`Sending::suppressed`] before an attempt: a suppressed recipient gets a
//!   `MessageSuppressed` instead of an SMTP transaction;
//! - [`Sending::refusal`] after it: a refusal (a 5xx, the local permanent failures, giving
//!   up after retries, and a 4xx that is not network trouble) becomes a classified
//!   `BounceReceived` with `source = sync`.

use super::classify::Classifier;
use super::index::SuppressionIndex;
use crate::log::{Record, Topics};
use crate::routing::Router;
use crate::store::feedback::FeedbackStore;
use herald_schemas::{
    BounceAction, BounceReceived, BounceSource, FeedbackEvent, MessageAccepted, MessageSuppressed, Outcome, SmtpReply,
    SuppressionReason, Timestamp,
};
use std::sync::Arc;

/// The worker's view of feedback.
pub struct Sending {
    pub index: Arc<SuppressionIndex>,
    pub classifier: Arc<Classifier>,
    pub topics: Topics,
    pub router: Router,
    /// Where the reason of a suppression is read (only when one applies).
    pub store: Arc<dyn FeedbackStore>,
}

impl Sending {
    /// `Some` (the `MessageSuppressed` record) when `msg` must not be attempted.
    pub async fn suppressed(&self, msg: &MessageAccepted, attempt: u32) -> Option<Record> {
        if !self.index.is_suppressed(&msg.account, &msg.recipient, Timestamp::now()) {
            return None;
        }
        metrics::counter!("herald_delivery_suppressed_total").increment(1);
        tracing::debug!(message_id = %msg.message_id, "recipient suppressed: no attempt");
        // The index knows that, not why: the list says (manual if it cannot be read now).
        let address = super::policy::normalize(&msg.recipient);
        let reason = match self.store.suppression(&msg.account, &address).await {
            Ok(Some(s)) => s.reason,
            _ => SuppressionReason::Manual,
        };
        let event = FeedbackEvent::MessageSuppressed(MessageSuppressed {
            account: msg.account.clone(),
            message_id: msg.message_id.clone(),
            recipient: msg.recipient.clone(),
            recipient_domain: msg.recipient_domain.clone(),
            reason,
            attempt,
            suppressed_at: Timestamp::now(),
        });
        Some(super::record(&self.topics, &self.router, event))
    }

    /// The `BounceReceived` of attempt `attempt` of `msg`, if its outcome was a refusal.
    /// `mx_host`: the server that answered.
    pub fn refusal(
        &self,
        msg: &MessageAccepted,
        attempt: u32,
        outcome: Outcome,
        reply: &SmtpReply,
        mx_host: Option<&str>,
    ) -> Option<Record> {
        let action = match outcome {
            Outcome::Delivered => return None,
            Outcome::Failed => BounceAction::Failed,
            // Network trouble (no answer, DNS, a lost connection) is not a refusal.
            Outcome::Deferred if reply.enhanced.as_deref().is_some_and(|e| e.starts_with("4.4.")) => return None,
            Outcome::Deferred => BounceAction::Delayed,
        };
        let c = self.classifier.classify(
            Some(reply.code),
            reply.enhanced.as_deref(),
            &reply.text,
            action == BounceAction::Delayed,
        );
        metrics::counter!("herald_feedback_bounces_total", "source" => "sync", "type" => c.bounce_type.as_str(), "class" => c.class.as_str())
            .increment(1);
        let event = FeedbackEvent::BounceReceived(BounceReceived {
            account: msg.account.clone(),
            message_id: msg.message_id.clone(),
            recipient: msg.recipient.clone(),
            recipient_domain: msg.recipient_domain.clone(),
            bounce_type: c.bounce_type,
            class: c.class,
            action,
            code: Some(reply.code),
            enhanced: reply.enhanced.clone(),
            diagnostic: reply.text.clone(),
            remote_mta: mx_host.map(str::to_owned),
            reporting_mta: None,
            source: BounceSource::Sync,
            id: format!("sync-{attempt}"),
            received_at: Timestamp::now(),
        });
        Some(super::record(&self.topics, &self.router, event))
    }
}

//! Webhook events (`Event::Webhook`, index 10): an account's endpoints (created, updated,
//! secret rotated, disabled, deleted) and what happened to each delivery of an event to an
//! endpoint (attempted, scheduled for a retry, dropped). Appended to `<prefix>.webhooks`
//! (endpoint changes and delivery outcomes, keyed by the endpoint id) and to
//! `<prefix>.webhooks.retry.<tier>` (deliveries waiting for their next attempt).
//!
//! Endpoint state is the fold of its events (`herald_engine::webhooks::endpoints`).

use crate::{AccountId, Timestamp};
use bincode::{Decode, Encode};

/// An account registered an endpoint. `secret` is the signing key (`whsec_` + base64 of
/// 24 random bytes), shown to the account once.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct EndpointCreated {
    pub account: AccountId,
    /// `ep_` + 26 lower-case characters, unique.
    pub endpoint_id: String,
    pub url: String,
    /// Event types delivered (`message.delivered`, …); empty: every type.
    pub events: Vec<String>,
    pub description: String,
    pub secret: String,
    pub created_at: Timestamp,
}

/// Settings of an endpoint changed; `None` keeps the current value.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct EndpointUpdated {
    pub account: AccountId,
    pub endpoint_id: String,
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    /// `Some(true)` re-enables an endpoint disabled by a 410 or by the account.
    pub enabled: Option<bool>,
    pub updated_at: Timestamp,
}

/// A new signing secret; the previous one also signs until `previous_until`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SecretRotated {
    pub account: AccountId,
    pub endpoint_id: String,
    pub secret: String,
    pub previous_until: Timestamp,
    pub rotated_at: Timestamp,
}

/// The endpoint stopped receiving: it answered 410 Gone.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct EndpointDisabled {
    pub account: AccountId,
    pub endpoint_id: String,
    pub reason: String,
    pub disabled_at: Timestamp,
}

/// The account removed the endpoint; deliveries waiting for it are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct EndpointDeleted {
    pub account: AccountId,
    pub endpoint_id: String,
    pub deleted_at: Timestamp,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum WebhookOutcome {
    /// The endpoint answered 2xx.
    Delivered,
    /// It failed; another attempt is scheduled.
    Retrying,
    /// It failed for the last time (the schedule ran out, the endpoint answered 410, was
    /// disabled or deleted): the event is not delivered to this endpoint.
    Dropped,
}

/// One attempt to deliver an event to an endpoint (or the decision not to try again).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct WebhookAttempted {
    pub account: AccountId,
    pub endpoint_id: String,
    /// The `webhook-id` header: stable for every attempt of one event to one endpoint.
    pub webhook_id: String,
    pub event_type: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// HTTP status, when the endpoint answered.
    pub status: Option<u16>,
    /// Why it failed (connection refused, timeout, refused target, the status line).
    pub error: Option<String>,
    pub outcome: WebhookOutcome,
    pub duration_ms: u64,
    pub attempted_at: Timestamp,
}

/// A delivery waits for its next attempt on a retry tier. Carries the body so that any node
/// can make the attempt after any restart.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct WebhookScheduled {
    pub account: AccountId,
    pub endpoint_id: String,
    pub webhook_id: String,
    pub event_type: String,
    /// The JSON body, exactly as signed and sent at every attempt.
    pub payload: Vec<u8>,
    /// The number the next attempt will have.
    pub attempt: u32,
    pub not_before: Timestamp,
    /// When the event happened (for the delivery latency).
    pub occurred_at: Timestamp,
}

/// Every webhook event.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum WebhookEvent {
    EndpointCreated(EndpointCreated),
    EndpointUpdated(EndpointUpdated),
    SecretRotated(SecretRotated),
    EndpointDisabled(EndpointDisabled),
    EndpointDeleted(EndpointDeleted),
    Attempted(WebhookAttempted),
    Scheduled(WebhookScheduled),
}

impl WebhookEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            WebhookEvent::EndpointCreated(_) => "webhook.endpoint_created",
            WebhookEvent::EndpointUpdated(_) => "webhook.endpoint_updated",
            WebhookEvent::SecretRotated(_) => "webhook.secret_rotated",
            WebhookEvent::EndpointDisabled(_) => "webhook.endpoint_disabled",
            WebhookEvent::EndpointDeleted(_) => "webhook.endpoint_deleted",
            WebhookEvent::Attempted(_) => "webhook.attempted",
            WebhookEvent::Scheduled(_) => "webhook.scheduled",
        }
    }

    pub fn account(&self) -> &AccountId {
        match self {
            WebhookEvent::EndpointCreated(e) => &e.account,
            WebhookEvent::EndpointUpdated(e) => &e.account,
            WebhookEvent::SecretRotated(e) => &e.account,
            WebhookEvent::EndpointDisabled(e) => &e.account,
            WebhookEvent::EndpointDeleted(e) => &e.account,
            WebhookEvent::Attempted(e) => &e.account,
            WebhookEvent::Scheduled(e) => &e.account,
        }
    }

    pub fn endpoint_id(&self) -> &str {
        match self {
            WebhookEvent::EndpointCreated(e) => &e.endpoint_id,
            WebhookEvent::EndpointUpdated(e) => &e.endpoint_id,
            WebhookEvent::SecretRotated(e) => &e.endpoint_id,
            WebhookEvent::EndpointDisabled(e) => &e.endpoint_id,
            WebhookEvent::EndpointDeleted(e) => &e.endpoint_id,
            WebhookEvent::Attempted(e) => &e.endpoint_id,
            WebhookEvent::Scheduled(e) => &e.endpoint_id,
        }
    }
}

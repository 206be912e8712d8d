//! The events. Names are past tense and stable; see [`Event::event_type`].
//!
//! Adding a field is a new schema version: add the new struct, keep the old one in
//! `codec::v1`-style modules and upcast it in [`crate::codec`].

use crate::{AccountId, DomainEvent, FeedbackEvent, MessageId, Timestamp};
use bincode::{Decode, Encode};
use serde::Serialize;

/// Per-message options chosen at submission. Stored now; rewriting stages act on them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct SendOptions {
    pub inline_css: bool,
    pub click_tracking: bool,
    pub bounce_tracking: bool,
    pub opens_tracking: bool,
}

/// Where the MIME body lives. See `docs/adr/0002-message-bodies-in-the-log.md`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Body {
    /// The full RFC 5322 message, carried in the event itself.
    Inline(Vec<u8>),
}

impl Body {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Body::Inline(b) => b,
        }
    }
}

/// A message to one recipient was durably accepted for delivery.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MessageAccepted {
    pub account: AccountId,
    pub message_id: MessageId,
    /// The envelope sender (RFC 5321 MAIL FROM).
    pub envelope_sender: String,
    pub recipient: String,
    /// Lower-case ASCII domain of `recipient`: the partition key.
    pub recipient_domain: String,
    pub options: SendOptions,
    pub body: Body,
    pub accepted_at: Timestamp,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Delivered,
    /// Temporary failure (4xx or connection trouble); another attempt is scheduled.
    Deferred,
    /// Permanent failure (5xx, null MX, or retries exhausted).
    Failed,
}

/// The SMTP reply that decided an attempt, or a synthetic one for local errors.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct SmtpReply {
    pub code: u16,
    /// RFC 3463 enhanced status code such as `4.7.1`, when the server sent one.
    pub enhanced: Option<String>,
    pub text: String,
}

/// One attempt to deliver a message to its recipient's MX.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct DeliveryAttempted {
    pub account: AccountId,
    pub message_id: MessageId,
    pub recipient: String,
    pub recipient_domain: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub mx_host: Option<String>,
    pub mx_ip: Option<String>,
    pub tls: bool,
    pub reply: SmtpReply,
    pub outcome: Outcome,
    /// Set when `outcome` is `Deferred`.
    pub next_attempt_at: Option<Timestamp>,
    pub duration_ms: u64,
    pub attempted_at: Timestamp,
    /// `d=`/`s=` of the DKIM signature added, or why none was.
    pub dkim: String,
}

/// A deferred message waits for its next attempt. Carries the message so that a worker
/// can retry it from the retry topic alone, on any node, after any restart.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DeliveryScheduled {
    /// The number the next attempt will have.
    pub attempt: u32,
    pub not_before: Timestamp,
    pub message: MessageAccepted,
}

/// The owner of the reserved placeholders, which are never appended.
static NOBODY: AccountId = AccountId(String::new());

/// Every event Herald appends to its log. New variants go at the end: the variant index is
/// part of the encoding, and shipped frames must keep decoding.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Event {
    MessageAccepted(MessageAccepted),
    DeliveryAttempted(DeliveryAttempted),
    DeliveryScheduled(DeliveryScheduled),
    /// Sender domains (`<prefix>.domains`), see [`crate::domain`].
    Domain(DomainEvent),
    /// Index 4, reserved for message bodies (`Body`), added in parallel; the placeholder keeps
    /// [`Event::Feedback`] at its assigned index 7 until the real variant replaces it.
    Reserved4,
    /// Index 5, reserved for idempotency keys (`Idempotency`), added in parallel.
    Reserved5,
    /// Index 6, reserved for engagement events (`Engagement`), added in parallel.
    Reserved6,
    /// Bounces, complaints and the suppression list (`<prefix>.feedback`), see
    /// [`crate::feedback`]. Index 7.
    Feedback(FeedbackEvent),
}

impl Event {
    /// Stable name, never reused for another shape.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::MessageAccepted(_) => "message.accepted",
            Event::DeliveryAttempted(_) => "delivery.attempted",
            Event::DeliveryScheduled(_) => "delivery.scheduled",
            Event::Domain(e) => e.event_type(),
            Event::Reserved4 | Event::Reserved5 | Event::Reserved6 => "reserved",
            Event::Feedback(e) => e.event_type(),
        }
    }

    /// Version of this event's shape within the current schema.
    pub fn event_version(&self) -> u16 {
        1
    }

    pub fn account(&self) -> &AccountId {
        match self {
            Event::MessageAccepted(e) => &e.account,
            Event::DeliveryAttempted(e) => &e.account,
            Event::DeliveryScheduled(e) => &e.message.account,
            Event::Domain(e) => e.account(),
            Event::Feedback(e) => e.account(),
            // The placeholders are never appended; they belong to nobody.
            Event::Reserved4 | Event::Reserved5 | Event::Reserved6 => &NOBODY,
        }
    }

    /// The message an event is about; `None` for sender-domain events.
    pub fn message_id(&self) -> Option<&MessageId> {
        match self {
            Event::MessageAccepted(e) => Some(&e.message_id),
            Event::DeliveryAttempted(e) => Some(&e.message_id),
            Event::DeliveryScheduled(e) => Some(&e.message.message_id),
            Event::Domain(_) | Event::Reserved4 | Event::Reserved5 | Event::Reserved6 => None,
            Event::Feedback(e) => e.message_id(),
        }
    }
}

//! The events. Names are past tense and stable; see [`Event::event_type`].
//!
//! Adding a field is a new schema version: add the new struct, keep the old one in
//! [`crate::v1`]-style modules and upcast it in [`crate::codec`].

use crate::{
    AccountEvent, AccountId, DomainEvent, EngagementEvent, FeedbackEvent, MessageId, ShapingEvent, Timestamp,
    WebhookEvent,
};
use bincode::{Decode, Encode};
use serde::Serialize;

/// Per-message options chosen at submission; the send-time rewriting acts on them
/// (`engine/src/rewrite/`). Schema version 2 added `list_unsubscribe`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct SendOptions {
    /// Inline the `<style>` rules of HTML parts into `style` attributes.
    pub inline_css: bool,
    /// Rewrite links to the tracking domain and record clicks.
    pub click_tracking: bool,
    pub bounce_tracking: bool,
    /// Add an open pixel to HTML parts and record opens.
    pub opens_tracking: bool,
    /// Add `List-Unsubscribe` and `List-Unsubscribe-Post` (RFC 2369, RFC 8058).
    pub list_unsubscribe: bool,
}

impl SendOptions {
    /// Whether any option needs the message rewritten at send time.
    pub fn rewrites(&self) -> bool {
        self.inline_css || self.click_tracking || self.opens_tracking || self.list_unsubscribe
    }
}

/// Where the MIME body lives. See `docs/adr/0007-bodies-stored-once.md`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Body {
    /// The full RFC 5322 message, carried in the event itself (single recipients and small
    /// fan-outs).
    Inline(Vec<u8>),
    /// The message is a [`BodyStored`] record on `<prefix>.bodies`, stored once for every
    /// recipient of the request.
    Stored(BodyRef),
}

impl Body {
    /// The bytes, when they travel in the event.
    pub fn inline(&self) -> Option<&[u8]> {
        match self {
            Body::Inline(b) => Some(b),
            Body::Stored(_) => None,
        }
    }

    /// Size of the message in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Body::Inline(b) => b.len() as u64,
            Body::Stored(r) => r.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a stored body is: the exact record on `<prefix>.bodies`, and what it must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct BodyRef {
    pub partition: u32,
    pub offset: u64,
    /// Length of the message in bytes.
    pub len: u64,
    /// SHA-256 of the message: a reader checks the record it finds against it.
    pub sha256: [u8; 32],
}

/// A message body, stored once on `<prefix>.bodies` and referred to by [`BodyRef`] from the
/// per-recipient events. Appended (and durable) before any event that refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BodyStored {
    pub account: AccountId,
    /// SHA-256 of `data`.
    pub sha256: [u8; 32],
    /// The full RFC 5322 message, CRLF line endings.
    pub data: Vec<u8>,
    pub stored_at: Timestamp,
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

/// An index of [`Event`] assigned to another change that is not in this build yet. It has
/// no values: a frame using the index fails to decode (a poison record), and the variant is
/// replaced by the real one when both changes meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {}

impl bincode::Encode for Reserved {
    fn encode<E: bincode::enc::Encoder>(&self, _: &mut E) -> Result<(), bincode::error::EncodeError> {
        match *self {}
    }
}

impl<C> bincode::Decode<C> for Reserved {
    fn decode<D: bincode::de::Decoder<Context = C>>(_: &mut D) -> Result<Self, bincode::error::DecodeError> {
        Err(bincode::error::DecodeError::Other("event index reserved for a change not in this build"))
    }
}

bincode::impl_borrow_decode!(Reserved);

/// Every event Herald appends to its log. New variants go at the end: the variant index is
/// part of the encoding, and shipped frames must keep decoding.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Event {
    MessageAccepted(MessageAccepted),
    DeliveryAttempted(DeliveryAttempted),
    DeliveryScheduled(DeliveryScheduled),
    /// Sender domains (`<prefix>.domains`), see [`crate::domain`].
    Domain(DomainEvent),
    /// A message body stored once (`<prefix>.bodies`).
    Body(BodyStored),
    /// Index 5: reserved (idempotency records live in the projection store, not the log).
    Reserved5(Reserved),
    /// Opens, clicks and unsubscriptions (`<prefix>.engagement`), see [`crate::engagement`].
    Engagement(EngagementEvent),
    /// Bounces, complaints and the suppression list (`<prefix>.feedback`), see
    /// [`crate::feedback`]. Index 7.
    Feedback(FeedbackEvent),
    /// Traffic shaping (`<prefix>.shaping`), see [`crate::shaping`]. Index 8.
    Shaping(ShapingEvent),
    /// Accounts, API keys and SMTP users (`<prefix>.accounts`), see [`crate::account`].
    /// Index 9.
    Account(AccountEvent),
    /// Webhook endpoints and deliveries (`<prefix>.webhooks`, `<prefix>.webhooks.retry.<tier>`),
    /// see [`crate::webhook`]. Index 10.
    Webhook(WebhookEvent),
}

/// The owner of events that belong to no account (traffic shaping).
static NOBODY: AccountId = AccountId(String::new());

impl Event {
    /// Stable name, never reused for another shape.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::MessageAccepted(_) => "message.accepted",
            Event::DeliveryAttempted(_) => "delivery.attempted",
            Event::DeliveryScheduled(_) => "delivery.scheduled",
            Event::Domain(e) => e.event_type(),
            Event::Body(_) => "body.stored",
            Event::Engagement(e) => e.event_type(),
            Event::Feedback(e) => e.event_type(),
            Event::Shaping(e) => e.event_type(),
            Event::Account(e) => e.event_type(),
            Event::Webhook(e) => e.event_type(),
            Event::Reserved5(r) => match *r {},
        }
    }

    /// Version of this event's shape: 2 for those that carry [`SendOptions`] (which gained
    /// `list_unsubscribe` in schema version 2), 1 for the others.
    pub fn event_version(&self) -> u16 {
        match self {
            Event::MessageAccepted(_) | Event::DeliveryScheduled(_) => 2,
            _ => 1,
        }
    }

    pub fn account(&self) -> &AccountId {
        match self {
            Event::MessageAccepted(e) => &e.account,
            Event::DeliveryAttempted(e) => &e.account,
            Event::DeliveryScheduled(e) => &e.message.account,
            Event::Domain(e) => e.account(),
            Event::Body(e) => &e.account,
            Event::Engagement(e) => e.account(),
            Event::Feedback(e) => e.account(),
            Event::Shaping(_) => &NOBODY,
            Event::Account(e) => e.account(),
            Event::Webhook(e) => e.account(),
            Event::Reserved5(r) => match *r {},
        }
    }

    /// The message an event is about; `None` for sender-domain, shaping and account events.
    pub fn message_id(&self) -> Option<&MessageId> {
        match self {
            Event::MessageAccepted(e) => Some(&e.message_id),
            Event::DeliveryAttempted(e) => Some(&e.message_id),
            Event::DeliveryScheduled(e) => Some(&e.message.message_id),
            Event::Engagement(e) => Some(e.message_id()),
            Event::Feedback(e) => e.message_id(),
            Event::Domain(_) | Event::Body(_) | Event::Shaping(_) | Event::Account(_) | Event::Webhook(_) => None,
            Event::Reserved5(r) => match *r {},
        }
    }
}

//! The events. Names are past tense and stable; see [`Event::event_type`].
//!
//! Adding a field is a new schema version: add the new struct, keep the old one in
//! `codec::v1`-style modules and upcast it in [`crate::codec`].

use crate::{AccountEvent, AccountId, DomainEvent, MessageId, Timestamp};
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

/// Every event Herald appends to its log. New variants go at the end: the variant index is
/// part of the encoding, and shipped frames must keep decoding.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Event {
    MessageAccepted(MessageAccepted),
    DeliveryAttempted(DeliveryAttempted),
    DeliveryScheduled(DeliveryScheduled),
    /// Sender domains (`<prefix>.domains`), see [`crate::domain`].
    Domain(DomainEvent),
    /// Index 4: message bodies (another change; replaced when it lands).
    Reserved4(Reserved),
    /// Index 5: idempotency records (another change; replaced when it lands).
    Reserved5(Reserved),
    /// Index 6: engagement (another change; replaced when it lands).
    Reserved6(Reserved),
    /// Index 7: feedback (another change; replaced when it lands).
    Reserved7(Reserved),
    /// Index 8: reserved.
    Reserved8(Reserved),
    /// Accounts, API keys and SMTP users (`<prefix>.accounts`), see [`crate::account`].
    /// Index 9.
    Account(AccountEvent),
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

impl Event {
    /// Stable name, never reused for another shape.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::MessageAccepted(_) => "message.accepted",
            Event::DeliveryAttempted(_) => "delivery.attempted",
            Event::DeliveryScheduled(_) => "delivery.scheduled",
            Event::Domain(e) => e.event_type(),
            Event::Account(e) => e.event_type(),
            Event::Reserved4(r)
            | Event::Reserved5(r)
            | Event::Reserved6(r)
            | Event::Reserved7(r)
            | Event::Reserved8(r) => match *r {},
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
            Event::Account(e) => e.account(),
            Event::Reserved4(r)
            | Event::Reserved5(r)
            | Event::Reserved6(r)
            | Event::Reserved7(r)
            | Event::Reserved8(r) => match *r {},
        }
    }

    /// The message an event is about; `None` for sender-domain and account events.
    pub fn message_id(&self) -> Option<&MessageId> {
        match self {
            Event::MessageAccepted(e) => Some(&e.message_id),
            Event::DeliveryAttempted(e) => Some(&e.message_id),
            Event::DeliveryScheduled(e) => Some(&e.message.message_id),
            _ => None,
        }
    }
}

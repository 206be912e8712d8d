//! Schema version 1: the shapes frames written with version 1 decode into, and their upcast
//! to the current types. Version 2 added `SendOptions::list_unsubscribe`; everything else a
//! version-1 frame can hold is unchanged and decodes into the current types directly.
//!
//! These types are frozen: never edit them. A new shape change adds a `v2` module the same way.

use crate::{event, AccountId, Body, DeliveryAttempted, DomainEvent, MessageId, Timestamp};
use bincode::{Decode, Encode};

/// `SendOptions` before `list_unsubscribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct SendOptions {
    pub inline_css: bool,
    pub click_tracking: bool,
    pub bounce_tracking: bool,
    pub opens_tracking: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MessageAccepted {
    pub account: AccountId,
    pub message_id: MessageId,
    pub envelope_sender: String,
    pub recipient: String,
    pub recipient_domain: String,
    pub options: SendOptions,
    pub body: Body,
    pub accepted_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DeliveryScheduled {
    pub attempt: u32,
    pub not_before: Timestamp,
    pub message: MessageAccepted,
}

/// The events of version 1, in their version-1 order.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Event {
    MessageAccepted(MessageAccepted),
    DeliveryAttempted(DeliveryAttempted),
    DeliveryScheduled(DeliveryScheduled),
    Domain(DomainEvent),
}

impl From<SendOptions> for event::SendOptions {
    /// Messages accepted before version 2 never asked for `List-Unsubscribe`: `false` keeps
    /// what they were sent with when they are retried after an upgrade.
    fn from(o: SendOptions) -> Self {
        event::SendOptions {
            inline_css: o.inline_css,
            click_tracking: o.click_tracking,
            bounce_tracking: o.bounce_tracking,
            opens_tracking: o.opens_tracking,
            list_unsubscribe: false,
        }
    }
}

impl From<MessageAccepted> for event::MessageAccepted {
    fn from(m: MessageAccepted) -> Self {
        event::MessageAccepted {
            account: m.account,
            message_id: m.message_id,
            envelope_sender: m.envelope_sender,
            recipient: m.recipient,
            recipient_domain: m.recipient_domain,
            options: m.options.into(),
            body: m.body,
            accepted_at: m.accepted_at,
        }
    }
}

impl From<Event> for event::Event {
    fn from(e: Event) -> Self {
        match e {
            Event::MessageAccepted(m) => event::Event::MessageAccepted(m.into()),
            Event::DeliveryAttempted(a) => event::Event::DeliveryAttempted(a),
            Event::DeliveryScheduled(s) => event::Event::DeliveryScheduled(event::DeliveryScheduled {
                attempt: s.attempt,
                not_before: s.not_before,
                message: s.message.into(),
            }),
            Event::Domain(d) => event::Event::Domain(d),
        }
    }
}

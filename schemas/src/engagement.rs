//! Engagement events: what recipients (and the machines in front of them) did with a
//! delivered message. Appended by the tracking server to `<prefix>.engagement`, keyed by the
//! recipient domain; projected into the message's events and the account's counters.
//!
//! Machine traffic is recorded, never dropped: an event says whether it looks automated and
//! why ([`MachineReason`]); unique counts leave such events out.

use crate::{AccountId, MessageId, Timestamp};
use bincode::{Decode, Encode};
use serde::Serialize;

/// Why an open or a click is taken for a machine rather than the recipient. New reasons go at
/// the end (the index is part of the encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineReason {
    /// Apple Mail Privacy Protection fetches every image when the message arrives.
    AppleMpp,
    /// Gmail's image proxy (`GoogleImageProxy`) fetches images on the reader's behalf.
    GoogleImageProxy,
    /// Another mailbox provider's image proxy (Yahoo, Outlook.com, …).
    ImageProxy,
    /// A `HEAD` request: link checkers and previews, never a person.
    HeadRequest,
    /// A known security scanner, link previewer or HTTP library (by its user agent).
    Scanner,
    /// A click within seconds of delivery: a gateway following every link on arrival.
    TooSoon,
}

impl MachineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineReason::AppleMpp => "apple_mpp",
            MachineReason::GoogleImageProxy => "google_image_proxy",
            MachineReason::ImageProxy => "image_proxy",
            MachineReason::HeadRequest => "head_request",
            MachineReason::Scanner => "scanner",
            MachineReason::TooSoon => "too_soon",
        }
    }
}

/// Who made a tracking request, as the tracking server saw it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct Client {
    /// The `User-Agent` header (truncated to 512 bytes; empty when absent).
    pub user_agent: String,
    /// The client's address (the peer, or the first `X-Forwarded-For` hop from a trusted proxy).
    pub ip: String,
    /// `Some` when the request looks automated.
    pub machine: Option<MachineReason>,
}

/// The open pixel of a message was fetched.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MessageOpened {
    /// Unique per event (UUIDv7, 32 hex digits): the projection's de-duplication key.
    pub event_id: String,
    pub account: AccountId,
    pub message_id: MessageId,
    pub recipient: String,
    pub client: Client,
    pub opened_at: Timestamp,
}

/// A tracked link of a message was followed.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct LinkClicked {
    pub event_id: String,
    pub account: AccountId,
    pub message_id: MessageId,
    pub recipient: String,
    /// The author's URL, exactly as the redirect sent the client to it.
    pub url: String,
    /// Position of the link among the message's tracked links, from 0.
    pub link_index: u32,
    pub client: Client,
    pub clicked_at: Timestamp,
}

/// The recipient asked to receive no more mail from the account (RFC 8058 one-click POST,
/// or the button of the unsubscribe page).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct RecipientUnsubscribed {
    pub event_id: String,
    pub account: AccountId,
    pub message_id: MessageId,
    pub recipient: String,
    pub client: Client,
    pub unsubscribed_at: Timestamp,
}

/// Every engagement event (`Event::Engagement`).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum EngagementEvent {
    MessageOpened(MessageOpened),
    LinkClicked(LinkClicked),
    RecipientUnsubscribed(RecipientUnsubscribed),
}

impl EngagementEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            EngagementEvent::MessageOpened(_) => "message.opened",
            EngagementEvent::LinkClicked(_) => "link.clicked",
            EngagementEvent::RecipientUnsubscribed(_) => "recipient.unsubscribed",
        }
    }

    pub fn account(&self) -> &AccountId {
        match self {
            EngagementEvent::MessageOpened(e) => &e.account,
            EngagementEvent::LinkClicked(e) => &e.account,
            EngagementEvent::RecipientUnsubscribed(e) => &e.account,
        }
    }

    pub fn message_id(&self) -> &MessageId {
        match self {
            EngagementEvent::MessageOpened(e) => &e.message_id,
            EngagementEvent::LinkClicked(e) => &e.message_id,
            EngagementEvent::RecipientUnsubscribed(e) => &e.message_id,
        }
    }

    pub fn recipient(&self) -> &str {
        match self {
            EngagementEvent::MessageOpened(e) => &e.recipient,
            EngagementEvent::LinkClicked(e) => &e.recipient,
            EngagementEvent::RecipientUnsubscribed(e) => &e.recipient,
        }
    }

    pub fn event_id(&self) -> &str {
        match self {
            EngagementEvent::MessageOpened(e) => &e.event_id,
            EngagementEvent::LinkClicked(e) => &e.event_id,
            EngagementEvent::RecipientUnsubscribed(e) => &e.event_id,
        }
    }

    pub fn client(&self) -> &Client {
        match self {
            EngagementEvent::MessageOpened(e) => &e.client,
            EngagementEvent::LinkClicked(e) => &e.client,
            EngagementEvent::RecipientUnsubscribed(e) => &e.client,
        }
    }

    pub fn at(&self) -> Timestamp {
        match self {
            EngagementEvent::MessageOpened(e) => e.opened_at,
            EngagementEvent::LinkClicked(e) => e.clicked_at,
            EngagementEvent::RecipientUnsubscribed(e) => e.unsubscribed_at,
        }
    }
}

//! Feedback events: what Herald hears back about a message after (or instead of) sending
//! it, and the suppression list those facts feed. All are appended to the
//! `<prefix>.feedback` topic, on the partition of the recipient (the same recipient always
//! lands on the same partition, so its events are ordered), keyed by the recipient domain.
//!
//! - [`BounceReceived`]: a remote server refused the message, at once (`source = sync`,
//!   the reply to RCPT or DATA) or later in a delivery status notification (`source = dsn`);
//! - [`ComplaintReceived`]: an ARF report (RFC 5965) from a mailbox provider's feedback loop;
//! - [`RecipientSuppressed`] / [`SuppressionLifted`]: the account's suppression list changed;
//! - [`MessageSuppressed`]: a message was not sent because its recipient is suppressed.
//!
//! Every event has an `id`, stable for the same fact (a redelivered DSN or a repeated
//! worker chunk gets the same one), which the projections use to stay idempotent.

use crate::{AccountId, MessageId, Timestamp};
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Whether a bounce says the address itself is bad (`permanent`: suppress it), the message
/// could not get through this time (`transient`), or nobody can tell (`undetermined`).
/// The class decides, not the first digit of the reply (SES's bounce types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BounceType {
    Permanent,
    Transient,
    Undetermined,
}

impl BounceType {
    pub fn as_str(self) -> &'static str {
        match self {
            BounceType::Permanent => "permanent",
            BounceType::Transient => "transient",
            BounceType::Undetermined => "undetermined",
        }
    }
}

/// Why a message bounced (KumoMTA's bounce classes as the model). Serialized kebab-case:
/// `invalid-recipient`, `bad-domain`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BounceClass {
    /// The mailbox does not exist (5.1.1, "user unknown").
    InvalidRecipient,
    /// The recipient domain does not exist or accepts no mail (NXDOMAIN, null MX).
    BadDomain,
    /// The mailbox exists but is disabled, closed or expired.
    InactiveMailbox,
    /// The mailbox (or system) is full.
    Quota,
    /// Delivery time expired (retries exhausted).
    MessageExpired,
    /// The sending IP or domain is on a block list.
    SpamBlock,
    /// The message itself was judged spam or otherwise unacceptable.
    Content,
    /// A virus or a prohibited attachment.
    Virus,
    /// The receiver's local policy refused the message.
    Policy,
    /// SPF, DKIM or DMARC did not pass the receiver's requirements.
    Authentication,
    /// Sender reputation or rate limits (throttling).
    Reputation,
    /// The receiver refuses to relay.
    Relay,
    /// SMTP syntax, sequence or content-negotiation errors.
    Protocol,
    /// DNS trouble on the receiver's side.
    Dns,
    /// Mail routing trouble (loops, unroutable).
    Routing,
    /// No answer or a broken connection.
    Connection,
    /// The envelope sender was refused (its domain, its MX).
    InvalidSender,
    /// Too many recipients in one transaction or session: never the address's fault.
    TooManyRecipients,
    /// An out-of-office or other automatic reply (never a bounce; kept for classification).
    AutoReply,
    /// Nothing matched.
    Uncategorized,
}

impl BounceClass {
    pub const ALL: [BounceClass; 20] = [
        BounceClass::InvalidRecipient,
        BounceClass::BadDomain,
        BounceClass::InactiveMailbox,
        BounceClass::Quota,
        BounceClass::MessageExpired,
        BounceClass::SpamBlock,
        BounceClass::Content,
        BounceClass::Virus,
        BounceClass::Policy,
        BounceClass::Authentication,
        BounceClass::Reputation,
        BounceClass::Relay,
        BounceClass::Protocol,
        BounceClass::Dns,
        BounceClass::Routing,
        BounceClass::Connection,
        BounceClass::InvalidSender,
        BounceClass::TooManyRecipients,
        BounceClass::AutoReply,
        BounceClass::Uncategorized,
    ];

    /// The kebab-case name, as in the API and the rule file.
    pub fn as_str(self) -> &'static str {
        match self {
            BounceClass::InvalidRecipient => "invalid-recipient",
            BounceClass::BadDomain => "bad-domain",
            BounceClass::InactiveMailbox => "inactive-mailbox",
            BounceClass::Quota => "quota",
            BounceClass::MessageExpired => "message-expired",
            BounceClass::SpamBlock => "spam-block",
            BounceClass::Content => "content",
            BounceClass::Virus => "virus",
            BounceClass::Policy => "policy",
            BounceClass::Authentication => "authentication",
            BounceClass::Reputation => "reputation",
            BounceClass::Relay => "relay",
            BounceClass::Protocol => "protocol",
            BounceClass::Dns => "dns",
            BounceClass::Routing => "routing",
            BounceClass::Connection => "connection",
            BounceClass::InvalidSender => "invalid-sender",
            BounceClass::TooManyRecipients => "too-many-recipients",
            BounceClass::AutoReply => "auto-reply",
            BounceClass::Uncategorized => "uncategorized",
        }
    }

    pub fn parse(s: &str) -> Option<BounceClass> {
        BounceClass::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The type a bounce of this class has unless a rule says otherwise: only the classes
    /// that say the address is bad are permanent.
    pub fn default_type(self) -> BounceType {
        match self {
            BounceClass::InvalidRecipient | BounceClass::BadDomain | BounceClass::InactiveMailbox => {
                BounceType::Permanent
            }
            BounceClass::Uncategorized => BounceType::Undetermined,
            _ => BounceType::Transient,
        }
    }
}

/// Whether the bounce ended the message (`failed`) or reports a delay (`delayed`: a 4xx
/// reply, or a DSN with `Action: delayed`; the sender keeps trying).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BounceAction {
    Failed,
    Delayed,
}

/// Where a bounce was heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BounceSource {
    /// The receiving server's reply during Herald's own SMTP transaction.
    Sync,
    /// A delivery status notification (RFC 3464, or a plain-text bounce) mailed back to the
    /// VERP return path.
    Dsn,
}

/// A remote server refused a message to one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BounceReceived {
    pub account: AccountId,
    pub message_id: MessageId,
    /// The recipient as Herald sent to it (never what a DSN claims).
    pub recipient: String,
    pub recipient_domain: String,
    pub bounce_type: BounceType,
    pub class: BounceClass,
    pub action: BounceAction,
    /// The SMTP reply code (the reply, or the one found in the DSN's Diagnostic-Code).
    pub code: Option<u16>,
    /// RFC 3463 enhanced status code `x.y.z` (the reply's, or the DSN's `Status`).
    pub enhanced: Option<String>,
    /// The server's text, or the DSN's Diagnostic-Code, or the bounce's explanation.
    pub diagnostic: String,
    /// The server that refused (`Remote-MTA` of a DSN, the MX host of a sync refusal).
    pub remote_mta: Option<String>,
    /// The MTA that wrote the DSN (`Reporting-MTA`); `None` for sync bounces.
    pub reporting_mta: Option<String>,
    pub source: BounceSource,
    /// Stable per fact: `sync-<attempt>` or a digest of the DSN's delivery-status part.
    pub id: String,
    pub received_at: Timestamp,
}

/// A recipient (or their mailbox provider) reported a message as spam (or not-spam).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ComplaintReceived {
    pub account: AccountId,
    pub message_id: MessageId,
    pub recipient: String,
    pub recipient_domain: String,
    /// ARF `Feedback-Type`: `abuse`, `fraud`, `virus`, `auth-failure`, `not-spam`, `other`.
    pub feedback_type: String,
    /// ARF `User-Agent` (the reporting provider's software).
    pub user_agent: Option<String>,
    /// ARF `Reporting-MTA`.
    pub reporting_mta: Option<String>,
    /// ARF `Arrival-Date` of the original message, when given.
    pub arrival_date: Option<Timestamp>,
    /// Stable per fact (a digest of the report's feedback part).
    pub id: String,
    pub received_at: Timestamp,
}

/// Why an address is on an account's suppression list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SuppressionReason {
    /// A permanent bounce of an address class (invalid recipient, bad domain, inactive).
    HardBounce,
    /// Repeated transient failures (quota, expired, uncategorized) within a window.
    SoftBounces,
    /// A spam complaint (any feedback type but `not-spam`).
    Complaint,
    /// The recipient unsubscribed.
    Unsubscribe,
    /// Added by the account (API, import).
    Manual,
}

impl SuppressionReason {
    pub const ALL: [SuppressionReason; 5] = [
        SuppressionReason::HardBounce,
        SuppressionReason::SoftBounces,
        SuppressionReason::Complaint,
        SuppressionReason::Unsubscribe,
        SuppressionReason::Manual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::HardBounce => "hard-bounce",
            SuppressionReason::SoftBounces => "soft-bounces",
            SuppressionReason::Complaint => "complaint",
            SuppressionReason::Unsubscribe => "unsubscribe",
            SuppressionReason::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<SuppressionReason> {
        SuppressionReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// An address was put on an account's suppression list (or its entry replaced).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct RecipientSuppressed {
    pub account: AccountId,
    /// Normalized: lower-case, as every check compares it.
    pub recipient: String,
    pub reason: SuppressionReason,
    /// The message whose bounce or complaint caused it, if any.
    pub message_id: Option<MessageId>,
    /// Why, for people: the bounce's class and diagnostic, or the operator's note.
    pub detail: String,
    /// The entry stops suppressing at this instant; `None`: until lifted.
    pub expires_at: Option<Timestamp>,
    pub id: String,
    pub suppressed_at: Timestamp,
}

/// An address was taken off an account's suppression list.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SuppressionLifted {
    pub account: AccountId,
    /// Normalized, as in [`RecipientSuppressed`].
    pub recipient: String,
    /// Who or what lifted it (`api`, `import`, ...).
    pub by: String,
    pub id: String,
    pub lifted_at: Timestamp,
}

/// A message was not sent: its recipient is on the account's suppression list.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MessageSuppressed {
    pub account: AccountId,
    pub message_id: MessageId,
    pub recipient: String,
    pub recipient_domain: String,
    pub reason: SuppressionReason,
    /// The attempt this replaced (1 for a new message).
    pub attempt: u32,
    pub suppressed_at: Timestamp,
}

/// Every feedback event.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum FeedbackEvent {
    BounceReceived(BounceReceived),
    ComplaintReceived(ComplaintReceived),
    RecipientSuppressed(RecipientSuppressed),
    SuppressionLifted(SuppressionLifted),
    MessageSuppressed(MessageSuppressed),
}

impl FeedbackEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            FeedbackEvent::BounceReceived(_) => "bounce.received",
            FeedbackEvent::ComplaintReceived(_) => "complaint.received",
            FeedbackEvent::RecipientSuppressed(_) => "recipient.suppressed",
            FeedbackEvent::SuppressionLifted(_) => "suppression.lifted",
            FeedbackEvent::MessageSuppressed(_) => "message.suppressed",
        }
    }

    pub fn account(&self) -> &AccountId {
        match self {
            FeedbackEvent::BounceReceived(e) => &e.account,
            FeedbackEvent::ComplaintReceived(e) => &e.account,
            FeedbackEvent::RecipientSuppressed(e) => &e.account,
            FeedbackEvent::SuppressionLifted(e) => &e.account,
            FeedbackEvent::MessageSuppressed(e) => &e.account,
        }
    }

    /// The message the event is about; `None` for suppression-list changes made by hand.
    pub fn message_id(&self) -> Option<&MessageId> {
        match self {
            FeedbackEvent::BounceReceived(e) => Some(&e.message_id),
            FeedbackEvent::ComplaintReceived(e) => Some(&e.message_id),
            FeedbackEvent::RecipientSuppressed(e) => e.message_id.as_ref(),
            FeedbackEvent::SuppressionLifted(_) => None,
            FeedbackEvent::MessageSuppressed(e) => Some(&e.message_id),
        }
    }

    /// The recipient the event is about (the partition is chosen from it).
    pub fn recipient(&self) -> &str {
        match self {
            FeedbackEvent::BounceReceived(e) => &e.recipient,
            FeedbackEvent::ComplaintReceived(e) => &e.recipient,
            FeedbackEvent::RecipientSuppressed(e) => &e.recipient,
            FeedbackEvent::SuppressionLifted(e) => &e.recipient,
            FeedbackEvent::MessageSuppressed(e) => &e.recipient,
        }
    }
}

//! Herald's events: the facts the whole engine is built on.
//!
//! Every accepted message and every delivery attempt is an [`Event`] appended to the log.
//! Events are past tense, carry stable type names and versions, and are encoded only through
//! [`codec`] (bincode 2 with a schema-version header). Golden files under `tests/golden/`
//! pin the wire format: once a version ships, it must keep decoding forever.

pub mod account;
pub mod codec;
pub mod domain;
pub mod engagement;
pub mod event;
pub mod feedback;
pub mod ids;
pub mod shaping;
pub mod time;
pub mod v1;
pub mod webhook;

pub use account::{
    AccountCreated, AccountDefaults, AccountDeleted, AccountEvent, AccountLimits, AccountOrigin, AccountResumed,
    AccountSettings, AccountSuspended, AccountUpdated, ApiKeyCreated, ApiKeyRevoked, FromDomainsPolicy,
    ReportIntervalSet, SmtpUserAdded, SmtpUserRemoved,
};
pub use codec::{decode, encode, CodecError, SCHEMA_VERSION};
pub use domain::{
    CheckResult, DkimKey, DomainAdded, DomainEvent, DomainKeysActivated, DomainKeysPublished, DomainKeysRetired,
    DomainKeysSealed, DomainRemoved, DomainUpdated, DomainVerified, KeyAlgorithm, RecordCheck, SealedKey,
    VerificationStatus,
};
pub use engagement::{Client, EngagementEvent, LinkClicked, MachineReason, MessageOpened, RecipientUnsubscribed};
pub use event::{
    Body, BodyRef, BodyStored, DeliveryAttempted, DeliveryScheduled, Event, MessageAccepted, Outcome, Reserved,
    SendOptions, SmtpReply,
};
pub use feedback::{
    BounceAction, BounceClass, BounceReceived, BounceSource, BounceType, ComplaintReceived, FeedbackEvent,
    MessageSuppressed, RecipientSuppressed, SuppressionLifted, SuppressionReason,
};
pub use ids::{AccountId, MessageId};
pub use shaping::{
    LaneUsage, ProviderResumed, ProviderThrottled, ShapingEvent, SourceFirstUsed, ThrottleAction, UsageReported,
};
pub use time::Timestamp;
pub use webhook::{
    EndpointCreated, EndpointDeleted, EndpointDisabled, EndpointUpdated, SecretRotated, WebhookAttempted, WebhookEvent,
    WebhookOutcome, WebhookScheduled,
};

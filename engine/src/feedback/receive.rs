//! A message received by the bounce MX, turned into events. The SMTP side
//! (`herald_ingest::inbound`) asks [`Receiver::recipient`] at each RCPT and hands the
//! message to [`Receiver::receive`] after DATA; the 250 is sent once the events are
//! durable. Nothing of the message is stored.
//!
//! Trust: the message a report is about comes from Herald's own token (the VERP address
//! the report was sent to, or for complaints to `fbl@` the token found in the returned
//! message), checked by its HMAC; the recipient comes from Herald's record of that message,
//! never from what the report claims. A token of another account's message at an
//! account's bounce domain is refused.

use super::arf::Complaint;
use super::classify::Classifier;
use super::report::{self, Bounce, BounceFormat, Report};
use super::verp::{account_tag, VerpError, VerpKeys};
use crate::domains::cache::DomainCache;
use crate::log::{EventLog, LogError, Topics};
use crate::routing::Router;
use crate::store::{ProjectionStore, StoreError};
use herald_schemas::{AccountId, BounceReceived, BounceSource, ComplaintReceived, FeedbackEvent, MessageId, Timestamp};
use std::sync::Arc;
use thiserror::Error;

/// The local part of the feedback-loop address at every bounce domain.
pub const FBL_LOCAL: &str = "fbl";
/// A message younger than this that the projection does not show yet is waited for
/// (451); an older one is unknown for good (accepted and ignored).
const PROJECTION_GRACE_MS: i64 = 3_600_000;

/// Why a RCPT is refused; every one becomes `550 5.1.1`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RcptError {
    #[error("{0} is not a bounce domain of this server")]
    NotBounceDomain(String),
    #[error("unknown address")]
    Token(#[from] VerpError),
    #[error("the token belongs to no account of this bounce domain")]
    WrongAccount,
}

/// Why a received message could not be processed now; the client is told 451 and keeps it.
#[derive(Debug, Error)]
pub enum ReceiveError {
    #[error("event log: {0}")]
    Log(#[from] LogError),
    #[error("projection store: {0}")]
    Store(#[from] StoreError),
    #[error("message {0} is not projected yet")]
    NotYetKnown(MessageId),
}

/// An accepted RCPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A VERP address: the message it names, and the accounts it may belong to.
    Verp { message_id: MessageId, accounts: Vec<AccountId> },
    /// `fbl@<bounce domain>`; `owner` is the account of the domain (`None`: the default
    /// domain, any account).
    Fbl { owner: Option<AccountId> },
}

/// What a received message produced, for the reply and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    pub events: Vec<FeedbackEvent>,
    /// Why nothing was produced, when nothing was (`auto_reply`, `unknown_message`...).
    pub ignored: Option<&'static str>,
}

pub struct Receiver {
    pub keys: VerpKeys,
    pub classifier: Arc<Classifier>,
    pub store: Arc<dyn ProjectionStore>,
    pub log: Arc<dyn EventLog>,
    pub topics: Topics,
    pub router: Router,
    /// Every account (to resolve the account tag of a token).
    pub accounts: Vec<AccountId>,
    pub domains: DomainCache,
    pub default_domain: Option<String>,
}

impl Receiver {
    /// Whether `domain` receives bounces here; `Some(owner)` (`None` for the default domain).
    fn bounce_domain(&self, domain: &str) -> Option<Option<AccountId>> {
        if self.default_domain.as_deref().is_some_and(|d| d.eq_ignore_ascii_case(domain)) {
            return Some(None);
        }
        let snapshot = self.domains.current();
        let (label, parent) = domain.split_once('.')?;
        let state = snapshot.domains.get(parent)?;
        (state.bounce_label.eq_ignore_ascii_case(label)).then(|| Some(state.account.clone()))
    }

    /// Checks one RCPT address (`local@domain`, any case).
    pub fn recipient(&self, address: &str) -> Result<Target, RcptError> {
        let (local, domain) = address.rsplit_once('@').ok_or(RcptError::Token(VerpError::NotVerp))?;
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let owner = self.bounce_domain(&domain).ok_or_else(|| RcptError::NotBounceDomain(domain.clone()))?;
        if local.eq_ignore_ascii_case(FBL_LOCAL) {
            return Ok(Target::Fbl { owner });
        }
        let token = self.keys.verify(local)?;
        let accounts = self.candidates(token.account_tag, owner.as_ref());
        if accounts.is_empty() {
            return Err(RcptError::WrongAccount);
        }
        Ok(Target::Verp { message_id: token.message_id, accounts })
    }

    fn candidates(&self, tag: u32, owner: Option<&AccountId>) -> Vec<AccountId> {
        self.accounts.iter().filter(|a| account_tag(a) == tag && owner.is_none_or(|o| o == *a)).cloned().collect()
    }

    /// Reads `raw` (received for `targets`), appends the events it means. `Ok` with no
    /// events when it means nothing (or nothing Herald may act on).
    pub async fn receive(&self, targets: &[Target], raw: &[u8]) -> Result<Received, ReceiveError> {
        let mut out = Received::default();
        match report::read(raw) {
            Report::Bounce(b) => {
                for t in targets {
                    if let Target::Verp { message_id, accounts } = t {
                        if let Some((account, recipient)) = self.message(message_id, accounts).await? {
                            out.events.push(self.bounce(&b, account, message_id.clone(), recipient));
                        }
                    }
                }
                out.ignored = out.events.is_empty().then_some("unknown_message");
            }
            Report::Complaint(c, digest) => {
                for (message_id, accounts) in self.complaint_targets(targets, &c) {
                    if let Some((account, recipient)) = self.message(&message_id, &accounts).await? {
                        out.events.push(complaint(&c, &digest, account, message_id, recipient));
                        break;
                    }
                }
                out.ignored = out.events.is_empty().then_some("unknown_message");
            }
            Report::Success => out.ignored = Some("success_dsn"),
            Report::AutoReply => out.ignored = Some("auto_reply"),
            Report::Unrecognized => out.ignored = Some("unrecognized"),
        }
        if !out.events.is_empty() {
            let records =
                out.events.iter().map(|e| super::record(&self.topics, &self.router, e.clone())).collect::<Vec<_>>();
            self.log.append(records).await?;
        }
        Ok(out)
    }

    /// The messages a complaint may be about: its RCPT tokens, then the tokens the report
    /// carries (for `fbl@`), each limited to the accounts its RCPT allows.
    fn complaint_targets(&self, targets: &[Target], c: &Complaint) -> Vec<(MessageId, Vec<AccountId>)> {
        let mut out = Vec::new();
        for t in targets {
            match t {
                Target::Verp { message_id, accounts } => out.push((message_id.clone(), accounts.clone())),
                Target::Fbl { owner } => {
                    for candidate in &c.candidates {
                        let local = candidate.rsplit_once('@').map_or(candidate.as_str(), |(l, _)| l);
                        if let Ok(token) = self.keys.verify(local) {
                            let accounts = self.candidates(token.account_tag, owner.as_ref());
                            if !accounts.is_empty() {
                                out.push((token.message_id, accounts));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The account and recipient of `id` among `accounts`; `None` when the message is not
    /// known (and old enough that it never will be).
    async fn message(
        &self,
        id: &MessageId,
        accounts: &[AccountId],
    ) -> Result<Option<(AccountId, String)>, ReceiveError> {
        for account in accounts {
            if let Some(view) = self.store.message(account, id).await? {
                return Ok(Some((account.clone(), view.recipient)));
            }
        }
        let age = Timestamp::now().millis() - uuid_millis(id).unwrap_or(0);
        if age < PROJECTION_GRACE_MS {
            return Err(ReceiveError::NotYetKnown(id.clone()));
        }
        Ok(None)
    }

    fn bounce(&self, b: &Bounce, account: AccountId, message_id: MessageId, recipient: String) -> FeedbackEvent {
        let delayed = b.action == herald_schemas::BounceAction::Delayed;
        let c = self.classifier.classify(b.code, b.enhanced.as_deref(), &b.diagnostic, delayed);
        metrics::counter!("herald_feedback_bounces_total", "source" => "dsn", "type" => c.bounce_type.as_str(), "class" => c.class.as_str())
            .increment(1);
        let prefix = match b.format {
            BounceFormat::Rfc3464 => "dsn",
            BounceFormat::Text => "text",
        };
        FeedbackEvent::BounceReceived(BounceReceived {
            account,
            message_id,
            recipient_domain: domain_of(&recipient),
            recipient,
            bounce_type: c.bounce_type,
            class: c.class,
            action: b.action,
            code: b.code,
            enhanced: b.enhanced.clone(),
            diagnostic: b.diagnostic.chars().take(1000).collect(),
            remote_mta: b.remote_mta.clone(),
            reporting_mta: b.reporting_mta.clone(),
            source: BounceSource::Dsn,
            id: format!("{prefix}-{}", b.digest),
            received_at: Timestamp::now(),
        })
    }
}

fn complaint(
    c: &Complaint,
    digest: &str,
    account: AccountId,
    message_id: MessageId,
    recipient: String,
) -> FeedbackEvent {
    metrics::counter!("herald_feedback_complaints_total", "feedback_type" => feedback_label(&c.feedback_type))
        .increment(1);
    FeedbackEvent::ComplaintReceived(ComplaintReceived {
        account,
        message_id,
        recipient_domain: domain_of(&recipient),
        recipient,
        feedback_type: c.feedback_type.clone(),
        user_agent: c.user_agent.as_ref().map(|u| u.chars().take(200).collect()),
        reporting_mta: c.reporting_mta.as_ref().map(|u| u.chars().take(200).collect()),
        arrival_date: c.arrival_date.map(|s| Timestamp(s.saturating_mul(1000))),
        id: format!("arf-{digest}"),
        received_at: Timestamp::now(),
    })
}

/// Bounded label values.
fn feedback_label(t: &str) -> &'static str {
    match t {
        "abuse" => "abuse",
        "fraud" => "fraud",
        "virus" => "virus",
        "auth-failure" => "auth-failure",
        "not-spam" => "not-spam",
        _ => "other",
    }
}

fn domain_of(address: &str) -> String {
    address.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default()
}

/// The acceptance time inside a UUIDv7 message id (its first 48 bits), if it is one.
pub fn uuid_millis(id: &MessageId) -> Option<i64> {
    let hex = id.0.get(..12)?;
    i64::from_str_radix(hex, 16).ok()
}

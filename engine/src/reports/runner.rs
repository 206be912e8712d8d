//! The reporter: on every node, a loop that, for each account with a `report_email`,
//! looks at the account's last closed interval; if it holds bounces or complaints and
//! nobody has reported it yet, claims the interval in the shared store and appends the
//! report to the log as an accepted message (shaped, signed and delivered like any other).
//!
//! Exactly one report per account and interval, across nodes and restarts: the claim is a
//! conditional insert (a CQL lightweight transaction; one redb write) keyed by the
//! interval's boundaries, holding the report's message id as a probe. A claim whose holder
//! died before appending is taken over after [`LEASE`] unless the projection shows its
//! message (then the append happened). The same mechanism as `Idempotency-Key` of
//! `POST /v1/send`, under keys a customer cannot send.

use super::digest::{Digest, Kind, Line};
use super::interval::Interval;
use crate::accounts::directory::Account;
use crate::accounts::AccountCache;
use crate::store::feedback::FeedbackStore;
use crate::store::webhooks::{FeedQuery, WebhookStore};
use crate::store::{Claim, IdempotencyRecord, ProjectionStore, StoreError};
use crate::submit::Submitter;
use herald_schemas::{AccountId, Body, BounceAction, MessageAccepted, MessageId, SendOptions, Timestamp};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

/// How long a claim that has not appended its report is respected before another node
/// (or this one after a restart) takes it over.
pub const LEASE: Duration = Duration::from_secs(60);
/// Rows read per store call.
const PAGE: usize = 1000;
/// Bounces (and complaints) read per interval at most; above it the counts say "at least".
const MAX_SCAN: usize = 100_000;

/// Why one account's report failed this time (tried again at the next tick).
#[derive(Debug, Error)]
pub enum ReportError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("log: {0}")]
    Log(#[from] crate::log::LogError),
}

/// `[reports]`, as the reporter takes it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Interval of accounts that set none, in seconds.
    pub default_interval_secs: u32,
    /// How long after an interval ends its report waits (projections catching up).
    pub grace: Duration,
    /// How often the reporter looks.
    pub tick: Duration,
    /// Local part of the From address (`reports`).
    pub local_part: String,
    /// Domain used when the account has no verified sender domain.
    pub service_domain: String,
}

/// What happened to one account's due interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This node appended the report.
    Sent,
    /// Nothing happened in the interval: no report.
    Empty,
    /// Another node (or an earlier run) reported it.
    Elsewhere,
    /// Another node holds the claim and has not appended yet: looked at again next tick.
    Pending,
}

pub struct Reporter {
    accounts: AccountCache,
    feedback: Arc<dyn FeedbackStore>,
    feed: Arc<dyn WebhookStore>,
    store: Arc<dyn ProjectionStore>,
    submitter: Submitter,
    settings: Settings,
    /// The last interval end settled per account on this node (reported, empty, or
    /// reported elsewhere), so a settled interval is not read again at every tick.
    settled: Mutex<HashMap<AccountId, Timestamp>>,
}

impl Reporter {
    pub fn new(
        accounts: AccountCache,
        feedback: Arc<dyn FeedbackStore>,
        feed: Arc<dyn WebhookStore>,
        store: Arc<dyn ProjectionStore>,
        submitter: Submitter,
        settings: Settings,
    ) -> Self {
        Reporter { accounts, feedback, feed, store, submitter, settings, settled: Mutex::default() }
    }

    /// Looks every `tick` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            self.pass(Timestamp::now()).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.settings.tick) => {}
            }
        }
    }

    /// One look at every account at `now`; returns how many reports this node appended.
    pub async fn pass(&self, now: Timestamp) -> usize {
        let snapshot = self.accounts.current();
        let mut sent = 0;
        for account in snapshot.accounts.values() {
            let Some(to) = account.settings.report_email.as_deref() else { continue };
            let secs = account.report_interval_secs.unwrap_or(self.settings.default_interval_secs);
            let interval = Interval::last_closed(now, secs, self.settings.grace);
            if self.settled.lock().unwrap().get(&account.id).is_some_and(|t| *t >= interval.to) {
                continue;
            }
            match self.report(account, to, interval, now).await {
                Ok(Outcome::Pending) => {}
                Ok(outcome) => {
                    if outcome == Outcome::Sent {
                        sent += 1;
                    }
                    metrics::counter!("herald_reports_intervals_total", "outcome" => outcome.as_str()).increment(1);
                    self.settled.lock().unwrap().insert(account.id.clone(), interval.to);
                }
                Err(e) => {
                    metrics::counter!("herald_reports_errors_total").increment(1);
                    tracing::warn!(account = %account.id, error = %e, "bounce report not sent; trying again");
                }
            }
        }
        sent
    }

    /// Reports `interval` of `account` to `to`, unless it is empty or someone else does.
    pub async fn report(
        &self,
        account: &Account,
        to: &str,
        interval: Interval,
        now: Timestamp,
    ) -> Result<Outcome, ReportError> {
        let digest = self.digest(&account.id, interval).await?;
        if digest.is_empty() {
            return Ok(Outcome::Empty);
        }
        let key = interval.claim_key();
        let ttl = Duration::from_secs(interval.secs() * 2 + 86_400);
        let message_id = MessageId::generate();
        let record = IdempotencyRecord {
            fingerprint: "bounce-report".into(),
            claim: MessageId::generate().0,
            response: String::new(),
            probe: message_id.clone(),
            done: false,
            claimed_at: now,
        };
        match self.store.claim_idempotency(&account.id, &key, &record, ttl).await? {
            Claim::Won => {}
            Claim::Held(held) if held.done => return Ok(Outcome::Elsewhere),
            Claim::Held(held) => {
                if self.store.message(&account.id, &held.probe).await?.is_some() {
                    let done = IdempotencyRecord { done: true, ..held.clone() };
                    self.store.replace_idempotency(&account.id, &key, &held.claim, &done, ttl).await?;
                    return Ok(Outcome::Elsewhere);
                }
                let stale = now.millis().saturating_sub(held.claimed_at.millis()) > LEASE.as_millis() as i64;
                if !(stale && self.store.replace_idempotency(&account.id, &key, &held.claim, &record, ttl).await?) {
                    // Its holder is (probably) appending it now.
                    return Ok(Outcome::Pending);
                }
            }
        }
        let from = self.sender_address(&account.id).await?;
        let raw = digest.message(&from, to, &format!("{}@{}", message_id.0, domain_of(&from)), now);
        let recipient_domain = domain_of(to).to_ascii_lowercase();
        let message = MessageAccepted {
            account: account.id.clone(),
            message_id: message_id.clone(),
            envelope_sender: from,
            recipient: to.to_owned(),
            recipient_domain,
            options: SendOptions::default(),
            body: Body::Inline(raw),
            accepted_at: now,
        };
        if let Err(e) = self.submitter.submit(vec![message]).await {
            let _ = self.store.release_idempotency(&account.id, &key, &record.claim).await;
            return Err(e.into());
        }
        let done = IdempotencyRecord { done: true, ..record.clone() };
        let _ = self.store.replace_idempotency(&account.id, &key, &record.claim, &done, ttl).await;
        tracing::info!(account = %account.id, message_id = %message_id, bounces = digest.bounces,
            complaints = digest.complaints, "bounce report appended");
        Ok(Outcome::Sent)
    }

    /// The account's bounces (failed, not delay notices) and complaints (not `not-spam`)
    /// of `interval`.
    pub async fn digest(&self, account: &AccountId, interval: Interval) -> Result<Digest, StoreError> {
        let mut digest = Digest::new(account.clone(), interval);
        let (mut cursor, mut scanned) = (None::<String>, 0usize);
        loop {
            let page =
                self.feedback.bounces(account, interval.from, interval.to, None, cursor.as_deref(), PAGE).await?;
            scanned += page.items.len();
            for b in page.items.into_iter().filter(|b| b.action != BounceAction::Delayed) {
                let class = serde_json::to_value(b.class).ok().and_then(|v| v.as_str().map(str::to_owned));
                digest.add(Line {
                    at: b.at,
                    kind: Kind::Bounce,
                    recipient: b.recipient,
                    class: class.unwrap_or_else(|| format!("{:?}", b.class)),
                    diagnostic: b.diagnostic,
                });
            }
            match page.next {
                Some(next) if scanned < MAX_SCAN => cursor = Some(next),
                _ => break,
            }
        }
        let mut q = FeedQuery {
            from: interval.from,
            to: interval.to,
            event_type: Some("message.complained".into()),
            recipient: None,
            message_id: None,
            after: None,
            limit: PAGE,
        };
        scanned = 0;
        loop {
            let page = self.feed.feed(account, &q).await?;
            scanned += page.items.len();
            for row in page.items {
                let kind = row.data["feedback_type"].as_str().unwrap_or("other").to_owned();
                if kind == "not-spam" {
                    continue;
                }
                let agent = row.data["user_agent"].as_str().unwrap_or_default().to_owned();
                digest.add(Line {
                    at: row.at,
                    kind: Kind::Complaint,
                    recipient: row.recipient.unwrap_or_default(),
                    class: kind,
                    diagnostic: agent,
                });
            }
            match page.next {
                Some(next) if scanned < MAX_SCAN => q.after = Some(next),
                _ => break,
            }
        }
        Ok(digest)
    }

    /// `reports@<the account's first verified sender domain>`, else `reports@<service domain>`.
    async fn sender_address(&self, account: &AccountId) -> Result<String, StoreError> {
        let mut verified: Vec<String> = self
            .store
            .domains()
            .await?
            .into_iter()
            .filter(|d| &d.account == account && !d.removed && d.status == herald_schemas::VerificationStatus::Verified)
            .map(|d| d.domain)
            .collect();
        verified.sort();
        let domain = verified.into_iter().next().unwrap_or_else(|| self.settings.service_domain.clone());
        Ok(format!("{}@{domain}", self.settings.local_part))
    }
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Empty => "empty",
            Outcome::Elsewhere => "elsewhere",
            Outcome::Pending => "pending",
        }
    }
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

//! The submission server's and smart host's [`Policy`]: the owning account of a
//! transaction (authenticated user, else smart-host network, from the node's account
//! snapshot), a suspended account refused (550 5.7.1), its rate budget, no
//! recipients without an account (530: never an open relay), and acceptance after DATA:
//! the message checks shared with REST ([`crate::message`]: 550 5.6.x), the From domain
//! policy ([`crate::sender`]: 550 5.7.1), the options (`X-Herald-Options`, removed, over
//! the account's defaults; a bad one refuses the message with 550 5.6.0), the `Received:`
//! trace field, the account's own limits ([`crate::limits`]: 451 4.7.1), one
//! `MessageAccepted` per recipient, and the 250 only once `Submitter::submit` says every
//! event is durable (451 4.3.0 otherwise, nothing accepted).

use super::auth::Credentials;
use super::limits::AccountRate;
use super::policy::{Peer, Policy};
use super::reply::{self, Reply};
use super::session::Transaction;
use super::Settings;
use crate::address::Mailbox;
use crate::{accept, message};
use async_trait::async_trait;
use herald_engine::accounts::{state::Status, AccountCache};
use herald_engine::submit::{SubmitError, Submitter};
use herald_schemas::{AccountId, Timestamp};
use std::net::IpAddr;
use std::sync::Arc;

pub struct Submission {
    submitter: Submitter,
    /// Which From domains each account may send from.
    sender: Arc<crate::sender::SenderPolicy>,
    credentials: Credentials,
    rate: AccountRate,
    /// Each account's own per-second and per-day limits (shared with REST).
    limits: Arc<crate::limits::Limits>,
    hostname: String,
}

impl Submission {
    pub fn new(
        settings: &Settings,
        submitter: Submitter,
        accounts: AccountCache,
        limits: Arc<crate::limits::Limits>,
        sender: Arc<crate::sender::SenderPolicy>,
    ) -> Self {
        Submission {
            submitter,
            sender,
            credentials: Credentials { accounts, failures: Default::default() },
            rate: AccountRate::new(settings.account_rate, settings.account_burst),
            limits,
            hostname: settings.hostname.clone(),
        }
    }

    /// The default send options of `account`.
    pub fn defaults(&self, account: &AccountId) -> herald_schemas::SendOptions {
        self.credentials.accounts.current().account(account).map(|a| a.settings.defaults.into()).unwrap_or_default()
    }

    /// The account whose `relay_networks` contain `ip`, if any (smart-host mode).
    pub fn relay_account(&self, ip: IpAddr) -> Option<AccountId> {
        self.credentials.accounts.current().relay_account(ip).cloned()
    }

    fn suspended(&self, account: &AccountId) -> bool {
        self.credentials.accounts.current().account(account).is_some_and(|a| a.status == Status::Suspended)
    }

    /// The account's own limits for `recipients` more messages: 451 4.7.1 over one.
    async fn within_limits(&self, account: &AccountId, recipients: usize) -> Option<Reply> {
        let limits = self.credentials.accounts.current().account(account).map(|a| a.settings.limits)?;
        let exceeded = match self.limits.rate(account, &limits, recipients) {
            Err(e) => Some(e),
            Ok(()) => self.limits.daily(account, &limits, recipients).await.err(),
        };
        exceeded.map(|e| match e {
            crate::limits::Exceeded::Unavailable => Reply::refuse(
                451,
                "store_unavailable",
                "4.3.0 Temporary failure checking the account's limits, try again",
            ),
            e => Reply::refuse(451, "rate_limited", format!("4.7.1 {}", sentence(&e.to_string()))),
        })
    }

    /// Prepends the `Received:` trace field (RFC 5321 section 4.4).
    fn received(&self, peer: &Peer<'_>, body: Vec<u8>, now: Timestamp) -> Vec<u8> {
        let (helo, esmtp) = peer.helo.cloned().unwrap_or_default();
        let proto = match (esmtp, peer.tls, peer.authenticated.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let helo: String = helo.chars().filter(|c| !c.is_control()).collect();
        let head = format!(
            "Received: from {helo} ([{}])\r\n\tby {} (Herald) with {proto};\r\n\t{}\r\n",
            peer.addr.ip(),
            self.hostname,
            message::rfc5322_date(now)
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(&body);
        out
    }
}

/// 550 5.7.1 for a suspended account's transaction.
fn suspended() -> Reply {
    Reply::refuse(550, "account_suspended", "5.7.1 This account is suspended and may not send")
}

/// An error sentence as SMTP reply text: first letter capitalized, ASCII only, one line.
fn sentence(text: &str) -> String {
    let mut out: String =
        text.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).take(400).collect();
    if let Some(first) = out.get(..1) {
        out.replace_range(..1, &first.to_ascii_uppercase());
    }
    out
}

#[async_trait]
impl Policy for Submission {
    fn credentials(&self) -> Option<&Credentials> {
        Some(&self.credentials)
    }

    fn mail(&self, peer: &Peer<'_>, _sender: Option<&Mailbox>) -> Result<Option<AccountId>, Reply> {
        let account = match peer.authenticated {
            Some(account) => Some(account.clone()),
            None => self.relay_account(peer.addr.ip()),
        };
        if let Some(a) = &account {
            if self.suspended(a) {
                return Err(suspended());
            }
            if !self.rate.allow(a) {
                return Err(Reply::refuse(451, "rate_limited", "4.7.1 Message rate exceeded, try again later"));
            }
        }
        Ok(account)
    }

    fn may_name_recipients(&self, _peer: &Peer<'_>, tx: &Transaction) -> Option<Reply> {
        tx.account.is_none().then(reply::auth_required)
    }

    fn rcpt(&self, _peer: &Peer<'_>, _tx: &Transaction, _to: &Mailbox) -> Option<Reply> {
        None
    }

    async fn data(&self, peer: &Peer<'_>, tx: Transaction, body: Vec<u8>) -> Reply {
        let (Some(account), sender) = (tx.account, tx.sender) else {
            return reply::auth_required();
        };
        let (body, overrides) = match crate::options::take_header(body) {
            Ok(taken) => taken,
            Err(e) => return Reply::refuse(550, "invalid_options", format!("5.6.0 {}", sentence(&e.to_string()))),
        };
        let options = overrides.over(self.defaults(&account));
        let stamp = message::Stamp { hostname: &self.hostname, now: Timestamp::now() };
        let prepared = match message::prepare(body, &stamp) {
            Ok(p) => p,
            Err(e) => return Reply::refuse(550, e.reason(), format!("{} {}", e.enhanced(), sentence(&e.to_string()))),
        };
        if let Err(e) = self.sender.check(&account, &prepared.from_domains) {
            return Reply::refuse(550, "from_domain_not_verified", format!("5.7.1 {}", sentence(&e.to_string())));
        }
        // The account may have been suspended during the transaction.
        if self.suspended(&account) {
            return suspended();
        }
        if let Some(refused) = self.within_limits(&account, tx.recipients.len()).await {
            return refused;
        }
        let body = self.received(peer, prepared.message, stamp.now);
        let sender = sender.unwrap_or(Mailbox { address: String::new(), domain: String::new() });
        let body = match self.submitter.place_body(&account, body, tx.recipients.len()).await {
            Ok(body) => body,
            Err(SubmitError::FanoutTooLarge { .. }) => {
                return Reply::refuse(552, "fanout_too_large", "5.3.4 Message too large for that many recipients");
            }
            Err(SubmitError::Log(e)) => {
                tracing::warn!(error = %e, "smtp: storing the body failed; message refused");
                return Reply::refuse(451, "log_unavailable", "4.3.0 Temporary failure storing the message, try again");
            }
        };
        let (events, accepted) = accept::build_events(&account, &sender, tx.recipients, options, body);
        match self.submitter.submit(events).await {
            Ok(()) => {
                metrics::counter!("herald_smtp_ingest_messages_total").increment(1);
                let ids: Vec<&str> = accepted.iter().map(|a| a.id.0.as_str()).collect();
                Reply::new(250, format!("2.0.0 Ok: queued as {}", ids.join(" ")))
            }
            Err(e) => {
                tracing::warn!(error = %e, "smtp: append failed; message refused");
                Reply::refuse(451, "log_unavailable", "4.3.0 Temporary failure storing the message, try again")
            }
        }
    }
}

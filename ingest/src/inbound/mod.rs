//! The bounce MX: Herald's inbound SMTP listener for its bounce domains (`[bounces]
//! listen`, default `127.0.0.1:2526`). It runs the same session machinery as ingestion
//! (`crate::smtp`: STARTTLS offered, size and connection limits) with its own
//! [`Policy`]: no AUTH; a message rate per client IP; RCPT only for valid VERP addresses
//! and `fbl@<bounce domain>` (`550 5.1.1` otherwise); after DATA the message is read by
//! `herald_engine::feedback::receive` and only its events are kept. It never relays and
//! stores no mail. The 250 is sent once the events are durable (451 if not, so the sender
//! keeps the report and tries again).

use crate::address::Mailbox;
use crate::smtp::policy::{Peer, Policy};
use crate::smtp::reply::Reply;
use crate::smtp::session::Transaction;
use crate::smtp::{Server, Settings};
use async_trait::async_trait;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use herald_engine::feedback::receive::{ReceiveError, Receiver};
use herald_schemas::AccountId;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Messages per second per client IP, and the burst above it; `per_second = 0`: no limit.
#[derive(Debug, Clone, Copy)]
pub struct IpRate {
    pub per_second: u32,
    pub burst: u32,
}

/// The bounce MX's policy.
pub struct BounceMx {
    receiver: Arc<Receiver>,
    rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl BounceMx {
    pub fn new(receiver: Arc<Receiver>, rate: IpRate) -> Self {
        let rate = NonZeroU32::new(rate.per_second).map(|r| {
            let burst = NonZeroU32::new(rate.burst).unwrap_or(r);
            RateLimiter::keyed(Quota::per_second(r).allow_burst(burst))
        });
        BounceMx { receiver, rate }
    }
}

/// The bounce MX as an SMTP server (`crate::smtp::run` serves it).
pub fn server(settings: Settings, tls: Option<TlsAcceptor>, receiver: Arc<Receiver>, rate: IpRate) -> Arc<Server> {
    Arc::new(Server::with_policy(settings, tls, Arc::new(BounceMx::new(receiver, rate))))
}

#[async_trait]
impl Policy for BounceMx {
    fn mail(&self, peer: &Peer<'_>, _sender: Option<&Mailbox>) -> Result<Option<AccountId>, Reply> {
        if let Some(limiter) = &self.rate {
            if limiter.len() > 10_000 {
                limiter.retain_recent();
            }
            if limiter.check_key(&peer.addr.ip()).is_err() {
                return Err(Reply::refuse(
                    451,
                    "rate_limited",
                    "4.7.1 Too many messages from your address, try again later",
                ));
            }
        }
        Ok(None)
    }

    fn rcpt(&self, _peer: &Peer<'_>, _tx: &Transaction, to: &Mailbox) -> Option<Reply> {
        match self.receiver.recipient(&to.address) {
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(rcpt = %to.address, reason = %e, "bounce mx: recipient refused");
                Some(Reply::refuse(550, "unknown_recipient", "5.1.1 No such recipient here"))
            }
        }
    }

    async fn data(&self, peer: &Peer<'_>, tx: Transaction, body: Vec<u8>) -> Reply {
        // The tokens were checked at RCPT; checking them again is a few HMACs.
        let targets: Vec<_> = tx.recipients.iter().filter_map(|r| self.receiver.recipient(&r.address).ok()).collect();
        match self.receiver.receive(&targets, &body).await {
            Ok(received) => {
                let outcome = received.ignored.unwrap_or("events");
                metrics::counter!("herald_bounce_mx_messages_total", "outcome" => outcome).increment(1);
                tracing::debug!(peer = %peer.addr, events = received.events.len(), outcome, "bounce mx: message read");
                Reply::new(250, format!("2.0.0 Ok: {} feedback event(s)", received.events.len()))
            }
            Err(e) => {
                let reason = match e {
                    ReceiveError::NotYetKnown(_) => "not_yet_known",
                    ReceiveError::Log(_) => "log_unavailable",
                    ReceiveError::Store(_) => "store_unavailable",
                };
                tracing::warn!(peer = %peer.addr, error = %e, "bounce mx: message not processed; 451");
                Reply::refuse(451, reason, "4.3.0 Temporary failure processing the report, try again later")
            }
        }
    }
}

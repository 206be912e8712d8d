//! One delivery attempt: route (MX), sign (DKIM, at the last moment), send (SMTP).
//!
//! The worker looks the route up first ([`Deliverer::route`]: the MX hosts decide the
//! provider, `crate::shaping`), then [`Deliverer::attempt`] sends over the lane's
//! [`smtp::Egress`]. Every way an attempt can end becomes an [`Attempt`] with an SMTP reply
//! (real, or synthetic for local and network trouble) and a [`Class`], which the worker
//! turns into an event and maybe a retry; the only other outcome is [`Busy`] (no
//! connection of the lane came free in time: nothing was sent).

pub mod connections;
pub mod dkim;
pub mod mx;
pub mod smtp;

use crate::bodies::{BodyError, BodyStore};
pub use connections::{Busy, Connections};
use herald_schemas::{MessageAccepted, SmtpReply};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How an SMTP reply code is treated (RFC 5321 §4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Success,
    /// 4xx, or no answer at all: try again later.
    Temporary,
    /// 5xx: do not try again.
    Permanent,
}

pub fn classify(code: u16) -> Class {
    match code {
        200..=299 => Class::Success,
        500..=599 => Class::Permanent,
        _ => Class::Temporary,
    }
}

/// The result of one attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub mx_host: Option<String>,
    pub mx_ip: Option<IpAddr>,
    pub tls: bool,
    pub reply: SmtpReply,
    pub class: Class,
    pub dkim: String,
    pub duration: Duration,
}

pub fn local_reply(code: u16, enhanced: &str, text: impl Into<String>) -> SmtpReply {
    SmtpReply { code, enhanced: Some(enhanced.to_owned()), text: text.into() }
}

/// Settings of outbound delivery.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// EHLO name when no pool is configured (a pool's sources have their own).
    pub helo_name: String,
    /// Port of every MX (25 in production; tests point it at a sink).
    pub mx_port: u16,
    pub connect_timeout: Duration,
    /// Per-command timeout (RFC 5321 §4.5.3.2 suggests minutes; the default is 5 min).
    pub command_timeout: Duration,
}

pub struct Deliverer {
    settings: DeliverySettings,
    mx: mx::MxResolver,
    signers: dkim::Signers,
    tls: smtp::Tls,
    sender_domains: Option<std::sync::Arc<crate::domains::signing::SenderSigning>>,
    return_paths: Option<crate::feedback::verp::ReturnPaths>,
    rewriter: Option<std::sync::Arc<crate::rewrite::Rewriter>>,
    bodies: std::sync::Arc<BodyStore>,
}

impl Deliverer {
    /// `bodies` resolves stored bodies (`Body::Stored`) before signing.
    pub fn new(
        settings: DeliverySettings,
        mx: mx::MxResolver,
        signers: dkim::Signers,
        bodies: std::sync::Arc<BodyStore>,
    ) -> Result<Self, String> {
        Ok(Deliverer {
            settings,
            mx,
            signers,
            tls: smtp::Tls::opportunistic()?,
            sender_domains: None,
            return_paths: None,
            rewriter: None,
            bodies,
        })
    }

    /// VERP return paths for messages sent with bounce tracking (`[bounces]`).
    pub fn with_return_paths(mut self, paths: crate::feedback::verp::ReturnPaths) -> Self {
        self.return_paths = Some(paths);
        self
    }

    /// Signs with the keys of verified sender domains too (static keys still win).
    pub fn with_sender_domains(mut self, signing: std::sync::Arc<crate::domains::signing::SenderSigning>) -> Self {
        self.sender_domains = Some(signing);
        self
    }

    /// Rewrites messages that ask for it (CSS, tracking, unsubscribe) before signing.
    pub fn with_rewriter(mut self, rewriter: std::sync::Arc<crate::rewrite::Rewriter>) -> Self {
        self.rewriter = Some(rewriter);
        self
    }

    /// The message to send, the DKIM note for the attempt event, and the return path.
    /// The message is rewritten first (`crate::rewrite`), so the signature covers the
    /// rewritten body and the added headers. Static `[[dkim]]` keys of the From domain that
    /// serve the message's account are an operator override; otherwise a verified sender
    /// domain of the account signs; otherwise it goes unsigned and the note says why.
    /// With bounce tracking, the return path is a VERP address (`feedback::verp`) and the
    /// same token goes into an `X-Herald-ID:` header (after the rewrite, before signing),
    /// for complaints that return the message without its envelope.
    fn sign(&self, msg: &MessageAccepted, original: &[u8]) -> (Vec<u8>, String, Option<String>) {
        let rewritten = match &self.rewriter {
            Some(r) => r.rewrite(msg, original),
            None => crate::rewrite::Rewritten { data: std::borrow::Cow::Borrowed(original), note: None },
        };
        if let Some(note) = &rewritten.note {
            tracing::debug!(message_id = %msg.message_id, note = %note, "rewritten before signing");
        }
        let verp = self.return_paths.as_ref().filter(|_| msg.options.bounce_tracking);
        let token = verp.and_then(|v| v.keys.local_part(&msg.account, &msg.message_id));
        let body: std::borrow::Cow<[u8]> = match &token {
            Some(t) => {
                let mut b = format!("{}: {t}\r\n", crate::feedback::arf::HERALD_ID_HEADER).into_bytes();
                b.extend_from_slice(&rewritten.data);
                b.into()
            }
            None => rewritten.data,
        };
        let return_path =
            |bounce_domain: Option<&str>| verp.zip(token.as_deref()).and_then(|(v, t)| v.address(t, bounce_domain));
        if let (Some(domains), Some(from)) = (&self.sender_domains, dkim::from_domain(&body)) {
            if !self.signers.serves(&from, &msg.account) {
                if let Some(signed) = domains.sign(msg, &body, &from) {
                    let rp = return_path(signed.bounce_domain.as_deref());
                    return (signed.data, signed.note, rp);
                }
            }
        }
        let (data, note) = self.signers.sign_for(&body, &msg.account);
        (data, note, return_path(None))
    }

    /// The MX route of `domain` (hickory caches answers for their TTL).
    pub async fn route(&self, domain: &str) -> Result<mx::Route, String> {
        self.mx.route(domain).await
    }

    /// Delivers `msg` once along `route` (from [`Deliverer::route`]) through `egress`.
    pub async fn attempt(
        &self,
        msg: &MessageAccepted,
        route: Result<mx::Route, String>,
        egress: &smtp::Egress<'_>,
    ) -> Result<Attempt, Busy> {
        let started = Instant::now();
        let body = match self.bodies.resolve(&msg.account, &msg.body).await {
            Ok(body) => body,
            Err(e) => return Ok(no_body(e, started)),
        };
        let (data, dkim, return_path) = self.sign(msg, &body);
        drop(body);
        let mut attempt = Attempt {
            mx_host: None,
            mx_ip: None,
            tls: false,
            reply: local_reply(451, "4.4.0", "No attempt was made."),
            class: Class::Temporary,
            dkim,
            duration: Duration::ZERO,
        };
        match route {
            Err(trouble) => {
                attempt.reply =
                    local_reply(451, "4.4.3", format!("The MX lookup for {} failed: {trouble}.", msg.recipient_domain));
            }
            Ok(mx::Route::NullMx) => {
                attempt.reply = local_reply(
                    556,
                    "5.1.10",
                    format!("The domain {} publishes a null MX: it accepts no mail.", msg.recipient_domain),
                );
                attempt.class = Class::Permanent;
            }
            Ok(mx::Route::NoSuchDomain) => {
                attempt.reply = local_reply(
                    550,
                    "5.1.2",
                    format!("The domain {} does not exist (NXDOMAIN).", msg.recipient_domain),
                );
                attempt.class = Class::Permanent;
            }
            Ok(mx::Route::Hosts(hosts)) => {
                let from = return_path.as_deref().unwrap_or(&msg.envelope_sender);
                self.try_hosts(&hosts, msg, from, &data, egress, &mut attempt).await?
            }
        }
        attempt.duration = started.elapsed();
        Ok(attempt)
    }

    /// Tries the MX hosts in preference order, each of their addresses in turn, until one
    /// gives a transaction answer (RFC 5321 §5.1). Connection trouble and 4xx greetings
    /// move on to the next address. Addresses of the other family than the egress's source
    /// are skipped.
    async fn try_hosts(
        &self,
        hosts: &[String],
        msg: &MessageAccepted,
        from: &str,
        data: &[u8],
        egress: &smtp::Egress<'_>,
        attempt: &mut Attempt,
    ) -> Result<(), Busy> {
        for host in hosts {
            let ips = match self.mx.addresses(host).await {
                Ok(ips) => ips,
                Err(trouble) => {
                    attempt.mx_host = Some(host.clone());
                    attempt.reply = local_reply(
                        451,
                        "4.4.3",
                        format!("The address of the MX host {host} could not be found: {trouble}."),
                    );
                    continue;
                }
            };
            for ip in ips {
                attempt.mx_host = Some(host.clone());
                if egress.source.is_some_and(|s| s.is_ipv4() != ip.is_ipv4()) {
                    attempt.reply = local_reply(
                        451,
                        "4.4.4",
                        format!("The MX host {host} has no address of the source address's family ({ip} skipped)."),
                    );
                    continue;
                }
                attempt.mx_ip = Some(ip);
                let addr = SocketAddr::new(ip, self.settings.mx_port);
                let envelope = smtp::Envelope { from, to: &msg.recipient, data };
                match smtp::send(addr, host, &self.settings, &self.tls, egress, &envelope).await? {
                    smtp::Sent::Transaction { reply, tls } => {
                        attempt.tls = tls;
                        attempt.class = classify(reply.code);
                        attempt.reply = reply;
                        return Ok(());
                    }
                    smtp::Sent::Unavailable { reply, tls } => {
                        attempt.tls = tls;
                        attempt.reply = reply;
                        attempt.class = Class::Temporary;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The attempt when the body cannot be had: deferred while the log does not answer,
/// failed once the body is gone.
fn no_body(e: BodyError, started: Instant) -> Attempt {
    tracing::warn!(error = %e, "message body unavailable");
    let (reply, class) = match &e {
        BodyError::Unavailable(_) => (local_reply(451, "4.3.0", e.to_string()), Class::Temporary),
        BodyError::Gone(_) => (local_reply(554, "5.3.0", e.to_string()), Class::Permanent),
    };
    Attempt {
        mx_host: None,
        mx_ip: None,
        tls: false,
        reply,
        class,
        dkim: "unsigned: no message body".into(),
        duration: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_classes() {
        assert_eq!(classify(250), Class::Success);
        assert_eq!(classify(451), Class::Temporary);
        assert_eq!(classify(421), Class::Temporary);
        assert_eq!(classify(550), Class::Permanent);
        assert_eq!(classify(0), Class::Temporary);
    }
}

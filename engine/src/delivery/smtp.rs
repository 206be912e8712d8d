//! The outbound SMTP session on mail-send: greeting, EHLO, opportunistic (or required)
//! STARTTLS, then MAIL/RCPT/DATA, pipelined (RFC 2920) when the server offers PIPELINING.
//!
//! Connections are bound to the lane's source address and announce its EHLO name. Sessions
//! are cached per lane and MX address (`connections.rs`): after a complete transaction the
//! session goes back to the lane's idle cache and the next message to the same address
//! skips connect, greeting, EHLO and TLS. A cached session that turns out to be closed
//! before answering anything is replaced by a fresh one, transparently.

use super::connections::{Busy, Connections};
use super::{local_reply, DeliverySettings};
use herald_schemas::SmtpReply;
use mail_send::SmtpClient;
use smtp_proto::{EhloResponse, Response, EXT_PIPELINING, EXT_SMTP_UTF8, EXT_START_TLS};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// TLS for opportunistic STARTTLS. Like Postfix's `smtp_tls_security_level = may`,
/// certificates are not verified: encryption against passive observers, no
/// authentication (MTA-STS and DANE are what authenticate, later).
pub struct Tls(tokio_rustls::TlsConnector);

impl Tls {
    pub fn opportunistic() -> Result<Self, String> {
        mail_send::smtp::tls::build_tls_connector(true).map(Tls)
    }

    /// The connector, for other clients that need the same unauthenticated TLS.
    pub fn connector(&self) -> &tokio_rustls::TlsConnector {
        &self.0
    }
}

pub struct Envelope<'a> {
    pub from: &'a str,
    pub to: &'a str,
    /// The message, signed, with CRLF line endings.
    pub data: &'a [u8],
}

/// Where a delivery leaves from and under which rules: the lane's source address, EHLO
/// name, connections and TLS policy, and how long it may wait for a connection.
pub struct Egress<'a> {
    /// `None`: the system picks the address.
    pub source: Option<IpAddr>,
    pub ehlo: &'a str,
    pub connections: &'a Connections,
    pub tls_required: bool,
    /// Past this, waiting for a connection slot gives up ([`Busy`]).
    pub deadline: Instant,
    /// Asked again once a connection is in hand: `false` (the provider was suspended
    /// meanwhile) sends nothing ([`Busy`]).
    pub allowed: &'a (dyn Fn() -> bool + Sync),
}

/// How a delivery over SMTP ended.
pub enum Sent {
    /// The server answered the transaction: the reply decides the outcome.
    Transaction { reply: SmtpReply, tls: bool },
    /// No transaction answer (connection trouble, 4xx/5xx greeting, TLS failure): the next
    /// MX address may be tried.
    Unavailable { reply: SmtpReply, tls: bool },
}

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An established session, ready for MAIL FROM.
pub struct Session {
    pub(crate) client: SmtpClient<Box<dyn Io>>,
    ehlo: EhloResponse<String>,
    tls: bool,
    pub(crate) sent: u32,
    pub(crate) idle_since: Instant,
}

fn reply_of(r: &Response<String>) -> SmtpReply {
    let enhanced = (r.esc[0] != 0).then(|| format!("{}.{}.{}", r.esc[0], r.esc[1], r.esc[2]));
    SmtpReply { code: r.code, enhanced, text: r.message.trim().to_owned() }
}

/// What went wrong, as the attempt's reply: the server's own reply when there is one, else
/// a sentence such as "The connection was refused while connecting." (the client library's
/// error goes to the log, not to the customer).
fn trouble(stage: &str, e: mail_send::Error) -> SmtpReply {
    use std::io::ErrorKind;
    let cause = match &e {
        mail_send::Error::UnexpectedReply(r) => return reply_of(r),
        mail_send::Error::Timeout => "The server did not answer in time",
        mail_send::Error::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused => "The connection was refused",
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => "The server reset the connection",
            ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe | ErrorKind::NotConnected => {
                "The server closed the connection"
            }
            ErrorKind::TimedOut => "The server did not answer in time",
            ErrorKind::HostUnreachable => "The host is unreachable",
            ErrorKind::NetworkUnreachable => "The network is unreachable",
            _ => "A network error occurred",
        },
        mail_send::Error::Tls(_) | mail_send::Error::InvalidTLSName => "The TLS handshake failed",
        mail_send::Error::UnparseableReply => "The server sent a reply that is not valid SMTP",
        mail_send::Error::MissingStartTls => "The server does not offer STARTTLS",
        _ => "The SMTP session failed",
    };
    tracing::debug!(stage, error = %e, "smtp delivery trouble");
    local_reply(451, "4.4.2", format!("{cause} while {stage}."))
}

/// Connects (from the egress's source address), reads the greeting, says EHLO with the
/// egress's name and upgrades to TLS when offered (or fails when TLS is required and not
/// offered).
async fn open(
    addr: SocketAddr,
    host: &str,
    settings: &DeliverySettings,
    tls: &Tls,
    egress: &Egress<'_>,
) -> Result<Session, SmtpReply> {
    let connected = match egress.source {
        Some(ip) => SmtpClient::connect_using(ip, addr, settings.connect_timeout).await,
        None => SmtpClient::connect(addr, settings.connect_timeout).await,
    };
    let mut client = connected.map_err(|e| trouble("connecting", e))?;
    let _ = client.stream.set_nodelay(true);
    client.timeout = settings.command_timeout;
    match tokio::time::timeout(settings.command_timeout, client.read()).await {
        Ok(Ok(greeting)) if greeting.code == 220 => {}
        Ok(Ok(greeting)) => return Err(reply_of(&greeting)),
        Ok(Err(e)) => return Err(trouble("waiting for the greeting", e)),
        Err(_) => return Err(local_reply(451, "4.4.2", "The server did not send its greeting in time.")),
    }
    let ehlo = client.ehlo(egress.ehlo).await.map_err(|e| trouble("saying EHLO", e))?;
    let timeout = client.timeout;
    if ehlo.has_capability(EXT_START_TLS) {
        let secured = client.start_tls(&tls.0, host).await.map_err(|e| trouble("starting TLS", e))?;
        let mut client = SmtpClient { stream: Box::new(secured.stream) as Box<dyn Io>, timeout };
        let ehlo = client.ehlo(egress.ehlo).await.map_err(|e| trouble("saying EHLO after STARTTLS", e))?;
        Ok(Session { client, ehlo, tls: true, sent: 0, idle_since: Instant::now() })
    } else if egress.tls_required {
        let _ = client.quit().await;
        Err(local_reply(
            451,
            "4.7.10",
            "The server does not offer STARTTLS, and TLS is required for this provider (providers file).",
        ))
    } else {
        let client = SmtpClient { stream: Box::new(client.stream) as Box<dyn Io>, timeout };
        Ok(Session { client, ehlo, tls: false, sent: 0, idle_since: Instant::now() })
    }
}

/// Delivers `env` to `addr` over one of the lane's connections: a cached session when
/// there is one, else a new one when the lane has room before the egress's deadline.
/// `Err(Busy)`: no connection came free in time, nothing was sent.
pub async fn send(
    addr: SocketAddr,
    host: &str,
    settings: &DeliverySettings,
    tls: &Tls,
    egress: &Egress<'_>,
    env: &Envelope<'_>,
) -> Result<Sent, Busy> {
    let (lease, cached) = egress.connections.checkout(addr, egress.deadline).await?;
    if !(egress.allowed)() {
        if let Some(session) = cached {
            lease.keep(addr, session);
        }
        return Err(Busy);
    }
    let (mut session, mut reused) = match cached {
        Some(s) => (s, true),
        None => match open(addr, host, settings, tls, egress).await {
            Ok(s) => (s, false),
            Err(reply) => return Ok(Sent::Unavailable { reply, tls: false }),
        },
    };
    loop {
        match transaction(&mut session, env).await {
            Ok((reply, reusable)) => {
                let tls = session.tls;
                session.sent += 1;
                if reusable {
                    lease.keep(addr, session);
                } else {
                    let _ = session.client.quit().await;
                }
                metrics::counter!("herald_delivery_smtp_transactions_total", "session" => if reused { "reused" } else { "new" })
                    .increment(1);
                return Ok(Sent::Transaction { reply, tls });
            }
            // A cached session closed by the server before it answered anything: the
            // message was not taken, so try once more on a fresh session.
            Err(Failure { answered: false, .. }) if reused => {
                reused = false;
                session = match open(addr, host, settings, tls, egress).await {
                    Ok(s) => s,
                    Err(reply) => return Ok(Sent::Unavailable { reply, tls: false }),
                };
            }
            Err(Failure { reply, .. }) => return Ok(Sent::Transaction { reply, tls: session.tls }),
        }
    }
}

/// A transaction that ended without a server verdict.
struct Failure {
    reply: SmtpReply,
    /// Whether the server had answered any command of the transaction.
    answered: bool,
}

/// MAIL, RCPT, DATA and the message. `Ok((reply, reusable))` when the server gave a
/// verdict; `reusable` when the session is back in its initial state.
async fn transaction(session: &mut Session, env: &Envelope<'_>) -> Result<(SmtpReply, bool), Failure> {
    let client = &mut session.client;
    let pipelining = session.ehlo.has_capability(EXT_PIPELINING);
    // RFC 6531: UTF-8 addresses need SMTPUTF8; a server without it cannot take them.
    let utf8 = !env.from.is_ascii() || !env.to.is_ascii();
    if utf8 && !session.ehlo.has_capability(EXT_SMTP_UTF8) {
        return Ok((local_reply(553, "5.6.7", "The address needs SMTPUTF8, which the server does not offer."), true));
    }
    let commands = [
        format!("MAIL FROM:<{}>{}\r\n", env.from, if utf8 { " SMTPUTF8" } else { "" }),
        format!("RCPT TO:<{}>\r\n", env.to),
        "DATA\r\n".to_owned(),
    ];
    let replies = if pipelining {
        client
            .cmds(&commands)
            .await
            .map_err(|e| Failure { reply: trouble("sending MAIL, RCPT and DATA", e), answered: false })?
    } else {
        let mut replies = Vec::with_capacity(3);
        for cmd in &commands {
            let r = client.cmd(cmd).await.map_err(|e| Failure {
                reply: trouble("sending MAIL, RCPT and DATA", e),
                answered: !replies.is_empty(),
            })?;
            let stop = r.code >= 400;
            replies.push(r);
            if stop {
                break;
            }
        }
        replies
    };
    for (i, r) in replies.iter().enumerate() {
        let expected = if i == 2 { r.code == 354 } else { (200..300).contains(&r.code) };
        if !expected {
            // The session may be mid-transaction: do not reuse it.
            return Ok((reply_of(r), false));
        }
    }
    let framed = dot_stuff(env.data);
    let written = tokio::time::timeout(client.timeout, async {
        client.stream.write_all(&framed).await?;
        client.stream.flush().await?;
        client.read().await
    })
    .await;
    match written {
        Ok(Ok(r)) => Ok((reply_of(&r), true)),
        Ok(Err(e)) => Err(Failure { reply: trouble("sending the message", e), answered: true }),
        Err(_) => Err(Failure {
            reply: local_reply(451, "4.4.2", "The server did not answer the end of the message in time."),
            answered: true,
        }),
    }
}

/// The DATA payload: CRLF line endings, leading dots doubled (RFC 5321 §4.5.2), ended by
/// `CRLF.CRLF`.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 8);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in message {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::dot_stuff;

    #[test]
    fn dots_and_line_endings() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuff(b".x\nend"), b"..x\r\nend\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b"\r\n.\r\n");
    }
}

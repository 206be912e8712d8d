//! The outbound SMTP session on mail-send: greeting, EHLO, opportunistic STARTTLS, then
//! MAIL/RCPT/DATA, pipelined (RFC 2920) when the server offers PIPELINING.

use super::{local_reply, DeliverySettings};
use herald_schemas::SmtpReply;
use mail_send::SmtpClient;
use smtp_proto::{EhloResponse, Response, EXT_PIPELINING, EXT_SMTP_UTF8, EXT_START_TLS};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// TLS for opportunistic STARTTLS. Like Postfix's `smtp_tls_security_level = may`,
/// certificates are not verified: encryption against passive observers, no
/// authentication (MTA-STS and DANE are what authenticate, later).
pub struct Tls(tokio_rustls::TlsConnector);

impl Tls {
    pub fn opportunistic() -> Result<Self, String> {
        mail_send::smtp::tls::build_tls_connector(true).map(Tls)
    }
}

pub struct Envelope<'a> {
    pub from: &'a str,
    pub to: &'a str,
    /// The message, signed, with CRLF line endings.
    pub data: &'a [u8],
}

/// How a session ended.
pub enum Sent {
    /// The server answered the transaction: the reply decides the outcome.
    Transaction { reply: SmtpReply, tls: bool },
    /// No transaction answer (connection trouble, 4xx/5xx greeting, TLS failure): the next
    /// MX address may be tried.
    Unavailable { reply: SmtpReply, tls: bool },
}

fn reply_of(r: &Response<String>) -> SmtpReply {
    let enhanced = (r.esc[0] != 0).then(|| format!("{}.{}.{}", r.esc[0], r.esc[1], r.esc[2]));
    SmtpReply { code: r.code, enhanced, text: r.message.trim().to_owned() }
}

fn trouble(stage: &str, e: mail_send::Error) -> SmtpReply {
    match e {
        mail_send::Error::UnexpectedReply(r) => reply_of(&r),
        mail_send::Error::Timeout => local_reply(451, "4.4.2", format!("timeout during {stage}")),
        other => local_reply(451, "4.4.2", format!("connection trouble during {stage}: {other:?}")),
    }
}

/// One session to `addr`, delivering `env`.
pub async fn send(addr: SocketAddr, host: &str, settings: &DeliverySettings, tls: &Tls, env: &Envelope<'_>) -> Sent {
    let unavailable = |reply| Sent::Unavailable { reply, tls: false };
    let mut client = match SmtpClient::connect(addr, settings.connect_timeout).await {
        Ok(mut c) => {
            c.timeout = settings.command_timeout;
            c
        }
        Err(e) => return unavailable(trouble("connect", e)),
    };
    match tokio::time::timeout(settings.command_timeout, client.read()).await {
        Ok(Ok(greeting)) if greeting.code == 220 => {}
        Ok(Ok(greeting)) => return unavailable(reply_of(&greeting)),
        Ok(Err(e)) => return unavailable(trouble("greeting", e)),
        Err(_) => return unavailable(local_reply(451, "4.4.2", "timeout waiting for the greeting")),
    }
    let ehlo = match client.ehlo(&settings.helo_name).await {
        Ok(ehlo) => ehlo,
        Err(e) => return unavailable(trouble("EHLO", e)),
    };
    if ehlo.has_capability(EXT_START_TLS) {
        let mut client = match client.start_tls(&tls.0, host).await {
            Ok(c) => c,
            Err(e) => return unavailable(trouble("STARTTLS", e)),
        };
        let ehlo = match client.ehlo(&settings.helo_name).await {
            Ok(ehlo) => ehlo,
            Err(e) => return Sent::Unavailable { reply: trouble("EHLO after STARTTLS", e), tls: true },
        };
        let reply = transaction(&mut client, env, &ehlo).await;
        let _ = client.quit().await;
        Sent::Transaction { reply, tls: true }
    } else {
        let reply = transaction(&mut client, env, &ehlo).await;
        let _ = client.quit().await;
        Sent::Transaction { reply, tls: false }
    }
}

/// MAIL, RCPT, DATA and the message; returns the reply that ends the transaction.
async fn transaction<T: AsyncRead + AsyncWrite + Unpin>(client: &mut SmtpClient<T>, env: &Envelope<'_>, ehlo: &EhloResponse<String>) -> SmtpReply {
    let pipelining = ehlo.has_capability(EXT_PIPELINING);
    // RFC 6531: UTF-8 addresses need SMTPUTF8; a server without it cannot take them.
    let utf8 = !env.from.is_ascii() || !env.to.is_ascii();
    if utf8 && !ehlo.has_capability(EXT_SMTP_UTF8) {
        return local_reply(553, "5.6.7", "the address needs SMTPUTF8, which the server does not offer");
    }
    let commands = [
        format!("MAIL FROM:<{}>{}\r\n", env.from, if utf8 { " SMTPUTF8" } else { "" }),
        format!("RCPT TO:<{}>\r\n", env.to),
        "DATA\r\n".to_owned(),
    ];
    let replies = if pipelining {
        match client.cmds(&commands).await {
            Ok(r) => r,
            Err(e) => return trouble("MAIL/RCPT/DATA", e),
        }
    } else {
        let mut replies = Vec::with_capacity(3);
        for cmd in &commands {
            match client.cmd(cmd).await {
                Ok(r) => {
                    let stop = r.code >= 400;
                    replies.push(r);
                    if stop {
                        break;
                    }
                }
                Err(e) => return trouble("MAIL/RCPT/DATA", e),
            }
        }
        replies
    };
    for (i, r) in replies.iter().enumerate() {
        let expected = if i == 2 { r.code == 354 } else { (200..300).contains(&r.code) };
        if !expected {
            return reply_of(r);
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
        Ok(Ok(r)) => reply_of(&r),
        Ok(Err(e)) => trouble("end of data", e),
        Err(_) => local_reply(451, "4.4.2", "timeout waiting for the reply to end of data"),
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

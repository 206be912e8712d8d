//! The sink's accept loop and SMTP session: a line-based state machine that answers every
//! command already in the read buffer before writing (so pipelined clients get one write
//! per batch), and scans DATA for the terminating `CRLF.CRLF` with memchr's `memmem`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use memchr::memmem;
use smtp_proto::Request;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{SinkConfig, Stats};
use crate::message::parse_stamp;

/// Longest command line accepted before the connection is dropped.
const MAX_LINE: usize = 4096;

/// Largest message accepted (advertised as SIZE).
const MAX_MESSAGE: usize = 100 * 1024 * 1024;

pub(crate) struct Context {
    pub config: SinkConfig,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub stats: Arc<Stats>,
    /// Stop accepting; connections get a grace period to finish on their own.
    pub shutdown: CancellationToken,
    /// Close every connection now.
    pub kill: CancellationToken,
    pub done: CancellationToken,
}

/// How long connections may finish (e.g. QUIT) after the sink stops accepting.
const GRACE: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) async fn accept_loop(listener: TcpListener, ctx: Arc<Context>) {
    let mut conns = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                next_id += 1;
                ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
                conns.spawn(connection(tcp, next_id, ctx.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    // Let clients finish their exchange and QUIT, then close the rest, then abort stragglers.
    for _ in 0..2 {
        let drain = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(GRACE, drain).await.is_ok() {
            break;
        }
        ctx.kill.cancel();
    }
    conns.shutdown().await;
}

async fn connection(tcp: TcpStream, id: u64, ctx: Arc<Context>) {
    let mut session = Session::new(id, ctx.clone());
    let Ok(Ended::StartTls(tcp)) = session.run(tcp, true).await else { return };
    let Some(acceptor) = ctx.tls.clone() else { return };
    if let Ok(tls) = acceptor.accept(tcp).await {
        ctx.stats.tls_sessions.fetch_add(1, Ordering::Relaxed);
        session.after_tls();
        let _ = session.run(tls, false).await;
    }
}

enum Ended<S> {
    Closed,
    StartTls(S),
}

enum Next {
    Continue,
    Close,
    StartTls,
}

struct Session {
    id: u64,
    ctx: Arc<Context>,
    tls_active: bool,
    has_mail: bool,
    recipients: u64,
    in_data: bool,
    awaiting_auth: bool,
    messages: u64,
    finder: memmem::Finder<'static>,
}

impl Session {
    fn new(id: u64, ctx: Arc<Context>) -> Self {
        Session {
            id,
            ctx,
            tls_active: false,
            has_mail: false,
            recipients: 0,
            in_data: false,
            awaiting_auth: false,
            messages: 0,
            finder: memmem::Finder::new(b"\r\n.\r\n"),
        }
    }

    fn after_tls(&mut self) {
        self.tls_active = true;
        self.reset();
    }

    fn reset(&mut self) {
        self.has_mail = false;
        self.recipients = 0;
    }

    async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, mut io: S, greet: bool) -> std::io::Result<Ended<S>> {
        let mut inbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
        let mut out: Vec<u8> = Vec::with_capacity(1024);
        if greet {
            out.extend_from_slice(
                format!("220 {} ESMTP herald-loadtest sink\r\n", self.ctx.config.hostname).as_bytes(),
            );
        }
        let mut scan_from = 0usize;
        loop {
            let mut start = 0usize;
            let next = self.process(&inbuf, &mut start, &mut scan_from, &mut out).await;
            if !out.is_empty() {
                io.write_all(&out).await?;
                io.flush().await?;
                out.clear();
            }
            match next {
                Next::Continue => {}
                Next::Close => return Ok(Ended::Closed),
                Next::StartTls => return Ok(Ended::StartTls(io)),
            }
            if start > 0 {
                inbuf.drain(..start);
                scan_from = scan_from.saturating_sub(start);
            }
            if !self.in_data && inbuf.len() > MAX_LINE {
                io.write_all(b"500 5.5.2 Line too long\r\n").await?;
                return Ok(Ended::Closed);
            }
            if self.in_data && inbuf.len() > MAX_MESSAGE {
                io.write_all(b"552 5.3.4 Message too big\r\n").await?;
                return Ok(Ended::Closed);
            }
            inbuf.reserve(16 * 1024);
            let n = tokio::select! {
                n = io.read_buf(&mut inbuf) => n?,
                _ = self.ctx.kill.cancelled() => return Ok(Ended::Closed),
            };
            if n == 0 {
                return Ok(Ended::Closed);
            }
        }
    }

    /// Answers everything complete in `buf[*start..]`, advancing `start`.
    async fn process(&mut self, buf: &[u8], start: &mut usize, scan_from: &mut usize, out: &mut Vec<u8>) -> Next {
        loop {
            if self.in_data {
                let data = &buf[*start..];
                // The terminator is CRLF.CRLF, or .CRLF right at the start (empty body).
                let (body_len, skip) = if data.starts_with(b".\r\n") {
                    (0, 3)
                } else {
                    let from = scan_from.saturating_sub(*start);
                    match self.finder.find(&data[from..]) {
                        Some(i) => (from + i + 2, from + i + 5),
                        None => {
                            *scan_from = buf.len().saturating_sub(4).max(*start);
                            return Next::Continue;
                        }
                    }
                };
                let close = self.message(&data[..body_len], out).await;
                *start += skip;
                *scan_from = *start;
                if close {
                    return Next::Close;
                }
                continue;
            }
            let Some(nl) = memchr::memchr(b'\n', &buf[*start..]) else { return Next::Continue };
            // The whole line, CRLF included: smtp-proto's parser wants the terminator.
            let line = &buf[*start..*start + nl + 1];
            *start += nl + 1;
            match self.command(line, out) {
                Next::Continue => {
                    if self.in_data {
                        *scan_from = *start;
                    }
                }
                other => return other,
            }
        }
    }

    /// One command line (CRLF included), parsed with smtp-proto.
    fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Next {
        if self.awaiting_auth {
            self.awaiting_auth = false;
            out.extend_from_slice(b"235 2.7.0 Authentication succeeded\r\n");
            return Next::Continue;
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request,
            Err(smtp_proto::Error::UnknownCommand) => {
                out.extend_from_slice(b"500 5.5.2 Command not recognized\r\n");
                return Next::Continue;
            }
            Err(_) => {
                out.extend_from_slice(b"501 5.5.4 Syntax error\r\n");
                return Next::Continue;
            }
        };
        match request {
            Request::Ehlo { .. } => self.ehlo(out),
            Request::Helo { .. } => {
                self.reset();
                out.extend_from_slice(format!("250 {}\r\n", self.ctx.config.hostname).as_bytes());
            }
            Request::Mail { .. } => return self.mail(out),
            Request::Rcpt { to } => self.rcpt(&to.address, out),
            Request::Data => {
                if !self.has_mail {
                    out.extend_from_slice(b"503 5.5.1 MAIL first\r\n");
                } else if self.recipients == 0 {
                    out.extend_from_slice(b"554 5.5.1 no valid recipients\r\n");
                    self.reset();
                } else {
                    out.extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                    self.in_data = true;
                }
            }
            Request::Rset => {
                self.reset();
                out.extend_from_slice(b"250 2.0.0 Ok\r\n");
            }
            Request::Noop { .. } => out.extend_from_slice(b"250 2.0.0 Ok\r\n"),
            Request::Vrfy { .. } => out.extend_from_slice(b"252 2.0.0 Cannot VRFY\r\n"),
            Request::Quit => {
                out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                return Next::Close;
            }
            Request::StartTls if self.ctx.tls.is_some() && !self.tls_active => {
                out.extend_from_slice(b"220 2.0.0 Ready to start TLS\r\n");
                return Next::StartTls;
            }
            Request::Auth { mechanism, initial_response } if mechanism == smtp_proto::AUTH_PLAIN => {
                if initial_response.is_empty() {
                    self.awaiting_auth = true;
                    out.extend_from_slice(b"334 \r\n");
                } else {
                    out.extend_from_slice(b"235 2.7.0 Authentication succeeded\r\n");
                }
            }
            Request::Auth { .. } => out.extend_from_slice(b"504 5.5.4 Unrecognized authentication type\r\n"),
            _ => out.extend_from_slice(b"502 5.5.1 Command not implemented\r\n"),
        }
        Next::Continue
    }

    fn ehlo(&mut self, out: &mut Vec<u8>) {
        self.reset();
        out.extend_from_slice(format!("250-{}\r\n", self.ctx.config.hostname).as_bytes());
        out.extend_from_slice(b"250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n");
        out.extend_from_slice(format!("250-SIZE {MAX_MESSAGE}\r\n").as_bytes());
        if self.ctx.tls.is_some() && !self.tls_active {
            out.extend_from_slice(b"250-STARTTLS\r\n");
        }
        out.extend_from_slice(b"250 AUTH PLAIN\r\n");
    }

    fn mail(&mut self, out: &mut Vec<u8>) -> Next {
        if self.ctx.done.is_cancelled() || self.ctx.shutdown.is_cancelled() {
            out.extend_from_slice(b"421 4.3.2 Sink shutting down\r\n");
            return Next::Close;
        }
        let limit = self.ctx.config.max_messages_per_connection;
        if limit > 0 && self.messages >= limit {
            self.ctx.stats.refused(421);
            out.extend_from_slice(b"421 4.7.0 Too many messages on this connection, closing\r\n");
            return Next::Close;
        }
        if self.has_mail {
            out.extend_from_slice(b"503 5.5.1 Nested MAIL command\r\n");
        } else {
            self.has_mail = true;
            self.recipients = 0;
            out.extend_from_slice(b"250 2.1.0 Ok\r\n");
        }
        Next::Continue
    }

    fn rcpt(&mut self, address: &str, out: &mut Vec<u8>) {
        if !self.has_mail {
            out.extend_from_slice(b"503 5.5.1 MAIL first\r\n");
            return;
        }
        self.ctx.stats.rcpt_replies.fetch_add(1, Ordering::Relaxed);
        if let Some(rule) = self.ctx.config.rules.decide(address) {
            self.ctx.stats.refused(rule.code);
            out.extend_from_slice(rule.reply.as_bytes());
            out.extend_from_slice(b"\r\n");
            return;
        }
        self.recipients += 1;
        out.extend_from_slice(b"250 2.1.5 Ok\r\n");
    }

    /// One message received; returns true when the sink's bound is reached.
    async fn message(&mut self, body: &[u8], out: &mut Vec<u8>) -> bool {
        self.in_data = false;
        self.messages += 1;
        let now = crate::now_us();
        if let Some((_, sent)) = parse_stamp(body) {
            self.ctx.stats.latency.lock().unwrap_or_else(|e| e.into_inner()).record(now.saturating_sub(sent));
        }
        let total = self.ctx.stats.message(self.recipients, body.len() as u64, now);
        if let Some(dir) = &self.ctx.config.save_dir {
            let path = dir.join(format!("{}-{}.eml", self.id, self.messages));
            if let Err(e) = tokio::fs::write(&path, unstuff(body)).await {
                out.extend_from_slice(format!("451 4.3.0 saving failed: {e}\r\n").as_bytes());
                self.reset();
                return false;
            }
        }
        out.extend_from_slice(format!("250 2.0.0 Ok: queued as {}.{}\r\n", self.id, self.messages).as_bytes());
        self.reset();
        if self.ctx.config.stop_after.is_some_and(|n| total >= n) {
            self.ctx.done.cancel();
        }
        false
    }
}

/// The address inside `TO:<...>`, or the whole argument.
/// Removes SMTP dot-stuffing.
fn unstuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut line_start = true;
    for (i, &b) in body.iter().enumerate() {
        if !(line_start && b == b'.' && body.get(i + 1) == Some(&b'.')) {
            out.push(b);
        }
        line_start = b == b'\n';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_unstuffing() {
        match Request::parse(&mut b"RCPT TO:<a@b.test> NOTIFY=NEVER\r\n".iter()) {
            Ok(Request::Rcpt { to }) => assert_eq!(to.address, "a@b.test"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(Request::parse(&mut b"BOGUS x\r\n".iter()), Err(smtp_proto::Error::UnknownCommand)));
        assert_eq!(unstuff(b"a\r\n..b\r\n.c\r\n"), b"a\r\n.b\r\n.c\r\n");
    }
}

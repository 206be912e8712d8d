//! One SMTP session over any byte stream: reads command lines (at most 1000 octets with
//! CRLF), parses them with `smtp_proto::Request::parse`, dispatches to the verb's handler
//! and writes the replies. Replies are buffered and flushed only when no complete command is
//! waiting, so pipelined commands (RFC 2920) get their replies in one write.

use super::reply::{self, Reply};
use super::Server;
use crate::address::Mailbox;
use herald_schemas::AccountId;
use smtp_proto::{Error as ParseError, Request};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A byte stream a session runs on: TCP, TLS over TCP, or an in-memory pipe in tests.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
pub type Io = Box<dyn Stream>;

/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
pub const MAX_LINE: usize = 1000;

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("client closed the connection")]
    Closed,
    #[error("closed by the server")]
    Ended,
}

/// What the next line read gave.
pub(super) enum Line {
    Complete(Vec<u8>),
    TooLong,
}

/// A mail transaction in progress (after MAIL).
pub struct Transaction {
    /// `None`: the null reverse-path `<>`.
    pub sender: Option<Mailbox>,
    pub account: Option<AccountId>,
    pub recipients: Vec<Mailbox>,
    /// BDAT chunks received so far, and an error that fails the rest of the chunks.
    pub chunks: Vec<u8>,
    pub chunk_error: Option<Reply>,
}

pub struct Session {
    pub(super) io: Option<Io>,
    pub(super) buf: Vec<u8>,
    pub(super) out: Vec<u8>,
    pub(super) peer: SocketAddr,
    pub(super) tls: bool,
    pub(super) server: Arc<Server>,
    shutdown: CancellationToken,
    /// The EHLO/HELO name, and whether it was EHLO.
    pub(super) helo: Option<(String, bool)>,
    /// The account authenticated by AUTH, and the user name.
    pub(super) authenticated: Option<(AccountId, String)>,
    pub(super) auth_failures: u32,
    /// Error replies since the last accepted message.
    errors: u32,
    pub(super) tx: Option<Transaction>,
}

impl Session {
    pub fn new(io: Io, peer: SocketAddr, tls: bool, server: Arc<Server>, shutdown: CancellationToken) -> Self {
        Session {
            io: Some(io),
            buf: Vec::with_capacity(4096),
            out: Vec::with_capacity(1024),
            peer,
            tls,
            server,
            shutdown,
            helo: None,
            authenticated: None,
            auth_failures: 0,
            errors: 0,
            tx: None,
        }
    }

    /// Greets, then serves commands until QUIT, a closing reply, EOF, timeout or shutdown.
    pub async fn run(&mut self) -> Result<(), SessionError> {
        let greeting = Reply::new(220, format!("{} ESMTP Herald", self.server.settings.hostname));
        self.send(greeting);
        loop {
            let line = match self.next_line(self.server.settings.command_timeout).await {
                Ok(line) => line,
                Err(SessionError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            };
            let max_errors = self.server.settings.max_errors;
            let reply = if max_errors > 0 && self.errors >= max_errors {
                reply::too_many_errors()
            } else {
                match line {
                    Line::TooLong => reply::line_too_long(),
                    Line::Complete(line) => self.command(&line).await?,
                }
            };
            match reply.code {
                500..=599 => self.errors += 1,
                250 if reply.lines.first().is_some_and(|l| l.contains("queued as")) => self.errors = 0,
                _ => {}
            }
            let closes = reply.closes();
            self.send(reply);
            if closes {
                self.flush().await?;
                self.linger().await;
                return Ok(());
            }
        }
    }

    async fn command(&mut self, line: &[u8]) -> Result<Reply, SessionError> {
        if line.contains(&0) {
            return Ok(Reply::refuse(500, "nul", "5.5.2 NUL characters are not allowed"));
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r.into_owned(),
            Err(e) => return Ok(parse_error(e)),
        };
        Ok(match request {
            Request::Ehlo { host } => self.ehlo(host, true),
            Request::Helo { host } => self.ehlo(host, false),
            Request::StartTls => return self.starttls().await,
            Request::Auth { mechanism, initial_response } => return self.auth(mechanism, initial_response).await,
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => return self.data().await,
            Request::Bdat { chunk_size, is_last } => return self.bdat(chunk_size, is_last).await,
            Request::Rset => {
                self.tx = None;
                reply::ok()
            }
            Request::Noop { .. } => reply::ok(),
            Request::Quit => Reply::new(221, "2.0.0 Bye"),
            Request::Vrfy { .. } => Reply::new(252, "2.1.5 Cannot VRFY user, but will accept message"),
            Request::Help { .. } => Reply::new(214, "2.0.0 See RFC 5321"),
            _ => Reply::refuse(502, "not_implemented", "5.5.1 Command not implemented"),
        })
    }

    /// What the policy may know about this session.
    pub(super) fn peer(&self) -> super::policy::Peer<'_> {
        super::policy::Peer {
            addr: self.peer,
            tls: self.tls,
            helo: self.helo.as_ref(),
            authenticated: self.authenticated.as_ref().map(|(a, _)| a),
        }
    }

    /// After a closing reply: half-closes, then reads and drops what the client still
    /// sends (at most 1 MiB, for at most 1 s), so that the reply is not lost to a TCP
    /// reset while the client is still writing (say, the rest of a refused BDAT chunk).
    async fn linger(&mut self) {
        let Some(mut io) = self.io.take() else { return };
        let _ = io.shutdown().await;
        let mut sink = vec![0u8; 16 * 1024];
        let mut left = 1usize << 20;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while left > 0 {
            match tokio::time::timeout_at(deadline, io.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                _ => return,
            }
        }
    }

    /// Queues `reply` for the next flush.
    pub(super) fn send(&mut self, reply: Reply) {
        reply.write_to(&mut self.out);
    }

    pub(super) async fn flush(&mut self) -> Result<(), SessionError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let io = self.io.as_mut().ok_or(SessionError::Ended)?;
        io.write_all(&self.out).await?;
        io.flush().await?;
        self.out.clear();
        Ok(())
    }

    /// Reads more bytes into `buf` (flushing queued replies first).
    pub(super) async fn read_more(&mut self, timeout: Duration) -> Result<(), SessionError> {
        self.flush().await?;
        let io = self.io.as_mut().ok_or(SessionError::Ended)?;
        self.buf.reserve(16 * 1024);
        let read = tokio::select! {
            _ = self.shutdown.cancelled() => None,
            r = tokio::time::timeout(timeout, io.read_buf(&mut self.buf)) => Some(r),
        };
        match read {
            None => {
                self.send(reply::shutting_down());
                self.flush().await?;
                Err(SessionError::Ended)
            }
            Some(Err(_)) => {
                self.send(reply::timeout());
                self.flush().await?;
                Err(SessionError::Ended)
            }
            Some(Ok(Ok(0))) => Err(SessionError::Closed),
            Some(Ok(Ok(_))) => Ok(()),
            Some(Ok(Err(e))) => Err(e.into()),
        }
    }

    /// The next line (LF-terminated, LF included), or `TooLong` once the rest of an
    /// over-long line has been skipped.
    pub(super) async fn next_line(&mut self, timeout: Duration) -> Result<Line, SessionError> {
        let mut skipping = false;
        loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.buf) {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if skipping || line.len() > MAX_LINE {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Complete(line));
            }
            if self.buf.len() >= MAX_LINE {
                self.buf.clear();
                skipping = true;
            }
            self.read_more(timeout).await?;
        }
    }
}

fn parse_error(e: ParseError) -> Reply {
    match e {
        ParseError::UnknownCommand => reply::unknown_command(),
        ParseError::InvalidSenderAddress | ParseError::InvalidRecipientAddress => {
            Reply::refuse(501, "invalid_address", "5.1.3 Invalid address syntax")
        }
        ParseError::SyntaxError { syntax } => reply::syntax(format!("Syntax: {syntax}")),
        ParseError::InvalidParameter { param } => reply::syntax(format!("Invalid parameter {param}")),
        ParseError::UnsupportedParameter { param } => {
            Reply::refuse(555, "unsupported_parameter", format!("5.5.4 Unsupported parameter {:.40}", param))
        }
        _ => reply::syntax("Syntax error"),
    }
}

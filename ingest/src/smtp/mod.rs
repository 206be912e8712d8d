//! Herald's SMTP servers: the submission server and smart host (RFC 5321, ESMTP
//! extensions, STARTTLS, AUTH), and the session machinery the bounce MX
//! (`crate::inbound`) shares. A file per stage or verb: [`session`] runs the state machine
//! over any byte stream; [`ehlo`], [`starttls`], [`auth`], [`mail`], [`rcpt`] and [`data`]
//! handle their commands; [`limits`] holds the shared limits; [`reply`] the replies. What
//! differs between servers is a [`policy::Policy`]; [`submission`] is ingestion's: accepted
//! messages are appended through the same [`crate::accept`] helpers and `Submitter` as
//! `POST /v1/send`, and the final 250 is sent only once every recipient's event is durable.

pub mod auth;
pub mod data;
pub mod ehlo;
pub mod limits;
pub mod mail;
pub mod policy;
pub mod rcpt;
pub mod reply;
pub mod session;
pub mod starttls;
pub mod submission;

use herald_engine::accounts::AccountCache;
use herald_engine::submit::Submitter;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Limits and behaviour of the SMTP server (from `[smtp]` in the config).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Name in the greeting, EHLO reply and `Received:`.
    pub hostname: String,
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// AUTH allowed without TLS (only for trusted networks or tests).
    pub allow_plaintext_auth: bool,
    pub auth_failure_delay: Duration,
    /// Failed AUTH attempts of one client IP (within `auth_lockout`) before it is refused.
    pub max_auth_failures: u32,
    pub auth_lockout: Duration,
    /// Messages per second per account (0: unlimited) and the burst allowed.
    pub account_rate: u32,
    pub account_burst: u32,
    /// Error replies (5xx) a session may get before its next command is answered
    /// 421 4.7.0 and the connection closed (Postfix's `smtpd_hard_error_limit`).
    pub max_errors: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            hostname: "localhost.localdomain".into(),
            max_message_bytes: 25 * 1024 * 1024,
            max_recipients: 1000,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            max_connections: 1000,
            max_connections_per_ip: 100,
            allow_plaintext_auth: false,
            auth_failure_delay: Duration::from_secs(1),
            max_auth_failures: 5,
            auth_lockout: Duration::from_secs(600),
            account_rate: 0,
            account_burst: 0,
            max_errors: 20,
        }
    }
}

/// Everything a session needs; shared by all connections of one server.
pub struct Server {
    pub settings: Settings,
    pub tls: Option<TlsAcceptor>,
    pub connections: Arc<limits::Connections>,
    /// What this server accepts and does with it.
    pub policy: Arc<dyn policy::Policy>,
}

impl Server {
    /// The submission server and smart host.
    pub fn new(
        settings: Settings,
        submitter: Submitter,
        accounts: AccountCache,
        account_limits: Arc<crate::limits::Limits>,
        sender: Arc<crate::sender::SenderPolicy>,
        tls: Option<TlsAcceptor>,
    ) -> Self {
        let policy = submission::Submission::new(&settings, submitter, accounts, account_limits, sender);
        Server::with_policy(settings, tls, Arc::new(policy))
    }

    /// A server with another policy (the bounce MX).
    pub fn with_policy(settings: Settings, tls: Option<TlsAcceptor>, policy: Arc<dyn policy::Policy>) -> Self {
        Server { settings, tls, connections: Arc::default(), policy }
    }
}

/// Accepts connections on `listener` until `shutdown`; `implicit_tls` starts each session
/// with a TLS handshake (port 465). Sessions in progress are told 421 at shutdown.
pub async fn run(
    listener: TcpListener,
    implicit_tls: bool,
    server: Arc<Server>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "smtp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while sessions.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let (server, shutdown) = (server.clone(), shutdown.clone());
        sessions.spawn(async move { connection(stream, peer, implicit_tls, server, shutdown).await });
    }
    let drained =
        tokio::time::timeout(Duration::from_secs(10), async { while sessions.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        sessions.abort_all();
    }
    Ok(())
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
    server: Arc<Server>,
    shutdown: CancellationToken,
) {
    use tokio::io::AsyncWriteExt;
    let s = &server.settings;
    let Some(_slot) = server.connections.acquire(peer.ip(), s.max_connections, s.max_connections_per_ip) else {
        let mut stream = stream;
        let mut out = vec![];
        reply::Reply::refuse(421, "too_many_connections", "4.7.0 Too many connections, try again later")
            .write_to(&mut out);
        let _ = stream.write_all(&out).await;
        return;
    };
    let io: session::Io = if implicit_tls {
        let Some(tls) = server.tls.clone() else { return };
        match tokio::time::timeout(s.command_timeout, tls.accept(stream)).await {
            Ok(Ok(tls)) => Box::new(tls),
            _ => return,
        }
    } else {
        Box::new(stream)
    };
    metrics::counter!("herald_smtp_ingest_sessions_total").increment(1);
    let mut session = session::Session::new(io, peer, implicit_tls, server.clone(), shutdown);
    if let Err(e) = session.run().await {
        tracing::debug!(%peer, error = %e, "smtp session ended");
    }
}

//! A scripted SMTP sink on loopback: accepts everything unless told otherwise, records
//! what arrived (and every RCPT it was asked, accepted or not). `script` holds replies for
//! the next RCPT commands, in order; recipients whose local part starts with `always451`
//! are always deferred, `always550` always refused as unknown users, `always552` always
//! refused as over quota. With TLS, it offers STARTTLS (self-signed certificate) and
//! records whether each message came over TLS. `defer_all` defers every recipient while
//! on; a message to a recipient whose local part starts with `hold` gets its final reply
//! only after `hold` (the first time only).
//! It records when each message and each RCPT arrived, from which client address, under
//! which EHLO name and on which connection, and the most sessions open at once.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
    pub tls: bool,
    /// When the message's data ended.
    pub at: std::time::Instant,
    /// The client's address.
    pub peer: SocketAddr,
    /// The name the client announced in EHLO/HELO.
    pub ehlo: String,
    /// The connection (numbered from 1 in the order they were accepted).
    pub connection: usize,
}

/// One RCPT command and the reply it got.
#[derive(Debug, Clone)]
pub struct Rcpt {
    pub at: std::time::Instant,
    pub to: String,
    pub reply: String,
}

/// Replies `reply` to every `every`-th RCPT (counted over the sink's life).
#[derive(Debug, Clone)]
struct Every {
    every: usize,
    reply: String,
}

#[derive(Clone, Default)]
pub struct Sink {
    pub received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<String>>>,
    tls: Option<TlsAcceptor>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Close each connection after its message (as a server with a per-connection limit).
    close_after_message: Arc<AtomicBool>,
    /// Defer every recipient (451) while set.
    defer_all: Arc<AtomicBool>,
    /// How long the final reply to a `hold…` recipient's first message waits.
    hold: Arc<Mutex<Option<std::time::Duration>>>,
    held: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Every RCPT with its reply.
    pub rcpts: Arc<Mutex<Vec<Rcpt>>>,
    /// When each connection was accepted.
    pub opened: Arc<Mutex<Vec<std::time::Instant>>>,
    /// Sessions open now, and the most at once.
    sessions: Arc<AtomicUsize>,
    max_sessions: Arc<AtomicUsize>,
    every: Arc<Mutex<Option<Every>>>,
}

fn acceptor() -> TlsAcceptor {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ck = rcgen::generate_simple_self_signed(vec!["mx.example.test".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

impl Sink {
    /// Starts on `127.0.0.1:port` (0: any), without TLS.
    pub async fn start(port: u16) -> (Sink, SocketAddr) {
        Self::launch(port, None).await
    }

    /// Starts on any port, offering STARTTLS.
    pub async fn start_tls() -> (Sink, SocketAddr) {
        Self::launch(0, Some(acceptor())).await
    }

    async fn launch(port: u16, tls: Option<TlsAcceptor>) -> (Sink, SocketAddr) {
        Self::launch_on("127.0.0.1", port, tls).await
    }

    /// Starts on `ip:0`, without TLS.
    pub async fn start_on(ip: &str) -> (Sink, SocketAddr) {
        Self::launch_on(ip, 0, None).await
    }

    async fn launch_on(ip: &str, port: u16, tls: Option<TlsAcceptor>) -> (Sink, SocketAddr) {
        let listener = TcpListener::bind((ip, port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = Sink { tls, ..Sink::default() };
        let s = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = s.serve(stream).await;
                });
            }
        });
        (sink, addr)
    }

    /// Replies for the next RCPT commands (e.g. "451 4.7.1 try later").
    pub fn script(&self, replies: &[&str]) {
        self.script.lock().unwrap().extend(replies.iter().map(|r| r.to_string()));
    }

    /// Answers `reply` to every `every`-th RCPT from now on.
    pub fn reply_every(&self, every: usize, reply: &str) {
        *self.every.lock().unwrap() = Some(Every { every, reply: reply.to_owned() });
    }

    /// The most sessions that were open at once.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions.load(Ordering::SeqCst)
    }

    pub fn defer_all(&self, on: bool) {
        self.defer_all.store(on, Ordering::SeqCst);
    }

    /// Holds the final reply to the first message for each `hold…` recipient this long.
    pub fn hold_final_reply(&self, d: std::time::Duration) {
        *self.hold.lock().unwrap() = Some(d);
    }

    pub fn close_after_each_message(&self, on: bool) {
        self.close_after_message.store(on, Ordering::SeqCst);
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// How many times `address` was named in a RCPT.
    pub fn rcpt_count(&self, address: &str) -> usize {
        self.rcpts.lock().unwrap().iter().filter(|r| r.to.eq_ignore_ascii_case(address)).count()
    }

    async fn serve(&self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let connection = self.connections.fetch_add(1, Ordering::SeqCst) + 1;
        self.opened.lock().unwrap().push(std::time::Instant::now());
        let open = self.sessions.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_sessions.fetch_max(open, Ordering::SeqCst);
        let served = self.serve_session(stream, connection).await;
        self.sessions.fetch_sub(1, Ordering::SeqCst);
        served
    }

    async fn serve_session(&self, mut stream: tokio::net::TcpStream, connection: usize) -> std::io::Result<()> {
        let peer = stream.peer_addr()?;
        let mut ehlo = String::new();
        stream.write_all(b"220 sink.test ESMTP ready\r\n").await?;
        if let Some(plain) = self.session(BufReader::new(stream), false, peer, connection, &mut ehlo).await? {
            let acceptor = self.tls.clone().expect("STARTTLS only offered with TLS");
            // Bytes pipelined before the handshake were dropped with the BufReader.
            let tls = acceptor.accept(plain).await?;
            self.session(BufReader::new(tls), true, peer, connection, &mut ehlo).await?;
        }
        Ok(())
    }

    /// Runs commands until QUIT or EOF; returns the stream when the client asks for TLS.
    async fn session<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut io: BufReader<S>,
        tls: bool,
        peer: SocketAddr,
        connection: usize,
        ehlo: &mut String,
    ) -> std::io::Result<Option<S>> {
        let (mut from, mut to) = (String::new(), Vec::<String>::new());
        let mut line = String::new();
        loop {
            line.clear();
            if io.read_line(&mut line).await? == 0 {
                return Ok(None);
            }
            let cmd = line.trim_end().to_owned();
            let upper = cmd.to_ascii_uppercase();
            if upper.starts_with("EHLO ") || upper.starts_with("HELO ") {
                *ehlo = cmd[5..].trim().to_owned();
            }
            let reply: String = if upper.starts_with("EHLO") {
                let starttls = if self.tls.is_some() && !tls { "250-STARTTLS\r\n" } else { "" };
                format!("250-sink.test\r\n{starttls}250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES")
            } else if upper == "STARTTLS" && self.tls.is_some() && !tls {
                io.write_all(b"220 2.0.0 go ahead\r\n").await?;
                io.flush().await?;
                return Ok(Some(io.into_inner()));
            } else if upper.starts_with("HELO") {
                "250 sink.test".into()
            } else if upper.starts_with("MAIL FROM:") {
                from = between(&cmd);
                to.clear();
                "250 2.1.0 ok".into()
            } else if upper.starts_with("RCPT TO:") {
                let rcpt = between(&cmd);
                // Held until this RCPT is recorded: sessions at once must not take one number.
                let mut rcpts = self.rcpts.lock().unwrap();
                let n = rcpts.len() + 1;
                let every = self.every.lock().unwrap().clone().filter(|e| n.is_multiple_of(e.every));
                let reply = if rcpt.starts_with("always451") || self.defer_all.load(Ordering::SeqCst) {
                    "451 4.3.0 mailbox busy".into()
                } else if rcpt.starts_with("always550") {
                    format!("550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table")
                } else if rcpt.starts_with("always552") {
                    format!("552 5.2.2 <{rcpt}>: Mailbox full")
                } else if let Some(e) = every {
                    e.reply
                } else {
                    self.script.lock().unwrap().pop_front().unwrap_or_else(|| "250 2.1.5 ok".into())
                };
                let at = std::time::Instant::now();
                rcpts.push(Rcpt { at, to: rcpt.clone(), reply: reply.clone() });
                drop(rcpts);
                if reply.starts_with('2') {
                    to.push(rcpt);
                }
                reply
            } else if upper == "DATA" {
                if to.is_empty() {
                    "554 5.5.1 no valid recipients".into()
                } else {
                    io.write_all(b"354 go ahead\r\n").await?;
                    io.flush().await?;
                    let mut data = Vec::new();
                    loop {
                        let mut l = Vec::new();
                        if io.read_until(b'\n', &mut l).await? == 0 {
                            return Ok(None);
                        }
                        if l == b".\r\n" {
                            break;
                        }
                        let l = if l.starts_with(b"..") { l[1..].to_vec() } else { l };
                        data.extend_from_slice(&l);
                    }
                    self.received.lock().unwrap().push(Received {
                        from: from.clone(),
                        to: to.clone(),
                        data,
                        tls,
                        at: std::time::Instant::now(),
                        peer,
                        ehlo: ehlo.clone(),
                        connection,
                    });
                    let hold = *self.hold.lock().unwrap();
                    if let Some(d) = hold {
                        let first =
                            to.iter().any(|r| r.starts_with("hold") && self.held.lock().unwrap().insert(r.clone()));
                        if first {
                            tokio::time::sleep(d).await;
                        }
                    }
                    if self.close_after_message.load(Ordering::SeqCst) {
                        io.write_all(b"250 2.0.0 queued\r\n").await?;
                        io.flush().await?;
                        return Ok(None); // closes without waiting for QUIT
                    }
                    "250 2.0.0 queued".into()
                }
            } else if upper == "RSET" || upper == "NOOP" {
                "250 2.0.0 ok".into()
            } else if upper == "QUIT" {
                io.write_all(b"221 2.0.0 bye\r\n").await?;
                io.flush().await?;
                return Ok(None);
            } else {
                "500 5.5.2 unknown command".into()
            };
            io.write_all(reply.as_bytes()).await?;
            io.write_all(b"\r\n").await?;
            io.flush().await?;
        }
    }
}

fn between(cmd: &str) -> String {
    let start = cmd.find('<').map(|i| i + 1).unwrap_or(0);
    let end = cmd.rfind('>').unwrap_or(cmd.len());
    cmd[start..end].to_owned()
}

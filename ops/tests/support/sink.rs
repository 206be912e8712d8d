//! A scripted SMTP sink on loopback: accepts everything unless told otherwise, records
//! what arrived (and every RCPT it was asked, accepted or not). `script` holds replies for
//! the next RCPT commands, in order; recipients whose local part starts with `always451`
//! are always deferred, `always550` always refused as unknown users, `always552` always
//! refused as over quota. With TLS, it offers STARTTLS (self-signed certificate) and
//! records whether each message came over TLS. `defer_all` defers every recipient while
//! on; a message to a recipient whose local part starts with `hold` gets its final reply
//! only after `hold` (the first time only).

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
}

#[derive(Clone, Default)]
pub struct Sink {
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Every RCPT address asked, in order.
    pub rcpts: Arc<Mutex<Vec<String>>>,
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
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
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
        self.rcpts.lock().unwrap().iter().filter(|r| r.eq_ignore_ascii_case(address)).count()
    }

    async fn serve(&self, mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
        self.connections.fetch_add(1, Ordering::SeqCst);
        stream.write_all(b"220 sink.test ESMTP ready\r\n").await?;
        if let Some(plain) = self.session(BufReader::new(stream), false).await? {
            let acceptor = self.tls.clone().expect("STARTTLS only offered with TLS");
            // Bytes pipelined before the handshake were dropped with the BufReader.
            let tls = acceptor.accept(plain).await?;
            self.session(BufReader::new(tls), true).await?;
        }
        Ok(())
    }

    /// Runs commands until QUIT or EOF; returns the stream when the client asks for TLS.
    async fn session<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut io: BufReader<S>,
        tls: bool,
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
                self.rcpts.lock().unwrap().push(rcpt.clone());
                let reply = if rcpt.starts_with("always451") || self.defer_all.load(Ordering::SeqCst) {
                    "451 4.3.0 mailbox busy".into()
                } else if rcpt.starts_with("always550") {
                    format!("550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table")
                } else if rcpt.starts_with("always552") {
                    format!("552 5.2.2 <{rcpt}>: Mailbox full")
                } else {
                    self.script.lock().unwrap().pop_front().unwrap_or_else(|| "250 2.1.5 ok".into())
                };
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
                    self.received.lock().unwrap().push(Received { from: from.clone(), to: to.clone(), data, tls });
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

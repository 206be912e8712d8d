//! The generator's SMTP client: EHLO, optional STARTTLS and AUTH PLAIN, then transactions
//! on a reused connection, pipelined (MAIL, every RCPT and DATA in one write) when the
//! server offers PIPELINING.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{GeneratorError, Outcome};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where and how to connect.
#[derive(Clone)]
pub struct SmtpTarget {
    pub addr: String,
    pub helo: String,
    pub starttls: bool,
    pub auth: Option<(String, String)>,
    pub timeout: Duration,
    pub tls: Arc<rustls::ClientConfig>,
}

/// One SMTP reply: its code and its last line.
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

/// An open, greeted, ready session.
pub struct Client {
    io: Box<dyn Io>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    pipelining: bool,
    timeout: Duration,
}

fn protocol(what: &str, r: &Reply) -> GeneratorError {
    GeneratorError::Protocol(format!("{what}: {} {}", r.code, r.text))
}

impl Client {
    pub async fn connect(t: &SmtpTarget) -> Result<Client, GeneratorError> {
        let tcp = tokio::time::timeout(t.timeout, TcpStream::connect(&t.addr))
            .await
            .map_err(|_| GeneratorError::Timeout("connect"))?
            .map_err(|e| GeneratorError::Connect(t.addr.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        let mut c = Client {
            io: Box::new(tcp),
            rbuf: Vec::with_capacity(8192),
            wbuf: Vec::with_capacity(16 * 1024),
            pipelining: false,
            timeout: t.timeout,
        };
        let greeting = c.reply().await?;
        if greeting.code != 220 {
            return Err(protocol("greeting", &greeting));
        }
        let mut caps = c.ehlo(&t.helo).await?;
        if t.starttls {
            if !caps.iter().any(|l| l.eq_ignore_ascii_case("STARTTLS")) {
                return Err(GeneratorError::Protocol("the server does not offer STARTTLS".into()));
            }
            let r = c.command("STARTTLS\r\n").await?;
            if r.code != 220 {
                return Err(protocol("STARTTLS", &r));
            }
            c = c.upgrade(t).await?;
            caps = c.ehlo(&t.helo).await?;
        }
        c.pipelining = caps.iter().any(|l| l.eq_ignore_ascii_case("PIPELINING"));
        if let Some((user, pass)) = &t.auth {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
            let r = c.command(&format!("AUTH PLAIN {token}\r\n")).await?;
            if r.code != 235 {
                return Err(protocol("AUTH PLAIN", &r));
            }
        }
        Ok(c)
    }

    async fn upgrade(self, t: &SmtpTarget) -> Result<Client, GeneratorError> {
        let host = t.addr.rsplit_once(':').map_or(t.addr.as_str(), |(h, _)| h).trim_matches(['[', ']']);
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| GeneratorError::Protocol(format!("TLS server name {host}: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(t.tls.clone());
        // The plain stream is a Box<dyn Io>; TLS wraps it as is.
        let tls = tokio::time::timeout(t.timeout, connector.connect(name, self.io))
            .await
            .map_err(|_| GeneratorError::Timeout("TLS handshake"))?
            .map_err(GeneratorError::Io)?;
        Ok(Client {
            io: Box::new(tls),
            rbuf: Vec::with_capacity(8192),
            wbuf: self.wbuf,
            pipelining: false,
            timeout: self.timeout,
        })
    }

    /// EHLO; returns the capability lines (first word of each).
    async fn ehlo(&mut self, helo: &str) -> Result<Vec<String>, GeneratorError> {
        self.send(format!("EHLO {helo}\r\n").as_bytes()).await?;
        let mut caps = Vec::new();
        loop {
            let (code, last, text) = self.line().await?;
            if code != 250 {
                return Err(protocol("EHLO", &Reply { code, text }));
            }
            caps.push(text.split(' ').next().unwrap_or("").to_string());
            if last {
                return Ok(caps);
            }
        }
    }

    async fn command(&mut self, cmd: &str) -> Result<Reply, GeneratorError> {
        self.send(cmd.as_bytes()).await?;
        self.reply().await
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), GeneratorError> {
        let io = &mut self.io;
        let write = async {
            io.write_all(bytes).await?;
            io.flush().await
        };
        tokio::time::timeout(self.timeout, write)
            .await
            .map_err(|_| GeneratorError::Timeout("write"))?
            .map_err(GeneratorError::Io)
    }

    async fn flush_wbuf(&mut self) -> Result<(), GeneratorError> {
        let buf = std::mem::take(&mut self.wbuf);
        let r = self.send(&buf).await;
        self.wbuf = buf;
        self.wbuf.clear();
        r
    }

    /// Reads one reply line: (code, is last line, text after the code).
    async fn line(&mut self) -> Result<(u16, bool, String), GeneratorError> {
        loop {
            if let Some(nl) = memchr::memchr(b'\n', &self.rbuf) {
                let raw: Vec<u8> = self.rbuf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&raw);
                let line = line.trim_end();
                let code = line
                    .get(..3)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| GeneratorError::Protocol(format!("malformed reply {line:?}")))?;
                let last = line.as_bytes().get(3) != Some(&b'-');
                return Ok((code, last, line.get(4..).unwrap_or("").to_string()));
            }
            self.rbuf.reserve(4096);
            let n = tokio::time::timeout(self.timeout, self.io.read_buf(&mut self.rbuf))
                .await
                .map_err(|_| GeneratorError::Timeout("reply"))?
                .map_err(GeneratorError::Io)?;
            if n == 0 {
                return Err(GeneratorError::Closed);
            }
        }
    }

    pub async fn reply(&mut self) -> Result<Reply, GeneratorError> {
        loop {
            let (code, last, text) = self.line().await?;
            if last {
                return Ok(Reply { code, text });
            }
        }
    }

    /// One transaction. `data` is the message (dot-stuffed, ending in CRLF).
    pub async fn transaction(
        &mut self,
        from: &str,
        recipients: &[String],
        data: &[u8],
    ) -> Result<Outcome, GeneratorError> {
        use std::fmt::Write as _;
        let mut cmds = String::with_capacity(64 + recipients.len() * 48);
        let _ = write!(cmds, "MAIL FROM:<{from}>\r\n");
        let mut outcome = Outcome::default();
        if self.pipelining {
            for r in recipients {
                let _ = write!(cmds, "RCPT TO:<{r}>\r\n");
            }
            cmds.push_str("DATA\r\n");
            self.send(cmds.as_bytes()).await?;
            // A 421 anywhere means the server is closing: stop reading replies there.
            let mail = self.reply().await?;
            if mail.code != 250 {
                outcome.refuse(mail.code);
            }
            if outcome.closed {
                return Ok(outcome);
            }
            for _ in recipients {
                let r = self.reply().await?;
                outcome.rcpt(r.code, mail.code);
                if outcome.closed {
                    return Ok(outcome);
                }
            }
            let data_reply = self.reply().await?;
            if data_reply.code != 354 {
                return self.abandon(outcome).await;
            }
        } else {
            let mail = self.command(&cmds).await?;
            if mail.code != 250 {
                outcome.refuse(mail.code);
                return Ok(outcome.closing(mail.code));
            }
            let mut accepted = 0;
            for r in recipients {
                let reply = self.command(&format!("RCPT TO:<{r}>\r\n")).await?;
                accepted += outcome.rcpt(reply.code, 250);
                if outcome.closed {
                    return Ok(outcome);
                }
            }
            if accepted == 0 {
                return self.abandon(outcome).await;
            }
            let d = self.command("DATA\r\n").await?;
            if d.code != 354 {
                outcome.refuse(d.code);
                return self.abandon(outcome).await;
            }
        }
        self.wbuf.clear();
        self.wbuf.extend_from_slice(data);
        self.wbuf.extend_from_slice(b".\r\n");
        self.flush_wbuf().await?;
        let done = self.reply().await?;
        if done.code == 250 {
            outcome.accepted = true;
        } else {
            outcome.refuse(done.code);
        }
        Ok(outcome.closing(done.code))
    }

    /// The transaction ended before the body: reset it (unless the server is closing).
    async fn abandon(&mut self, outcome: Outcome) -> Result<Outcome, GeneratorError> {
        if outcome.closed || outcome.refused.contains(&421) {
            return Ok(Outcome { closed: true, ..outcome });
        }
        let r = self.command("RSET\r\n").await?;
        Ok(outcome.closing(r.code))
    }

    pub async fn quit(mut self) {
        let _ = self.send(b"QUIT\r\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.reply()).await;
    }
}

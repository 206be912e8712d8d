//! A scripted SMTP sink on loopback: accepts everything unless told otherwise, records
//! what arrived. `script` holds replies for the next RCPT commands, in order.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
}

#[derive(Clone, Default)]
pub struct Sink {
    pub received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<String>>>,
    pub rcpt_commands: Arc<Mutex<usize>>,
}

impl Sink {
    /// Starts on `127.0.0.1:port` (0: any).
    pub async fn start(port: u16) -> (Sink, SocketAddr) {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = Sink::default();
        let s = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = s.session(stream).await;
                });
            }
        });
        (sink, addr)
    }

    /// Replies for the next RCPT commands (e.g. "451 4.7.1 try later").
    pub fn script(&self, replies: &[&str]) {
        self.script.lock().unwrap().extend(replies.iter().map(|r| r.to_string()));
    }

    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    async fn session(&self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"220 sink.test ESMTP ready\r\n").await?;
        let (mut from, mut to) = (String::new(), Vec::<String>::new());
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let cmd = line.trim_end().to_owned();
            let upper = cmd.to_ascii_uppercase();
            let reply: String = if upper.starts_with("EHLO") {
                "250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES".into()
            } else if upper.starts_with("HELO") {
                "250 sink.test".into()
            } else if upper.starts_with("MAIL FROM:") {
                from = between(&cmd);
                to.clear();
                "250 2.1.0 ok".into()
            } else if upper.starts_with("RCPT TO:") {
                *self.rcpt_commands.lock().unwrap() += 1;
                let scripted = self.script.lock().unwrap().pop_front();
                let reply = scripted.unwrap_or_else(|| "250 2.1.5 ok".into());
                if reply.starts_with('2') {
                    to.push(between(&cmd));
                }
                reply
            } else if upper == "DATA" {
                if to.is_empty() {
                    "554 5.5.1 no valid recipients".into()
                } else {
                    w.write_all(b"354 go ahead\r\n").await?;
                    let mut data = Vec::new();
                    loop {
                        let mut l = Vec::new();
                        if r.read_until(b'\n', &mut l).await? == 0 {
                            return Ok(());
                        }
                        if l == b".\r\n" {
                            break;
                        }
                        let l = if l.starts_with(b"..") { l[1..].to_vec() } else { l };
                        data.extend_from_slice(&l);
                    }
                    self.received.lock().unwrap().push(Received { from: from.clone(), to: to.clone(), data });
                    "250 2.0.0 queued".into()
                }
            } else if upper == "RSET" || upper == "NOOP" {
                "250 2.0.0 ok".into()
            } else if upper == "QUIT" {
                w.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            } else {
                "500 5.5.2 unknown command".into()
            };
            w.write_all(reply.as_bytes()).await?;
            w.write_all(b"\r\n").await?;
        }
    }
}

fn between(cmd: &str) -> String {
    let start = cmd.find('<').map(|i| i + 1).unwrap_or(0);
    let end = cmd.rfind('>').unwrap_or(cmd.len());
    cmd[start..end].to_owned()
}

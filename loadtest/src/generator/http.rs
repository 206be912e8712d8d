//! The generator's REST client: a minimal HTTP/1.1 client over one keep-alive connection per
//! worker, writing each `POST /v1/send` in a single write and reading the response by
//! `Content-Length` (or chunked encoding). Plain HTTP only: load tests run on loopback.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::GeneratorError;

/// `http://host:port[/prefix]` split into what the client needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpTarget {
    pub host: String,
    pub port: u16,
    /// Path of the send endpoint, e.g. `/v1/send`.
    pub path: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

impl HttpTarget {
    /// Parses a base URL such as `http://127.0.0.1:8080`.
    pub fn parse(url: &str, api_key: Option<String>, timeout: Duration) -> Result<HttpTarget, GeneratorError> {
        let bad = |why: &str| GeneratorError::Target(format!("{url}: {why}"));
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("expected an http:// URL (the REST generator speaks plain HTTP)"))?;
        let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') => (h, p.parse().map_err(|_| bad("bad port"))?),
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let prefix = prefix.trim_end_matches('/');
        let path = if prefix.is_empty() { "/v1/send".to_string() } else { format!("/{prefix}/v1/send") };
        Ok(HttpTarget { host: host.to_string(), port, path, api_key, timeout })
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn head(&self, len: usize) -> String {
        let auth = self.api_key.as_ref().map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
        format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\n{auth}Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
            self.path, self.host, self.port
        )
    }
}

/// One keep-alive connection.
pub struct Conn {
    tcp: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    timeout: Duration,
    /// The server asked to close after the last response.
    pub closing: bool,
}

impl Conn {
    pub async fn connect(t: &HttpTarget) -> Result<Conn, GeneratorError> {
        let tcp = tokio::time::timeout(t.timeout, TcpStream::connect(t.addr()))
            .await
            .map_err(|_| GeneratorError::Timeout("connect"))?
            .map_err(|e| GeneratorError::Connect(t.addr(), e))?;
        let _ = tcp.set_nodelay(true);
        Ok(Conn {
            tcp,
            rbuf: Vec::with_capacity(8192),
            wbuf: Vec::with_capacity(16 * 1024),
            timeout: t.timeout,
            closing: false,
        })
    }

    /// Sends one JSON body; returns the status code.
    pub async fn post(&mut self, t: &HttpTarget, body: &[u8]) -> Result<u16, GeneratorError> {
        self.wbuf.clear();
        self.wbuf.extend_from_slice(t.head(body.len()).as_bytes());
        self.wbuf.extend_from_slice(body);
        tokio::time::timeout(self.timeout, self.tcp.write_all(&self.wbuf))
            .await
            .map_err(|_| GeneratorError::Timeout("write"))?
            .map_err(GeneratorError::Io)?;
        tokio::time::timeout(self.timeout, self.response()).await.map_err(|_| GeneratorError::Timeout("response"))?
    }

    async fn fill(&mut self) -> Result<(), GeneratorError> {
        self.rbuf.reserve(8192);
        match self.tcp.read_buf(&mut self.rbuf).await.map_err(GeneratorError::Io)? {
            0 => Err(GeneratorError::Closed),
            _ => Ok(()),
        }
    }

    async fn response(&mut self) -> Result<u16, GeneratorError> {
        let head_end = loop {
            if let Some(i) = memchr::memmem::find(&self.rbuf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.rbuf[..head_end]).into_owned();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| GeneratorError::Protocol(format!("malformed status line in {head:?}")))?;
        let header = |name: &str| {
            head.lines().find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_ascii_lowercase())
            })
        };
        self.closing = header("connection").is_some_and(|v| v == "close");
        self.rbuf.drain(..head_end);
        if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            self.chunked().await?;
        } else {
            let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            while self.rbuf.len() < len {
                self.fill().await?;
            }
            self.rbuf.drain(..len);
        }
        Ok(status)
    }

    /// Skips a chunked body.
    async fn chunked(&mut self) -> Result<(), GeneratorError> {
        loop {
            let line_end = loop {
                if let Some(i) = memchr::memmem::find(&self.rbuf, b"\r\n") {
                    break i;
                }
                self.fill().await?;
            };
            let size_text = String::from_utf8_lossy(&self.rbuf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| GeneratorError::Protocol(format!("bad chunk size {size_text:?}")))?;
            let need = line_end + 2 + size + 2;
            while self.rbuf.len() < need {
                self.fill().await?;
            }
            self.rbuf.drain(..need);
            if size == 0 {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = HttpTarget::parse("http://127.0.0.1:8080", None, Duration::from_secs(1)).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("127.0.0.1", 8080, "/v1/send"));
        let t = HttpTarget::parse("http://localhost/api/", None, Duration::from_secs(1)).unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/api/v1/send"));
        assert!(HttpTarget::parse("https://127.0.0.1", None, Duration::from_secs(1)).is_err());
    }
}

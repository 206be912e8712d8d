//! DATA (dot-terminated) and BDAT (RFC 3030 chunks), the checks every server makes (size,
//! NUL, bare CR), then the server's policy decides the final reply (submission:
//! `super::submission`; the bounce MX: `crate::inbound`).
//!
//! Line endings (RFC 5321 §2.3.8, §4.1.1.4): only `CRLF.CRLF` ends DATA, so a bare LF
//! can never end a message (no SMTP smuggling). A bare LF is normalized to CRLF and a line
//! after it is not dot-unstuffed; a bare CR refuses the message (550 5.6.2); a NUL refuses
//! it (550 5.6.0). 8-bit content without BODY=8BITMIME is accepted as is (as Postfix does).

use super::reply::{self, Reply};
use super::session::{Session, SessionError};
use crate::accept;

/// Incremental DATA decoder: dot-unstuffing and end-of-data detection.
#[derive(Default)]
pub struct DotDecoder {
    state: State,
    pub body: Vec<u8>,
    pub too_large: bool,
    pub bare_cr: bool,
    pub nul: bool,
}

#[derive(Default, Clone, Copy, PartialEq)]
enum State {
    #[default]
    LineStart,
    Text,
    Cr,
    Dot,
    DotCr,
}

impl DotDecoder {
    /// Consumes `bytes`; returns how many were used when the end of data was found.
    pub fn feed(&mut self, bytes: &[u8], limit: usize) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            // Fast path: inside a line, copy up to the next CR, LF or NUL in one go.
            if self.state == State::Text || (self.state == State::LineStart && bytes[i] != b'.') {
                let run = memchr::memchr3(b'\r', b'\n', 0, &bytes[i..]).unwrap_or(bytes.len() - i);
                if run > 0 {
                    self.push(&bytes[i..i + run], limit);
                    self.state = State::Text;
                    i += run;
                    continue;
                }
            }
            let b = bytes[i];
            i += 1;
            if self.step(b, limit) {
                return Some(i);
            }
        }
        None
    }

    fn push(&mut self, bytes: &[u8], limit: usize) {
        if self.body.len() + bytes.len() > limit {
            self.too_large = true;
        } else {
            self.body.extend_from_slice(bytes);
        }
    }

    fn step(&mut self, b: u8, limit: usize) -> bool {
        self.nul |= b == 0;
        match (self.state, b) {
            (State::LineStart, b'.') => self.state = State::Dot,
            (State::Dot, b'\r') => self.state = State::DotCr,
            (State::DotCr, b'\n') => return true,
            (State::DotCr, _) => {
                self.state = State::Cr;
                return self.step(b, limit);
            }
            (State::Cr, b'\n') => {
                self.push(b"\r\n", limit);
                self.state = State::LineStart;
            }
            (State::Cr, _) => {
                self.bare_cr = true;
                self.push(b"\r", limit);
                self.state = State::Text;
                return self.step(b, limit);
            }
            (_, b'\r') => self.state = State::Cr,
            (_, b'\n') => {
                self.push(b"\r\n", limit);
                self.state = State::Text;
            }
            (_, b) => {
                self.push(&[b], limit);
                self.state = State::Text;
            }
        }
        false
    }
}

impl Session {
    fn data_ready(&self) -> Option<Reply> {
        match &self.tx {
            None => Some(reply::bad_sequence("Need MAIL and RCPT before DATA")),
            Some(tx) if tx.recipients.is_empty() => {
                Some(Reply::refuse(554, "no_recipients", "5.5.1 No valid recipients"))
            }
            Some(tx) if !tx.chunks.is_empty() => Some(reply::bad_sequence("DATA after BDAT")),
            Some(_) => None,
        }
    }

    pub(super) async fn data(&mut self) -> Result<Reply, SessionError> {
        if let Some(r) = self.data_ready() {
            return Ok(r);
        }
        self.send(Reply::new(354, "Start mail input; end with <CRLF>.<CRLF>"));
        let limit = self.server.settings.max_message_bytes;
        let mut decoder = DotDecoder::default();
        loop {
            if let Some(used) = decoder.feed(&self.buf, limit) {
                self.buf.drain(..used);
                break;
            }
            self.buf.clear();
            self.read_more(self.server.settings.data_timeout).await?;
        }
        if decoder.too_large {
            self.tx = None;
            return Ok(reply::too_large(limit));
        }
        let (bare_cr, nul) = (decoder.bare_cr, decoder.nul);
        Ok(self.accept(decoder.body, bare_cr, nul).await)
    }

    pub(super) async fn bdat(&mut self, size: usize, last: bool) -> Result<Reply, SessionError> {
        let limit = self.server.settings.max_message_bytes;
        let mut left = size;
        let mut chunk = Vec::new();
        let keep = self.tx.as_ref().is_some_and(|t| t.chunk_error.is_none() && t.chunks.len() + size <= limit);
        loop {
            let n = left.min(self.buf.len());
            if keep {
                chunk.extend_from_slice(&self.buf[..n]);
            }
            self.buf.drain(..n);
            left -= n;
            if left == 0 {
                break;
            }
            self.read_more(self.server.settings.data_timeout).await?;
        }
        let Some(tx) = self.tx.as_mut() else {
            return Ok(reply::bad_sequence("Need MAIL and RCPT before BDAT"));
        };
        if tx.recipients.is_empty() {
            tx.chunk_error = Some(Reply::refuse(554, "no_recipients", "5.5.1 No valid recipients"));
        } else if !keep && tx.chunk_error.is_none() {
            tx.chunk_error = Some(reply::too_large(limit));
        }
        if let Some(err) = tx.chunk_error.clone() {
            if last {
                self.tx = None;
            }
            return Ok(err);
        }
        tx.chunks.extend_from_slice(&chunk);
        if !last {
            return Ok(Reply::new(250, format!("2.0.0 {size} octets received")));
        }
        let body = std::mem::take(&mut tx.chunks);
        let bare_cr = body.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n') || body.last() == Some(&b'\r');
        let nul = body.contains(&0);
        Ok(self.accept(accept::crlf(body), bare_cr, nul).await)
    }

    /// Ends the transaction with `body` (CRLF line endings): the final reply, from the
    /// server's policy once the checks every server makes have passed.
    async fn accept(&mut self, body: Vec<u8>, bare_cr: bool, nul: bool) -> Reply {
        let Some(tx) = self.tx.take() else {
            return reply::bad_sequence("No transaction");
        };
        if nul {
            return Reply::refuse(550, "nul", "5.6.0 NUL characters are not allowed in messages");
        }
        if bare_cr {
            return Reply::refuse(550, "bare_cr", "5.6.2 Bare CR characters are not allowed (RFC 5321 §2.3.8)");
        }
        let server = self.server.clone();
        server.policy.data(&self.peer(), tx, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> (Option<usize>, DotDecoder) {
        let mut d = DotDecoder::default();
        let r = d.feed(input, 1 << 20);
        (r, d)
    }

    #[test]
    fn unstuffs_and_ends_only_on_crlf_dot_crlf() {
        let (end, d) = decode(b"a\r\n..b\r\n.\r\nNEXT");
        assert_eq!(end, Some(11));
        assert_eq!(d.body, b"a\r\n.b\r\n");
        let (end, d) = decode(b"a\n.\nb\n.\r\nx");
        assert_eq!(end, None, "bare LF never ends data");
        assert_eq!(d.body, b"a\r\n.\r\nb\r\n.\r\nx");
        let (end, _) = decode(b".\r\n");
        assert_eq!(end, Some(3));
        let (_, d) = decode(b"a\rb\r\n");
        assert!(d.bare_cr);
    }

    #[test]
    fn bulk_and_bytewise_feeds_agree() {
        let inputs: [&[u8]; 5] =
            [b"ab\r\n..c\r\n.\r\n", b"a\nb\r\n.x\r\n.\r\n", b"a\rb\0c\r\n.\r\n", b".\r\n", b"..\r\n.\r.\r\n"];
        for input in inputs {
            let mut bulk = DotDecoder::default();
            let end = bulk.feed(input, 1 << 20);
            let mut bytewise = DotDecoder::default();
            let end2 = (0..input.len()).find_map(|i| bytewise.feed(&input[i..=i], 1 << 20).map(|_| i + 1));
            assert_eq!(end, end2, "{input:?}");
            assert_eq!(bulk.body, bytewise.body, "{input:?}");
            assert_eq!((bulk.bare_cr, bulk.nul), (bytewise.bare_cr, bytewise.nul), "{input:?}");
        }
    }

    #[test]
    fn split_feeds_agree() {
        let input = b"x\r\n..y\r\nz\r\n.\r\n";
        for cut in 0..input.len() {
            let mut d = DotDecoder::default();
            let first = d.feed(&input[..cut], 1 << 20);
            let end = first.or_else(|| d.feed(&input[cut..], 1 << 20).map(|n| n + cut));
            assert_eq!(end, Some(input.len()));
            assert_eq!(d.body, b"x\r\n.y\r\nz\r\n");
        }
    }
}

//! DATA (dot-terminated) and BDAT (RFC 3030 chunks) and the size check every server
//! makes, then the server's policy decides the final reply (submission:
//! `super::submission`, with the message checks shared with REST; the bounce MX:
//! `crate::inbound`).
//!
//! Line endings (RFC 5321 §2.3.8, §4.1.1.4): only `CRLF.CRLF` ends DATA, so a bare LF
//! can never end a message (no SMTP smuggling). A bare LF is normalized to CRLF and a line
//! after it is not dot-unstuffed; a bare CR refuses the message (550 5.6.2); a NUL refuses
//! it (550 5.6.0). 8-bit content without BODY=8BITMIME is accepted as is (as Postfix does).

use super::reply::{self, Reply};
use super::session::{Session, SessionError};
use crate::accept;

/// What to do with a BDAT chunk (RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkPlan {
    /// It fits within the message limit: buffer it.
    Keep,
    /// The message would exceed the limit: read the chunk and drop it, then answer 552.
    Discard,
    /// The chunk alone exceeds the limit: answer 552 at once and close the connection.
    Refuse,
}

/// The plan for a chunk of `size` octets after `received` octets of the message, for a
/// limit of `limit` octets. Checked arithmetic: no chunk size can wrap past the limit.
pub fn chunk_plan(received: usize, size: usize, limit: usize) -> ChunkPlan {
    if size > limit {
        ChunkPlan::Refuse
    } else if received.checked_add(size).is_some_and(|total| total <= limit) {
        ChunkPlan::Keep
    } else {
        ChunkPlan::Discard
    }
}

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
        Ok(self.accept(decoder.body).await)
    }

    pub(super) async fn bdat(&mut self, size: usize, last: bool) -> Result<Reply, SessionError> {
        let limit = self.server.settings.max_message_bytes;
        let received = self.tx.as_ref().map_or(0, |t| t.chunks.len());
        let plan = chunk_plan(received, size, limit);
        if plan == ChunkPlan::Refuse {
            // The chunk can never fit: reading it would only waste bandwidth (an exabyte
            // for `BDAT 18446744073709551614`), and its bytes cannot be read as commands.
            self.tx = None;
            return Ok(reply::too_large(limit).closing());
        }
        let keep = plan == ChunkPlan::Keep && self.tx.as_ref().is_some_and(|t| t.chunk_error.is_none());
        let mut left = size;
        let mut chunk = Vec::new();
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
        Ok(self.accept(accept::crlf(body)).await)
    }

    /// Ends the transaction with `body` (CRLF line endings): the final reply, from the
    /// server's policy once the size check every server makes has passed.
    async fn accept(&mut self, body: Vec<u8>) -> Reply {
        let Some(tx) = self.tx.take() else {
            return reply::bad_sequence("No transaction");
        };
        let limit = self.server.settings.max_message_bytes;
        if body.len() > limit {
            return reply::too_large(limit);
        }
        let server = self.server.clone();
        server.policy.data(&self.peer(), tx, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Sizes near the interesting edges: 0, the limit, what is left, and the top of usize.
    fn near(edge: usize) -> impl Strategy<Value = usize> {
        (0usize..4).prop_map(move |d| edge.saturating_sub(2).saturating_add(d))
    }

    fn chunk_size(limit: usize, received: usize) -> impl Strategy<Value = usize> {
        prop_oneof![
            near(0),
            near(limit),
            near(limit - received),
            near(usize::MAX),
            (usize::MAX - limit)..=usize::MAX,
            any::<usize>(),
        ]
    }

    proptest! {
        #[test]
        fn chunk_plan_never_lets_a_message_past_the_limit(
            (limit, received, size) in (1usize..(1 << 40))
                .prop_flat_map(|limit| (Just(limit), prop_oneof![near(0), near(limit), 0..=limit]))
                .prop_map(|(limit, r)| (limit, r.min(limit)))
                .prop_flat_map(|(limit, received)| (Just(limit), Just(received), chunk_size(limit, received)))
        ) {
            let total = received as u128 + size as u128;
            match chunk_plan(received, size, limit) {
                ChunkPlan::Keep => prop_assert!(total <= limit as u128),
                ChunkPlan::Discard => prop_assert!(total > limit as u128 && size <= limit),
                ChunkPlan::Refuse => prop_assert!(size > limit),
            }
        }
    }

    #[test]
    fn chunk_plan_edges() {
        assert_eq!(chunk_plan(0, 10, 10), ChunkPlan::Keep);
        assert_eq!(chunk_plan(1, 10, 10), ChunkPlan::Discard);
        assert_eq!(chunk_plan(2, usize::MAX - 1, 10), ChunkPlan::Refuse);
        assert_eq!(chunk_plan(usize::MAX, 1, usize::MAX), ChunkPlan::Discard);
    }

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

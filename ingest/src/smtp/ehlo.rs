//! EHLO and HELO: the greeting exchange and the extensions Herald offers.

use super::reply::{self, Reply};
use super::session::Session;

impl Session {
    /// EHLO (`esmtp`) or HELO. Resets any transaction (RFC 5321 §4.1.4).
    pub(super) fn ehlo(&mut self, host: String, esmtp: bool) -> Reply {
        if host.trim().is_empty() {
            return reply::syntax("EHLO/HELO needs a domain or address literal");
        }
        self.tx = None;
        self.helo = Some((host.chars().take(255).collect(), esmtp));
        let s = &self.server.settings;
        let mut r = Reply::new(250, format!("{} Hello {}", s.hostname, self.peer.ip()));
        if !esmtp {
            return r;
        }
        r.lines.extend(["PIPELINING".into(), format!("SIZE {}", s.max_message_bytes).into(), "8BITMIME".into()]);
        r.lines.extend(["ENHANCEDSTATUSCODES".into(), "SMTPUTF8".into(), "CHUNKING".into()]);
        if !self.tls && self.server.tls.is_some() {
            r.lines.push("STARTTLS".into());
        }
        if self.server.policy.credentials().is_some() && (self.tls || s.allow_plaintext_auth) {
            r.lines.push("AUTH PLAIN LOGIN".into());
        }
        r
    }
}

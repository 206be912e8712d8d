//! SMTP replies with RFC 3463 enhanced status codes, and the refusal metric.

use std::borrow::Cow;

/// One (possibly multi-line) reply: `code` and text lines, enhanced code inside the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<Cow<'static, str>>,
    /// The session ends after this reply (set by [`Reply::closing`]; 421 and 221 always do).
    pub close: bool,
}

impl Reply {
    pub fn new(code: u16, text: impl Into<Cow<'static, str>>) -> Self {
        Reply { code, lines: vec![text.into()], close: false }
    }

    /// The same reply, after which the server closes the connection; the text says so.
    pub fn closing(mut self) -> Self {
        if let Some(last) = self.lines.last_mut() {
            *last = format!("{last}; closing connection").into();
        }
        self.close = true;
        self
    }

    /// A refusal: also counted in `herald_smtp_ingest_refusals_total{reason}`.
    pub fn refuse(code: u16, reason: &'static str, text: impl Into<Cow<'static, str>>) -> Self {
        metrics::counter!("herald_smtp_ingest_refusals_total", "reason" => reason).increment(1);
        Reply::new(code, text)
    }

    /// No reply at all (after a TLS handshake).
    pub fn silent() -> Self {
        Reply { code: 0, lines: vec![], close: false }
    }

    /// Wire form: `250-a\r\n250 b\r\n`. Reply text is ASCII (RFC 5321 section 4.2): any
    /// other character (say, from a client's UTF-8 address quoted back) is sent as `?`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let line: String =
                line.chars().map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '?' }).collect();
            out.extend_from_slice(format!("{}{sep}{line}\r\n", self.code).as_bytes());
        }
    }

    /// Whether the session ends after this reply (421, 221, or [`Reply::closing`]).
    pub fn closes(&self) -> bool {
        self.close || self.code == 421 || self.code == 221
    }
}

pub fn ok() -> Reply {
    Reply::new(250, "2.0.0 OK")
}
pub fn bad_sequence(what: &'static str) -> Reply {
    Reply::refuse(503, "bad_sequence", format!("5.5.1 {what}"))
}
pub fn unknown_command() -> Reply {
    Reply::refuse(500, "unknown_command", "5.5.2 Command unrecognized")
}
pub fn syntax(what: impl Into<Cow<'static, str>>) -> Reply {
    Reply::refuse(501, "syntax", format!("5.5.4 {}", what.into()))
}
pub fn line_too_long() -> Reply {
    Reply::refuse(500, "line_too_long", "5.5.2 Line too long (at most 1000 octets)")
}
pub fn auth_required() -> Reply {
    Reply::refuse(530, "auth_required", "5.7.0 Authentication required")
}
pub fn encryption_required() -> Reply {
    Reply::refuse(538, "encryption_required", "5.7.11 Encryption required for requested authentication mechanism")
}
pub fn timeout() -> Reply {
    Reply::refuse(421, "timeout", "4.4.2 Timeout, closing connection")
}
pub fn too_many_errors() -> Reply {
    Reply::refuse(421, "too_many_errors", "4.7.0 Too many errors, closing connection")
}
pub fn shutting_down() -> Reply {
    Reply::new(421, "4.3.2 Service shutting down, closing connection")
}
pub fn too_large(limit: usize) -> Reply {
    Reply::refuse(552, "message_too_large", format!("5.3.4 Message too big (at most {limit} octets)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline() {
        let mut r = Reply::new(250, "a");
        r.lines.push("b".into());
        let mut out = vec![];
        r.write_to(&mut out);
        assert_eq!(out, b"250-a\r\n250 b\r\n");
    }
}

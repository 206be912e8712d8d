//! What a message received by the bounce MX is: an RFC 3464 DSN, an ARF complaint, a
//! plain-text bounce (some large providers and old MTAs send no DSN), an automatic reply
//! (RFC 3834 `Auto-Submitted`, out-of-office: never a bounce), or nothing Herald knows.
//! Pure: bytes in, a [`Report`] out.

use super::arf::{self, Complaint};
use super::dsn::{self, Action};
use aws_lc_rs::digest;
use herald_schemas::BounceAction;
use mail_parser::{Message, MessageParser};
use regex::Regex;
use std::sync::LazyLock;

/// How a bounce reached Herald.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BounceFormat {
    /// A `multipart/report` with a delivery-status part.
    Rfc3464,
    /// Free text, read by the fallback.
    Text,
}

/// A bounce, whatever its format, reduced to what the classifier and the event need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    pub format: BounceFormat,
    pub action: BounceAction,
    pub code: Option<u16>,
    pub enhanced: Option<String>,
    pub diagnostic: String,
    pub remote_mta: Option<String>,
    pub reporting_mta: Option<String>,
    /// What the report says the recipient was (never trusted to pick whom to suppress).
    pub final_recipient: Option<String>,
    /// Stable digest of the report, for idempotence.
    pub digest: String,
}

/// What an inbound message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Bounce(Bounce),
    Complaint(Complaint, String),
    /// A DSN whose action is `delivered`, `relayed` or `expanded`: good news, nothing to do.
    Success,
    AutoReply,
    Unrecognized,
}

/// Reads one inbound message (its bytes as received, CRLF line endings).
pub fn read(raw: &[u8]) -> Report {
    let Some(message) = MessageParser::new().parse(raw) else { return Report::Unrecognized };
    if let Some(part) = dsn::status_part(&message) {
        return from_status(&part, raw);
    }
    if has_feedback_part(&message) {
        if let Some(c) = arf::parse(raw) {
            return Report::Complaint(c, digest_hex(raw));
        }
    }
    if looks_like_bounce(&message) {
        return Report::Bounce(text_bounce(&message, raw));
    }
    if is_auto_reply(&message) {
        return Report::AutoReply;
    }
    Report::Unrecognized
}

fn from_status(part: &[u8], raw: &[u8]) -> Report {
    let status = dsn::parse_status(part);
    let Some(r) = status.primary() else {
        // A delivery-status part without recipient groups: read the text instead.
        return match MessageParser::new().parse(raw) {
            Some(m) => Report::Bounce(text_bounce(&m, raw)),
            None => Report::Unrecognized,
        };
    };
    let action = match r.action {
        Some(Action::Delayed) => BounceAction::Delayed,
        Some(Action::Delivered | Action::Relayed | Action::Expanded) => return Report::Success,
        // RFC 3464 requires Action; without it, a 4.x.x status is a delay.
        None if r.status.as_deref().is_some_and(|s| s.starts_with("4.")) => BounceAction::Delayed,
        _ => BounceAction::Failed,
    };
    let (code, enhanced, text) = match &r.diagnostic {
        Some(d) => (d.code, d.enhanced.clone().or_else(|| r.status.clone()), d.text.clone()),
        None => (None, r.status.clone(), String::new()),
    };
    Report::Bounce(Bounce {
        format: BounceFormat::Rfc3464,
        action,
        code,
        enhanced,
        diagnostic: text,
        remote_mta: r.remote_mta.clone(),
        reporting_mta: status.reporting_mta.clone(),
        final_recipient: r.final_recipient.clone(),
        digest: digest_hex(part),
    })
}

fn has_feedback_part(message: &Message<'_>) -> bool {
    use mail_parser::MimeHeaders;
    message.parts.iter().any(|p| p.is_content_type("message", "feedback-report"))
}

static BOUNCE_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(undeliver|returned mail|mail delivery (failed|failure|system|subsystem)|delivery (status notification|failure|has failed|notification|report|problem)|failure notice|non[- ]?delivery|message not delivered|could not be delivered|undelivered mail|mail system error|warning: could not send|delayed mail|delivery delayed)")
        .expect("valid")
});
static DAEMON: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^(mailer[-_]?daemon|mail[-_]?daemon|postmaster)@").expect("valid"));
static REPLY_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[\s:(])([45][0-9][0-9])(?:[ -]|: )((?:[245])\.[0-9]{1,3}\.[0-9]{1,3})?\s*(\S.*)$").expect("valid")
});
static DELAY_WORDS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(delivery (is )?delayed|delayed mail|will (be )?retr|still trying|has not yet been delivered|not been delivered yet|temporary (failure|problem)|warning: message)").expect("valid")
});
static AUTO_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(out of (the )?office|automatic reply|auto(matic)?[ -]?(reply|response|antwort)|auto:|autoreply|vacation|abwesenheit|réponse automatique|respuesta automática|risposta automatica|afwezig|i am (currently )?(away|out))").expect("valid")
});

fn sender(message: &Message<'_>) -> String {
    message.from().and_then(|f| f.first()).and_then(|a| a.address()).unwrap_or("").to_ascii_lowercase()
}

fn looks_like_bounce(message: &Message<'_>) -> bool {
    DAEMON.is_match(&sender(message)) || message.subject().is_some_and(|s| BOUNCE_SUBJECT.is_match(s))
}

/// RFC 3834 `Auto-Submitted` (anything but `no`), the usual vendor headers, or an
/// out-of-office subject.
pub fn is_auto_reply(message: &Message<'_>) -> bool {
    let header = |n: &str| message.header_raw(n).map(|v| v.trim().to_ascii_lowercase());
    if header("Auto-Submitted").is_some_and(|v| !v.starts_with("no")) {
        return true;
    }
    if ["X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Vacation"].iter().any(|h| header(h).is_some()) {
        return true;
    }
    if [header("Precedence"), header("X-Precedence")].iter().flatten().any(|v| v.contains("auto_reply")) {
        return true;
    }
    message.subject().is_some_and(|s| AUTO_SUBJECT.is_match(s))
}

/// The fallback: the first line of the text that reads like an SMTP reply, else the start
/// of the text for the classifier's words.
fn text_bounce(message: &Message<'_>, raw: &[u8]) -> Bounce {
    let text = message.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
    let subject = message.subject().unwrap_or("").to_owned();
    let mut found: Option<(u16, Option<String>, String)> = None;
    for line in text.lines() {
        if let Some(c) = REPLY_LINE.captures(line.trim_end()) {
            let code = c[1].parse().unwrap_or(0);
            let enhanced = c.get(2).map(|m| m.as_str().to_owned());
            let better = found.as_ref().is_none_or(|(_, e, _)| e.is_none() && enhanced.is_some());
            if better {
                found = Some((code, enhanced, c[3].trim().to_owned()));
            }
            if found.as_ref().is_some_and(|(_, e, _)| e.is_some()) {
                break;
            }
        }
    }
    let delayed = DELAY_WORDS.is_match(&subject) || DELAY_WORDS.is_match(&text);
    let (code, enhanced, diagnostic) = match found {
        Some((code, enhanced, rest)) => (Some(code), enhanced, rest),
        None => {
            let snippet: String = super::classify::fold(&text).chars().take(500).collect();
            (None, None, snippet)
        }
    };
    let delayed = delayed && code.is_none_or(|c| c < 500);
    Bounce {
        format: BounceFormat::Text,
        action: if delayed { BounceAction::Delayed } else { BounceAction::Failed },
        code,
        enhanced,
        diagnostic,
        remote_mta: None,
        reporting_mta: None,
        final_recipient: None,
        digest: digest_hex(raw),
    }
}

/// First 8 octets of SHA-256, hex.
pub fn digest_hex(bytes: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, bytes);
    hex::encode(&d.as_ref()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmail_text_bounce() {
        let raw = b"From: MAILER-DAEMON@mail.example.com\r\nSubject: failure notice\r\n\r\nHi. This is the qmail-send program at mail.example.com.\r\nI'm afraid I wasn't able to deliver your message to the following addresses.\r\nThis is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n<bob@example.org>:\r\n192.0.2.25 does not like recipient.\r\nRemote host said: 550 5.1.1 <bob@example.org>... User unknown\r\nGiving up on 192.0.2.25.\r\n";
        let Report::Bounce(b) = read(raw) else { panic!("{:?}", read(raw)) };
        assert_eq!((b.format, b.action, b.code), (BounceFormat::Text, BounceAction::Failed, Some(550)));
        assert_eq!(b.enhanced.as_deref(), Some("5.1.1"));
        assert_eq!(b.diagnostic, "<bob@example.org>... User unknown");
    }

    #[test]
    fn auto_reply_is_not_a_bounce() {
        let raw = b"From: Bob <bob@example.org>\r\nAuto-Submitted: auto-replied\r\nSubject: Out of Office: Your newsletter\r\n\r\nI am away until Monday.\r\n";
        assert_eq!(read(raw), Report::AutoReply);
        let raw = b"From: Bob <bob@example.org>\r\nSubject: Automatic reply: hello\r\nX-Auto-Response-Suppress: All\r\n\r\nAway.\r\n";
        assert_eq!(read(raw), Report::AutoReply);
        let raw = b"From: Bob <bob@example.org>\r\nAuto-Submitted: no\r\nSubject: hello\r\n\r\nA real reply.\r\n";
        assert_eq!(read(raw), Report::Unrecognized);
    }
}

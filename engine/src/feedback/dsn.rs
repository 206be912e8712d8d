//! Delivery status notifications (RFC 3464): the `message/delivery-status` (or, with
//! UTF-8 addresses, `message/global-delivery-status`, RFC 6533) part of a
//! `multipart/report`. mail-parser hands that part over as raw bytes; its field groups are
//! separated by blank lines (the first is per message, each later one per recipient) and
//! each group is parsed as a header section, values unfolded and trimmed here.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};
use std::borrow::Cow;

/// RFC 3464 §2.3.3 `Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
    /// Any other value (kept so a report with one never fails to parse).
    Other,
}

impl Action {
    fn parse(s: &str) -> Action {
        match s.trim().to_ascii_lowercase().as_str() {
            "failed" => Action::Failed,
            "delayed" => Action::Delayed,
            "delivered" => Action::Delivered,
            "relayed" => Action::Relayed,
            "expanded" => Action::Expanded,
            _ => Action::Other,
        }
    }
}

/// `Diagnostic-Code: smtp; 550 5.1.1 <x>: user unknown`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The diagnostic type (`smtp`, `x-postfix`, ...), lower-case.
    pub kind: String,
    /// The reply code at the start of the text, when there is one.
    pub code: Option<u16>,
    /// The enhanced status code after it, when there is one.
    pub enhanced: Option<String>,
    /// The rest of the text.
    pub text: String,
}

/// One per-recipient field group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DsnRecipient {
    /// The address of `Final-Recipient` (the address type is dropped).
    pub final_recipient: Option<String>,
    pub original_recipient: Option<String>,
    pub action: Option<Action>,
    /// `Status`, `x.y.z` (a comment after it is dropped).
    pub status: Option<String>,
    pub diagnostic: Option<Diagnostic>,
    /// The name of `Remote-MTA` (the type is dropped).
    pub remote_mta: Option<String>,
    pub last_attempt: Option<String>,
    pub will_retry_until: Option<String>,
}

/// A parsed delivery-status part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryStatus {
    pub reporting_mta: Option<String>,
    pub arrival_date: Option<String>,
    pub original_envelope_id: Option<String>,
    pub recipients: Vec<DsnRecipient>,
}

impl DeliveryStatus {
    /// The group that matters most: the first `failed`, else the first `delayed`, else the
    /// first at all.
    pub fn primary(&self) -> Option<&DsnRecipient> {
        let by = |a: Action| self.recipients.iter().find(|r| r.action == Some(a));
        by(Action::Failed).or_else(|| by(Action::Delayed)).or_else(|| self.recipients.first())
    }
}

/// The raw delivery-status part of `message`, if it is a DSN.
pub fn status_part<'a>(message: &'a Message<'a>) -> Option<Cow<'a, [u8]>> {
    message.parts.iter().find_map(|part| {
        let ct = part.content_type()?;
        let is_status = ct.ctype().eq_ignore_ascii_case("message")
            && ct.subtype().is_some_and(|s| {
                s.eq_ignore_ascii_case("delivery-status") || s.eq_ignore_ascii_case("global-delivery-status")
            });
        if !is_status {
            return None;
        }
        match &part.body {
            PartType::Binary(b) | PartType::InlineBinary(b) => Some(Cow::Borrowed(b.as_ref())),
            PartType::Text(t) | PartType::Html(t) => Some(Cow::Borrowed(t.as_bytes())),
            _ => None,
        }
    })
}

/// Parses the field groups of a delivery-status part. Never fails: unknown or malformed
/// fields are skipped, so the caller decides what is missing.
pub fn parse_status(part: &[u8]) -> DeliveryStatus {
    let mut out = DeliveryStatus::default();
    for (i, group) in groups(part).iter().enumerate() {
        let fields = fields(group);
        let get = |name: &str| fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        if i == 0 && get("Final-Recipient").is_none() {
            out.reporting_mta = get("Reporting-MTA").map(|v| typed_value(&v));
            out.arrival_date = get("Arrival-Date");
            out.original_envelope_id = get("Original-Envelope-Id");
            continue;
        }
        if fields.is_empty() {
            continue;
        }
        out.recipients.push(DsnRecipient {
            final_recipient: get("Final-Recipient").map(|v| address(&typed_value(&v))),
            original_recipient: get("Original-Recipient").map(|v| address(&typed_value(&v))),
            action: get("Action").map(|v| Action::parse(&v)),
            status: get("Status").and_then(|v| v.split_whitespace().next().map(str::to_owned)),
            diagnostic: get("Diagnostic-Code").map(|v| diagnostic(&v)),
            remote_mta: get("Remote-MTA").map(|v| typed_value(&v)),
            last_attempt: get("Last-Attempt-Date"),
            will_retry_until: get("Will-Retry-Until"),
        });
    }
    out
}

/// Splits on blank lines (CRLF or LF), dropping empty groups.
fn groups(part: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(part).replace("\r\n", "\n");
    text.split("\n\n")
        .map(|g| g.trim_matches('\n'))
        .filter(|g| !g.trim().is_empty())
        .map(|g| format!("{}\r\n\r\n", g.replace('\n', "\r\n")).into_bytes())
        .collect()
}

/// The fields of one group through mail-parser's header parser, values unfolded.
fn fields(group: &[u8]) -> Vec<(String, String)> {
    let Some(parsed) = MessageParser::new().parse_headers(group) else { return vec![] };
    parsed
        .headers()
        .iter()
        .filter_map(|h| {
            let raw = group.get(h.offset_start as usize..h.offset_end as usize)?;
            Some((h.name.as_str().to_owned(), unfold(&String::from_utf8_lossy(raw))))
        })
        .collect()
}

/// Folded white space (CRLF + WSP) becomes one space; the ends are trimmed.
pub fn unfold(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for (i, line) in raw.split('\n').enumerate() {
        let line = line.trim_end_matches('\r');
        if i > 0 {
            out.push(' ');
            out.push_str(line.trim_start());
        } else {
            out.push_str(line);
        }
    }
    out.trim().to_owned()
}

/// `rfc822; bob@example.org` → `bob@example.org`; a value without a type stays whole.
fn typed_value(v: &str) -> String {
    match v.split_once(';') {
        Some((kind, rest)) if !kind.contains(' ') || kind.trim().len() < 16 => rest.trim().to_owned(),
        _ => v.trim().to_owned(),
    }
}

/// Strips angle brackets (some MTAs add them) and comments after the address.
fn address(v: &str) -> String {
    let v = v.trim();
    let v = v.strip_prefix('<').and_then(|s| s.split_once('>').map(|(a, _)| a)).unwrap_or(v);
    v.split_whitespace().next().unwrap_or("").to_owned()
}

/// Splits a Diagnostic-Code value into type, code, enhanced code and text.
pub fn diagnostic(v: &str) -> Diagnostic {
    let (kind, text) = match v.split_once(';') {
        Some((k, t)) if !k.trim().contains(' ') => (k.trim().to_ascii_lowercase(), t.trim()),
        _ => (String::new(), v.trim()),
    };
    let (code, enhanced, rest) = reply_prefix(text);
    Diagnostic { kind, code, enhanced, text: rest.to_owned() }
}

/// `550 5.1.1 text`, `550-5.1.1 text`, `550 text`, `5.1.1 text` → the parts found.
pub fn reply_prefix(text: &str) -> (Option<u16>, Option<String>, &str) {
    let mut rest = text.trim_start();
    let mut code = None;
    let b = rest.as_bytes();
    if b.len() >= 3
        && b[..3].iter().all(u8::is_ascii_digit)
        && matches!(b[0], b'2' | b'4' | b'5')
        && (b.len() == 3 || b[3] == b' ' || b[3] == b'-')
    {
        code = rest[..3].parse().ok();
        rest = rest[3..].trim_start_matches(['-', ' ']);
    }
    let first = rest.split_whitespace().next().unwrap_or("");
    let first_clean = first.trim_end_matches([',', ';', ':']);
    let enhanced = super::classify::is_enhanced(first_clean).then(|| first_clean.to_owned());
    if enhanced.is_some() {
        rest = rest[first.len()..].trim_start();
    }
    (code, enhanced, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POSTFIX: &str = "Reporting-MTA: dns; relay.sender.test\r\nX-Postfix-Queue-ID: 4Xyz\r\nArrival-Date: Sun, 22 Nov 2026 10:00:00 +0000 (UTC)\r\n\r\nFinal-Recipient: rfc822; bob@example.org\r\nOriginal-Recipient: rfc822;Bob@Example.org\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx1.example.org\r\nDiagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: Recipient address\r\n    rejected: User unknown in virtual mailbox table\r\n";

    #[test]
    fn postfix_groups() {
        let s = parse_status(POSTFIX.as_bytes());
        assert_eq!(s.reporting_mta.as_deref(), Some("relay.sender.test"));
        assert_eq!(s.recipients.len(), 1);
        let r = &s.recipients[0];
        assert_eq!(r.final_recipient.as_deref(), Some("bob@example.org"));
        assert_eq!(r.original_recipient.as_deref(), Some("Bob@Example.org"));
        assert_eq!(r.action, Some(Action::Failed));
        assert_eq!(r.status.as_deref(), Some("5.1.1"));
        assert_eq!(r.remote_mta.as_deref(), Some("mx1.example.org"));
        let d = r.diagnostic.as_ref().unwrap();
        assert_eq!((d.kind.as_str(), d.code, d.enhanced.as_deref()), ("smtp", Some(550), Some("5.1.1")));
        assert_eq!(d.text, "<bob@example.org>: Recipient address rejected: User unknown in virtual mailbox table");
    }

    #[test]
    fn lf_only_several_recipients_and_comments() {
        let text = "Reporting-MTA: dns;mx.test\n\nFinal-Recipient: rfc822;<a@x.test>\nAction: delayed\nStatus: 4.4.1 (no answer)\nWill-Retry-Until: Mon, 23 Nov 2026 10:00:00 +0000\n\nFinal-Recipient: rfc822; b@x.test\nAction: FAILED\nStatus: 5.2.2\n\n\n";
        let s = parse_status(text.as_bytes());
        assert_eq!(s.recipients.len(), 2);
        assert_eq!(s.recipients[0].final_recipient.as_deref(), Some("a@x.test"));
        assert_eq!(s.recipients[0].status.as_deref(), Some("4.4.1"));
        assert!(s.recipients[0].will_retry_until.is_some());
        assert_eq!(s.primary().unwrap().final_recipient.as_deref(), Some("b@x.test"), "failed wins");
    }

    #[test]
    fn diagnostics() {
        let d = diagnostic("smtp;550-5.1.1 The email account that you tried to reach does not exist.");
        assert_eq!((d.code, d.enhanced.as_deref()), (Some(550), Some("5.1.1")));
        let d = diagnostic("X-Postfix; Host or domain name not found");
        assert_eq!((d.kind.as_str(), d.code, d.enhanced), ("x-postfix", None, None));
        let d = diagnostic("smtp; 554 delivery error: dd This user doesn't have a yahoo.com account");
        assert_eq!((d.code, d.enhanced), (Some(554), None));
        assert_eq!(reply_prefix("5.7.1 denied").1.as_deref(), Some("5.7.1"));
        assert_eq!(unfold(" a\r\n\tb\r\n  c "), "a b c");
    }

    #[test]
    fn garbage_never_panics() {
        for input in [&b""[..], b"\r\n\r\n", b":::\n\n:", b"Final-Recipient\n\nAction", &[0xff, 0xfe, b'\n', b'\n', 0]]
        {
            let _ = parse_status(input);
        }
    }
}

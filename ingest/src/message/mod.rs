//! The message checks both channels share (REST `POST /v1/send` and SMTP DATA/BDAT), so a
//! message is refused or accepted the same way whichever way it came: [`prepare`] checks
//! the characters and the RFC 5322 header section ([`check`]), re-encodes parts with body
//! lines over 998 octets ([`reencode`]), makes sure the message ends with CRLF and adds
//! `Message-ID:` and `Date:` when missing, all before the message is stored (and so before
//! it is signed). A refusal is an [`Invalid`]: a sentence for the client, which REST sends
//! as 422 `invalid_mime` and SMTP as a 550 with the enhanced status of
//! [`Invalid::enhanced`].

pub mod check;
pub mod reencode;

use herald_schemas::Timestamp;

/// Why a message was refused. Every message is a sentence a customer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the message contains a NUL character (line {line}); encode binary content as base64")]
    Nul { line: usize },
    #[error("the message contains a bare CR (a CR not followed by LF) on line {line}; lines must end with CRLF")]
    BareCr { line: usize },
    #[error("line {line} of the header section is not a header field (`Name: value`): `{excerpt}`")]
    MalformedHeader { line: usize, excerpt: String },
    #[error("line {line} of the header section is {len} octets long; RFC 5322 allows at most 998 (fold long fields)")]
    HeaderLineTooLong { line: usize, len: usize },
    #[error("the header field `{name}` starting on line {line} is longer than 102400 octets")]
    HeaderFieldTooLong { name: String, line: usize },
    #[error("line {line} of the header section is not valid UTF-8; use RFC 2047 encoded words for other charsets")]
    HeaderNotUtf8 { line: usize },
    #[error("the message has {count} `{name}:` header fields; RFC 5322 allows at most one")]
    Repeated { name: &'static str, count: usize },
    #[error("the message has no From: header field")]
    NoFrom,
    #[error("the From: header field holds no valid address: `{excerpt}`")]
    BadFrom { excerpt: String },
    #[error("the From: header field names {count} mailboxes, which requires a Sender: header field (RFC 5322 section 3.6.2)")]
    FromNeedsSender { count: usize },
    #[error("line {line} is {len} octets long (at most 998) and cannot be re-encoded: {why}")]
    LongLine { line: usize, len: usize, why: &'static str },
}

impl Invalid {
    /// The RFC 3463 enhanced status SMTP answers with (after 550).
    pub fn enhanced(&self) -> &'static str {
        match self {
            Invalid::BareCr { .. } => "5.6.2",
            Invalid::LongLine { .. } => "5.6.3",
            _ => "5.6.0",
        }
    }

    /// A bounded label for the refusal metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::Nul { .. } => "nul",
            Invalid::BareCr { .. } => "bare_cr",
            Invalid::LongLine { .. } => "long_line",
            Invalid::HeaderLineTooLong { .. } | Invalid::HeaderFieldTooLong { .. } => "long_header",
            Invalid::NoFrom | Invalid::BadFrom { .. } | Invalid::FromNeedsSender { .. } => "bad_from",
            _ => "invalid_header",
        }
    }
}

/// A message ready to store: checked, maybe re-encoded, ending with CRLF, with ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub message: Vec<u8>,
    /// The From addresses' domains, lower-case ASCII (IDNs as punycode).
    pub from_domains: Vec<String>,
    /// Whether parts were re-encoded because of long lines.
    pub reencoded: bool,
}

/// What [`prepare`] stamps on a message that lacks it.
pub struct Stamp<'a> {
    /// Right-hand side of a generated `Message-ID:`.
    pub hostname: &'a str,
    pub now: Timestamp,
}

/// Checks `message` (CRLF line endings) and prepares it for storage; see the module doc.
pub fn prepare(mut message: Vec<u8>, stamp: &Stamp<'_>) -> Result<Prepared, Invalid> {
    check::characters(&message)?;
    if !message.ends_with(b"\r\n") {
        message.extend_from_slice(b"\r\n");
    }
    check::header_section(&message)?;
    let from = check::from_addresses(&message)?;
    let long = check::long_lines(&message, check::body_start(&message));
    let reencoded = !long.is_empty();
    if reencoded {
        message = reencode::reencode(&message, &long)?;
        metrics::counter!("herald_ingest_reencoded_messages_total").increment(1);
    }
    let mut head = String::new();
    if !has_field(&message, "Message-ID") {
        head.push_str(&format!("Message-ID: <{}@{}>\r\n", uuid::Uuid::now_v7(), stamp.hostname));
    }
    if !has_field(&message, "Date") {
        head.push_str(&format!("Date: {}\r\n", rfc5322_date(stamp.now)));
    }
    if !head.is_empty() {
        message.splice(0..0, head.into_bytes());
    }
    let from_domains = from.iter().filter_map(|a| a.rsplit_once('@')).map(|(_, d)| ascii_domain(d)).collect();
    Ok(Prepared { message, from_domains, reencoded })
}

/// `domain` lower-cased, as punycode when it is an IDN (unchanged when that fails).
pub fn ascii_domain(domain: &str) -> String {
    let d = domain.trim().trim_end_matches('.').to_lowercase();
    idna::domain_to_ascii(&d).unwrap_or(d)
}

/// Whether the header section has a field `name` (ASCII, any case).
pub fn has_field(message: &[u8], name: &str) -> bool {
    let head = &message[..check::header_end(message).unwrap_or(message.len())];
    head.split(|&b| b == b'\n').any(|line| {
        line.len() > name.len() && line[name.len()] == b':' && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
    })
}

/// `now` as an RFC 5322 date-time, e.g. `Sun, 22 Nov 2026 10:00:00 +0000`.
pub fn rfc5322_date(now: Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now.0) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc2822).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp<'static> {
        Stamp { hostname: "mta.test", now: Timestamp(1_763_800_000_000) }
    }

    #[test]
    fn adds_ids_and_final_crlf() {
        let p = prepare(b"From: A <a@B\xc3\xbccher.Example>\r\nSubject: x\r\n\r\nhi".to_vec(), &stamp()).unwrap();
        let text = String::from_utf8(p.message).unwrap();
        assert!(text.starts_with("Message-ID: <") && text.contains("@mta.test>\r\nDate: Sat, 22 Nov 2025"), "{text}");
        assert!(text.ends_with("\r\n\r\nhi\r\n"), "{text}");
        assert_eq!(p.from_domains, vec!["xn--bcher-kva.example"]);
        let kept = b"From: a@b.test\r\nMessage-ID: <m@x>\r\nDate: Sun, 1 Jan 2023 00:00:00 +0000\r\n\r\nhi\r\n";
        assert_eq!(prepare(kept.to_vec(), &stamp()).unwrap().message, kept);
    }

    #[test]
    fn refusals_are_sentences_with_smtp_codes() {
        let cases: [(&[u8], &str); 5] = [
            (b"From: a@b.test\r\n\r\nx\0y\r\n", "5.6.0"),
            (b"From: a@b.test\r\n\r\nx\ry\r\n", "5.6.2"),
            (b"From: a@b.test\r\nFrom: c@d.test\r\n\r\n", "5.6.0"),
            (b"hello world", "5.6.0"),
            (b"Subject: x\r\n\r\nbody", "5.6.0"),
        ];
        for (m, code) in cases {
            let e = prepare(m.to_vec(), &stamp()).unwrap_err();
            assert_eq!(e.enhanced(), code, "{e}");
            assert!(e.to_string().starts_with("the ") || e.to_string().starts_with("line "), "{e}");
        }
    }

    #[test]
    fn long_body_lines_are_reencoded_not_refused() {
        let m = format!("From: a@b.test\r\nSubject: x\r\n\r\n<p>{}</p>\r\n", "y".repeat(5000));
        let p = prepare(m.into_bytes(), &stamp()).unwrap();
        assert!(p.reencoded);
        assert!(check::long_lines(&p.message, 0).is_empty());
    }
}

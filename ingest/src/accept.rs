//! What every ingestion path (REST and SMTP) shares once a message is received: line-ending
//! normalization, the MIME header check, and building one `MessageAccepted` per recipient.
//! Both paths then append through [`herald_engine::submit::Submitter`].

use crate::address::Mailbox;
use herald_schemas::{AccountId, Body as MimeBody, MessageAccepted, MessageId, SendOptions, Timestamp};

/// Normalizes line endings to CRLF, as SMTP and DKIM canonicalization expect.
pub fn crlf(body: Vec<u8>) -> Vec<u8> {
    if !body.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r') && !body.starts_with(b"\n") {
        return body;
    }
    let mut out = Vec::with_capacity(body.len() + body.len() / 40);
    let mut prev = 0u8;
    for &b in &body {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// Checks that `body` (CRLF line endings) is an RFC 5322 message: a header section with a
/// From address, then a blank line. The error says what is wrong, for the client.
pub fn check_mime(body: &[u8]) -> Result<(), String> {
    let header_end = header_end(body).ok_or_else(|| "no blank line ends the header section".to_owned())?;
    for line in body[..header_end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !folded && !line.is_empty() {
            let colon = line.iter().position(|&b| b == b':');
            let name_ok = colon.is_some_and(|c| c > 0 && line[..c].iter().all(|b| (33..=126).contains(b)));
            if !name_ok {
                return Err(format!("malformed header line: {}", String::from_utf8_lossy(&line[..line.len().min(60)])));
            }
        }
    }
    let parsed =
        mail_parser::MessageParser::new().parse_headers(body).ok_or_else(|| "unparsable message".to_owned())?;
    let from = parsed.from().and_then(|f| f.first()).and_then(|a| a.address());
    if from.is_none_or(|a| !a.contains('@')) {
        return Err("the message has no From: address".into());
    }
    Ok(())
}

/// Offset of the `\r\n\r\n` that ends the header section, if any.
pub fn header_end(body: &[u8]) -> Option<usize> {
    body.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Whether the header section (up to `header_end`) has a field named `name` (ASCII, any case).
pub fn has_header(body: &[u8], name: &str) -> bool {
    let end = header_end(body).unwrap_or(body.len());
    body[..end].split(|&b| b == b'\n').any(|line| {
        line.len() > name.len() && line[name.len()] == b':' && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
    })
}

/// A recipient's message as accepted: who and under which id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedRecipient {
    pub recipient: String,
    pub id: MessageId,
}

/// One `MessageAccepted` per recipient, each with a fresh id, sharing `body` (placed by
/// `Submitter::place_body`: a stored body is a small reference, copied per recipient).
pub fn build_events(
    account: &AccountId,
    sender: &Mailbox,
    recipients: Vec<Mailbox>,
    options: SendOptions,
    body: MimeBody,
) -> (Vec<MessageAccepted>, Vec<AcceptedRecipient>) {
    let accepted_at = Timestamp::now();
    let mut events = Vec::with_capacity(recipients.len());
    let mut accepted = Vec::with_capacity(recipients.len());
    for r in recipients {
        let id = MessageId::generate();
        accepted.push(AcceptedRecipient { recipient: r.address.clone(), id: id.clone() });
        events.push(MessageAccepted {
            account: account.clone(),
            message_id: id,
            envelope_sender: sender.address.clone(),
            recipient: r.address,
            recipient_domain: r.domain,
            options,
            body: body.clone(),
            accepted_at,
        });
    }
    (events, accepted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_checks() {
        assert!(check_mime(b"From: a@b.test\r\nSubject: x\r\n\r\nhi\r\n").is_ok());
        assert!(check_mime(b"From: a@b.test\r\nSubject: x\r\n  folded\r\n\r\n").is_ok());
        assert!(check_mime(b"hello world").is_err());
        assert!(check_mime(b"Subject: x\r\n\r\nbody").is_err());
        assert!(check_mime(b"From a@b.test\r\n\r\nbody").is_err());
    }

    #[test]
    fn line_endings_become_crlf() {
        assert_eq!(crlf(b"a\nb\r\nc\n".to_vec()), b"a\r\nb\r\nc\r\n");
        assert_eq!(crlf(b"a\r\n".to_vec()), b"a\r\n");
    }

    #[test]
    fn header_presence() {
        let m = b"From: a@b.test\r\nmessage-id: <x@y>\r\n\r\nDate: not a header\r\n";
        assert!(has_header(m, "Message-ID"));
        assert!(!has_header(m, "Date"));
    }
}

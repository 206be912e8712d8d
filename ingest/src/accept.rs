//! What every ingestion path (REST and SMTP) shares once a message is received: line-ending
//! normalization and building one `MessageAccepted` per recipient (the message checks are
//! in [`crate::message`]). Both paths then append through
//! [`herald_engine::submit::Submitter`].

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
    fn line_endings_become_crlf() {
        assert_eq!(crlf(b"a\nb\r\nc\n".to_vec()), b"a\r\nb\r\nc\r\n");
        assert_eq!(crlf(b"a\r\n".to_vec()), b"a\r\n");
    }
}

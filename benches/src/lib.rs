//! Criterion benchmarks of Herald's hot paths (`cargo bench -p herald-benches`):
//! `codec` (event encode/decode), `log_append` (embedded log, fsynced, by batch size),
//! `dkim_sign` (5 KB message, RSA-2048 and Ed25519). Shared fixtures live here.

use herald_schemas::*;

/// A 5 KB MIME message.
pub fn message_5k() -> Vec<u8> {
    let mut m = b"From: News <news@sender.test>\r\nTo: b@example.org\r\nSubject: Weekly digest\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@sender.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n".to_vec();
    while m.len() < 5 * 1024 {
        m.extend_from_slice(b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n");
    }
    m
}

pub fn accepted(body: Vec<u8>) -> Event {
    Event::MessageAccepted(MessageAccepted {
        account: AccountId("acme".into()),
        message_id: MessageId::generate(),
        envelope_sender: "bounces@sender.test".into(),
        recipient: "b@example.org".into(),
        recipient_domain: "example.org".into(),
        options: SendOptions::default(),
        body: Body::Inline(body),
        accepted_at: Timestamp::now(),
    })
}

pub fn attempted() -> Event {
    Event::DeliveryAttempted(DeliveryAttempted {
        account: AccountId("acme".into()),
        message_id: MessageId::generate(),
        recipient: "b@example.org".into(),
        recipient_domain: "example.org".into(),
        attempt: 1,
        mx_host: Some("mx.example.org".into()),
        mx_ip: Some("192.0.2.1".into()),
        tls: true,
        reply: SmtpReply { code: 250, enhanced: Some("2.0.0".into()), text: "ok".into() },
        outcome: Outcome::Delivered,
        next_attempt_at: None,
        duration_ms: 12,
        attempted_at: Timestamp::now(),
        dkim: "signed d=sender.test s=s1 a=rsa-sha256".into(),
    })
}

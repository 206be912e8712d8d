//! Criterion benchmarks of Herald's hot paths (`cargo bench -p herald-benches`):
//! `codec` (event encode/decode), `log_append` (embedded log, fsynced, by batch size),
//! `dkim_sign` (5 KB message, RSA-2048 and Ed25519), `rewrite` (the 20 KB newsletter: per
//! body, per recipient, and the RSA-2048 signature after it). Shared fixtures live here.

pub mod procs;

use herald_schemas::*;

/// A 5 KB MIME message.
pub fn message_5k() -> Vec<u8> {
    let mut m = b"From: News <news@sender.test>\r\nTo: b@example.org\r\nSubject: Weekly digest\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@sender.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n".to_vec();
    while m.len() < 5 * 1024 {
        m.extend_from_slice(b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n");
    }
    m
}

/// A 20 KB newsletter: multipart/alternative, a text part and a quoted-printable HTML part
/// with a `<style>` block (an `@media` query too) and 30 links.
pub fn newsletter_20k() -> Vec<u8> {
    let mut style = String::from("body { margin: 0; padding: 0; background: #f4f4f4 }\n");
    for i in 0..24 {
        style.push_str(&format!(
            ".c{i} {{ color: #{:06x}; font-family: Helvetica, Arial, sans-serif; line-height: 1.5 }}\n",
            i * 4321
        ));
    }
    style.push_str("h2 { font-size: 20px; margin: 0 0 8px } p { font-size: 15px } a { color: #0a66c2 }\n");
    style.push_str(
        "@media only screen and (max-width: 600px) { .c0 { width: 100% !important } h2 { font-size: 18px } }\n",
    );
    let mut html = format!("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Weekly</title><style>\n{style}</style></head>\n<body>\n<table width=\"100%\" cellpadding=\"0\" cellspacing=\"0\">\n");
    for i in 0..30 {
        html.push_str(&format!(
            "<tr><td class=\"c{}\">\n<h2>Story {i}: what happened this week</h2>\n<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris.</p>\n<p>Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur.</p>\n<p><a href=\"https://news.example/stories/{i}?utm_source=newsletter&amp;utm_medium=email&amp;utm_campaign=weekly-48\">Read story {i}</a></p>\n</td></tr>\n",
            i % 24
        ));
    }
    html.push_str("</table>\n<p class=\"c1\">You receive this because you subscribed. <a href=\"%unsubscribe_url%\">Unsubscribe</a></p>\n</body></html>\n");
    let mut qp = String::new();
    for line in html.lines() {
        let escaped = line.replace('=', "=3D");
        let chars: Vec<char> = escaped.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let mut end = (i + 75).min(chars.len());
            // Never split an `=3D` escape.
            if end < chars.len() {
                if chars[end - 1] == '=' {
                    end -= 1;
                } else if chars[end - 2] == '=' {
                    end -= 2;
                }
            }
            qp.extend(&chars[i..end]);
            qp.push_str(if end < chars.len() { "=\r\n" } else { "\r\n" });
            i = end;
        }
    }
    let mut text = String::new();
    for i in 0..30 {
        text.push_str(&format!("Story {i}: what happened this week\r\nhttps://news.example/stories/{i}\r\n\r\n"));
    }
    let m = format!(
        "From: News <news@sender.test>\r\nTo: b@example.org\r\nSubject: Weekly digest\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <weekly-48@sender.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{qp}\r\n--b--\r\n"
    );
    m.into_bytes()
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

//! What an event of the log looks like to a customer: `{type, timestamp, data}`, the body of
//! a webhook request (and of the event feed). Pure: no I/O.
//!
//! | type | from |
//! |---|---|
//! | `message.delivered`, `message.deferred`, `message.failed` | `DeliveryAttempted` |
//! | `message.bounced` | `BounceReceived` (a refusal, or a DSN) |
//! | `message.complained` | `ComplaintReceived` |
//! | `message.suppressed` | `MessageSuppressed` |
//! | `message.opened`, `link.clicked`, `recipient.unsubscribed` | engagement events |
//! | `domain.verified`, `domain.failing` | `DomainVerified` by its status |

use crate::projector::rfc3339;
use herald_schemas::{
    AccountId, DomainEvent, EngagementEvent, Event, FeedbackEvent, MessageId, Outcome, Timestamp, VerificationStatus,
};
use serde_json::{json, Value};

/// Every type a webhook endpoint may subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "message.delivered",
    "message.deferred",
    "message.failed",
    "message.bounced",
    "message.complained",
    "message.suppressed",
    "message.opened",
    "link.clicked",
    "recipient.unsubscribed",
    "domain.verified",
    "domain.failing",
];

/// An event as customers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub head: Head,
    pub recipient: Option<String>,
    pub data: Value,
}

impl Payload {
    /// The request body: `{"type":…,"timestamp":…,"data":{…}}`.
    pub fn body(&self) -> Vec<u8> {
        body(self.head.event_type, self.head.at, &self.data)
    }
}

/// `{"type":…,"timestamp":…,"data":{…}}`, serialized from borrowed fields.
fn body(event_type: &str, at: Timestamp, data: &impl serde::Serialize) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Body<'a, D> {
        #[serde(rename = "type")]
        event_type: &'a str,
        timestamp: String,
        data: &'a D,
    }
    serde_json::to_vec(&Body { event_type, timestamp: rfc3339(at), data }).unwrap_or_default()
}

/// Whose event it is, what and when: what dispatch needs of it besides its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub account: AccountId,
    pub event_type: &'static str,
    pub at: Timestamp,
    /// The message it is about (for per-message order), if any.
    pub message_id: Option<MessageId>,
}

/// A delivery's `data`, borrowed from its event; [`of`] makes its `Value` from it (whose
/// keys are sorted, so the fields are in that order, and both paths give the same bytes).
#[derive(serde::Serialize)]
struct DeliveryData<'a> {
    attempt: u32,
    message_id: &'a MessageId,
    mx_host: &'a Option<String>,
    mx_ip: &'a Option<String>,
    next_attempt_at: Option<String>,
    recipient: &'a str,
    reply: &'a herald_schemas::SmtpReply,
    tls: bool,
}

impl<'a> DeliveryData<'a> {
    fn of(e: &'a herald_schemas::DeliveryAttempted) -> Self {
        DeliveryData {
            attempt: e.attempt,
            message_id: &e.message_id,
            mx_host: &e.mx_host,
            mx_ip: &e.mx_ip,
            next_attempt_at: e.next_attempt_at.map(rfc3339),
            recipient: &e.recipient,
            reply: &e.reply,
            tls: e.tls,
        }
    }
}

fn delivery_type(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Delivered => "message.delivered",
        Outcome::Deferred => "message.deferred",
        Outcome::Failed => "message.failed",
    }
}

/// The head and the request body of `event`, if customers are told about it; the body is
/// [`Payload::body`] of [`of`]. Deliveries, most of the webhooks, are serialized straight
/// from the event, without building a `Value` first.
pub fn webhook(event: Event) -> Option<(Head, Vec<u8>)> {
    match event {
        Event::DeliveryAttempted(e) => {
            let event_type = delivery_type(e.outcome);
            let body = body(event_type, e.attempted_at, &DeliveryData::of(&e));
            let head = Head { account: e.account, event_type, at: e.attempted_at, message_id: Some(e.message_id) };
            Some((head, body))
        }
        other => {
            let p = of(&other)?;
            let body = p.body();
            Some((p.head, body))
        }
    }
}

/// The payload of `event`, if customers are told about it.
pub fn of(event: &Event) -> Option<Payload> {
    match event {
        Event::DeliveryAttempted(e) => {
            let data = serde_json::to_value(DeliveryData::of(e)).unwrap_or(Value::Null);
            let (event_type, m) = (delivery_type(e.outcome), &e.message_id);
            Some(message(&e.account, event_type, e.attempted_at, m, &e.recipient, data))
        }
        Event::Feedback(f) => feedback(f),
        Event::Engagement(e) => {
            let c = e.client();
            let mut data = json!({
                "message_id": e.message_id(),
                "recipient": e.recipient(),
                "event_id": e.event_id(),
                "user_agent": c.user_agent,
                "client_ip": c.ip,
                "machine": c.machine.is_some(),
                "machine_reason": c.machine.map(|m| m.as_str()),
            });
            if let EngagementEvent::LinkClicked(l) = e {
                data["url"] = json!(l.url);
                data["link_index"] = json!(l.link_index);
            }
            Some(message(e.account(), e.event_type(), e.at(), e.message_id(), e.recipient(), data))
        }
        Event::Domain(DomainEvent::Verified(v)) => {
            let event_type = match v.status {
                VerificationStatus::Verified => "domain.verified",
                VerificationStatus::Failing => "domain.failing",
                VerificationStatus::Pending => return None,
            };
            let data = json!({ "domain": v.domain, "status": v.status, "checks": v.checks });
            let head = Head { account: v.account.clone(), event_type, at: v.checked_at, message_id: None };
            Some(Payload { head, recipient: None, data })
        }
        _ => None,
    }
}

fn feedback(f: &FeedbackEvent) -> Option<Payload> {
    match f {
        FeedbackEvent::BounceReceived(b) => {
            let data = json!({
                "message_id": b.message_id,
                "recipient": b.recipient,
                "bounce_type": b.bounce_type,
                "class": b.class,
                "action": b.action,
                "code": b.code,
                "enhanced": b.enhanced,
                "diagnostic": b.diagnostic,
                "remote_mta": b.remote_mta,
                "reporting_mta": b.reporting_mta,
                "source": b.source,
                "bounce_id": b.id,
            });
            Some(message(&b.account, "message.bounced", b.received_at, &b.message_id, &b.recipient, data))
        }
        FeedbackEvent::ComplaintReceived(c) => {
            let data = json!({
                "message_id": c.message_id,
                "recipient": c.recipient,
                "feedback_type": c.feedback_type,
                "user_agent": c.user_agent,
                "reporting_mta": c.reporting_mta,
                "arrival_date": c.arrival_date.map(rfc3339),
                "complaint_id": c.id,
            });
            Some(message(&c.account, "message.complained", c.received_at, &c.message_id, &c.recipient, data))
        }
        FeedbackEvent::MessageSuppressed(s) => {
            let data = json!({
                "message_id": s.message_id,
                "recipient": s.recipient,
                "reason": s.reason,
                "attempt": s.attempt,
            });
            Some(message(&s.account, "message.suppressed", s.suppressed_at, &s.message_id, &s.recipient, data))
        }
        _ => None,
    }
}

fn message(
    account: &AccountId,
    event_type: &'static str,
    at: Timestamp,
    message_id: &MessageId,
    recipient: &str,
    data: Value,
) -> Payload {
    let head = Head { account: account.clone(), event_type, at, message_id: Some(message_id.clone()) };
    Payload { head, recipient: Some(recipient.to_owned()), data }
}

/// The `webhook-id` of the event stored at `(topic, partition, offset)`: the same for every
/// delivery and redelivery of that record, so receivers can deduplicate.
pub fn webhook_id(topic: &str, partition: u32, offset: u64) -> String {
    use std::fmt::Write;
    // SHA-256 of "{topic}\0{partition}\0{offset}", its first 16 bytes in lowercase base32.
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(topic.as_bytes());
    let mut tail = String::with_capacity(32);
    let _ = write!(tail, "\u{0}{partition}\u{0}{offset}");
    ctx.update(tail.as_bytes());
    let digest = ctx.finish();
    let b32 = &data_encoding::BASE32_NOPAD;
    let mut id = vec![0u8; 4 + b32.encode_len(16)];
    id[..4].copy_from_slice(b"msg_");
    b32.encode_mut(&digest.as_ref()[..16], &mut id[4..]);
    id.make_ascii_lowercase();
    String::from_utf8(id).expect("base32 is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_schemas::{DeliveryAttempted, SmtpReply};

    /// A delivery attempt of message `m1` (first attempt, TLS, 250 2.0.0 ok), changed by `f`.
    fn attempt(f: impl FnOnce(&mut DeliveryAttempted)) -> Event {
        let mut e = DeliveryAttempted {
            account: AccountId("acme".into()),
            message_id: MessageId("m1".into()),
            recipient: "a@example.org".into(),
            recipient_domain: "example.org".into(),
            attempt: 1,
            mx_host: Some("mx.example.org".into()),
            mx_ip: None,
            tls: true,
            reply: SmtpReply { code: 250, enhanced: Some("2.0.0".into()), text: "ok".into() },
            outcome: Outcome::Delivered,
            next_attempt_at: None,
            duration_ms: 5,
            attempted_at: Timestamp(1_700_000_000_000),
            dkim: String::new(),
        };
        f(&mut e);
        Event::DeliveryAttempted(e)
    }

    #[test]
    fn a_delivery_becomes_message_delivered() {
        let p = of(&attempt(|_| ())).unwrap();
        assert_eq!(p.head.event_type, "message.delivered");
        let body: Value = serde_json::from_slice(&p.body()).unwrap();
        assert_eq!(body["type"], "message.delivered");
        assert_eq!(body["timestamp"], "2023-11-14T22:13:20Z");
        let data = json!({
            "message_id": "m1",
            "recipient": "a@example.org",
            "attempt": 1,
            "mx_host": "mx.example.org",
            "mx_ip": null,
            "tls": true,
            "reply": {"code": 250, "enhanced": "2.0.0", "text": "ok"},
            "next_attempt_at": null,
        });
        assert_eq!(body["data"], data, "the documented fields of a delivery event");
        assert_eq!(EVENT_TYPES.len(), 11);
    }

    #[test]
    fn a_delivery_serialized_from_the_event_is_the_payloads_body() {
        for (outcome, mx_ip, next, enhanced) in [
            (Outcome::Delivered, None, None, Some("2.0.0")),
            (Outcome::Deferred, Some("192.0.2.7"), Some(Timestamp(1_700_000_300_000)), None),
            (Outcome::Failed, Some("2001:db8::1"), None, Some("5.1.1")),
        ] {
            let e = attempt(|e| {
                e.message_id = MessageId("m\"1".into());
                e.attempt = 3;
                e.mx_ip = mx_ip.map(str::to_owned);
                e.tls = mx_ip.is_some();
                e.reply =
                    SmtpReply { code: 451, enhanced: enhanced.map(str::to_owned), text: "try \u{e9} later".into() };
                e.outcome = outcome;
                e.next_attempt_at = next;
                e.attempted_at = Timestamp(1_700_000_000_123);
            });
            let p = of(&e).unwrap();
            let (head, body) = webhook(e).unwrap();
            assert_eq!(String::from_utf8(body).unwrap(), String::from_utf8(p.body()).unwrap());
            assert_eq!(head, p.head);
        }
    }

    #[test]
    fn webhook_ids_are_stable_per_record() {
        // The id of an earlier build's records (receivers deduplicate on it): unchanged.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"t.attempts\x001\x007");
        let before = format!("msg_{}", data_encoding::BASE32_NOPAD.encode(&digest.as_ref()[..16]).to_ascii_lowercase());
        assert_eq!(webhook_id("t.attempts", 1, 7), before);
        assert_eq!(webhook_id("t.attempts", 1, 7), webhook_id("t.attempts", 1, 7));
        assert_ne!(webhook_id("t.attempts", 1, 7), webhook_id("t.attempts", 1, 8));
        assert_ne!(webhook_id("t.attempts", 1, 7), webhook_id("t.feedback", 1, 7));
        assert!(webhook_id("a", 0, 0).starts_with("msg_"));
    }
}

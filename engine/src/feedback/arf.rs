//! Complaints: Abuse Reporting Format reports (RFC 5965) from mailbox providers' feedback
//! loops, parsed with mail-auth's `report` module. The recipient is often redacted
//! (RFC 6590), so the message is found through what Herald put in it: the VERP return path
//! (the returned original's `Return-Path:`, or the report's `Original-Mail-From:`) or the
//! `X-Herald-ID:` header carrying the same token.

use mail_auth::report::{Feedback, FeedbackType};
use mail_parser::MessageParser;

/// The header Herald adds to messages sent with bounce tracking: the VERP token again, for
/// reports that return the message but not its envelope.
pub const HERALD_ID_HEADER: &str = "X-Herald-ID";

/// What a complaint says and where its message may be named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complaint {
    /// `abuse`, `fraud`, `virus`, `auth-failure`, `not-spam` or `other`.
    pub feedback_type: String,
    pub user_agent: Option<String>,
    pub reporting_mta: Option<String>,
    /// `Arrival-Date`, seconds since the epoch.
    pub arrival_date: Option<i64>,
    /// `Original-Rcpt-To` as given (possibly redacted), without angle brackets.
    pub original_rcpt_to: Option<String>,
    /// Candidate VERP local parts or addresses, most reliable first: the token header, the
    /// returned `Return-Path`, `Original-Mail-From`.
    pub candidates: Vec<String>,
}

/// `None` when `raw` holds no `message/feedback-report` part.
pub fn parse(raw: &[u8]) -> Option<Complaint> {
    let feedback = Feedback::parse_rfc5322(raw).ok()?;
    let feedback_type = match feedback.feedback_type() {
        FeedbackType::Abuse => "abuse",
        FeedbackType::AuthFailure => "auth-failure",
        FeedbackType::Fraud => "fraud",
        FeedbackType::NotSpam => "not-spam",
        FeedbackType::Virus => "virus",
        FeedbackType::Other => "other",
    };
    let mut candidates = Vec::new();
    let returned = feedback.message().or(feedback.headers());
    if let Some(text) = returned {
        let mut text = text.replace("\r\n", "\n").replace('\n', "\r\n");
        if !text.contains("\r\n\r\n") {
            text.push_str("\r\n\r\n");
        }
        if let Some(headers) = MessageParser::new().parse_headers(text.as_bytes()) {
            for name in [HERALD_ID_HEADER, "Return-Path"] {
                if let Some(v) = headers.header_raw(name) {
                    candidates.push(strip(v));
                }
            }
        }
    }
    if let Some(from) = feedback.original_mail_from() {
        candidates.push(strip(from));
    }
    candidates.retain(|c| !c.is_empty());
    Some(Complaint {
        feedback_type: feedback_type.to_owned(),
        user_agent: feedback.user_agent().map(str::to_owned),
        reporting_mta: feedback.reporting_mta().map(|v| v.split_once(';').map_or(v, |(_, m)| m).trim().to_owned()),
        arrival_date: feedback.arrival_date(),
        original_rcpt_to: feedback.original_rcpt_to().map(strip),
        candidates,
    })
}

/// ` <b-x@d> ` → `b-x@d`.
fn strip(v: &str) -> String {
    let v = super::dsn::unfold(v);
    v.trim().trim_start_matches('<').trim_end_matches('>').trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5965_example_with_token_in_return_path() {
        let raw = "From: <abusedesk@example.com>\r\nDate: Thu, 8 Mar 2005 17:40:36 EDT\r\nSubject: FW: Earn money\r\nTo: <fbl@bounce.sender.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report;\r\n     boundary=\"part1_13d.2e68ed54_boundary\"\r\n\r\n--part1_13d.2e68ed54_boundary\r\nContent-Type: text/plain; charset=\"US-ASCII\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\nThis is an email abuse report for an email message received from IP\r\n192.0.2.1 on Thu, 8 Mar 2005 14:00:00 EDT.\r\n\r\n--part1_13d.2e68ed54_boundary\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\nOriginal-Mail-From: <b-abc@bounce.sender.test>\r\nOriginal-Rcpt-To: <user@example.com>\r\nArrival-Date: Thu, 8 Mar 2005 14:00:00 EDT\r\nReporting-MTA: dns; mail.example.com\r\nSource-IP: 192.0.2.1\r\n\r\n--part1_13d.2e68ed54_boundary\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\nReturn-Path: <b-def@bounce.sender.test>\r\nX-Herald-ID: b-ghi\r\nFrom: <somespammer@example.net>\r\nSubject: Earn money\r\n\r\nSpam Spam Spam\r\n--part1_13d.2e68ed54_boundary--\r\n";
        let c = parse(raw.as_bytes()).unwrap();
        assert_eq!(c.feedback_type, "abuse");
        assert_eq!(c.user_agent.as_deref(), Some("SomeGenerator/1.0"));
        assert_eq!(c.reporting_mta.as_deref(), Some("mail.example.com"));
        assert_eq!(c.original_rcpt_to.as_deref(), Some("user@example.com"));
        assert_eq!(c.candidates, vec!["b-ghi", "b-def@bounce.sender.test", "b-abc@bounce.sender.test"]);
        assert!(c.arrival_date.is_some());
    }

    #[test]
    fn not_a_report() {
        assert!(parse(b"From: a@b.test\r\nSubject: hi\r\n\r\nhello\r\n").is_none());
    }
}

//! One account's bounce and complaint digest for one interval, and the report message
//! made of it (a `multipart/alternative` with a text/plain and a simple HTML part, built
//! with mail-builder). Pure: rows in, bytes out.

use super::interval::Interval;
use crate::projector::rfc3339;
use crate::rewrite::escape_html;
use herald_schemas::{AccountId, Timestamp};
use mail_builder::headers::raw::Raw;
use mail_builder::MessageBuilder;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Lines listed in one report at most; the counts cover everything.
pub const MAX_LISTED: usize = 500;
/// Characters of a diagnostic kept in the list.
const MAX_DIAGNOSTIC: usize = 300;

/// What a listed line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bounce,
    Complaint,
}

/// One bounce or complaint of the interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub at: Timestamp,
    pub kind: Kind,
    pub recipient: String,
    /// The bounce class (`invalid-recipient`, …) or the complaint's feedback type (`abuse`).
    pub class: String,
    pub diagnostic: String,
}

/// The digest of one account's interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub account: AccountId,
    pub interval: Interval,
    pub bounces: u64,
    pub complaints: u64,
    /// Bounces by class.
    pub bounce_classes: BTreeMap<String, u64>,
    /// Complaints by feedback type.
    pub complaint_types: BTreeMap<String, u64>,
    /// The first [`MAX_LISTED`] lines, oldest first.
    pub lines: Vec<Line>,
}

impl Digest {
    pub fn new(account: AccountId, interval: Interval) -> Self {
        Digest {
            account,
            interval,
            bounces: 0,
            complaints: 0,
            bounce_classes: BTreeMap::new(),
            complaint_types: BTreeMap::new(),
            lines: Vec::new(),
        }
    }

    /// Counts `line` and lists it while there is room.
    pub fn add(&mut self, mut line: Line) {
        let counts = match line.kind {
            Kind::Bounce => {
                self.bounces += 1;
                &mut self.bounce_classes
            }
            Kind::Complaint => {
                self.complaints += 1;
                &mut self.complaint_types
            }
        };
        *counts.entry(line.class.clone()).or_default() += 1;
        if self.lines.len() < MAX_LISTED {
            if line.diagnostic.chars().count() > MAX_DIAGNOSTIC {
                line.diagnostic = line.diagnostic.chars().take(MAX_DIAGNOSTIC).chain(['…']).collect();
            }
            line.diagnostic = line.diagnostic.replace(['\r', '\n', '\t'], " ");
            self.lines.push(line);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bounces == 0 && self.complaints == 0
    }

    fn total(&self) -> u64 {
        self.bounces + self.complaints
    }

    pub fn subject(&self) -> String {
        format!(
            "Bounce report for {}: {} bounce{}, {} complaint{} ({} to {})",
            self.account,
            self.bounces,
            plural(self.bounces),
            self.complaints,
            plural(self.complaints),
            rfc3339(self.interval.from),
            rfc3339(self.interval.to),
        )
    }

    pub fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "Bounces and complaints of account {}", self.account);
        let _ = writeln!(t, "from {} to {} (UTC)\r\n", rfc3339(self.interval.from), rfc3339(self.interval.to));
        let _ = writeln!(t, "Bounces: {}", self.bounces);
        for (class, n) in &self.bounce_classes {
            let _ = writeln!(t, "  {class}: {n}");
        }
        let _ = writeln!(t, "Complaints: {}", self.complaints);
        for (kind, n) in &self.complaint_types {
            let _ = writeln!(t, "  {kind}: {n}");
        }
        let _ = writeln!(t);
        if self.total() > self.lines.len() as u64 {
            let _ = writeln!(t, "The first {} of {} are listed.\r\n", self.lines.len(), self.total());
        }
        for l in &self.lines {
            let _ = writeln!(t, "{}\t{}\t{}\t{}\t{}", rfc3339(l.at), kind(l.kind), l.recipient, l.class, l.diagnostic);
        }
        t.replace("\r\n", "\n")
    }

    pub fn html(&self) -> String {
        let mut h = String::from("<!DOCTYPE html><html><body style=\"font-family:sans-serif\">");
        let _ = write!(
            h,
            "<h1>Bounce report for {}</h1><p>{} to {} (UTC)</p>",
            escape_html(&self.account.0),
            rfc3339(self.interval.from),
            rfc3339(self.interval.to)
        );
        let _ = write!(h, "<h2>Bounces: {}</h2><table>", self.bounces);
        for (class, n) in &self.bounce_classes {
            let _ = write!(h, "<tr><td>{}</td><td>{n}</td></tr>", escape_html(class));
        }
        let _ = write!(h, "</table><h2>Complaints: {}</h2><table>", self.complaints);
        for (kind, n) in &self.complaint_types {
            let _ = write!(h, "<tr><td>{}</td><td>{n}</td></tr>", escape_html(kind));
        }
        h.push_str("</table>");
        if self.total() > self.lines.len() as u64 {
            let _ = write!(h, "<p>The first {} of {} are listed.</p>", self.lines.len(), self.total());
        }
        h.push_str("<table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\"><tr><th>Time</th><th>Kind</th><th>Recipient</th><th>Class</th><th>Diagnostic</th></tr>");
        for l in &self.lines {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                rfc3339(l.at),
                kind(l.kind),
                escape_html(&l.recipient),
                escape_html(&l.class),
                escape_html(&l.diagnostic)
            );
        }
        h.push_str("</table></body></html>");
        h
    }

    /// The report as an RFC 5322 message from `from` to `to`. `message_id` is the
    /// Message-ID without brackets; `now` its Date.
    pub fn message(&self, from: &str, to: &str, message_id: &str, now: Timestamp) -> Vec<u8> {
        let interval = format!("{}/{}", rfc3339(self.interval.from), rfc3339(self.interval.to));
        let counts = format!("bounces={}; complaints={}", self.bounces, self.complaints);
        MessageBuilder::new()
            .from(("Herald reports", from))
            .to(to)
            .subject(self.subject())
            .message_id(message_id)
            .date(now.millis().div_euclid(1000))
            // RFC 3834: nobody should auto-reply to it.
            .header("Auto-Submitted", Raw::new("auto-generated"))
            .header("X-Herald-Report-Account", Raw::new(self.account.0.clone()))
            .header("X-Herald-Report-Interval", Raw::new(interval))
            .header("X-Herald-Report-Counts", Raw::new(counts))
            .text_body(self.text())
            .html_body(self.html())
            .write_to_vec()
            .unwrap_or_default()
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn kind(k: Kind) -> &'static str {
    match k {
        Kind::Bounce => "bounce",
        Kind::Complaint => "complaint",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    fn digest() -> Digest {
        let mut d = Digest::new(AccountId("acme".into()), Interval::containing(Timestamp(1_795_827_600_000), 3600));
        let line = |kind, recipient: &str, class: &str, diagnostic: &str| Line {
            at: Timestamp(1_795_827_601_000),
            kind,
            recipient: recipient.into(),
            class: class.into(),
            diagnostic: diagnostic.into(),
        };
        d.add(line(Kind::Bounce, "a@x.test", "invalid-recipient", "550 5.1.1 <a@x.test>: User unknown"));
        d.add(line(Kind::Bounce, "b@x.test", "invalid-recipient", "550 5.1.1 no such user"));
        d.add(line(Kind::Bounce, "c@x.test", "quota", "552 5.2.2 Mailbox full\r\nsecond line"));
        d.add(line(Kind::Complaint, "d@x.test", "abuse", ""));
        d
    }

    #[test]
    fn counts_by_class_and_type() {
        let d = digest();
        assert_eq!((d.bounces, d.complaints), (3, 1));
        assert_eq!(d.bounce_classes.get("invalid-recipient"), Some(&2));
        assert_eq!(d.bounce_classes.get("quota"), Some(&1));
        assert_eq!(d.complaint_types.get("abuse"), Some(&1));
        assert_eq!(d.lines[2].diagnostic, "552 5.2.2 Mailbox full  second line", "one line per entry");
        assert!(!d.is_empty());
        assert!(Digest::new(AccountId("x".into()), d.interval).is_empty());
    }

    #[test]
    fn the_list_is_capped_but_the_counts_are_not() {
        let mut d = Digest::new(AccountId("acme".into()), Interval::containing(Timestamp(0), 60));
        for i in 0..MAX_LISTED + 7 {
            d.add(Line {
                at: Timestamp(i as i64),
                kind: Kind::Bounce,
                recipient: format!("r{i}@x.test"),
                class: "quota".into(),
                diagnostic: "x".repeat(1000),
            });
        }
        assert_eq!(d.bounces, (MAX_LISTED + 7) as u64);
        assert_eq!(d.lines.len(), MAX_LISTED);
        assert_eq!(d.lines[0].diagnostic.chars().count(), MAX_DIAGNOSTIC + 1);
        assert!(d.text().contains(&format!("The first {MAX_LISTED} of {}", MAX_LISTED + 7)));
    }

    #[test]
    fn the_message_parses_with_both_parts_and_escapes_html() {
        let mut d = digest();
        d.add(Line {
            at: Timestamp(1_795_827_602_000),
            kind: Kind::Bounce,
            recipient: "e@x.test".into(),
            class: "policy".into(),
            diagnostic: "<script>alert(1)</script> refusé".into(),
        });
        let raw =
            d.message("reports@acme.example", "ops@acme.example", "r1@acme.example", Timestamp(1_795_827_700_000));
        let m = MessageParser::default().parse(&raw).expect("parses");
        assert_eq!(m.subject().unwrap(), d.subject());
        assert!(d.subject().contains("4 bounces, 1 complaint ("));
        let text = m.body_text(0).unwrap();
        assert!(text.contains("invalid-recipient: 2") && text.contains("refusé"), "{text}");
        let html = m.body_html(0).unwrap();
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"), "{html}");
        assert_eq!(m.header_raw("Auto-Submitted").map(str::trim), Some("auto-generated"));
        assert_eq!(m.header_raw("X-Herald-Report-Counts").map(str::trim), Some("bounces=4; complaints=1"));
        assert!(String::from_utf8_lossy(&raw).contains("\r\n"), "CRLF line endings");
    }
}

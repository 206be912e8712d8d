//! Reply rules: which share of recipients the sink refuses, and with what reply.
//!
//! A rule is `PATTERN:SHARE%:REPLY`, e.g. `gmail.test:2%:421 4.7.28 rate limited` or
//! `bounce*@*:100%:550 5.1.1 no such user`. A pattern without `@` matches the recipient's
//! domain, one with `@` the whole address; `*` and `?` are wildcards, case is ignored.
//! Rules are tried in order, and a rule's share applies to the recipients that reach it.
//! Shares are exact rather than random: a 2% rule refuses every 50th matching recipient.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// A malformed `--reply` rule.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("bad reply rule {0:?}: expected PATTERN:SHARE%:CODE TEXT, e.g. 'gmail.test:2%:421 4.7.28 rate limited'")]
    Shape(String),
    #[error("bad share in reply rule {0:?}: expected a percentage between 0% and 100%, e.g. 2% or 0.5%")]
    Share(String),
    #[error("bad reply in rule {0:?}: it must start with a 4xx or 5xx code and fit on one line")]
    Reply(String),
}

/// One rule with its running match counter.
#[derive(Debug)]
pub struct Rule {
    pattern: String,
    on_address: bool,
    /// Share in parts per million.
    ppm: u64,
    pub code: u16,
    /// The whole reply line without CRLF, e.g. `421 4.7.28 rate limited`.
    pub reply: String,
    seen: AtomicU64,
}

impl Clone for Rule {
    fn clone(&self) -> Self {
        Rule { seen: AtomicU64::new(0), pattern: self.pattern.clone(), reply: self.reply.clone(), ..*self }
    }
}

impl FromStr for Rule {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, RuleError> {
        let mut parts = s.splitn(3, ':');
        let (Some(pattern), Some(share), Some(reply)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(RuleError::Shape(s.into()));
        };
        let pattern = pattern.trim().to_ascii_lowercase();
        if pattern.is_empty() {
            return Err(RuleError::Shape(s.into()));
        }
        let pct: f64 = share
            .trim()
            .strip_suffix('%')
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| RuleError::Share(s.into()))?;
        if !(0.0..=100.0).contains(&pct) {
            return Err(RuleError::Share(s.into()));
        }
        let reply = reply.trim().to_string();
        let code: u16 = reply.get(..3).and_then(|c| c.parse().ok()).ok_or_else(|| RuleError::Reply(s.into()))?;
        let separated = reply.len() == 3 || reply.as_bytes()[3] == b' ';
        if !(400..600).contains(&code) || !separated || reply.contains(['\r', '\n']) {
            return Err(RuleError::Reply(s.into()));
        }
        Ok(Rule {
            on_address: pattern.contains('@'),
            pattern,
            ppm: (pct * 10_000.0).round() as u64,
            code,
            reply,
            seen: AtomicU64::new(0),
        })
    }
}

impl Rule {
    fn matches(&self, address: &str) -> bool {
        let subject = if self.on_address { address } else { address.rsplit_once('@').map_or(address, |(_, d)| d) };
        glob(self.pattern.as_bytes(), subject.as_bytes())
    }

    /// Counts one more matching recipient; true when this one falls in the refused share.
    fn fires(&self) -> bool {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        (n + 1) * self.ppm / 1_000_000 > n * self.ppm / 1_000_000
    }
}

/// The ordered rule list of one sink.
#[derive(Clone, Debug, Default)]
pub struct Rules(pub Vec<Rule>);

impl Rules {
    pub fn parse(specs: &[String]) -> Result<Rules, RuleError> {
        specs.iter().map(|s| s.parse()).collect::<Result<Vec<_>, _>>().map(Rules)
    }

    /// The rule refusing `address`, if any.
    pub fn decide(&self, address: &str) -> Option<&Rule> {
        if self.0.is_empty() {
            return None;
        }
        self.0.iter().find(|r| r.matches(address) && r.fires())
    }
}

/// Case-insensitive glob with `*` and `?`; `pattern` is already lower case.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t].to_ascii_lowercase()) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let r: Rule = "gmail.test:2%:421 4.7.28 rate limited".parse().unwrap();
        assert_eq!((r.code, r.ppm, r.on_address), (421, 20_000, false));
        assert_eq!(r.reply, "421 4.7.28 rate limited");
        let r: Rule = "bounce*@*:100%:550 5.1.1 no such user".parse().unwrap();
        assert!(r.on_address);
        assert!("x.test:2:421 a".parse::<Rule>().is_err());
        assert!("x.test:200%:421 a".parse::<Rule>().is_err());
        assert!("x.test:2%:250 ok".parse::<Rule>().is_err());
        assert!("x.test:2%".parse::<Rule>().is_err());
    }

    #[test]
    fn globs() {
        assert!(glob(b"gmail.test", b"GMail.test"));
        assert!(!glob(b"gmail.test", b"xgmail.test"));
        assert!(glob(b"*.gmail.test", b"a.b.gmail.test"));
        assert!(glob(b"bounce*@*", b"bounce17@x.test"));
        assert!(!glob(b"bounce*@*", b"rcpt17@x.test"));
        assert!(glob(b"r?pt*", b"rcpt1"));
    }

    #[test]
    fn shares_are_exact_and_ordered() {
        let rules = Rules::parse(&[
            "a.test:2%:421 4.7.28 slow down".into(),
            "a.test:1%:550 5.1.1 no".into(),
            "bounce*@*:100%:550 5.1.1 gone".into(),
        ])
        .unwrap();
        let (mut c421, mut c550) = (0, 0);
        for i in 0..10_000 {
            match rules.decide(&format!("rcpt{i}@a.test")).map(|r| r.code) {
                Some(421) => c421 += 1,
                Some(550) => c550 += 1,
                _ => {}
            }
        }
        assert_eq!(c421, 200);
        assert_eq!(c550, 98, "1% of the 98% that reach the second rule");
        assert_eq!(rules.decide("bounce1@b.test").map(|r| r.code), Some(550));
        assert!(rules.decide("rcpt1@b.test").is_none());
    }
}

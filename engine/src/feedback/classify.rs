//! The bounce classifier: ordered regular expressions over `"<code> <x.y.z> <text>"`,
//! first match wins. The shipped rules (`rules.toml` beside this file) cover the RFC 3463
//! enhanced status codes and the common texts of Gmail, Microsoft, Yahoo and Apple; an
//! operator's rule file is tried before them (see `docs/bounce-rules.md`).
//!
//! The class decides the bounce type, not the first digit of the code: a 552 "too many
//! recipients" is transient, a 5.7.x policy block is the sender's problem, not the
//! recipient's. Two caps apply after the rules: a 4xx reply or a delayed DSN is never
//! permanent (the server said "try again"), and an uncategorized 4xx is transient.
//!
//! The subject string: the code as three digits (`000` when unknown), one space, the
//! enhanced code (`0.0.0` when unknown), one space, the text with line breaks and repeated
//! `550-5.1.1` continuation prefixes folded into single spaces. Matching ignores case.

use herald_schemas::{BounceClass, BounceType};
use regex::{RegexSet, RegexSetBuilder};
use serde::Deserialize;
use thiserror::Error;

/// The rules Herald ships.
pub const SHIPPED_RULES: &str = include_str!("rules.toml");

/// Why a rule file was refused; `herald config check` and startup print it.
#[derive(Debug, Error)]
pub enum RuleError {
    #[error("rule file: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("rule {index} (`{pattern}`): unknown class `{class}`")]
    UnknownClass { index: usize, pattern: String, class: String },
    #[error("rule {index} (`{pattern}`): {problem}")]
    Regex { index: usize, pattern: String, problem: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    /// The regular expression (Rust `regex` syntax).
    #[serde(rename = "match")]
    pattern: String,
    class: String,
    /// Overrides the class's default type.
    #[serde(rename = "type")]
    bounce_type: Option<BounceType>,
    /// Free text for people (where the rule comes from).
    #[allow(dead_code)]
    note: Option<String>,
}

/// What the classifier says about one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    pub class: BounceClass,
    pub bounce_type: BounceType,
    /// Index of the matching rule (operator rules first), `None` when nothing matched.
    pub rule: Option<usize>,
}

/// Compiled rules; cheap to share (`Arc`), `classify` takes `&self`.
pub struct Classifier {
    set: RegexSet,
    rules: Vec<(BounceClass, Option<BounceType>)>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Classifier({} rules)", self.rules.len())
    }
}

impl Classifier {
    /// The shipped rules alone.
    pub fn shipped() -> Classifier {
        Classifier::build(&[SHIPPED_RULES]).expect("the shipped rules compile (tested)")
    }

    /// `operator` rules (a TOML text) tried first, then the shipped ones unless
    /// `replace_shipped`.
    pub fn with_operator_rules(operator: &str, replace_shipped: bool) -> Result<Classifier, RuleError> {
        if replace_shipped {
            Classifier::build(&[operator])
        } else {
            Classifier::build(&[operator, SHIPPED_RULES])
        }
    }

    fn build(files: &[&str]) -> Result<Classifier, RuleError> {
        let mut patterns = Vec::new();
        let mut rules = Vec::new();
        for text in files {
            let file: RuleFile = toml::from_str(text)?;
            for raw in file.rule {
                let index = rules.len();
                let class = BounceClass::parse(raw.class.trim()).ok_or_else(|| RuleError::UnknownClass {
                    index,
                    pattern: raw.pattern.clone(),
                    class: raw.class.clone(),
                })?;
                // Compile alone first, so the error names the rule.
                regex::RegexBuilder::new(&raw.pattern)
                    .case_insensitive(true)
                    .build()
                    .map_err(|e| RuleError::Regex { index, pattern: raw.pattern.clone(), problem: e.to_string() })?;
                patterns.push(raw.pattern);
                rules.push((class, raw.bounce_type));
            }
        }
        let set =
            RegexSetBuilder::new(&patterns).case_insensitive(true).size_limit(64 << 20).build().map_err(|e| {
                RuleError::Regex { index: 0, pattern: "(the whole set)".into(), problem: e.to_string() }
            })?;
        Ok(Classifier { set, rules })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Classifies a reply or a DSN's diagnostic. `delayed`: a DSN with `Action: delayed`.
    pub fn classify(&self, code: Option<u16>, enhanced: Option<&str>, text: &str, delayed: bool) -> Classification {
        let line = subject(code, enhanced, text);
        let matched = self.set.matches(&line).iter().next();
        let (class, bounce_type) = match matched {
            Some(i) => {
                let (class, t) = self.rules[i];
                (class, t.unwrap_or_else(|| class.default_type()))
            }
            None => (BounceClass::Uncategorized, BounceClass::Uncategorized.default_type()),
        };
        let temporary = delayed || temporary_code(code, enhanced);
        let bounce_type = match bounce_type {
            BounceType::Permanent if temporary => BounceType::Transient,
            BounceType::Undetermined if temporary => BounceType::Transient,
            t => t,
        };
        Classification { class, bounce_type, rule: matched }
    }
}

/// Whether the reply said "try again": a 4xx code, or (without a code) a 4.x.x status.
fn temporary_code(code: Option<u16>, enhanced: Option<&str>) -> bool {
    match code {
        Some(c) if c > 0 => (400..500).contains(&c),
        _ => enhanced.is_some_and(|e| e.starts_with("4.")),
    }
}

/// The string the rules see: `"550 5.1.1 text"`.
pub fn subject(code: Option<u16>, enhanced: Option<&str>, text: &str) -> String {
    let code = code.filter(|c| (100..1000).contains(c)).unwrap_or(0);
    let enhanced = enhanced.filter(|e| is_enhanced(e)).unwrap_or("0.0.0");
    format!("{code:03} {enhanced} {}", fold(text))
}

/// `x.y.z` with a class digit 2, 4 or 5 (RFC 3463).
pub fn is_enhanced(s: &str) -> bool {
    let mut parts = s.split('.');
    let class = parts.next();
    let (subject, detail) = (parts.next(), parts.next());
    parts.next().is_none()
        && matches!(class, Some("2" | "4" | "5"))
        && [subject, detail]
            .iter()
            .all(|p| p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())))
}

/// Folds a multi-line reply into one line: continuation prefixes (`550-5.1.1 `,
/// `550 `) of later lines are dropped, runs of white space become one space.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        let mut l = line.trim();
        if i > 0 {
            l = strip_reply_prefix(l);
        }
        if l.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        let mut space = false;
        for c in l.chars() {
            if c.is_whitespace() {
                space = true;
            } else {
                if space && !out.ends_with(' ') {
                    out.push(' ');
                }
                space = false;
                out.push(c);
            }
        }
    }
    out
}

/// `550-5.1.1 rest` → `rest`; `550 rest` → `rest`; anything else unchanged.
fn strip_reply_prefix(line: &str) -> &str {
    let b = line.as_bytes();
    if b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && (b[3] == b'-' || b[3] == b' ') {
        let rest = line[4..].trim_start();
        let first = rest.split_whitespace().next().unwrap_or("");
        if is_enhanced(first) {
            return rest[first.len()..].trim_start();
        }
        return rest;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use BounceClass::*;

    fn c(code: u16, enhanced: &str, text: &str) -> (BounceClass, BounceType) {
        let e = (!enhanced.is_empty()).then_some(enhanced);
        let r = Classifier::shipped().classify(Some(code), e, text, false);
        (r.class, r.bounce_type)
    }

    #[test]
    fn shipped_rules_compile() {
        assert!(Classifier::shipped().len() > 60);
    }

    #[test]
    fn folding() {
        assert_eq!(
            fold("The email account that you tried to reach does not exist. Please try\n550-5.1.1 double-checking the recipient's email\r\n550 5.1.1 address for typos"),
            "The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos"
        );
        assert_eq!(subject(None, None, "  a \t b "), "000 0.0.0 a b");
        assert_eq!(subject(Some(550), Some("5.1.1"), "x"), "550 5.1.1 x");
        assert!(is_enhanced("5.7.26") && is_enhanced("4.4.7") && !is_enhanced("5.1") && !is_enhanced("3.1.1"));
    }

    #[test]
    fn the_class_decides_not_the_first_digit() {
        assert_eq!(c(550, "5.1.1", "user unknown"), (InvalidRecipient, BounceType::Permanent));
        assert_eq!(c(552, "5.5.3", "Too many recipients"), (TooManyRecipients, BounceType::Transient));
        assert_eq!(c(550, "5.7.1", "Message rejected due to local policy"), (Policy, BounceType::Transient));
        assert_eq!(c(552, "5.2.2", "mailbox full"), (Quota, BounceType::Transient));
        // A 4xx never suppresses, whatever it says.
        assert_eq!(c(450, "4.1.1", "user unknown"), (InvalidRecipient, BounceType::Transient));
        assert_eq!(c(550, "", "something odd happened"), (Uncategorized, BounceType::Undetermined));
        assert_eq!(c(451, "", "something odd happened"), (Uncategorized, BounceType::Transient));
    }

    #[test]
    fn delayed_dsns_are_never_permanent() {
        let r = Classifier::shipped().classify(None, Some("5.1.1"), "user unknown", true);
        assert_eq!((r.class, r.bounce_type), (InvalidRecipient, BounceType::Transient));
    }

    #[test]
    fn operator_rules_come_first_and_errors_name_the_rule() {
        let mine = "[[rule]]\nmatch = 'user unknown'\nclass = 'policy'\ntype = 'undetermined'\n";
        let cl = Classifier::with_operator_rules(mine, false).unwrap();
        let r = cl.classify(Some(550), Some("5.1.1"), "User unknown", false);
        assert_eq!((r.class, r.bounce_type, r.rule), (Policy, BounceType::Undetermined, Some(0)));
        assert_eq!(cl.len(), Classifier::shipped().len() + 1);
        let only = Classifier::with_operator_rules(mine, true).unwrap();
        assert_eq!(only.classify(Some(552), Some("5.2.2"), "full", false).class, Uncategorized);
        let bad = Classifier::with_operator_rules("[[rule]]\nmatch = 'x'\nclass = 'nope'\n", false).unwrap_err();
        assert!(bad.to_string().contains("unknown class `nope`"), "{bad}");
        let bad =
            Classifier::with_operator_rules("[[rule]]\nmatch = '(unclosed'\nclass = 'quota'\n", false).unwrap_err();
        assert!(bad.to_string().contains("(unclosed"), "{bad}");
        assert!(Classifier::with_operator_rules("[[rule]]\nmatch='x'\nclass='quota'\nextra=1\n", false).is_err());
    }
}

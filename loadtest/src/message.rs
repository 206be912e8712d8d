//! The messages the generator sends: size and recipient-domain mixes, and the
//! `X-Herald-Loadtest` stamp (unique id and send time) that the sink reads back.
//!
//! Every choice is a pure function of the message index, so a run is reproducible and the
//! workers share nothing but a counter.

use std::fmt::Write as _;
use std::str::FromStr;

/// The header carrying `<unique id> <send time in µs since the Unix epoch>`.
pub const HEADER: &str = "X-Herald-Loadtest";

/// A malformed `--size` or `--domain` value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MixError {
    #[error("bad size {0:?}: expected a number with an optional k/m suffix, e.g. 5k")]
    Size(String),
    #[error("bad weight in {0:?}: expected VALUE:WEIGHT with a positive integer weight")]
    Weight(String),
    #[error("bad recipient domain {0:?}: expected [LOCALPREFIX@]DOMAIN[:WEIGHT]")]
    Domain(String),
    #[error("empty mix: give at least one entry")]
    Empty,
}

/// Weighted choices, picked by hashing the message index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Weighted<T> {
    entries: Vec<(T, u64)>,
    total: u64,
}

impl<T> Weighted<T> {
    pub fn new(entries: Vec<(T, u64)>) -> Result<Self, MixError> {
        let total = entries.iter().map(|(_, w)| w).sum();
        if entries.is_empty() || total == 0 {
            return Err(MixError::Empty);
        }
        Ok(Weighted { entries, total })
    }

    pub fn pick(&self, seed: u64) -> &T {
        let mut x = mix64(seed) % self.total;
        for (value, weight) in &self.entries {
            if x < *weight {
                return value;
            }
            x -= weight;
        }
        &self.entries[self.entries.len() - 1].0
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|(v, _)| v)
    }
}

/// splitmix64: a cheap, well-mixed hash of the index.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `5000`, `5k`, `1m` (k = 1024).
pub fn parse_size(s: &str) -> Result<usize, MixError> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.as_bytes().last() {
        Some(b'k') => (&t[..t.len() - 1], 1024),
        Some(b'm') => (&t[..t.len() - 1], 1024 * 1024),
        _ => (&t[..], 1),
    };
    num.parse::<usize>().map(|n| n * mult).map_err(|_| MixError::Size(s.into()))
}

fn split_weight(s: &str) -> Result<(&str, u64), MixError> {
    match s.rsplit_once(':') {
        None => Ok((s, 1)),
        Some((v, w)) => match w.trim().trim_end_matches('%').parse::<u64>() {
            Ok(w) if w > 0 => Ok((v, w)),
            _ => Err(MixError::Weight(s.into())),
        },
    }
}

/// `--size 5k` or `--size 1k:50,10k:40,100k:10`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizeMix(pub Weighted<usize>);

impl FromStr for SizeMix {
    type Err = MixError;
    fn from_str(s: &str) -> Result<Self, MixError> {
        let entries = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| split_weight(p.trim()).and_then(|(v, w)| Ok((parse_size(v)?, w))))
            .collect::<Result<Vec<_>, _>>()?;
        Weighted::new(entries).map(SizeMix)
    }
}

/// One `--domain` entry: recipients are `<prefix><n>@<domain>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSpec {
    pub prefix: String,
    pub domain: String,
}

impl FromStr for DomainSpec {
    type Err = MixError;
    fn from_str(s: &str) -> Result<Self, MixError> {
        let (prefix, domain) = s.split_once('@').unwrap_or(("rcpt", s));
        let ok = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._+".contains(&b));
        if !ok(domain) || !(prefix.is_empty() || ok(prefix)) {
            return Err(MixError::Domain(s.into()));
        }
        Ok(DomainSpec { prefix: prefix.into(), domain: domain.to_ascii_lowercase() })
    }
}

/// Parses repeated `--domain [PREFIX@]DOMAIN[:WEIGHT]` values.
pub fn parse_domains(values: &[String]) -> Result<Weighted<DomainSpec>, MixError> {
    let entries = values
        .iter()
        .map(|v| split_weight(v.trim()).and_then(|(d, w)| Ok((d.parse::<DomainSpec>()?, w))))
        .collect::<Result<Vec<_>, _>>()?;
    Weighted::new(entries)
}

/// Builds every message of a run from its index.
#[derive(Clone, Debug)]
pub struct Factory {
    pub run_id: String,
    pub from: String,
    pub recipients: u32,
    pub sizes: SizeMix,
    pub domains: Weighted<DomainSpec>,
    /// Extra header lines, `Name: value`, without line ends.
    pub headers: Vec<String>,
}

impl Factory {
    pub fn new(
        from: String,
        recipients: u32,
        sizes: SizeMix,
        domains: Weighted<DomainSpec>,
        headers: Vec<String>,
    ) -> Self {
        let run_id = format!("{:x}", crate::now_us());
        Factory { run_id, from, recipients: recipients.max(1), sizes, domains, headers }
    }

    /// The recipients of message `index`.
    pub fn recipients_into(&self, index: u64, out: &mut Vec<String>) {
        out.clear();
        for k in 0..self.recipients as u64 {
            let d = self.domains.pick(index.wrapping_mul(31).wrapping_add(k));
            out.push(format!("{}{}@{}", d.prefix, index * self.recipients as u64 + k, d.domain));
        }
    }

    /// Writes message `index` (CRLF line ends, ending in CRLF, no leading dots) into `out`,
    /// stamped with `sent_us`.
    pub fn message_into(&self, index: u64, recipients: &[String], sent_us: u64, out: &mut Vec<u8>) {
        out.clear();
        let size = *self.sizes.0.pick(index ^ 0x5bd1_e995);
        let mut h = String::with_capacity(512);
        let _ = write!(h, "{HEADER}: {}-{index} {sent_us}\r\n", self.run_id);
        let _ = write!(h, "From: Herald loadtest <{}>\r\n", self.from);
        let _ = write!(h, "To: <{}>\r\n", recipients.first().map(String::as_str).unwrap_or(""));
        let _ = write!(h, "Subject: Herald load test {index}\r\n");
        let _ = write!(h, "Message-ID: <{}-{index}@loadtest.herald.test>\r\n", self.run_id);
        for extra in &self.headers {
            let _ = write!(h, "{extra}\r\n");
        }
        h.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n");
        out.extend_from_slice(h.as_bytes());
        body_into(size.saturating_sub(h.len()), out);
    }
}

const FILLER: &[u8] = b"The quick brown fox jumps over the lazy dog while Herald measures its latency. ";

/// Appends about `n` bytes of 78-column text lines (at least one line).
fn body_into(n: usize, out: &mut Vec<u8>) {
    let mut left = n.max(2);
    while left > 0 {
        let line = left.saturating_sub(2).min(76);
        out.extend_from_slice(&FILLER[..line]);
        out.extend_from_slice(b"\r\n");
        left = left.saturating_sub(line + 2);
    }
}

/// Reads `(id, sent_us)` from the stamp header in the first lines of `message`.
pub fn parse_stamp(message: &[u8]) -> Option<(&[u8], u64)> {
    let head = &message[..message.len().min(16 * 1024)];
    let end = memchr::memmem::find(head, b"\r\n\r\n").unwrap_or(head.len());
    let head = &head[..end];
    let at = memchr::memmem::find(head, HEADER.as_bytes())?;
    let rest = head[at + HEADER.len()..].strip_prefix(b":")?;
    let line_end = memchr::memchr(b'\r', rest).unwrap_or(rest.len());
    let line = std::str::from_utf8(&rest[..line_end]).ok()?.trim();
    let (id, ts) = line.split_once(' ')?;
    let ts = ts.trim().parse().ok()?;
    let id_at = at + HEADER.len() + 1 + (rest.len() - rest.trim_ascii_start().len());
    Some((&message[id_at..id_at + id.len()], ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factory(size: &str, domains: &[&str]) -> Factory {
        let domains = parse_domains(&domains.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        Factory::new("lt@sender.test".into(), 2, size.parse().unwrap(), domains, vec!["X-Campaign: q4".into()])
    }

    #[test]
    fn sizes_parse_and_are_honoured() {
        assert_eq!(parse_size("5k"), Ok(5120));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!("5q".parse::<SizeMix>().is_err());
        assert!("1k:0".parse::<SizeMix>().is_err());
        let f = factory("5k", &["example.test"]);
        let mut r = Vec::new();
        let mut m = Vec::new();
        f.recipients_into(7, &mut r);
        f.message_into(7, &r, 42, &mut m);
        assert!((5100..=5140).contains(&m.len()), "{}", m.len());
        assert!(m.ends_with(b"\r\n"));
        assert!(!m.windows(3).any(|w| w == b"\n.\r" || w == b"\n.."), "no line may start with a dot");
        assert!(m.windows(12).any(|w| w == b"X-Campaign: "));
    }

    #[test]
    fn stamp_round_trips() {
        let f = factory("1k", &["example.test"]);
        let mut r = Vec::new();
        let mut m = Vec::new();
        f.recipients_into(3, &mut r);
        f.message_into(3, &r, 1_700_000_000_123_456, &mut m);
        let (id, ts) = parse_stamp(&m).unwrap();
        assert_eq!(ts, 1_700_000_000_123_456);
        assert_eq!(id, format!("{}-3", f.run_id).as_bytes());
        assert_eq!(
            parse_stamp(b"Subject: x\r\n\r\nX-Herald-Loadtest: a 1\r\n"),
            None,
            "only the header section counts"
        );
    }

    #[test]
    fn domain_weights_are_roughly_honoured() {
        let f = factory("1k", &["a.test:60", "bounce@b.test:40"]);
        let mut r = Vec::new();
        let mut b = 0;
        for i in 0..5000 {
            f.recipients_into(i, &mut r);
            assert_eq!(r.len(), 2);
            b += r.iter().filter(|x| x.starts_with("bounce") && x.ends_with("@b.test")).count();
        }
        assert!((3600..=4400).contains(&b), "{b} of 10000 should be near 4000");
        assert!("a b.test".parse::<DomainSpec>().is_err());
        assert!(parse_domains(&["x.test:abc".into()]).is_err());
    }
}

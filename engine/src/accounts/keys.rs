//! API keys: generation (shown once), SHA-256 digests (what is stored and looked up),
//! public key ids, and scopes.
//!
//! A key is `hrld_` and 40 random letters and digits (238 bits): far beyond guessing, so a
//! fast digest is the right store (as GitHub and Stripe do); argon2 is for passwords people
//! choose (SMTP users).

use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a key may do. Every route names the scope it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST /v1/send`.
    Send,
    /// Messages, stats, the account itself, and reading suppressions and bounces.
    Read,
    /// Sender domains: add, verify, rotate, remove.
    Domains,
    /// Adding and lifting suppressions.
    Suppressions,
    /// Webhook endpoints.
    Webhooks,
}

impl Scope {
    pub const ALL: [Scope; 5] = [Scope::Send, Scope::Read, Scope::Domains, Scope::Suppressions, Scope::Webhooks];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Read => "read",
            Scope::Domains => "domains",
            Scope::Suppressions => "suppressions",
            Scope::Webhooks => "webhooks",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Self {
        Scope::ALL.into_iter().collect()
    }

    pub fn contains(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }

    /// Parses scope names; unknown names are an error naming them.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Scopes, String> {
        let mut out = Scopes::default();
        for n in names {
            let n = n.as_ref();
            let s = Scope::parse(n).ok_or_else(|| {
                let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown scope `{n:.40}`; the scopes are {}", known.join(", "))
            })?;
            out.0 |= s.bit();
        }
        Ok(out)
    }

    /// Parses stored names, ignoring ones this build does not know (a newer node's).
    pub fn lenient<S: AsRef<str>>(names: &[S]) -> Scopes {
        names.iter().filter_map(|n| Scope::parse(n.as_ref())).collect()
    }

    pub fn names(self) -> Vec<String> {
        Scope::ALL.into_iter().filter(|s| self.contains(*s)).map(|s| s.as_str().to_owned()).collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().fold(0, |acc, s| acc | s.bit()))
    }
}

/// SHA-256 of a key.
pub fn digest(key: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A new key, as shown once to whoever asked for it.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key: String,
    pub key_id: String,
    pub prefix: String,
    pub sha256: [u8; 32],
}

/// Generates a key and its public id.
pub fn generate() -> NewKey {
    let mut rng = rand::rng();
    let key = format!("hrld_{}", Alphanumeric.sample_string(&mut rng, 40));
    let key_id = format!("key_{}", super::state::hex(&rand::random::<[u8; 8]>()));
    NewKey { prefix: prefix(&key), sha256: digest(&key), key, key_id }
}

/// What listings show of a key: enough to tell keys apart, far too little to use.
pub fn prefix(key: &str) -> String {
    let shown = if key.starts_with("hrld_") { 9 } else { 4 };
    key.chars().take(shown).collect()
}

/// The stable id of a key written in the config (`[[accounts]] api_keys`): derived from
/// its digest, so every node and every restart agree, and a revocation can name it.
pub fn config_key_id(key: &str) -> String {
    format!("cfg_{}", &super::state::hex(&digest(key))[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_digested() {
        let a = generate();
        let b = generate();
        assert_ne!(a.key, b.key);
        assert!(a.key.starts_with("hrld_") && a.key.len() == 45);
        assert!(a.key[5..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(a.sha256, digest(&a.key));
        assert_eq!(a.prefix, a.key[..9]);
        assert!(a.key_id.starts_with("key_") && a.key_id.len() == 20);
        assert_eq!(config_key_id("test-key-acme"), config_key_id("test-key-acme"));
        assert_ne!(config_key_id("test-key-acme"), config_key_id("test-key-other"));
        assert_eq!(prefix("test-key-acme"), "test");
    }

    #[test]
    fn scopes_parse() {
        let s = Scopes::parse(&["send", "read"]).unwrap();
        assert!(s.contains(Scope::Send) && s.contains(Scope::Read) && !s.contains(Scope::Domains));
        assert_eq!(s.names(), vec!["send", "read"]);
        let e = Scopes::parse(&["send", "admin"]).unwrap_err();
        assert!(e.contains("unknown scope `admin`"), "{e}");
        assert_eq!(Scopes::lenient(&["send", "future"]).names(), vec!["send"]);
        assert_eq!(Scopes::all().names().len(), 5);
    }
}

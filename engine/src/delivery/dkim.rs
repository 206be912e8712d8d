//! DKIM signing at send time with mail-auth: relaxed/relaxed, RSA-SHA256 or
//! Ed25519-SHA256 (the algorithm follows the key). Keys are picked by the domain of the
//! message's From header.
//!
//! mail-auth 0.13's relaxed body canonicalization keeps whitespace-only lines (as empty
//! lines) even at the end of the body, where RFC 6376 §3.4.4 drops them, so verifiers
//! disagree with its body hash. mail-auth hashes [`for_hashing`]'s copy of the message
//! instead, whose body lines have no trailing whitespace: it has the same relaxed
//! canonical form, on which mail-auth is right. The message sent is the original. See
//! `docs/adr/0008-dkim-relaxed-body-canonicalization.md`.

use herald_schemas::AccountId;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use std::collections::HashMap;

/// Headers signed when present (RFC 6376 §5.4.1 recommendations).
const SIGNED_HEADERS: [&str; 15] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "Sender",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "In-Reply-To",
    "References",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

enum Signer {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// A configured key.
pub struct KeySpec<'a> {
    pub domain: &'a str,
    pub selector: &'a str,
    /// PKCS#8 PEM (RSA or Ed25519).
    pub pem: &'a str,
}

/// Signers by lower-case From domain. A domain may have several keys (say RSA and
/// Ed25519): the message then carries one signature per key (RFC 8463 §4). A domain's keys
/// may be restricted to some accounts ([`Signers::restrict`]; static `[[dkim]]` keys are).
#[derive(Default)]
pub struct Signers {
    by_domain: HashMap<String, Vec<(Signer, String)>>,
    accounts: HashMap<String, Vec<AccountId>>,
}

impl Signers {
    pub fn new(keys: &[KeySpec<'_>]) -> Result<Self, String> {
        let mut by_domain = HashMap::new();
        for k in keys {
            let der = pem_to_der(k.pem).map_err(|e| format!("DKIM key for {}: {e}", k.domain))?;
            let (signer, alg) = if let Ok(key) =
                RsaKey::<Sha256>::from_key_der(rustls::pki_types::PrivateKeyDer::Pkcs8(der.as_slice().into()))
            {
                (Signer::Rsa(configure(DkimSigner::from_key(key), k)), "rsa-sha256")
            } else if let Ok(key) = Ed25519Key::from_pkcs8_maybe_unchecked_der(&der) {
                (Signer::Ed25519(configure(DkimSigner::from_key(key), k)), "ed25519-sha256")
            } else {
                return Err(format!("DKIM key for {}: neither an RSA nor an Ed25519 PKCS#8 key", k.domain));
            };
            let label = format!("d={} s={} a={alg}", k.domain, k.selector);
            by_domain.entry(k.domain.to_ascii_lowercase()).or_insert_with(Vec::new).push((signer, label));
        }
        Ok(Signers { by_domain, accounts: HashMap::new() })
    }

    /// Signs `domain`'s messages only for `accounts`.
    pub fn restrict(mut self, domain: &str, accounts: Vec<AccountId>) -> Self {
        self.accounts.insert(domain.to_ascii_lowercase(), accounts);
        self
    }

    /// Whether a key of `domain` (lower-case) signs messages of `account`.
    pub fn serves(&self, domain: &str, account: &AccountId) -> bool {
        self.by_domain.contains_key(domain) && self.accounts.get(domain).is_none_or(|a| a.contains(account))
    }

    /// [`Signers::sign`] for a message of `account`: unsigned, saying why, when the From
    /// domain's keys do not serve that account.
    pub fn sign_for(&self, message: &[u8], account: &AccountId) -> (Vec<u8>, String) {
        match from_domain(message) {
            Some(d) if self.by_domain.contains_key(&d) && !self.serves(&d, account) => {
                (message.to_vec(), format!("unsigned: the key of {d} does not sign for account {account}"))
            }
            _ => self.sign(message),
        }
    }

    /// Returns the message to send (signature header prepended when a key matches) and a
    /// note for the attempt event saying what was done. A signed message that did not end
    /// with CRLF gets one, as SMTP transmits it (`smtp::dot_stuff`): the signature covers
    /// the body the receiver sees.
    pub fn sign(&self, message: &[u8]) -> (Vec<u8>, String) {
        let Some(domain) = from_domain(message) else {
            return (message.to_vec(), "unsigned: no From domain".into());
        };
        let Some(signers) = self.by_domain.get(&domain) else {
            return (message.to_vec(), format!("unsigned: no key for {domain}"));
        };
        let message: std::borrow::Cow<'_, [u8]> =
            if message.ends_with(b"\r\n") { message.into() } else { [message, b"\r\n"].concat().into() };
        let mut headers = String::new();
        let mut notes = Vec::with_capacity(signers.len());
        let hashed = for_hashing(&message);
        for (signer, label) in signers {
            let signature = match signer {
                Signer::Rsa(s) => s.sign(&hashed),
                Signer::Ed25519(s) => s.sign(&hashed),
            };
            match signature {
                Ok(sig) => {
                    metrics::counter!("herald_dkim_signatures_total").increment(1);
                    headers.push_str(&closing_fold_removed(sig.to_header()));
                    notes.push(format!("signed {label}"));
                }
                Err(e) => notes.push(format!("unsigned: {label}: signing failed: {e}")),
            }
        }
        let mut out = Vec::with_capacity(headers.len() + message.len());
        out.extend_from_slice(headers.as_bytes());
        out.extend_from_slice(&message);
        (out, notes.join("; "))
    }
}

fn configure<T: mail_auth::common::crypto::SigningKey<Hasher = Sha256>>(
    signer: DkimSigner<T, mail_auth::dkim::NeedDomain>,
    k: &KeySpec<'_>,
) -> DkimSigner<T, Done> {
    signer
        .domain(k.domain)
        .selector(k.selector)
        .headers(SIGNED_HEADERS)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

/// `message` with the whitespace (SP, HTAB) at the end of every body line removed: the
/// same relaxed body canonical form (RFC 6376 §3.4.4 ignores it), without the input on
/// which mail-auth 0.13 goes wrong. Borrowed when there is nothing to remove. The header
/// section is untouched.
pub fn for_hashing(message: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let Some(start) = memchr::memmem::find(message, b"\r\n\r\n").map(|p| p + 4) else {
        return message.into();
    };
    let body = &message[start..];
    let is_wsp = |b: &u8| *b == b' ' || *b == b'\t';
    let trailing = |line: &[u8]| line.last().is_some_and(is_wsp);
    let mut lines = body.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    if !lines.any(trailing) {
        return message.into();
    }
    let mut out = Vec::with_capacity(message.len());
    out.extend_from_slice(&message[..start]);
    let mut rest = body;
    loop {
        let (line, next) = match memchr::memmem::find(rest, b"\r\n") {
            Some(p) => (&rest[..p], Some(&rest[p + 2..])),
            None => (rest, None),
        };
        let kept = line.iter().rposition(|b| !is_wsp(b)).map_or(0, |p| p + 1);
        out.extend_from_slice(&line[..kept]);
        match next {
            Some(next) => {
                out.extend_from_slice(b"\r\n");
                rest = next;
            }
            None => break,
        }
    }
    out.into()
}

/// mail-auth 0.13 folds the header after the `b=` value when it ends at the wrap column,
/// leaving `b=…\r\n\t;`. It hashed `b=;`, but a verifier that empties the `b=` value and
/// relaxes the rest sees `b= ;`, and the signature fails (dkimpy does). The `;` goes back on
/// the value's line; nothing that was hashed changes.
fn closing_fold_removed(header: String) -> String {
    match header.strip_suffix(";\r\n") {
        Some(body) if body.ends_with(['\t', ' ', '\n']) => {
            format!("{};\r\n", body.trim_end_matches(['\r', '\n', '\t', ' ']))
        }
        _ => header,
    }
}

/// The lower-case domain of the first From address.
pub fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = mail_parser::MessageParser::new().parse_headers(message)?;
    let addr = parsed.from()?.first()?.address()?;
    let domain = addr.rsplit_once('@')?.1.trim();
    (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    if body.is_empty() {
        return Err("empty PEM".into());
    }
    base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| format!("bad PEM: {e}"))
}

#[cfg(test)]
mod tests {
    use super::{closing_fold_removed, for_hashing};

    #[test]
    fn hashing_copy_drops_trailing_whitespace_of_body_lines_only() {
        let m = b"Subject: a  \r\n\r\na \t\r\n   \r\n\tb\r\n \t";
        assert_eq!(&*for_hashing(m), b"Subject: a  \r\n\r\na\r\n\r\n\tb\r\n");
        let clean = b"Subject: x\r\n\r\na b\r\n\r\n";
        assert!(matches!(for_hashing(clean), std::borrow::Cow::Borrowed(_)));
        assert!(matches!(for_hashing(b"Subject: x \r\n"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn the_final_semicolon_joins_the_b_value() {
        let folded = "DKIM-Signature: v=1; a=rsa-sha256;\r\n\tbh=x; b=abc\r\n\t;\r\n".to_owned();
        assert_eq!(closing_fold_removed(folded), "DKIM-Signature: v=1; a=rsa-sha256;\r\n\tbh=x; b=abc;\r\n");
        let fine = "DKIM-Signature: v=1; b=abc;\r\n".to_owned();
        assert_eq!(closing_fold_removed(fine.clone()), fine);
    }
}

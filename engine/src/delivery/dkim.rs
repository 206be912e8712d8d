//! DKIM signing at send time with mail-auth: relaxed/relaxed, RSA-SHA256 or
//! Ed25519-SHA256 (the algorithm follows the key). Keys are picked by the domain of the
//! message's From header.

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
/// Ed25519): the message then carries one signature per key (RFC 8463 §4).
#[derive(Default)]
pub struct Signers {
    by_domain: HashMap<String, Vec<(Signer, String)>>,
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
        Ok(Signers { by_domain })
    }

    /// Whether a static key exists for `domain` (lower-case).
    pub fn has_domain(&self, domain: &str) -> bool {
        self.by_domain.contains_key(domain)
    }

    /// Returns the message to send (signature header prepended when a key matches) and a
    /// note for the attempt event saying what was done.
    pub fn sign(&self, message: &[u8]) -> (Vec<u8>, String) {
        let Some(domain) = from_domain(message) else {
            return (message.to_vec(), "unsigned: no From domain".into());
        };
        let Some(signers) = self.by_domain.get(&domain) else {
            return (message.to_vec(), format!("unsigned: no key for {domain}"));
        };
        let mut headers = String::new();
        let mut notes = Vec::with_capacity(signers.len());
        for (signer, label) in signers {
            let signature = match signer {
                Signer::Rsa(s) => s.sign(message),
                Signer::Ed25519(s) => s.sign(message),
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
        out.extend_from_slice(message);
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
    use super::closing_fold_removed;

    #[test]
    fn the_final_semicolon_joins_the_b_value() {
        let folded = "DKIM-Signature: v=1; a=rsa-sha256;\r\n\tbh=x; b=abc\r\n\t;\r\n".to_owned();
        assert_eq!(closing_fold_removed(folded), "DKIM-Signature: v=1; a=rsa-sha256;\r\n\tbh=x; b=abc;\r\n");
        let fine = "DKIM-Signature: v=1; b=abc;\r\n".to_owned();
        assert_eq!(closing_fold_removed(fine.clone()), fine);
    }
}

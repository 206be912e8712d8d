//! VERP return paths: `b-<token>@<bounce domain>`, where the token names the message and
//! carries a truncated HMAC, so a forged bounce cannot name a message Herald did not send
//! (and so cannot poison anyone's suppression list).
//!
//! Token: lower-case base32 (RFC 4648 alphabet, no padding) of 30 octets:
//! the message id (16 octets, the UUIDv7), a 4-octet tag of the account (first octets of
//! SHA-256 of its id) and the first 10 octets of HMAC-SHA256 over the 20 before them. The
//! local part is `b-` and 48 characters: 50 octets, within RFC 5321's 64.
//!
//! Secrets rotate: tokens are made with the current secret and accepted with it or any
//! previous one still listed.

use aws_lc_rs::{digest, hmac};
use herald_schemas::{AccountId, MessageId};
use thiserror::Error;

const PREFIX: &str = "b-";
const ID_LEN: usize = 16;
const TAG_LEN: usize = 4;
const MAC_LEN: usize = 10;
const TOKEN_LEN: usize = ID_LEN + TAG_LEN + MAC_LEN;
/// Domain separation of the MAC input.
const CONTEXT: &[u8] = b"herald-verp-v1\0";

/// Why a local part is not a valid VERP token. Each becomes `550 5.1.1` at RCPT.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum VerpError {
    #[error("not a VERP address")]
    NotVerp,
    #[error("malformed token")]
    Malformed,
    #[error("token signature does not verify")]
    BadMac,
}

/// A verified token: which message, and the tag of its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub message_id: MessageId,
    pub account_tag: u32,
}

/// The HMAC keys: the one tokens are made with, then older ones still accepted.
#[derive(Clone)]
pub struct VerpKeys {
    keys: Vec<hmac::Key>,
}

impl std::fmt::Debug for VerpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerpKeys({} keys)", self.keys.len())
    }
}

impl VerpKeys {
    /// `current` signs; `previous` only verify. Secrets are arbitrary bytes (≥ 16 advised).
    pub fn new(current: &[u8], previous: &[&[u8]]) -> Self {
        let keys =
            std::iter::once(current).chain(previous.iter().copied()).map(|s| hmac::Key::new(hmac::HMAC_SHA256, s));
        VerpKeys { keys: keys.collect() }
    }

    fn mac(key: &hmac::Key, signed: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(CONTEXT);
        ctx.update(signed);
        ctx.sign()
    }

    /// The VERP local part for `message_id` of `account`; `None` when the id is not a
    /// Herald message id (32 hex digits).
    pub fn local_part(&self, account: &AccountId, message_id: &MessageId) -> Option<String> {
        let id = decode_id(&message_id.0)?;
        let mut token = Vec::with_capacity(TOKEN_LEN);
        token.extend_from_slice(&id);
        token.extend_from_slice(&account_tag(account).to_be_bytes());
        let mac = Self::mac(&self.keys[0], &token);
        token.extend_from_slice(&mac.as_ref()[..MAC_LEN]);
        Some(format!("{PREFIX}{}", base32().encode(&token)))
    }

    /// The return path `b-<token>@<domain>`.
    pub fn address(&self, account: &AccountId, message_id: &MessageId, domain: &str) -> Option<String> {
        Some(format!("{}@{domain}", self.local_part(account, message_id)?))
    }

    /// Checks a local part (any case) and returns what its token names.
    pub fn verify(&self, local: &str) -> Result<Token, VerpError> {
        let lower = local.to_ascii_lowercase();
        let encoded = lower.strip_prefix(PREFIX).ok_or(VerpError::NotVerp)?;
        let token = base32().decode(encoded.as_bytes()).map_err(|_| VerpError::Malformed)?;
        if token.len() != TOKEN_LEN {
            return Err(VerpError::Malformed);
        }
        let (signed, mac) = token.split_at(ID_LEN + TAG_LEN);
        // Constant-time comparison of the truncated tag, for every key.
        let ok = self.keys.iter().any(|k| {
            let expected = Self::mac(k, signed);
            aws_lc_rs::constant_time::verify_slices_are_equal(&expected.as_ref()[..MAC_LEN], mac).is_ok()
        });
        if !ok {
            return Err(VerpError::BadMac);
        }
        let id: String = hex::encode(&signed[..ID_LEN]);
        let tag = u32::from_be_bytes(signed[ID_LEN..].try_into().expect("4 octets"));
        Ok(Token { message_id: MessageId(id), account_tag: tag })
    }
}

/// Where return paths go (`[bounces]`): the keys, and the domain used when the message's
/// From domain is not a verified sender domain of its account.
#[derive(Debug, Clone)]
pub struct ReturnPaths {
    pub keys: VerpKeys,
    pub default_domain: Option<String>,
}

impl ReturnPaths {
    /// `b-<token>@<domain>`, the bounce domain of the sender domain if there is one, else
    /// the default domain; `None` when neither exists.
    pub fn address(&self, local: &str, bounce_domain: Option<&str>) -> Option<String> {
        let domain = bounce_domain.or(self.default_domain.as_deref())?;
        Some(format!("{local}@{domain}"))
    }
}

/// The 4-octet tag of an account inside tokens.
pub fn account_tag(account: &AccountId) -> u32 {
    let d = digest::digest(&digest::SHA256, account.0.as_bytes());
    u32::from_be_bytes(d.as_ref()[..4].try_into().expect("4 octets"))
}

fn decode_id(id: &str) -> Option<[u8; ID_LEN]> {
    if id.len() != ID_LEN * 2 {
        return None;
    }
    let mut out = [0u8; ID_LEN];
    for (i, pair) in id.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

fn base32() -> data_encoding::Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.encoding().expect("valid base32 specification")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (AccountId, MessageId) {
        (AccountId("acme".into()), MessageId::generate())
    }

    #[test]
    fn round_trip_is_short_and_lower_case() {
        let keys = VerpKeys::new(b"0123456789abcdef0123456789abcdef", &[]);
        let (account, id) = ids();
        let local = keys.local_part(&account, &id).unwrap();
        assert!(local.len() <= 64, "{local}");
        assert_eq!(local.len(), 50);
        assert!(local.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{local}");
        let token = keys.verify(&local).unwrap();
        assert_eq!(token.message_id, id);
        assert_eq!(token.account_tag, account_tag(&account));
        // Mail systems may change the case of the local part.
        assert_eq!(keys.verify(&local.to_ascii_uppercase()).unwrap(), token);
    }

    #[test]
    fn forgeries_are_refused() {
        let keys = VerpKeys::new(b"secret-one-secret-one", &[]);
        let other = VerpKeys::new(b"secret-two-secret-two", &[]);
        let (account, id) = ids();
        let local = keys.local_part(&account, &id).unwrap();
        assert_eq!(other.verify(&local), Err(VerpError::BadMac), "another secret");
        // Flip one character of the token.
        let mut bytes = local.clone().into_bytes();
        let i = 10;
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        assert_eq!(keys.verify(std::str::from_utf8(&bytes).unwrap()), Err(VerpError::BadMac));
        // Another account's tag with the same id does not verify.
        let mut token = base32().decode(&local.as_bytes()[2..]).unwrap();
        token[ID_LEN] ^= 1;
        assert_eq!(keys.verify(&format!("b-{}", base32().encode(&token))), Err(VerpError::BadMac));
        assert_eq!(keys.verify("fbl"), Err(VerpError::NotVerp));
        assert_eq!(keys.verify("b-zzzz"), Err(VerpError::Malformed));
        assert_eq!(keys.verify("b-0189!"), Err(VerpError::Malformed));
        assert!(keys.local_part(&account, &MessageId("not-hex".into())).is_none());
    }

    #[test]
    fn previous_secrets_still_verify() {
        let old = VerpKeys::new(b"old-secret-old-secret", &[]);
        let (account, id) = ids();
        let local = old.local_part(&account, &id).unwrap();
        let rotated = VerpKeys::new(b"new-secret-new-secret", &[b"old-secret-old-secret"]);
        assert_eq!(rotated.verify(&local).unwrap().message_id, id);
        assert_ne!(rotated.local_part(&account, &id).unwrap(), local, "new tokens use the new secret");
    }
}

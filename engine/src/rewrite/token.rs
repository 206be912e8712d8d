//! Tracking tokens: signed, self-contained, so the tracking server answers without a
//! database read and a forged or altered token is refused (`docs/adr/0010-tracking-tokens.md`).
//!
//! A message's tracking URLs share one **recipient token** `R`: who (account, message,
//! recipient), when it was issued, the key id, and `bind` (which prepared body the message
//! was made from), with an HMAC-SHA256 tag. A click URL adds a **link token** `L` (link index
//! and the author's URL, tagged with the same key over account, `bind`, index and URL):
//! `/c/<R>.<L>`, `/o/<R>`, `/u/<R>`. `L` depends only on the body, so it is made once per
//! distinct body; per recipient only `R` is made (one HMAC). An `L` is accepted only with an
//! `R` of the same account and body.
//!
//! Both are URL-safe base64 without padding. `R`'s payload is zero-padded to a multiple of 9
//! bytes, so its text is a multiple of 3 characters long: substituted into a base64-encoded
//! MIME part, it never shifts the encoding of the bytes around it (see [`super::encode`]).

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::HashMap;
use thiserror::Error;

/// Bytes of an HMAC-SHA256 tag kept in a token (128 bits).
const TAG: usize = 16;
/// Bytes that tie link tokens to the prepared body they were made for.
pub const BIND: usize = 12;
const VERSION: u8 = 1;
const R_CONTEXT: &[u8] = b"herald/r1\0";
const L_CONTEXT: &[u8] = b"herald/l1\0";
/// Longest `R` text: 255-byte fields at most, so a bound the encoders can rely on.
pub const MAX_RECIPIENT_TOKEN: usize = 1100;

/// Longest `R` text for an account id of `account_len` bytes (any message id, any address).
pub fn max_len(account_len: usize) -> usize {
    let payload = 1 + 17 + 4 + BIND + 1 + account_len.min(255) + 1 + 255 + 1 + 254 + 8 + TAG;
    payload.div_ceil(9) * 12
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("tracking key id `{0}` must be 1-16 characters of A-Z a-z 0-9 _ -")]
    BadId(String),
    #[error("tracking key `{0}` is shorter than 32 bytes")]
    Short(String),
    #[error("tracking key id `{0}` appears twice")]
    Duplicate(String),
    #[error("the signing key `{0}` is not among the tracking keys")]
    UnknownSigningKey(String),
    #[error("no tracking keys")]
    None,
}

/// The tracking keys: one signs new tokens, all of them verify (rotation: add the new key
/// everywhere first, then make it the signing key, drop the old one when its mail is old).
#[derive(Clone)]
pub struct Keys {
    signing: String,
    keys: HashMap<String, hmac::Key>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("signing", &self.signing).field("ids", &self.keys.keys()).finish()
    }
}

impl Keys {
    /// `keys`: `(id, secret)` pairs; `signing`: the id that signs (default: the first).
    pub fn new(keys: &[(String, Vec<u8>)], signing: Option<&str>) -> Result<Self, KeyError> {
        let mut map = HashMap::new();
        for (id, secret) in keys {
            let id_ok =
                (1..=16).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !id_ok {
                return Err(KeyError::BadId(id.clone()));
            }
            if secret.len() < 32 {
                return Err(KeyError::Short(id.clone()));
            }
            if map.insert(id.clone(), hmac::Key::new(hmac::HMAC_SHA256, secret)).is_some() {
                return Err(KeyError::Duplicate(id.clone()));
            }
        }
        let signing = match signing {
            Some(s) => s.to_owned(),
            None => keys.first().ok_or(KeyError::None)?.0.clone(),
        };
        if !map.contains_key(&signing) {
            return Err(KeyError::UnknownSigningKey(signing));
        }
        Ok(Keys { signing, keys: map })
    }

    /// The id of the key that signs new tokens.
    pub fn signing_id(&self) -> &str {
        &self.signing
    }

    fn signing_key(&self) -> &hmac::Key {
        &self.keys[&self.signing]
    }
}

/// What a recipient token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub key_id: String,
    pub account: String,
    pub message_id: String,
    pub recipient: String,
    /// Unix seconds when the token was made (just before the delivery attempt).
    pub issued_at: u32,
    pub bind: [u8; BIND],
}

fn push_field(out: &mut Vec<u8>, field: &str) {
    let bytes = &field.as_bytes()[..field.len().min(255)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

/// Message ids are 32 lower-case hex digits (UUIDv7): carried as 16 bytes after a 0xff mark.
fn push_message_id(out: &mut Vec<u8>, id: &str) {
    let hex = id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if hex {
        out.push(0xff);
        for pair in id.as_bytes().chunks(2) {
            let digit = |b: u8| if b.is_ascii_digit() { b - b'0' } else { b - b'a' + 10 };
            out.push(digit(pair[0]) << 4 | digit(pair[1]));
        }
    } else {
        push_field(out, &id[..id.len().min(254)]);
    }
}

fn tag(key: &hmac::Key, parts: &[&[u8]]) -> [u8; TAG] {
    let mut ctx = hmac::Context::with_key(key);
    for p in parts {
        ctx.update(p);
    }
    let full = ctx.sign();
    let mut out = [0u8; TAG];
    out.copy_from_slice(&full.as_ref()[..TAG]);
    out
}

/// The recipient token for `claims` (its `key_id` is ignored: the signing key signs).
pub fn recipient_token(keys: &Keys, claims: &Claims) -> String {
    let mut p = Vec::with_capacity(128);
    p.push(VERSION);
    push_field(&mut p, &keys.signing);
    p.extend_from_slice(&claims.issued_at.to_be_bytes());
    p.extend_from_slice(&claims.bind);
    push_field(&mut p, &claims.account);
    push_message_id(&mut p, &claims.message_id);
    push_field(&mut p, &claims.recipient);
    while !(p.len() + TAG).is_multiple_of(9) {
        p.push(0);
    }
    let t = tag(keys.signing_key(), &[R_CONTEXT, &p]);
    p.extend_from_slice(&t);
    URL_SAFE_NO_PAD.encode(&p)
}

/// The link token of link `index` (`url` as the author wrote it, entities decoded) of the
/// body `bind` of `account`, signed with the signing key.
pub fn link_token(keys: &Keys, account: &str, bind: &[u8; BIND], index: u32, url: &str) -> String {
    let mut p = Vec::with_capacity(url.len() + 24);
    p.extend_from_slice(&index.to_be_bytes());
    p.extend_from_slice(url.as_bytes());
    let t = tag(keys.signing_key(), &[L_CONTEXT, account.as_bytes(), b"\0", bind, &p]);
    p.extend_from_slice(&t);
    URL_SAFE_NO_PAD.encode(&p)
}

/// Reads fields off the front of a payload.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn field(&mut self) -> Option<String> {
        let n = *self.take(1)?.first()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }

    fn message_id(&mut self) -> Option<String> {
        if self.0.first() == Some(&0xff) {
            self.take(1)?;
            let raw = self.take(16)?;
            Some(hex::encode(raw))
        } else {
            self.field()
        }
    }
}

/// Checks a recipient token; `None` for anything forged, altered, truncated or signed with a
/// key this node does not have.
pub fn verify_recipient(keys: &Keys, token: &str) -> Option<Claims> {
    if token.len() > MAX_RECIPIENT_TOKEN {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    if raw.len() < TAG + 1 || !raw.len().is_multiple_of(9) {
        return None;
    }
    let (payload, given) = raw.split_at(raw.len() - TAG);
    let mut r = Reader(payload);
    if r.take(1)? != [VERSION] {
        return None;
    }
    let key_id = r.field()?;
    let key = keys.keys.get(&key_id)?;
    // Constant-time comparison of the truncated tag.
    let expected = tag(key, &[R_CONTEXT, payload]);
    if !constant_eq(&expected, given) {
        return None;
    }
    let issued_at = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
    let bind: [u8; BIND] = r.take(BIND)?.try_into().ok()?;
    let account = r.field()?;
    let message_id = r.message_id()?;
    let recipient = r.field()?;
    if r.0.len() > 8 || r.0.iter().any(|&b| b != 0) {
        return None;
    }
    Some(Claims { key_id, account, message_id, recipient, issued_at, bind })
}

/// Checks a link token against the recipient token it came with: `(index, url)`.
pub fn verify_link(keys: &Keys, claims: &Claims, token: &str) -> Option<(u32, String)> {
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    if raw.len() < 4 + TAG {
        return None;
    }
    let (payload, given) = raw.split_at(raw.len() - TAG);
    let key = keys.keys.get(&claims.key_id)?;
    let expected = tag(key, &[L_CONTEXT, claims.account.as_bytes(), b"\0", &claims.bind, payload]);
    if !constant_eq(&expected, given) {
        return None;
    }
    let index = u32::from_be_bytes(payload[..4].try_into().ok()?);
    let url = String::from_utf8(payload[4..].to_vec()).ok()?;
    Some((index, url))
}

/// A click token `R.L`: the claims, the link index and the URL.
pub fn verify_click(keys: &Keys, token: &str) -> Option<(Claims, u32, String)> {
    let (r, l) = token.split_once('.')?;
    let claims = verify_recipient(keys, r)?;
    let (index, url) = verify_link(keys, &claims, l)?;
    Some((claims, index, url))
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(&[("k1".into(), vec![7; 32]), ("k0".into(), vec![9; 40])], None).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            key_id: "k1".into(),
            account: "acme".into(),
            message_id: "0190f0c4a1b27c3d8e9f001122334455".into(),
            recipient: "Bob@Example.org".into(),
            issued_at: 1_763_800_000,
            bind: [3; BIND],
        }
    }

    #[test]
    fn round_trip_and_length_multiple_of_three() {
        let k = keys();
        for recipient in ["a@b.c", "Bob@Example.org", "much.longer.name+tag@sub.example.co.uk", ""] {
            let c = Claims { recipient: recipient.into(), ..claims() };
            let r = recipient_token(&k, &c);
            assert_eq!(r.len() % 3, 0, "{r}");
            assert!(r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(verify_recipient(&k, &r).unwrap(), c);
        }
        let odd = Claims { message_id: "not-a-uuid".into(), ..claims() };
        assert_eq!(verify_recipient(&k, &recipient_token(&k, &odd)).unwrap(), odd);
    }

    #[test]
    fn links_bind_to_account_and_body() {
        let k = keys();
        let c = claims();
        let r = recipient_token(&k, &c);
        let url = "https://shop.example/p?a=1&b=%2F+x#top";
        let l = link_token(&k, "acme", &c.bind, 4, url);
        assert_eq!(verify_click(&k, &format!("{r}.{l}")).unwrap(), (c.clone(), 4, url.to_owned()));
        // The same link token with another account's or another body's recipient token.
        let other_account = recipient_token(&k, &Claims { account: "evil".into(), ..c.clone() });
        assert!(verify_click(&k, &format!("{other_account}.{l}")).is_none());
        let other_body = recipient_token(&k, &Claims { bind: [4; BIND], ..c.clone() });
        assert!(verify_click(&k, &format!("{other_body}.{l}")).is_none());
    }

    #[test]
    fn every_alteration_is_refused() {
        let k = keys();
        let r = recipient_token(&k, &claims());
        let l = link_token(&k, "acme", &claims().bind, 0, "https://a.example/");
        let token = format!("{r}.{l}");
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(bytes).unwrap();
            if altered != token {
                assert!(verify_click(&k, &altered).is_none(), "altered at {i} accepted");
            }
        }
        assert!(verify_click(&k, &token[..token.len() - 1]).is_none());
        assert!(verify_click(&k, &r).is_none());
        assert!(verify_recipient(&k, "").is_none());
        // A token of a key this node does not know.
        let other = Keys::new(&[("k9".into(), vec![1; 32])], None).unwrap();
        assert!(verify_recipient(&k, &recipient_token(&other, &claims())).is_none());
        // Same key id, other secret.
        let impostor = Keys::new(&[("k1".into(), vec![8; 32])], None).unwrap();
        assert!(verify_recipient(&k, &recipient_token(&impostor, &claims())).is_none());
    }

    #[test]
    fn rotation_verifies_with_old_keys() {
        let old = Keys::new(&[("k0".into(), vec![9; 40])], None).unwrap();
        let r = recipient_token(&old, &claims());
        let both = Keys::new(&[("k0".into(), vec![9; 40]), ("k1".into(), vec![7; 32])], Some("k1")).unwrap();
        assert_eq!(verify_recipient(&both, &r).unwrap().key_id, "k0");
        assert_eq!(verify_recipient(&both, &recipient_token(&both, &claims())).unwrap().key_id, "k1");
    }

    #[test]
    fn key_checks() {
        assert_eq!(Keys::new(&[("a b".into(), vec![0; 32])], None).unwrap_err(), KeyError::BadId("a b".into()));
        assert_eq!(Keys::new(&[("a".into(), vec![0; 31])], None).unwrap_err(), KeyError::Short("a".into()));
        let dup = [("a".into(), vec![0; 32]), ("a".into(), vec![1; 32])];
        assert_eq!(Keys::new(&dup, None).unwrap_err(), KeyError::Duplicate("a".into()));
        assert_eq!(Keys::new(&[], None).unwrap_err(), KeyError::None);
        let one = [("a".into(), vec![0; 32])];
        assert_eq!(Keys::new(&one, Some("b")).unwrap_err(), KeyError::UnknownSigningKey("b".into()));
    }
}

//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): each request carries
//! `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`, a space-separated
//! list of `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key is the
//! base64 part of the endpoint's `whsec_…` secret. During a rotation's overlap both the new
//! and the previous secret sign, so receivers still holding the old one keep verifying.

use aws_lc_rs::hmac;
use base64::Engine;
use thiserror::Error;

const PREFIX: &str = "whsec_";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A secret that is not `whsec_` followed by base64 of 24 to 64 bytes.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("a webhook secret is `whsec_` followed by base64 of 24 to 64 bytes")]
pub struct BadSecret;

/// A signing key, parsed from its `whsec_…` form.
#[derive(Clone)]
pub struct Secret(hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn parse(text: &str) -> Result<Secret, BadSecret> {
        let raw = B64.decode(text.strip_prefix(PREFIX).ok_or(BadSecret)?).map_err(|_| BadSecret)?;
        if !(24..=64).contains(&raw.len()) {
            return Err(BadSecret);
        }
        Ok(Secret(hmac::Key::new(hmac::HMAC_SHA256, &raw)))
    }

    /// A new random secret (24 bytes), in its `whsec_…` form.
    pub fn generate() -> String {
        let raw: [u8; 24] = rand::random();
        format!("{PREFIX}{}", B64.encode(raw))
    }

    /// `v1,<base64 signature>` of one request.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", B64.encode(ctx.sign().as_ref()))
    }

    /// Whether `header` (a `webhook-signature` value) holds a valid `v1` signature by this
    /// secret; constant-time per candidate.
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let msg = [id.as_bytes(), b".", timestamp.to_string().as_bytes(), b".", body].concat();
        header
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|s| B64.decode(s).ok())
            .any(|sig| hmac::verify(&self.0, &msg, &sig).is_ok())
    }
}

/// The `webhook-signature` header: one signature per secret, current first.
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets.into_iter().map(|s| s.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's test vector (also in every reference library's tests).
    #[test]
    fn reproduces_the_standard_webhooks_test_vector() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(secret.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#, &sig));
        assert!(!secret.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, br#"{"test": 2432232314}"#, &sig));
    }

    #[test]
    fn both_secrets_sign_during_a_rotation() {
        let (old, new) = (Secret::generate(), Secret::generate());
        let (old, new) = (Secret::parse(&old).unwrap(), Secret::parse(&new).unwrap());
        let header = signature_header(&[new.clone(), old.clone()], "msg_1", 1_700_000_000, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(old.verify("msg_1", 1_700_000_000, b"{}", &header));
        assert!(new.verify("msg_1", 1_700_000_000, b"{}", &header));
        assert!(!new.verify("msg_1", 1_700_000_000, b"{ }", &header));
    }

    #[test]
    fn refuses_malformed_secrets() {
        assert_eq!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(), BadSecret);
        assert_eq!(Secret::parse("whsec_not base64!").unwrap_err(), BadSecret);
        assert_eq!(Secret::parse("whsec_YWJj").unwrap_err(), BadSecret, "3 bytes is too short");
        assert!(Secret::generate().starts_with("whsec_"));
    }
}

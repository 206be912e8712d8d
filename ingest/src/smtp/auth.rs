//! AUTH PLAIN and AUTH LOGIN (RFC 4954, RFC 4616), with or without an initial response.
//! Refused before TLS unless `allow_plaintext_auth`. Each failure is answered after
//! `auth_failure_delay`; a client IP with `max_auth_failures` failures within
//! `auth_lockout` is disconnected with 421 and refused until the window passes.

use super::limits::AuthFailures;
use super::reply::{self, Reply};
use super::session::{Line, Session, SessionError};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use herald_engine::accounts::AccountCache;
use herald_schemas::AccountId;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};

/// An argon2id PHC string for `password` (for `herald accounts hash-password`).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Whether `password` matches the PHC string `phc` (false for a malformed hash).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// The users AUTH checks (the node's account snapshot), and the failures counted per
/// client IP (a server without them offers no AUTH).
pub struct Credentials {
    pub accounts: AccountCache,
    pub failures: AuthFailures,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Session {
    pub(super) async fn auth(&mut self, mechanism: u64, initial: String) -> Result<Reply, SessionError> {
        if self.helo.as_ref().is_none_or(|(_, esmtp)| !esmtp) {
            return Ok(reply::bad_sequence("Send EHLO first"));
        }
        if self.authenticated.is_some() || self.tx.is_some() {
            return Ok(reply::bad_sequence("Already authenticated or in a mail transaction"));
        }
        let server = self.server.clone();
        let Some(creds) = server.policy.credentials() else {
            return Ok(Reply::refuse(502, "not_implemented", "5.5.1 Command not implemented"));
        };
        let s = &server.settings;
        if !self.tls && !s.allow_plaintext_auth {
            return Ok(reply::encryption_required());
        }
        if creds.failures.count(self.peer.ip(), s.auth_lockout) >= s.max_auth_failures {
            return Ok(Reply::refuse(421, "auth_locked_out", "4.7.0 Too many authentication failures, try later"));
        }
        let credentials = match mechanism {
            AUTH_PLAIN => self.plain(initial).await?,
            AUTH_LOGIN => self.login(initial).await?,
            _ => return Ok(Reply::refuse(504, "auth_mechanism", "5.5.4 Unrecognized authentication mechanism")),
        };
        let (user, password) = match credentials {
            Ok(c) => c,
            Err(r) => return Ok(r),
        };
        match check(creds, &user, &password).await {
            Some(account) => {
                tracing::debug!(peer = %self.peer, user = %user, "smtp auth ok");
                self.authenticated = Some((account, user));
                Ok(Reply::new(235, "2.7.0 Authentication successful"))
            }
            None => Ok(self.failed(creds).await),
        }
    }

    async fn failed(&mut self, credentials: &Credentials) -> Reply {
        let s = &self.server.settings;
        self.auth_failures += 1;
        let failures = credentials.failures.record(self.peer.ip(), s.auth_lockout);
        tokio::time::sleep(s.auth_failure_delay).await;
        if failures >= s.max_auth_failures || self.auth_failures >= s.max_auth_failures {
            return Reply::refuse(421, "auth_locked_out", "4.7.0 Too many authentication failures, closing connection");
        }
        Reply::refuse(535, "auth_failed", "5.7.8 Authentication credentials invalid")
    }

    /// A client response line: base64 decoded, or the reply that ends the exchange.
    async fn response(&mut self, challenge: &'static str) -> Result<Result<Vec<u8>, Reply>, SessionError> {
        self.send(Reply::new(334, challenge));
        let line = match self.next_line(self.server.settings.command_timeout).await? {
            Line::TooLong => return Ok(Err(reply::line_too_long())),
            Line::Complete(l) => l,
        };
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        Ok(decode(text))
    }

    async fn plain(&mut self, initial: String) -> Result<Result<(String, String), Reply>, SessionError> {
        let raw = if initial.is_empty() {
            match self.response("").await? {
                Ok(r) => r,
                Err(r) => return Ok(Err(r)),
            }
        } else {
            match decode(&initial) {
                Ok(r) => r,
                Err(r) => return Ok(Err(r)),
            }
        };
        let mut parts = raw.split(|&b| b == 0);
        let (_authz, user, pass) = (parts.next(), parts.next(), parts.next());
        match (user, pass, parts.next()) {
            (Some(u), Some(p), None) => Ok(text_pair(u, p)),
            _ => Ok(Err(reply::syntax("Malformed AUTH PLAIN response"))),
        }
    }

    async fn login(&mut self, initial: String) -> Result<Result<(String, String), Reply>, SessionError> {
        let user = if initial.is_empty() { self.response("VXNlcm5hbWU6").await? } else { decode(&initial) };
        let user = match user {
            Ok(u) => u,
            Err(r) => return Ok(Err(r)),
        };
        match self.response("UGFzc3dvcmQ6").await? {
            Ok(p) => Ok(text_pair(&user, &p)),
            Err(r) => Ok(Err(r)),
        }
    }
}

/// A hash of a random password with the default parameters: an unknown user name is
/// verified against it, so it costs as much as a known one and timing does not tell which
/// user names exist.
static DECOY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let mut secret = [0u8; 16];
    OsRng.fill_bytes(&mut secret);
    hash_password(&b64().encode(secret)).unwrap_or_default()
});

/// The account of `user` if `password` is right (argon2 on a blocking thread).
async fn check(credentials: &Credentials, user: &str, password: &str) -> Option<AccountId> {
    let found = credentials.accounts.current().smtp_user(user).map(|(a, h)| (a.clone(), h.to_owned()));
    let (account, hash) = match found {
        Some((account, hash)) => (Some(account), hash),
        None => (None, DECOY_HASH.clone()),
    };
    let password = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.unwrap_or(false);
    account.filter(|_| ok)
}

fn decode(text: &str) -> Result<Vec<u8>, Reply> {
    match text.trim() {
        "*" => Err(Reply::new(501, "5.7.0 Authentication cancelled")),
        "=" => Ok(vec![]),
        t => b64().decode(t).map_err(|_| Reply::refuse(501, "auth_syntax", "5.5.2 Invalid base64")),
    }
}

fn text_pair(user: &[u8], pass: &[u8]) -> Result<(String, String), Reply> {
    match (std::str::from_utf8(user), std::str::from_utf8(pass)) {
        (Ok(u), Ok(p)) => Ok((u.to_owned(), p.to_owned())),
        _ => Err(reply::syntax("Credentials must be UTF-8")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("nope", &h));
        assert!(!verify_password("s3cret", "not a hash"));
    }
}

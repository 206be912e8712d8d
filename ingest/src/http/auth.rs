//! Authentication: the one function every customer route calls ([`authenticate`], an API
//! key of an account, with the scope the route needs), and the one every admin route calls
//! ([`operator`], an operator key from the config or the environment).
//!
//! Keys are looked up by their SHA-256 digest in the node's account snapshot; nothing
//! reads the store on this path. Replies: 401 `unauthorized` (no key, a malformed header,
//! an unknown or revoked key), 401 `key_expired`, 403 `insufficient_scope`.

use super::{ApiError, ApiState};
use axum::http::{HeaderMap, StatusCode};
use herald_engine::accounts::{keys, KeyRefused, Principal, Scope};
use herald_schemas::Timestamp;

/// Operator keys (`[admin] operator_keys`): a name and the key's SHA-256.
#[derive(Debug, Clone, Default)]
pub struct Operators {
    keys: Vec<(String, [u8; 32])>,
}

impl Operators {
    /// Parses `NAME=KEY` or `NAME=sha256:HEX` entries.
    pub fn parse(entries: &[String]) -> Result<Operators, String> {
        let mut keys = vec![];
        for e in entries {
            let (name, key) = e
                .split_once('=')
                .ok_or_else(|| "admin.operator_keys: each entry is `NAME=KEY` or `NAME=sha256:HEX`".to_owned())?;
            let name = name.trim();
            if name.is_empty()
                || name.len() > 64
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(format!(
                    "admin.operator_keys: the name `{name:.64}` must be 1-64 letters, digits, `.`, `_` or `-`"
                ));
            }
            let digest = match key.strip_prefix("sha256:") {
                Some(hex) => {
                    from_hex(hex).ok_or_else(|| format!("admin.operator_keys: {name}: sha256: needs 64 hex digits"))?
                }
                None if key.len() < 16 => {
                    return Err(format!("admin.operator_keys: {name}: a key must be at least 16 characters"))
                }
                None => keys::digest(key),
            };
            keys.push((name.to_owned(), digest));
        }
        Ok(Operators { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The operator's name if `key` is an operator key. Compares every digest in constant
    /// time.
    pub fn check(&self, key: &str) -> Option<&str> {
        let digest = keys::digest(key);
        let mut found = None;
        for (name, d) in &self.keys {
            if aws_lc_rs::constant_time::verify_slices_are_equal(d, &digest).is_ok() {
                found = Some(name.as_str());
            }
        }
        found
    }
}

fn from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, c) in s.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok()?;
    }
    Some(out)
}

fn unauthorized(m: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
}

/// The key of `Authorization: Bearer <key>`.
pub fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <api key>"))?;
    let value = value.to_str().map_err(|_| unauthorized("Authorization header is not ASCII"))?;
    let key = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| unauthorized("Authorization must be `Bearer <api key>`"))?;
    Ok(key.trim())
}

/// The account and key of the request, if the key may do `scope`.
pub fn authenticate(state: &ApiState, headers: &HeaderMap, scope: Scope) -> Result<Principal, ApiError> {
    let key = bearer(headers)?;
    let snapshot = state.accounts.current();
    match snapshot.authenticate(key, Timestamp::now()) {
        Ok(p) if p.scopes.contains(scope) => Ok(p.clone()),
        Ok(p) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this API key may not do this: it needs the `{scope}` scope (the key has: {})", {
                let names = p.scopes.names();
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            }),
        )),
        Err(KeyRefused::Expired) => {
            Err(ApiError::new(StatusCode::UNAUTHORIZED, "key_expired", "this API key has expired; ask for a new one"))
        }
        Err(KeyRefused::Unknown) => {
            if state.operators.check(key).is_some() {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "operator_key",
                    "this is an operator key; customer routes need an account's API key",
                ));
            }
            Err(unauthorized("unknown API key"))
        }
    }
}

/// The operator's name, for `/v1/admin` routes.
pub fn operator(state: &ApiState, headers: &HeaderMap) -> Result<String, ApiError> {
    let key = bearer(headers)?;
    if state.operators.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no operator keys are configured ([admin] operator_keys)",
        ));
    }
    match state.operators.check(key) {
        Some(name) => Ok(name.to_owned()),
        None => Err(unauthorized("not an operator key")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_keys_parse_and_check() {
        let hashed =
            format!("bob=sha256:{}", herald_engine::accounts::state::hex(&keys::digest("bob-secret-key-0001")));
        let ops = Operators::parse(&["alice=alice-secret-key-01".into(), hashed]).unwrap();
        assert_eq!(ops.check("alice-secret-key-01"), Some("alice"));
        assert_eq!(ops.check("bob-secret-key-0001"), Some("bob"));
        assert_eq!(ops.check("nope"), None);
        for bad in ["noequals", "x=short", "a b=0123456789abcdef", "c=sha256:abc"] {
            assert!(Operators::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }
}

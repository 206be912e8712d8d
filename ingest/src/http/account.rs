//! `GET /v1/account`: the account of the API key, its limits and settings, and what the key
//! may do (the dashboard signs in with it). Any valid key may read it.

use super::openapi::ErrorBody;
use super::{ApiError, ApiState};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use herald_engine::accounts::KeyRefused;
use herald_schemas::Timestamp;
use serde::Serialize;
use std::sync::Arc;

/// The account as its own keys see it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OwnAccount {
    id: String,
    name: String,
    /// `active` or `suspended`.
    status: String,
    /// The sending pool; `null`: the default.
    pool: Option<String>,
    messages_per_day: Option<u64>,
    messages_per_second: Option<u32>,
    /// `default`, `verified` or `any`.
    from_domains: String,
    /// The key of this request.
    key: OwnKey,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OwnKey {
    key_id: String,
    scopes: Vec<String>,
}

/// The account of the API key.
#[utoipa::path(
    get,
    path = "/v1/account",
    tag = "account",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The account and the key's scopes", body = OwnAccount),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`operator_key`", body = ErrorBody),
    )
)]
pub async fn show(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Result<Json<OwnAccount>, ApiError> {
    let key = super::auth::bearer(&headers)?;
    let snapshot = state.accounts.current();
    let principal = match snapshot.authenticate(key, Timestamp::now()) {
        Ok(p) => p.clone(),
        Err(KeyRefused::Expired) => {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "key_expired", "this API key has expired"))
        }
        Err(KeyRefused::Unknown) => {
            // The operator check yields `operator_key`; else `unauthorized`.
            return Err(super::authenticate(&state, &headers, herald_engine::accounts::Scope::Read)
                .err()
                .unwrap_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown API key")));
        }
    };
    let a = snapshot
        .account(&principal.account)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown API key"))?;
    let s = &a.settings;
    let from_domains = serde_json::to_value(s.from_domains).ok().and_then(|v| v.as_str().map(str::to_owned));
    Ok(Json(OwnAccount {
        id: a.id.0.clone(),
        name: if s.name.is_empty() { a.id.0.clone() } else { s.name.clone() },
        status: match a.status {
            herald_engine::accounts::state::Status::Active => "active".into(),
            herald_engine::accounts::state::Status::Suspended => "suspended".into(),
        },
        pool: s.pool.clone(),
        messages_per_day: s.limits.messages_per_day,
        messages_per_second: s.limits.messages_per_second,
        from_domains: from_domains.unwrap_or_else(|| "default".into()),
        key: OwnKey { key_id: principal.key_id, scopes: principal.scopes.names() },
    }))
}

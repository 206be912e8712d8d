//! The operators' view of traffic shaping (`docs/api.md`, "Providers"):
//!
//! - `GET /v1/admin/providers[?provider=<name>]`: each provider's limits and rules, the
//!   throttles in force across the cluster, and this node's lanes (effective limits,
//!   current rate, connections, waiting messages, share, warm-up);
//! - `GET /v1/admin/pools`: each pool's sources, their first use and warm-up day;
//! - `POST /v1/admin/providers/{name}/suspend` `{ "duration": "30m", "source"?, "domain"?,
//!   "reason"? }`: suspends the provider (or one source, or for `default` one domain);
//! - `POST /v1/admin/providers/{name}/resume` `{ "source"?, "domain"?, "id"?, "reason"? }`:
//!   lifts its throttles before their expiry.
//!
//! Authenticated with an operator key (`[admin] operator_keys`, or `[shaping] operator_keys`),
//! never an account's key.

use super::openapi::ErrorBody;
use super::schemas;
use super::{json_rejection, ApiError, ApiState};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use herald_engine::shaping::limits::parse_duration;
use herald_engine::shaping::view::{PoolsView, ProvidersView};
use herald_engine::shaping::{Shaper, ShapingError};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Checks the request's operator key ([`super::auth::operator`]) and returns the shaper,
/// or the error reply.
fn operator(state: &ApiState, headers: &HeaderMap) -> Result<Arc<Shaper>, ApiError> {
    super::auth::operator(state, headers)?;
    state
        .shaping
        .clone()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_enabled", "this node does not deliver mail"))
}

fn refused(e: ShapingError) -> ApiError {
    match e {
        ShapingError::UnknownProvider(name) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_provider", format!("no provider named `{name:.60}`"))
        }
        ShapingError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", m),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Only {
    /// Only this provider.
    provider: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/providers",
    tag = "admin",
    security(("operator_key" = [])),
    params(Only),
    responses(
        (status = 200, description = "Providers, throttles in force, this node's lanes (`docs/api.md`)", content_type = "application/json"),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 404, description = "`unknown_provider`, `not_enabled`", body = ErrorBody),
        (status = 401, description = "`unauthorized` (not an operator key)", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Only>, QueryRejection>,
) -> Result<Json<ProvidersView>, ApiError> {
    let shaper = operator(&state, &headers)?;
    let Query(only) = query.map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", "the query string may only be `provider=<name>`")
    })?;
    if let Some(name) = only.provider.as_deref().filter(|n| shaper.providers().get(n).is_none()) {
        return Err(refused(ShapingError::UnknownProvider(name.to_owned())));
    }
    Ok(Json(shaper.view(only.provider.as_deref())))
}

#[utoipa::path(
    get,
    path = "/v1/admin/pools",
    tag = "admin",
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "Each pool's sources and warm-up", content_type = "application/json"),
        (status = 401, description = "`unauthorized` (not an operator key)", body = ErrorBody),
        (status = 404, description = "`not_enabled` (this node does not deliver)", body = ErrorBody),
    )
)]
pub async fn pools(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Result<Json<PoolsView>, ApiError> {
    Ok(Json(operator(&state, &headers)?.pools_view()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suspend {
    /// `30m`, `2h`, `1d`, or seconds.
    duration: String,
    source: Option<String>,
    domain: Option<String>,
    reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/admin/providers/{name}/suspend",
    tag = "admin",
    security(("operator_key" = [])),
    params(("name" = String, Path, description = "A provider of the providers file")),
    request_body = schemas::SuspendProvider,
    responses(
        (status = 200, description = "Suspended", body = schemas::ProviderSuspended),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 404, description = "`unknown_provider`, `not_enabled`", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized` (not an operator key)", body = ErrorBody),
    )
)]
pub async fn suspend(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<Suspend>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let shaper = operator(&state, &headers)?;
    let Json(s) = body.map_err(json_rejection)?;
    let duration = parse_duration(&s.duration)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", format!("duration: {e}")))?;
    let reason = bounded(s.reason, "suspended by an operator");
    let t = shaper.suspend(&name, s.domain, s.source, duration, reason).map_err(refused)?;
    Ok(Json(json!({ "id": t.id, "provider": t.provider, "source": t.source, "domain": t.domain,
        "until": herald_engine::projector::rfc3339(t.until) })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    source: Option<String>,
    domain: Option<String>,
    id: Option<String>,
    reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/admin/providers/{name}/resume",
    tag = "admin",
    security(("operator_key" = [])),
    params(("name" = String, Path, description = "A provider of the providers file")),
    request_body = schemas::ResumeProvider,
    responses(
        (status = 200, description = "Throttles lifted", body = schemas::ProviderResumed),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 404, description = "`unknown_provider`, `not_enabled`", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized` (not an operator key)", body = ErrorBody),
    )
)]
pub async fn resume(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<Resume>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let shaper = operator(&state, &headers)?;
    let Json(r) = body.map_err(json_rejection)?;
    let reason = bounded(r.reason, "resumed by an operator");
    let lifted = shaper.resume(&name, r.domain, r.source, r.id, reason).map_err(refused)?;
    Ok(Json(json!({ "provider": name, "lifted": lifted })))
}

/// The operator's reason, at most 300 characters, or `default`.
fn bounded(reason: Option<String>, default: &str) -> String {
    let r = reason.filter(|r| !r.trim().is_empty()).unwrap_or_else(|| default.to_owned());
    r.chars().filter(|c| !c.is_control()).take(300).collect()
}

//! `/v1/suppressions`: the authenticated account's suppression list. The work is in
//! `herald_engine::feedback::service`; every change is an event, single changes are read
//! back before the reply.
//!
//! - `GET /v1/suppressions[?reason=&cursor=&limit=]` → `{suppressions, next_cursor}`
//! - `GET|PUT|DELETE /v1/suppressions/{address}`; `PUT` body (optional)
//!   `{reason?, detail?, expires_at?}` → 201 (new) or 200 (replaced)
//! - `POST /v1/suppressions/import`: JSON lines `{address, reason?, detail?, expires_at?}`;
//!   all lines are checked first, one bad line refuses the whole import (422, nothing
//!   added) → 202 `{imported}`
//! - `GET /v1/suppressions/export`: JSON lines, one entry in force per line

use super::openapi::ErrorBody;
use super::schemas;
use super::{authenticate, ApiError, ApiState};
use crate::address::parse_mailbox;
use axum::body::Body;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_engine::accounts::Scope;
use herald_engine::feedback::service::{FeedbackError, FeedbackService, NewSuppression};
use herald_engine::projector::rfc3339;
use herald_engine::store::feedback::Suppression;
use herald_schemas::{AccountId, SuppressionReason, Timestamp};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Largest import body.
const IMPORT_LIMIT: usize = 128 << 20;
/// Lines of an import at most.
const IMPORT_MAX_LINES: usize = 1_000_000;
/// Errors listed in a refused import at most.
const IMPORT_ERRORS_SHOWN: usize = 100;

pub(super) fn error(e: FeedbackError) -> ApiError {
    let (status, code) = match &e {
        FeedbackError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        FeedbackError::BadCursor => (StatusCode::BAD_REQUEST, "invalid_cursor"),
        FeedbackError::Log(_) => (StatusCode::SERVICE_UNAVAILABLE, "log_unavailable"),
        FeedbackError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        FeedbackError::Lag(_) => (StatusCode::SERVICE_UNAVAILABLE, "projection_lag"),
    };
    ApiError::new(status, code, e.to_string())
}

pub(super) fn malformed(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", message)
}

pub(super) fn service(
    state: &ApiState,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<(Arc<FeedbackService>, AccountId), ApiError> {
    let account = authenticate(state, headers, scope)?.account;
    let service = state.feedback.clone().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_enabled", "bounce processing is not enabled on this server")
    })?;
    Ok((service, account))
}

/// The JSON shape of an entry.
pub fn view(s: &Suppression) -> Value {
    json!({
        "address": s.address,
        "reason": s.reason,
        "detail": s.detail,
        "message_id": s.message_id,
        "expires_at": s.expires_at.map(rfc3339),
        "created_at": rfc3339(s.created_at),
    })
}

fn address(raw: &str) -> Result<String, ApiError> {
    parse_mailbox(raw)
        .map(|m| m.address)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_address", e))
}

fn reason(raw: Option<&str>) -> Result<SuppressionReason, String> {
    match raw {
        None => Ok(SuppressionReason::Manual),
        Some(r) => SuppressionReason::parse(r).ok_or_else(|| {
            let all: Vec<&str> = SuppressionReason::ALL.iter().map(|r| r.as_str()).collect();
            format!("unknown reason `{r}`; one of {}", all.join(", "))
        }),
    }
}

pub(super) fn time(name: &str, value: &str) -> Result<Timestamp, String> {
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("`{name}` is not an RFC 3339 time ({e}): {value}"))?;
    Ok(Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only entries of this reason.
    reason: Option<String>,
    /// From the previous page's `next_cursor`.
    cursor: Option<String>,
    /// 1-1000 (default 100).
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/suppressions",
    tag = "suppressions",
    security(("api_key" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of the list, by address", body = schemas::SuppressionPage),
        (status = 400, description = "`malformed_request`, `invalid_reason`, `invalid_cursor`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `operator_key`", body = ErrorBody),
        (status = 404, description = "`not_enabled`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `log_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (service, account) = service(&state, &headers, Scope::Read)?;
    let Query(q) = query.map_err(|e| malformed(e.body_text()))?;
    let reason = match q.reason.as_deref() {
        Some(r) => Some(reason(Some(r)).map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_reason", m))?),
        None => None,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let page = service.list(&account, reason, q.cursor.as_deref(), limit).await.map_err(error)?;
    Ok(Json(json!({
        "suppressions": page.items.iter().map(view).collect::<Vec<_>>(),
        "next_cursor": page.next,
    })))
}

#[utoipa::path(
    get,
    path = "/v1/suppressions/{address}",
    tag = "suppressions",
    security(("api_key" = [])),
    params(("address" = String, Path, description = "The suppressed address")),
    responses(
        (status = 200, description = "The entry", body = schemas::Suppression),
        (status = 404, description = "`not_found`, `not_enabled`", body = ErrorBody),
        (status = 422, description = "`invalid_address`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `operator_key`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `log_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (service, account) = service(&state, &headers, Scope::Read)?;
    let address = address(&raw)?;
    Ok(Json(view(&service.get(&account, &address).await.map_err(error)?)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    reason: Option<String>,
    detail: Option<String>,
    /// RFC 3339; absent: until lifted.
    expires_at: Option<String>,
}

/// One entry from a PUT body or an import line.
fn new_entry(address: String, b: PutBody) -> Result<NewSuppression, String> {
    let reason = reason(b.reason.as_deref())?;
    let expires_at = b.expires_at.as_deref().map(|t| time("expires_at", t)).transpose()?;
    let detail = b.detail.unwrap_or_default();
    if detail.len() > 1000 {
        return Err("`detail` is limited to 1000 bytes".into());
    }
    Ok(NewSuppression { address, reason, detail, expires_at })
}

#[utoipa::path(
    put,
    path = "/v1/suppressions/{address}",
    tag = "suppressions",
    security(("api_key" = [])),
    params(("address" = String, Path, description = "The suppressed address")),
    request_body(content = Option<schemas::PutSuppression>, description = "Optional; default a manual entry"),
    responses(
        (status = 200, description = "Replaced", body = schemas::Suppression),
        (status = 201, description = "Added", body = schemas::Suppression),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 422, description = "`invalid_address`, `invalid_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `operator_key`", body = ErrorBody),
        (status = 404, description = "`not_enabled`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `log_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn put(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (service, account) = service(&state, &headers, Scope::Suppressions)?;
    let body = body.map_err(super::bytes_rejection)?;
    let address = address(&raw)?;
    let b: PutBody = if body.iter().all(u8::is_ascii_whitespace) {
        PutBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| malformed(format!("invalid JSON body: {e}")))?
    };
    let entry =
        new_entry(address, b).map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", m))?;
    let (shown, created) = service.put(&account, entry).await.map_err(error)?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(view(&shown))))
}

#[utoipa::path(
    delete,
    path = "/v1/suppressions/{address}",
    tag = "suppressions",
    security(("api_key" = [])),
    params(("address" = String, Path, description = "The suppressed address")),
    responses(
        (status = 204, description = "Lifted"),
        (status = 404, description = "`not_found`, `not_enabled`", body = ErrorBody),
        (status = 422, description = "`invalid_address`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `operator_key`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `log_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn remove(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (service, account) = service(&state, &headers, Scope::Suppressions)?;
    let address = address(&raw)?;
    service.lift(&account, &address, "api").await.map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    address: String,
    reason: Option<String>,
    detail: Option<String>,
    expires_at: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/suppressions/import",
    tag = "suppressions",
    security(("api_key" = [])),
    request_body(content = String, content_type = "text/plain", description = "NDJSON: one JSON object per line: `address`, `reason`?, `detail`?, `expires_at`?"),
    responses(
        (status = 202, description = "Imported", body = schemas::Imported),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 413, description = "`body_too_large`, `too_many_lines`", body = ErrorBody),
        (status = 422, description = "`invalid_lines` (with `lines`)", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `operator_key`", body = ErrorBody),
        (status = 404, description = "`not_enabled`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `log_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn import(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (service, account) = service(&state, &headers, Scope::Suppressions)?;
    let raw = axum::body::to_bytes(body, IMPORT_LIMIT).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("an import is limited to {IMPORT_LIMIT} bytes"),
        )
    })?;
    let text = std::str::from_utf8(&raw).map_err(|_| malformed("the import is not UTF-8".into()))?;
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let parsed = serde_json::from_str::<ImportLine>(line).map_err(|e| format!("invalid JSON: {e}")).and_then(|l| {
            let address = parse_mailbox(&l.address).map_err(|e| format!("address: {e}"))?.address;
            new_entry(address, PutBody { reason: l.reason, detail: l.detail, expires_at: l.expires_at })
        });
        match parsed {
            Ok(e) => entries.push(e),
            Err(message) => errors.push(json!({ "line": i + 1, "message": message })),
        }
        if entries.len() + errors.len() > IMPORT_MAX_LINES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_lines",
                format!("an import is limited to {IMPORT_MAX_LINES} lines"),
            ));
        }
    }
    if !errors.is_empty() {
        let n = errors.len();
        errors.truncate(IMPORT_ERRORS_SHOWN);
        let body = json!({ "error": {
            "code": "invalid_lines",
            "message": format!("{n} line(s) are invalid; nothing was imported"),
            "lines": errors,
        }});
        metrics::counter!("herald_http_errors_total", "code" => "invalid_lines").increment(1);
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(body)));
    }
    let imported = service.import(&account, entries).await.map_err(error)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "imported": imported }))))
}

#[utoipa::path(
    get,
    path = "/v1/suppressions/export",
    tag = "suppressions",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The whole list, one JSON object per line", content_type = "application/x-ndjson", body = String),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `operator_key`", body = ErrorBody),
        (status = 404, description = "`not_enabled`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `log_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn export(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (service, account) = service(&state, &headers, Scope::Read)?;
    // The first page is read before the reply starts, so an unavailable store is a 503.
    let first = service.list(&account, None, None, 1000).await.map_err(error)?;
    let stream = futures::stream::unfold(Some(first), move |page| {
        let (service, account) = (service.clone(), account.clone());
        async move {
            let page = page?;
            let mut chunk = String::new();
            for s in &page.items {
                chunk.push_str(&view(s).to_string());
                chunk.push('\n');
            }
            let next = match page.next {
                Some(c) => match service.list(&account, None, Some(&c), 1000).await {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::warn!(error = %e, "suppression export cut short");
                        return Some((Err(std::io::Error::other("store unavailable")), None));
                    }
                },
                None => None,
            };
            Some((Ok::<_, std::io::Error>(chunk), next))
        }
    });
    Ok(([("content-type", "application/x-ndjson")], Body::from_stream(stream)).into_response())
}

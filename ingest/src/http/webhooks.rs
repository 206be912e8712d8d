//! `/v1/webhooks`: an account's webhook endpoints. `POST` registers one (201, with its
//! `secret`, shown only then), `GET` lists them, `GET | PATCH | DELETE /v1/webhooks/{id}`,
//! `POST /v1/webhooks/{id}/rotate` (a new secret; the previous one signs too during the
//! overlap), `POST /v1/webhooks/{id}/test` (one `webhook.test` request now, not retried) and
//! `GET /v1/webhooks/{id}/deliveries?before=&limit=` (attempts, newest first). See
//! `docs/api.md#webhooks`.

use super::openapi::ErrorBody;
use super::{authenticate, json_rejection, ApiError, ApiState};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_engine::accounts::Scope;
use herald_engine::projector::rfc3339;
use herald_engine::webhooks::endpoints::Endpoint;
use herald_engine::webhooks::service::{Change, WebhookError, Webhooks};
use herald_schemas::{AccountId, Timestamp};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// An endpoint's fields; on `PATCH` each one is optional.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Body {
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<String>,
    enabled: Option<bool>,
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct DeliveryQuery {
    before: Option<String>,
    limit: Option<usize>,
}

fn service(state: &ApiState, headers: &HeaderMap) -> Result<(Arc<Webhooks>, AccountId), ApiError> {
    let account = authenticate(state, headers, Scope::Webhooks)?.account;
    let service = state
        .webhooks
        .clone()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_enabled", "webhooks are not enabled on this node"))?;
    Ok((service, account))
}

fn error(e: WebhookError) -> ApiError {
    match e {
        WebhookError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_webhook", m),
        WebhookError::Url(u) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "webhook_url_refused", u.to_string()),
        WebhookError::NotFound(id) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no webhook endpoint {id}"))
        }
        WebhookError::Log(e) => {
            tracing::warn!(error = %e, "webhook command: log append failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "log_unavailable",
                "the log is unavailable; try again shortly",
            )
        }
        WebhookError::Store(e) => super::store_unavailable(e),
    }
}

/// An endpoint as the API shows it; the secret only when `with_secret`.
fn view(e: &Endpoint, with_secret: bool) -> Value {
    let mut v = json!({
        "id": e.id,
        "url": e.url,
        "events": e.events,
        "description": e.description,
        "enabled": e.enabled,
        "disabled_reason": e.disabled_reason,
        "created_at": rfc3339(e.created_at),
        "updated_at": rfc3339(e.updated_at),
        "previous_secret_expires_at": e.previous_until.filter(|t| *t > Timestamp::now()).map(rfc3339),
    });
    if with_secret {
        v["secret"] = json!(e.secret);
    }
    v
}

fn change(body: Body) -> Change {
    Change { url: body.url, events: body.events, description: body.description, enabled: body.enabled }
}

#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    security(("api_key" = [])),
    request_body = Body,
    responses(
        (status = 201, description = "Registered; the `secret` is shown only here", body = serde_json::Value),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 404, description = "`not_enabled`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_webhook`, `webhook_url_refused`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `operator_key`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Json<Body>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (service, account) = service(&state, &headers)?;
    let Json(body) = body.map_err(json_rejection)?;
    if body.enabled.is_some() {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_webhook", "a new endpoint is enabled"));
    }
    let e = service.create(&account, change(body)).await.map_err(error)?;
    Ok((StatusCode::CREATED, Json(view(&e, true))).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The account's endpoints (no secrets)", body = serde_json::Value),
        (status = 404, description = "`not_enabled`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `operator_key`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let (service, account) = service(&state, &headers)?;
    let all = service.list(&account).await.map_err(error)?;
    Ok(Json(json!({ "webhooks": all.iter().map(|e| view(e, false)).collect::<Vec<_>>() })))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The endpoint id")),
    responses(
        (status = 200, description = "The endpoint (no secret)", body = serde_json::Value),
        (status = 404, description = "`not_found`, `not_enabled`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `operator_key`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (service, account) = service(&state, &headers)?;
    Ok(Json(view(&service.get(&account, &id).await.map_err(error)?, false)))
}

#[utoipa::path(
    patch,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The endpoint id")),
    request_body = Body,
    responses(
        (status = 200, description = "The endpoint after the change", body = serde_json::Value),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 404, description = "`not_found`, `not_enabled`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_webhook`, `webhook_url_refused`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `operator_key`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<Body>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let (service, account) = service(&state, &headers)?;
    let Json(body) = body.map_err(json_rejection)?;
    Ok(Json(view(&service.update(&account, &id, change(body)).await.map_err(error)?, false)))
}

#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The endpoint id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`, `not_enabled`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `operator_key`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`", body = ErrorBody),
    )
)]
pub async fn remove(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (service, account) = service(&state, &headers)?;
    service.delete(&account, &id).await.map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/rotate",
    tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The endpoint id")),
    responses(
        (status = 200, description = "The endpoint with its new `secret` (shown only here)", body = serde_json::Value),
        (status = 404, description = "`not_found`, `not_enabled`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `operator_key`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`", body = ErrorBody),
    )
)]
pub async fn rotate(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (service, account) = service(&state, &headers)?;
    Ok(Json(view(&service.rotate(&account, &id).await.map_err(error)?, true)))
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/test",
    tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The endpoint id")),
    responses(
        (status = 200, description = "What the endpoint answered to one `webhook.test` request", body = serde_json::Value),
        (status = 404, description = "`not_found`, `not_enabled`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `operator_key`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`", body = ErrorBody),
    )
)]
pub async fn test(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (service, account) = service(&state, &headers)?;
    Ok(Json(json!(service.test(&account, &id).await.map_err(error)?)))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The endpoint id"), DeliveryQuery),
    responses(
        (status = 200, description = "Delivery attempts, newest first", body = serde_json::Value),
        (status = 400, description = "`malformed_request`, `invalid_time`", body = ErrorBody),
        (status = 404, description = "`not_found`, `not_enabled`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `operator_key`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`", body = ErrorBody),
    )
)]
pub async fn deliveries(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<DeliveryQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (service, account) = service(&state, &headers)?;
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", e.body_text()))?;
    let before = match q.before.as_deref() {
        Some(v) => Some(
            super::suppressions::time("before", v)
                .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_time", m))?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = service.deliveries(&account, &id, before, limit).await.map_err(error)?;
    let next = if rows.len() == limit { rows.last().map(|r| rfc3339(r.at)) } else { None };
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "webhook_id": r.webhook_id,
                "type": r.event_type,
                "attempt": r.attempt,
                "status": r.status,
                "error": r.error,
                "outcome": r.outcome,
                "duration_ms": r.duration_ms,
                "at": rfc3339(r.at),
            })
        })
        .collect();
    Ok(Json(json!({ "deliveries": items, "next_before": next })))
}

//! `GET /v1/events?type=&recipient=&message_id=&from=&to=&cursor=&limit=`: the account's
//! customer-visible events (the webhook event types and bodies), oldest first, from the
//! event-feed projection. `to` defaults to now, `from` to 24 hours before `to`; a range is
//! at most 31 days. The cursor is stable: a page continues after the last event returned.

use super::openapi::ErrorBody;
use super::suppressions::time;
use super::{authenticate, ApiError, ApiState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use herald_engine::accounts::Scope;
use herald_engine::projector::rfc3339;
use herald_engine::store::feedback::cursor;
use herald_engine::store::webhooks::{FeedQuery, FEED_MAX_DAYS};
use herald_engine::store::StoreError;
use herald_engine::webhooks::payload::EVENT_TYPES;
use herald_schemas::Timestamp;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    #[serde(rename = "type")]
    event_type: Option<String>,
    recipient: Option<String>,
    message_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    security(("api_key" = [])),
    params(EventQuery),
    responses(
        (status = 200, description = "A page of the account's events, oldest first, with a stable cursor", body = serde_json::Value),
        (status = 400, description = "`malformed_request`, `invalid_time`, `invalid_type`, `invalid_cursor`, `invalid_range`", body = ErrorBody),
        (status = 404, description = "`not_enabled`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `operator_key`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let account = authenticate(&state, &headers, Scope::Read)?.account;
    let store = state
        .webhooks
        .as_ref()
        .map(|w| w.store())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_enabled", "the event feed is not enabled"))?;
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", e.body_text()))?;
    let bad_time = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_time", m);
    let to = match q.to.as_deref() {
        Some(v) => time("to", v).map_err(bad_time)?,
        None => Timestamp(Timestamp::now().millis() + 1),
    };
    let from = match q.from.as_deref() {
        Some(v) => time("from", v).map_err(bad_time)?,
        None => Timestamp(to.millis() - 86_400_000),
    };
    if from >= to {
        return Err(bad_time("`from` must be before `to`".into()));
    }
    if to.millis() - from.millis() > FEED_MAX_DAYS * 86_400_000 {
        return Err(bad_time(format!("a range is at most {FEED_MAX_DAYS} days")));
    }
    if let Some(t) = q.event_type.as_deref().filter(|t| !EVENT_TYPES.contains(t)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_type",
            format!("unknown event type `{t}`; one of {}", EVENT_TYPES.join(", ")),
        ));
    }
    let after = match q.cursor.as_deref() {
        Some(c) => Some(cursor::decode::<(i64, String)>(c).map_err(|_| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", "this cursor was not given by this server")
        })?),
        None => None,
    };
    let query = FeedQuery {
        from,
        to,
        event_type: q.event_type,
        recipient: q.recipient,
        message_id: q.message_id,
        after,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    let page = store.feed(&account, &query).await.map_err(|e: StoreError| super::store_unavailable(e))?;
    let events: Vec<Value> = page
        .items
        .iter()
        .map(|r| json!({ "id": r.id, "type": r.event_type, "timestamp": rfc3339(r.at), "data": r.data }))
        .collect();
    Ok(Json(json!({ "events": events, "next_cursor": page.next.map(|p| cursor::encode(&p)) })))
}

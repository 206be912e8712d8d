//! `GET /v1/messages/{id}`: one message's status and events; `GET /v1/messages?recipient=`:
//! the messages to one recipient, newest first. An account sees only its own messages.

use super::openapi::ErrorBody;
use super::{authenticate, ApiError, ApiState};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use herald_engine::accounts::Scope;
use herald_engine::store::MessageView;
use herald_schemas::{MessageId, Timestamp};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One message's status and events.
#[utoipa::path(
    get,
    path = "/v1/messages/{id}",
    tag = "messages",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The message id of the 202 reply")),
    responses(
        (status = 200, description = "The message and its events", body = MessageView),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `read`), `operator_key`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such message of this account", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    )
)]
pub async fn handle(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<MessageView>, ApiError> {
    let account = authenticate(&state, &headers, Scope::Read)?.account;
    let Path(id) = id.map_err(super::path_rejection)?;
    let view = state.store.message(&account, &MessageId(id.clone())).await.map_err(super::store_unavailable)?;
    // Another account's message is indistinguishable from a missing one.
    view.map(Json).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no message {id:.64}")))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The recipient's address (compared without case).
    recipient: String,
    /// Only messages accepted before this time (RFC 3339): the `next` of the previous page.
    before: Option<String>,
    /// At most this many (1-100, default 20).
    limit: Option<u32>,
}

/// A page of search results.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SearchResult {
    messages: Vec<MessageView>,
    /// `before` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// Messages to one recipient, newest first.
#[utoipa::path(
    get,
    path = "/v1/messages",
    tag = "messages",
    security(("api_key" = [])),
    params(SearchQuery),
    responses(
        (status = 200, description = "Matching messages with their events", body = SearchResult),
        (status = 400, description = "`malformed_request`, `invalid_time`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `read`), `operator_key`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    )
)]
pub async fn search(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<SearchResult>, ApiError> {
    let account = authenticate(&state, &headers, Scope::Read)?.account;
    let Query(q) = query.map_err(super::query_rejection)?;
    let recipient = q.recipient.trim();
    if recipient.is_empty() || recipient.len() > 254 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            "`recipient` must be 1-254 characters",
        ));
    }
    let before = q.before.as_deref().map(|b| super::stats::parse_time("before", b)).transpose()?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", "`limit` must be 1 to 100"));
    }
    let messages =
        state.store.messages_to(&account, recipient, before, limit as usize).await.map_err(super::store_unavailable)?;
    let next = (messages.len() == limit as usize)
        .then(|| messages.last().and_then(accepted_at))
        .flatten()
        .map(herald_engine::projector::rfc3339);
    Ok(Json(SearchResult { messages, next }))
}

/// When a message was accepted, from its first event.
fn accepted_at(m: &MessageView) -> Option<Timestamp> {
    let at = m.events.first()?.get("at")?.as_str()?;
    let t = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
    Some(Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
}

//! `GET /v1/messages/{id}`: one message's status and events, for its own account only.

use super::{authenticate, ApiError, ApiState};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use herald_engine::store::MessageView;
use herald_schemas::MessageId;
use std::sync::Arc;

pub async fn handle(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let account = authenticate(&state, &headers)?;
    let view = state.store.message(&account, &MessageId(id.clone())).await.map_err(super::store_unavailable)?;
    // Another account's message is indistinguishable from a missing one.
    view.map(Json).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no message {id}")))
}

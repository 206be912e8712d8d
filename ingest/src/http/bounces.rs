//! `GET /v1/bounces?from=&to=&class=&cursor=&limit=`: the account's bounces (synchronous
//! refusals and DSNs, failed and delayed), oldest first. `to` defaults to now and `from` to
//! seven days before `to`; a range is at most 366 days.

use super::openapi::ErrorBody;
use super::schemas;
use super::suppressions::{error, malformed, service, time};
use super::{ApiError, ApiState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use herald_engine::projector::rfc3339;
use herald_engine::store::feedback::{BounceRow, MAX_BOUNCE_DAYS};
use herald_schemas::{BounceClass, Timestamp};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BounceQuery {
    /// RFC 3339 (default: 7 days before `to`).
    from: Option<String>,
    /// RFC 3339 (default: now).
    to: Option<String>,
    /// Only this bounce class.
    class: Option<String>,
    /// From the previous page's `next_cursor`.
    cursor: Option<String>,
    /// 1-1000 (default 100).
    limit: Option<usize>,
}

fn view(b: &BounceRow) -> Value {
    json!({
        "id": b.id,
        "message_id": b.message_id,
        "recipient": b.recipient,
        "type": b.bounce_type,
        "class": b.class,
        "action": b.action,
        "source": b.source,
        "code": b.code,
        "enhanced": b.enhanced,
        "diagnostic": b.diagnostic,
        "remote_mta": b.remote_mta,
        "reporting_mta": b.reporting_mta,
        "at": rfc3339(b.at),
    })
}

#[utoipa::path(
    get,
    path = "/v1/bounces",
    tag = "bounces",
    security(("api_key" = [])),
    params(BounceQuery),
    responses(
        (status = 200, description = "A page of bounces, oldest first", body = schemas::BouncePage),
        (status = 400, description = "`malformed_request`, `invalid_time`, `invalid_class`, `invalid_cursor`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `operator_key`", body = ErrorBody),
        (status = 404, description = "`not_enabled`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `log_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<BounceQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (service, account) = service(&state, &headers, herald_engine::accounts::Scope::Read)?;
    let Query(q) = query.map_err(|e| malformed(e.body_text()))?;
    let bad_time = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_time", m);
    let to = match q.to.as_deref() {
        Some(v) => time("to", v).map_err(bad_time)?,
        None => Timestamp::now(),
    };
    let from = match q.from.as_deref() {
        Some(v) => time("from", v).map_err(bad_time)?,
        None => Timestamp(to.millis() - 7 * 86_400_000),
    };
    if from >= to {
        return Err(bad_time("`from` must be before `to`".into()));
    }
    if to.millis() - from.millis() > MAX_BOUNCE_DAYS * 86_400_000 {
        return Err(bad_time(format!("a range is at most {MAX_BOUNCE_DAYS} days")));
    }
    let class = match q.class.as_deref() {
        Some(c) => Some(BounceClass::parse(c).ok_or_else(|| {
            let all: Vec<&str> = BounceClass::ALL.iter().map(|c| c.as_str()).collect();
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_class",
                format!("unknown class `{c}`; one of {}", all.join(", ")),
            )
        })?),
        None => None,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let page = service.bounces(&account, from, to, class, q.cursor.as_deref(), limit).await.map_err(error)?;
    Ok(Json(json!({
        "bounces": page.items.iter().map(view).collect::<Vec<_>>(),
        "next_cursor": page.next,
    })))
}

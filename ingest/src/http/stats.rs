//! `GET /v1/stats?from=RFC3339&to=RFC3339`: per-account counters over whole hours, and
//! `GET /v1/stats/links?from&to`: clicks and unique clicks per URL (the 1,000 most clicked,
//! over at most 93 days). `to` defaults to now and `from` to 24 hours before `to`.

use super::{authenticate, ApiError, ApiState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use herald_engine::store::{LinkStats, Stats};
use herald_schemas::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Deserialize)]
pub struct Range {
    from: Option<String>,
    to: Option<String>,
}

fn parse(name: &str, value: &str) -> Result<Timestamp, ApiError> {
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_time",
            format!("`{name}` must be an RFC 3339 time such as 2026-01-31T12:00:00Z, not `{value:.40}`"),
        )
    })?;
    Ok(Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
}

/// The range a query names, checked.
fn range(query: Result<Query<Range>, QueryRejection>) -> Result<(Timestamp, Timestamp), ApiError> {
    let Query(range) = query.map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", "the query string must be `from=<time>&to=<time>`")
    })?;
    let to = match range.to.as_deref() {
        Some(v) => parse("to", v)?,
        None => Timestamp::now(),
    };
    let from = match range.from.as_deref() {
        Some(v) => parse("from", v)?,
        None => Timestamp(to.millis() - 86_400_000),
    };
    if from >= to {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_time", "`from` must be before `to`"));
    }
    Ok((from, to))
}

pub async fn handle(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Range>, QueryRejection>,
) -> Result<Json<Stats>, ApiError> {
    let account = authenticate(&state, &headers)?;
    let (from, to) = range(query)?;
    let stats = state.store.stats(&account, from, to).await.map_err(super::store_unavailable)?;
    Ok(Json(stats))
}

/// Longest range of `GET /v1/stats/links`.
const MAX_LINK_RANGE_MS: i64 = 93 * 86_400_000;

#[derive(Serialize)]
pub struct Links {
    links: Vec<LinkStats>,
}

pub async fn links(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Range>, QueryRejection>,
) -> Result<Json<Links>, ApiError> {
    let account = authenticate(&state, &headers)?;
    let (from, to) = range(query)?;
    if to.millis() - from.millis() > MAX_LINK_RANGE_MS {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "range_too_long", "link statistics cover at most 93 days"));
    }
    let links = state.store.links(&account, from, to).await.map_err(super::store_unavailable)?;
    Ok(Json(Links { links }))
}

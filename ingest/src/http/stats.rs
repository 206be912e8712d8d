//! `GET /v1/stats?from=RFC3339&to=RFC3339`: per-account counters over whole hours (`to`
//! defaults to now and `from` to 24 hours before `to`), and `GET /v1/stats/series`: the
//! same counters per hour or per day, every bucket of the range present (zeros included),
//! for charts, and `GET /v1/stats/links?from&to`: clicks and unique clicks per URL (the
//! 1,000 most clicked, over at most 93 days).

use super::openapi::ErrorBody;
use super::{authenticate, ApiError, ApiState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use herald_engine::accounts::Scope;
use herald_engine::projector::rfc3339;
use herald_engine::store::{LinkStats, Stats};
use herald_schemas::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// Most buckets in one series (about 14 months of days, or 3 months of hours).
const MAX_POINTS: i64 = 2_200;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Range {
    /// RFC 3339 start (default: 24 hours before `to`).
    from: Option<String>,
    /// RFC 3339 end (default: now).
    to: Option<String>,
}

pub fn parse_time(name: &str, value: &str) -> Result<Timestamp, ApiError> {
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_time",
            format!("`{name}` must be an RFC 3339 time such as 2026-01-31T12:00:00Z, not `{value:.40}`"),
        )
    })?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    // Years 1 to 9999: what RFC 3339 can write, so every time we answer with parses back.
    if !(-62_135_596_800_000..=253_402_300_799_999).contains(&ms) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_time", format!("`{name}` is out of range")));
    }
    Ok(Timestamp(ms as i64))
}

fn range(from: Option<&str>, to: Option<&str>) -> Result<(Timestamp, Timestamp), ApiError> {
    let to = match to {
        Some(v) => parse_time("to", v)?,
        None => Timestamp::now(),
    };
    let from = match from {
        Some(v) => parse_time("from", v)?,
        None => Timestamp(to.millis().saturating_sub(DAY)),
    };
    if from >= to {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_time", "`from` must be before `to`"));
    }
    Ok((from, to))
}

/// Counters over a time range.
#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "stats",
    security(("api_key" = [])),
    params(Range),
    responses(
        (status = 200, description = "Counters of the hours that start in [floor_hour(from), to)", body = Stats),
        (status = 400, description = "`malformed_request`, `invalid_time`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `read`), `operator_key`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    )
)]
pub async fn handle(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Range>, QueryRejection>,
) -> Result<Json<Stats>, ApiError> {
    let account = authenticate(&state, &headers, Scope::Read)?.account;
    let Query(r) = query.map_err(super::query_rejection)?;
    let (from, to) = range(r.from.as_deref(), r.to.as_deref())?;
    let stats = state.store.stats(&account, from, to).await.map_err(super::store_unavailable)?;
    Ok(Json(stats))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// RFC 3339 start (default: 24 hours before `to`).
    from: Option<String>,
    /// RFC 3339 end (default: now).
    to: Option<String>,
    /// `hour` (default) or `day` (UTC days).
    interval: Option<String>,
}

/// One bucket of a series.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Point {
    /// Start of the bucket (RFC 3339, UTC).
    at: String,
    #[serde(flatten)]
    stats: Stats,
}

/// Counters per bucket.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Series {
    /// `hour` or `day`.
    interval: String,
    /// Start of the first bucket.
    from: String,
    /// The end asked for.
    to: String,
    points: Vec<Point>,
    /// The whole range.
    total: Stats,
}

/// Counters per hour or per day, every bucket present.
#[utoipa::path(
    get,
    path = "/v1/stats/series",
    tag = "stats",
    security(("api_key" = [])),
    params(SeriesQuery),
    responses(
        (status = 200, description = "One point per bucket that starts in [floor(from), to), zeros included", body = Series),
        (status = 400, description = "`malformed_request`, `invalid_time` (also over 2,200 buckets)", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `read`), `operator_key`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    )
)]
pub async fn series(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<SeriesQuery>, QueryRejection>,
) -> Result<Json<Series>, ApiError> {
    let account = authenticate(&state, &headers, Scope::Read)?.account;
    let Query(q) = query.map_err(super::query_rejection)?;
    let (from, to) = range(q.from.as_deref(), q.to.as_deref())?;
    let (name, step) = match q.interval.as_deref() {
        None | Some("hour") => ("hour", HOUR),
        Some("day") => ("day", DAY),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                format!("`interval` must be hour or day, not `{other:.20}`"),
            ))
        }
    };
    let start = from.millis().div_euclid(step) * step;
    let buckets = (to.millis() - start + step - 1) / step;
    if buckets > MAX_POINTS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_time",
            format!("the range holds {buckets} {name}s; at most {MAX_POINTS} per request"),
        ));
    }
    let hours = state.store.hourly(&account, Timestamp(start), to).await.map_err(super::store_unavailable)?;
    let mut points: Vec<Point> =
        (0..buckets).map(|i| Point { at: rfc3339(Timestamp(start + i * step)), stats: Stats::default() }).collect();
    let mut total = Stats::default();
    for h in hours {
        let i = ((h.hour - start) / step) as usize;
        if let Some(p) = points.get_mut(i) {
            p.stats.merge(&h.stats);
            total.merge(&h.stats);
        }
    }
    Ok(Json(Series { interval: name.into(), from: rfc3339(Timestamp(start)), to: rfc3339(to), points, total }))
}

/// Longest range of `GET /v1/stats/links`.
const MAX_LINK_RANGE_MS: i64 = 93 * DAY;

/// Clicks per URL.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Links {
    links: Vec<LinkStats>,
}

/// Clicks and unique clicks per URL over a time range (the 1,000 most clicked).
#[utoipa::path(
    get,
    path = "/v1/stats/links",
    tag = "stats",
    security(("api_key" = [])),
    params(Range),
    responses(
        (status = 200, description = "The most clicked URLs of the hours that start in [floor_hour(from), to)", body = Links),
        (status = 400, description = "`malformed_request`, `invalid_time`, `range_too_long` (over 93 days)", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `read`), `operator_key`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    )
)]
pub async fn links(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Range>, QueryRejection>,
) -> Result<Json<Links>, ApiError> {
    let account = authenticate(&state, &headers, Scope::Read)?.account;
    let Query(r) = query.map_err(super::query_rejection)?;
    let (from, to) = range(r.from.as_deref(), r.to.as_deref())?;
    if to.millis() - from.millis() > MAX_LINK_RANGE_MS {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "range_too_long", "link statistics cover at most 93 days"));
    }
    let links = state.store.links(&account, from, to).await.map_err(super::store_unavailable)?;
    Ok(Json(Links { links }))
}

//! `GET /v1/admin/log`: how far each consumer group (delivery workers, projectors) is
//! behind the log, per topic, summed over the partitions this node knows of.

use super::openapi::ErrorBody;
use super::{ApiError, ApiState};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One consumer group's lag on one topic.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TopicLag {
    group: String,
    topic: String,
    partitions: u32,
    /// Records appended and not yet processed by the group, over all partitions.
    lag: u64,
    /// The largest lag of one partition.
    max_partition_lag: u64,
    /// Records ever appended (the sum of the partitions' end offsets).
    end: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LogLag {
    topics: Vec<TopicLag>,
}

/// Consumer lag per group and topic.
#[utoipa::path(
    get,
    path = "/v1/admin/log",
    tag = "admin",
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "Lag per group and topic", body = LogLag),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_enabled`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`", body = ErrorBody),
    )
)]
pub async fn lag(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Result<Json<LogLag>, ApiError> {
    super::auth::operator(&state, &headers)?;
    let Some((log, groups)) = &state.log else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_enabled", "the log view is not enabled on this server"));
    };
    let mut topics = vec![];
    for g in groups {
        let parts = log.lag(&g.group, &g.assignments).await.map_err(|e| {
            tracing::warn!(error = %e, "log lag");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "log_unavailable", "the event log did not answer; try again")
        })?;
        let mut by_topic: BTreeMap<String, TopicLag> = BTreeMap::new();
        for p in parts {
            let t = by_topic.entry(p.topic.clone()).or_insert_with(|| TopicLag {
                group: g.group.clone(),
                topic: p.topic.clone(),
                partitions: 0,
                lag: 0,
                max_partition_lag: 0,
                end: 0,
            });
            t.partitions += 1;
            t.lag += p.lag();
            t.max_partition_lag = t.max_partition_lag.max(p.lag());
            t.end += p.end;
        }
        topics.extend(by_topic.into_values());
    }
    Ok(Json(LogLag { topics }))
}

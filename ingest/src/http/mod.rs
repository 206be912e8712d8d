//! The REST API (axum): a file per route, shared state, bearer-key authentication and the
//! JSON error body every route uses.

mod bounces;
mod domains;
mod events;
pub mod idempotency;
mod messages;
pub mod observe;
mod providers;
mod send;
mod stats;
mod suppressions;
mod webhooks;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_engine::domains::Domains;
use herald_engine::store::ProjectionStore;
use herald_engine::submit::Submitter;
use herald_schemas::AccountId;
use std::collections::HashMap;
use std::sync::Arc;

/// Renders Prometheus text; supplied by the binary, which owns the recorder.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

pub struct ApiState {
    pub submitter: Submitter,
    pub store: Arc<dyn ProjectionStore>,
    /// API key → account.
    pub api_keys: HashMap<String, AccountId>,
    /// Largest accepted MIME body, in bytes.
    pub max_body_bytes: usize,
    /// Most recipients in one `POST /v1/send`.
    pub max_recipients: usize,
    pub metrics: Option<MetricsRender>,
    /// Sender domains (`/v1/domains`); `None` answers 404 `not_enabled`.
    pub domains: Option<Arc<Domains>>,
    /// Suppression and bounce lists (`/v1/suppressions`, `/v1/bounces`); `None` answers
    /// 404 `not_enabled`.
    pub feedback: Option<Arc<herald_engine::feedback::service::FeedbackService>>,
    /// Right-hand side of the `Message-ID:` given to messages that have none.
    pub hostname: String,
    /// Which From domains each account may send from.
    pub sender: Arc<crate::sender::SenderPolicy>,
    /// Each account's default send options (`[[accounts]] defaults`).
    pub defaults: HashMap<AccountId, herald_schemas::SendOptions>,
    /// Traffic shaping (`/v1/admin/providers`, `/v1/admin/pools`); `None` on a node that
    /// does not deliver (404 `not_enabled`).
    pub shaping: Option<Arc<herald_engine::shaping::Shaper>>,
    /// Keys for the operators' routes (`[shaping] operator_keys`); account keys never open
    /// them.
    pub operator_keys: Vec<String>,
    /// Webhook endpoints (`/v1/webhooks`); `None` answers 404 `not_enabled`.
    pub webhooks: Option<Arc<herald_engine::webhooks::service::Webhooks>>,
}

/// `200 ok` while the log takes appends; `503` with the reason while it cannot (the
/// embedded log recovering from a failed write).
async fn healthz(axum::extract::State(state): axum::extract::State<Arc<ApiState>>) -> Response {
    match state.submitter.log_failure() {
        None => "ok\n".into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("unavailable: {why}\n")).into_response(),
    }
}

/// `200 ready` when the log takes appends (Kafka: the cluster answers a metadata request)
/// and the projection store answers a read, each within [`READY_TIMEOUT`]; `503` with the
/// reason otherwise. Orchestrators route traffic on it
/// (Kubernetes readiness probe); `/healthz` stays the liveness check.
async fn readyz(axum::extract::State(state): axum::extract::State<Arc<ApiState>>) -> Response {
    if let Err(why) = state.submitter.log_reachable(READY_TIMEOUT).await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: log: {why}\n")).into_response();
    }
    match tokio::time::timeout(READY_TIMEOUT, state.store.domain("readyz.invalid")).await {
        Ok(Ok(_)) => "ready\n".into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: store: {e}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: store: no answer within 2 s\n").into_response(),
    }
}

/// How long `/readyz` waits for the log and for the store.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/send", post(send::handle))
        .route("/v1/messages/{id}", get(messages::handle))
        .route("/v1/stats", get(stats::handle))
        .route("/v1/stats/links", get(stats::links))
        .route("/v1/domains", post(domains::add).get(domains::list))
        .route("/v1/domains/{domain}", get(domains::show).patch(domains::update).delete(domains::remove))
        .route("/v1/domains/{domain}/records", get(domains::records))
        .route("/v1/domains/{domain}/verify", post(domains::verify))
        .route("/v1/domains/{domain}/rotate", post(domains::rotate))
        .route("/v1/domains/{domain}/check", get(domains::check))
        .route("/v1/suppressions", get(suppressions::list))
        .route("/v1/suppressions/import", post(suppressions::import))
        .route("/v1/suppressions/export", get(suppressions::export))
        .route(
            "/v1/suppressions/{address}",
            get(suppressions::show).put(suppressions::put).delete(suppressions::remove),
        )
        .route("/v1/bounces", get(bounces::list))
        .route("/v1/events", get(events::list))
        .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/v1/webhooks/{id}", get(webhooks::show).patch(webhooks::update).delete(webhooks::remove))
        .route("/v1/webhooks/{id}/rotate", post(webhooks::rotate))
        .route("/v1/webhooks/{id}/test", post(webhooks::test))
        .route("/v1/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/v1/admin/providers", get(providers::list))
        .route("/v1/admin/providers/{name}/suspend", post(providers::suspend))
        .route("/v1/admin/providers/{name}/resume", post(providers::resume))
        .route("/v1/admin/pools", get(providers::pools))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(axum::middleware::from_fn(observe::track))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

async fn metrics(axum::extract::State(state): axum::extract::State<Arc<ApiState>>) -> Response {
    match &state.metrics {
        Some(render) => ([("content-type", "text/plain; version=0.0.4")], render()).into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "not_found", "metrics are not enabled").into_response(),
    }
}

/// An error reply: `{"error":{"code":"...","message":"..."}}`. Codes are stable API.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("herald_http_errors_total", "code" => self.code).increment(1);
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

/// 503 `store_unavailable` for a failed query; the store's own error goes to the log.
pub fn store_unavailable(e: herald_engine::store::StoreError) -> ApiError {
    tracing::warn!(error = %e, "projection store query failed");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "the store is unavailable; try again shortly")
}

/// 400 `malformed_request` for a JSON body axum could not decode, as a sentence.
pub fn json_rejection(e: axum::extract::rejection::JsonRejection) -> ApiError {
    use axum::extract::rejection::JsonRejection;
    let message = match &e {
        JsonRejection::MissingJsonContentType(_) => "Content-Type must be application/json".to_owned(),
        JsonRejection::JsonSyntaxError(_) => "the request body is not valid JSON".to_owned(),
        JsonRejection::JsonDataError(d) => {
            let detail = std::error::Error::source(d).map(|s| s.to_string()).unwrap_or_default();
            format!("the JSON body does not have the expected fields: {detail}")
        }
        _ => "the request body could not be read".to_owned(),
    };
    ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", message)
}

/// The account of the request's `Authorization: Bearer <key>`, or 401.
pub fn authenticate(state: &ApiState, headers: &HeaderMap) -> Result<AccountId, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <api key>"))?;
    let value = value.to_str().map_err(|_| unauthorized("Authorization header is not ASCII"))?;
    let key = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| unauthorized("Authorization must be `Bearer <api key>`"))?;
    state.api_keys.get(key.trim()).cloned().ok_or_else(|| unauthorized("unknown API key"))
}

//! The REST API (axum): a file per route, shared state, authentication ([`auth`]), the
//! JSON error body every route uses, and the OpenAPI 3.1 document generated from the
//! handlers' annotations ([`openapi`], served at `/v1/openapi.json`).

mod account;
mod admin;
mod admin_credentials;
mod admin_log;
pub mod auth;
mod bounces;
mod domains;
mod events;
pub mod idempotency;
mod messages;
pub mod observe;
pub mod openapi;
mod providers;
mod schemas;
mod send;
mod stats;
mod suppressions;
mod webhooks;

pub use auth::{authenticate, Operators};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_engine::accounts::{AccountCache, Accounts};
use herald_engine::domains::Domains;
use herald_engine::log::{Assignment, EventLog};
use herald_engine::store::ProjectionStore;
use herald_engine::submit::Submitter;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Renders Prometheus text; supplied by the binary, which owns the recorder.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// A consumer group and what it reads, for the log-lag report.
#[derive(Debug, Clone)]
pub struct ConsumerGroup {
    pub group: String,
    pub assignments: Vec<Assignment>,
}

pub struct ApiState {
    pub submitter: Submitter,
    pub store: Arc<dyn ProjectionStore>,
    /// The accounts as this node sees them (keys, status, limits).
    pub accounts: AccountCache,
    /// Account commands (`/v1/admin`); `None` answers 404 `not_enabled`.
    pub admin: Option<Arc<Accounts>>,
    /// Operator keys of `/v1/admin`.
    pub operators: Operators,
    /// Per-second and per-day limits of accounts.
    pub limits: Arc<crate::limits::Limits>,
    /// The log and its consumer groups, for `GET /v1/admin/log`.
    pub log: Option<(Arc<dyn EventLog>, Vec<ConsumerGroup>)>,
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
    /// Traffic shaping (`/v1/admin/providers`, `/v1/admin/pools`); `None` on a node that
    /// does not deliver (404 `not_enabled`).
    pub shaping: Option<Arc<herald_engine::shaping::Shaper>>,
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
pub(super) async fn readyz(axum::extract::State(state): axum::extract::State<Arc<ApiState>>) -> Response {
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

/// Every API route with its OpenAPI description (`/ui` is added by the binary).
pub fn api(state: Arc<ApiState>) -> (axum::Router, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi;
    let (router, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(send::handle))
        .routes(routes!(messages::search))
        .routes(routes!(messages::handle))
        .routes(routes!(stats::handle))
        .routes(routes!(stats::series))
        .routes(routes!(stats::links))
        .routes(routes!(account::show))
        .routes(routes!(domains::add, domains::list))
        .routes(routes!(domains::show, domains::update, domains::remove))
        .routes(routes!(domains::records))
        .routes(routes!(domains::verify))
        .routes(routes!(domains::rotate))
        .routes(routes!(domains::check))
        .routes(routes!(admin::create, admin::list))
        .routes(routes!(admin::show, admin::update, admin::delete))
        .routes(routes!(admin::suspend))
        .routes(routes!(admin::resume))
        .routes(routes!(admin_credentials::create_key, admin_credentials::keys))
        .routes(routes!(admin_credentials::revoke_key))
        .routes(routes!(admin_credentials::add_user, admin_credentials::users))
        .routes(routes!(admin_credentials::remove_user))
        .routes(routes!(admin_log::lag))
        .routes(routes!(suppressions::list))
        .routes(routes!(suppressions::import))
        .routes(routes!(suppressions::export))
        .routes(routes!(suppressions::show, suppressions::put, suppressions::remove))
        .routes(routes!(bounces::list))
        .routes(routes!(events::list))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::show, webhooks::update, webhooks::remove))
        .routes(routes!(webhooks::rotate))
        .routes(routes!(webhooks::test))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(providers::list))
        .routes(routes!(providers::suspend))
        .routes(routes!(providers::resume))
        .routes(routes!(providers::pools))
        .routes(routes!(openapi::metrics))
        .routes(routes!(openapi::healthz))
        .routes(routes!(openapi::readyz))
        .with_state(state)
        .split_for_parts();
    (router, openapi::finish(doc))
}

/// The API's routes, `/v1/openapi.json`, and JSON replies for unknown paths and methods.
pub fn router(state: Arc<ApiState>) -> axum::Router {
    let (router, doc) = api(state);
    with_document(router, doc)
}

/// Adds `/v1/openapi.json` (serving `doc`), the fallbacks and the body limit.
pub fn with_document(router: axum::Router, doc: utoipa::openapi::OpenApi) -> axum::Router {
    let json = Arc::new(doc.to_json().unwrap_or_else(|_| "{}".into()));
    router
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let json = json.clone();
                async move { ([("content-type", "application/json")], json.as_str().to_owned()) }
            }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
        })
        // After the fallbacks, so that unknown paths are counted too (route `unmatched`).
        .layer(axum::middleware::from_fn(observe::track))
        // For the JSON (and small raw) bodies the extractors read; `POST /v1/send` and the
        // suppression import read the raw stream with limits of their own.
        .layer(axum::extract::DefaultBodyLimit::max(JSON_BODY_LIMIT))
}

/// The largest body a JSON route reads (1 MiB): its fields are short, and an over-long body
/// is refused without being buffered whole.
pub const JSON_BODY_LIMIT: usize = 1 << 20;

/// 413 `body_too_large` for a body over [`JSON_BODY_LIMIT`].
fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is limited to {JSON_BODY_LIMIT} bytes on this route"),
    )
}

/// 413 `body_too_large` or 400 `malformed_request` for a raw body that could not be read.
pub fn bytes_rejection(e: axum::extract::rejection::BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return body_too_large();
    }
    ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", "the request body could not be read")
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
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return body_too_large();
    }
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

/// 400 `malformed_request` for a query string axum could not decode.
pub fn query_rejection(e: axum::extract::rejection::QueryRejection) -> ApiError {
    let detail = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default();
    ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", format!("the query string is not valid: {detail}"))
}

/// 400 `malformed_request` for a path parameter that does not decode.
pub fn path_rejection(e: axum::extract::rejection::PathRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", format!("the path is not valid: {e}"))
}

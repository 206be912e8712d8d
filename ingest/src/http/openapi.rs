//! The OpenAPI 3.1 document: general information, the two security schemes (an account's
//! API key, an operator key), the error body, and the operational routes (`/metrics`,
//! `/healthz`). Every other route carries its own `#[utoipa::path]` annotation next to its
//! handler; [`super::api`] collects them, so the document cannot forget a route.

use super::{ApiError, ApiState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::Arc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Herald's REST API: sending, message status and search, statistics, sender domains, \
                       and the operators' account administration. Every error has the body \
                       `{\"error\":{\"code\":…,\"message\":…}}`; the codes are stable (see docs/api.md).",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&Security),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "send", description = "Submitting messages"),
        (name = "messages", description = "Message status, events and search"),
        (name = "stats", description = "Counters over time"),
        (name = "account", description = "The account of the API key"),
        (name = "domains", description = "Sender domains"),
        (name = "admin", description = "Operators: accounts, API keys, SMTP users, the log"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An account's API key: `Authorization: Bearer hrld_…`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "operator_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An operator key from `[admin] operator_keys`"))
                    .build(),
            ),
        );
    }
}

/// Every error reply.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs (`unauthorized`, `invalid_request`, …).
    pub code: String,
    /// A sentence, for people.
    pub message: String,
}

/// Final touches: the document's version is the package's.
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// Prometheus metrics (`docs/metrics.md`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 404, description = "`not_found`: metrics are not enabled", body = ErrorBody),
    )
)]
pub async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    match &state.metrics {
        Some(render) => ([("content-type", "text/plain; version=0.0.4")], render()).into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "not_found", "metrics are not enabled").into_response(),
    }
}

/// Health: `ok` while the log takes appends; 503 with the reason while it cannot (the
/// embedded log recovering from a failed write).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "`ok`", content_type = "text/plain", body = String),
        (status = 503, description = "`unavailable: <reason>`", content_type = "text/plain", body = String),
    )
)]
pub async fn healthz(state: State<Arc<ApiState>>) -> Response {
    super::healthz(state).await
}

/// Readiness: `ready` when the log takes appends and the projection store answers, each
/// within 2 s; 503 with the reason otherwise (`/healthz` stays the liveness check).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "`ready`", content_type = "text/plain", body = String),
        (status = 503, description = "`not ready: <reason>`", content_type = "text/plain", body = String),
    )
)]
pub async fn readyz(state: State<Arc<ApiState>>) -> Response {
    super::readyz(state).await
}

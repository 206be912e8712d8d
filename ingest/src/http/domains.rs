//! `/v1/domains`: sender domains of the authenticated account. Another account's domain
//! is indistinguishable from a missing one (404), except when adding it (409
//! `domain_claimed`). The work is in `herald_engine::domains`.
//!
//! - `POST /v1/domains` `{domain, dmarc_rua?, bimi_logo?, tracking_label?, ed25519?}` → 201
//!   (or 200 when the account already has it)
//! - `GET /v1/domains`, `GET|PATCH|DELETE /v1/domains/{domain}`
//! - `GET /v1/domains/{domain}/records[?format=zone]`
//! - `POST /v1/domains/{domain}/verify`, `POST /v1/domains/{domain}/rotate`
//! - `GET /v1/domains/{domain}/check`

use super::openapi::ErrorBody;
use super::{authenticate, ApiError, ApiState};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_engine::accounts::Scope;
use herald_engine::domains::state::DomainState;
use herald_engine::domains::{AddDomain, DomainError, Domains, UpdateDomain};
use herald_engine::projector::rfc3339;
use herald_schemas::{AccountId, RecordCheck};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

fn error(e: DomainError) -> ApiError {
    use herald_engine::domains::name::NameError;
    let (status, code) = match &e {
        DomainError::Name(NameError::Invalid(..)) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_domain"),
        DomainError::Name(NameError::PublicSuffix(_)) => (StatusCode::UNPROCESSABLE_ENTITY, "public_suffix"),
        DomainError::Claimed(_) => (StatusCode::CONFLICT, "domain_claimed"),
        DomainError::NotFound(_) => (StatusCode::NOT_FOUND, "domain_not_found"),
        DomainError::RotationInProgress(_) => (StatusCode::CONFLICT, "rotation_in_progress"),
        DomainError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        DomainError::Log(_) => (StatusCode::SERVICE_UNAVAILABLE, "log_unavailable"),
        DomainError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        DomainError::Lag(_) => (StatusCode::SERVICE_UNAVAILABLE, "projection_lag"),
        DomainError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    let message = match &e {
        DomainError::Log(_) | DomainError::Store(_) | DomainError::Internal(_) => {
            tracing::warn!(error = %e, "sender domains: {code}");
            match code {
                "log_unavailable" => "the change was not recorded because the event log is unavailable; try again",
                "store_unavailable" => "the store is unavailable; try again shortly",
                _ => "an internal error occurred; try again, and tell the operator if it persists",
            }
            .to_owned()
        }
        _ => e.to_string(),
    };
    ApiError::new(status, code, message)
}

fn malformed(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", message)
}

fn service(state: &ApiState, headers: &HeaderMap) -> Result<(Arc<Domains>, AccountId), ApiError> {
    let account = authenticate(state, headers, Scope::Domains)?.account;
    let domains = state.domains.clone().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_enabled", "sender domains are not enabled on this server")
    })?;
    Ok((domains, account))
}

#[derive(Serialize, utoipa::ToSchema)]
struct Selector {
    selector: String,
    slot: u8,
    /// `rsa-sha256` or `ed25519-sha256`.
    #[schema(value_type = String)]
    algorithm: herald_schemas::KeyAlgorithm,
    /// `active` (signs), `published` (signs at `activates_at`), `retiring` (withdrawn at
    /// `retires_at`).
    state: &'static str,
    created_at: String,
}

/// One record's finding (`result`: `ok`, `missing`, `wrong_value`, `conflict`,
/// `unreachable`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct RecordCheckDoc {
    record: String,
    name: String,
    result: String,
    required: bool,
    expected: String,
    found: Vec<String>,
    message: String,
}

/// A record the customer publishes.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct CustomerRecordDoc {
    /// `dkim`, `bounce`, `tracking`, `spf`, `dmarc`, `bimi`.
    purpose: String,
    name: String,
    /// `CNAME`, `TXT`.
    #[schema(rename = "type")]
    rtype: String,
    value: String,
    required: bool,
    note: Option<String>,
}

/// A sender domain (no key material beyond what DNS publishes).
#[derive(Serialize, utoipa::ToSchema)]
pub struct DomainView {
    /// Punycode.
    domain: String,
    unicode: String,
    /// `pending`, `verified`, `failing`.
    #[schema(value_type = String)]
    status: herald_schemas::VerificationStatus,
    added_at: String,
    bounce_domain: String,
    tracking_domain: String,
    dmarc_rua: Option<String>,
    bimi_logo: Option<String>,
    selectors: Vec<Selector>,
    rotated_at: String,
    activates_at: Option<String>,
    retires_at: Option<String>,
    checked_at: Option<String>,
    #[schema(value_type = Vec<RecordCheckDoc>)]
    checks: Vec<RecordCheck>,
    /// Only in the reply of `POST /v1/domains`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<CustomerRecordDoc>>)]
    records: Option<serde_json::Value>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DomainList {
    domains: Vec<DomainView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RecordsView {
    domain: String,
    #[schema(value_type = Vec<CustomerRecordDoc>)]
    records: serde_json::Value,
}

/// The JSON shape of a domain (no key material beyond what DNS publishes).
pub fn view(s: &DomainState) -> DomainView {
    let selectors: Vec<Selector> = s
        .published()
        .map(|(slot, k)| Selector {
            selector: k.selector.clone(),
            slot,
            algorithm: k.algorithm,
            state: if slot == s.active_slot {
                "active"
            } else if s.retiring.is_some_and(|r| r.slot == slot) {
                "retiring"
            } else {
                "published"
            },
            created_at: rfc3339(k.created_at),
        })
        .collect();
    DomainView {
        domain: s.domain.clone(),
        unicode: idna::domain_to_unicode(&s.domain).0,
        status: s.status,
        added_at: rfc3339(s.added_at),
        bounce_domain: s.bounce_domain(),
        tracking_domain: s.tracking_domain(),
        dmarc_rua: s.dmarc_rua.clone(),
        bimi_logo: s.bimi_logo.clone(),
        selectors,
        rotated_at: rfc3339(s.rotated_at),
        activates_at: s.pending.map(|p| rfc3339(p.activate_at)),
        retires_at: s.retiring.map(|r| rfc3339(r.retire_at)),
        checked_at: s.checked_at.map(rfc3339),
        checks: s.checks.clone(),
        records: None,
    }
}

/// A domain to add; all but `domain` optional.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    domain: String,
    dmarc_rua: Option<String>,
    bimi_logo: Option<String>,
    tracking_label: Option<String>,
    ed25519: Option<bool>,
}

/// Adds a sender domain; the reply lists the records to publish.
#[utoipa::path(
    post,
    path = "/v1/domains",
    tag = "domains",
    security(("api_key" = [])),
    request_body = AddBody,
    responses(
        (status = 200, description = "The account already had it", body = DomainView),
        (status = 201, description = "Added, with `records`", body = DomainView),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `domains`), `operator_key`", body = ErrorBody),
        (status = 404, description = "`not_enabled`", body = ErrorBody),
        (status = 409, description = "`domain_claimed`", body = ErrorBody),
        (status = 422, description = "`invalid_domain`, `public_suffix`, `invalid_request`", body = ErrorBody),
        (status = 500, description = "`internal`: key generation or storage failed", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn add(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Json<AddBody>, JsonRejection>,
) -> Result<(StatusCode, Json<DomainView>), ApiError> {
    let (domains, account) = service(&state, &headers)?;
    let Json(b) = body.map_err(super::json_rejection)?;
    let req = AddDomain {
        domain: b.domain,
        dmarc_rua: b.dmarc_rua,
        bimi_logo: b.bimi_logo,
        tracking_label: b.tracking_label,
        ed25519: b.ed25519,
    };
    let (s, created) = domains.add(&account, req).await.map_err(error)?;
    let mut v = view(&s);
    v.records = Some(serde_json::to_value(domains.records(&s)).unwrap_or_default());
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(v)))
}

/// The account's sender domains, by name.
#[utoipa::path(
    get,
    path = "/v1/domains",
    tag = "domains",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The domains", body = DomainList),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `domains`), `operator_key`", body = ErrorBody),
        (status = 404, description = "`not_enabled`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Result<Json<DomainList>, ApiError> {
    let (domains, account) = service(&state, &headers)?;
    let all = domains.list(&account).await.map_err(error)?;
    Ok(Json(DomainList { domains: all.iter().map(view).collect() }))
}

/// One sender domain.
#[utoipa::path(
    get,
    path = "/v1/domains/{domain}",
    tag = "domains",
    security(("api_key" = [])),
    params(("domain" = String, Path, description = "The domain, Unicode or punycode")),
    responses(
        (status = 200, description = "The domain", body = DomainView),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `domains`), `operator_key`", body = ErrorBody),
        (status = 404, description = "`domain_not_found`, `not_enabled`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<DomainView>, ApiError> {
    let (domains, account) = service(&state, &headers)?;
    let Path(name) = name.map_err(super::path_rejection)?;
    Ok(Json(view(&domains.get(&account, &name).await.map_err(error)?)))
}

/// Settings to change; `null` clears `dmarc_rua` and `bimi_logo`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    tracking_label: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    dmarc_rua: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    bimi_logo: Option<Option<String>>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// Changes a domain's settings.
#[utoipa::path(
    patch,
    path = "/v1/domains/{domain}",
    tag = "domains",
    security(("api_key" = [])),
    params(("domain" = String, Path, description = "The domain, Unicode or punycode")),
    request_body = UpdateBody,
    responses(
        (status = 200, description = "The domain", body = DomainView),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `domains`), `operator_key`", body = ErrorBody),
        (status = 404, description = "`domain_not_found`, `not_enabled`", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    body: Result<Json<UpdateBody>, JsonRejection>,
) -> Result<Json<DomainView>, ApiError> {
    let (domains, account) = service(&state, &headers)?;
    let Path(name) = name.map_err(super::path_rejection)?;
    let Json(b) = body.map_err(super::json_rejection)?;
    let req = UpdateDomain { tracking_label: b.tracking_label, dmarc_rua: b.dmarc_rua, bimi_logo: b.bimi_logo };
    Ok(Json(view(&domains.update(&account, &name, req).await.map_err(error)?)))
}

/// Removes a domain: Herald stops signing and publishing, and deletes its keys.
#[utoipa::path(
    delete,
    path = "/v1/domains/{domain}",
    tag = "domains",
    security(("api_key" = [])),
    params(("domain" = String, Path, description = "The domain, Unicode or punycode")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `domains`), `operator_key`", body = ErrorBody),
        (status = 404, description = "`domain_not_found`, `not_enabled`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn remove(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let (domains, account) = service(&state, &headers)?;
    let Path(name) = name.map_err(super::path_rejection)?;
    domains.remove(&account, &name).await.map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordsQuery {
    /// `json` (default) or `zone` (a BIND snippet, `text/plain`).
    format: Option<String>,
}

/// The records the customer publishes, as JSON or a zone snippet.
#[utoipa::path(
    get,
    path = "/v1/domains/{domain}/records",
    tag = "domains",
    security(("api_key" = [])),
    params(("domain" = String, Path, description = "The domain, Unicode or punycode"), RecordsQuery),
    responses(
        (status = 200, description = "The records (`format=zone`: a BIND snippet)", content(
            (RecordsView = "application/json"),
            (String = "text/plain"),
        )),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `domains`), `operator_key`", body = ErrorBody),
        (status = 404, description = "`domain_not_found`, `not_enabled`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    )
)]
pub async fn records(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<RecordsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (domains, account) = service(&state, &headers)?;
    let Path(name) = name.map_err(super::path_rejection)?;
    let Query(q) =
        query.map_err(|_| malformed("the query string is not valid: use `format=zone` or nothing".into()))?;
    let s = domains.get(&account, &name).await.map_err(error)?;
    let records = domains.records(&s);
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(json!({ "domain": s.domain, "records": records })).into_response()),
        // (RecordsView's shape: `domain` and `records`.)
        Some("zone") => Ok((
            [("content-type", "text/plain; charset=utf-8")],
            herald_engine::domains::records::zone_snippet(&s, &records),
        )
            .into_response()),
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            format!("format must be json or zone, not `{other}`"),
        )),
    }
}

/// Resolves every record now and records the result.
#[utoipa::path(
    post,
    path = "/v1/domains/{domain}/verify",
    tag = "domains",
    security(("api_key" = [])),
    params(("domain" = String, Path, description = "The domain, Unicode or punycode")),
    responses(
        (status = 200, description = "The domain with its new `status` and `checks`", body = DomainView),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `domains`), `operator_key`", body = ErrorBody),
        (status = 404, description = "`domain_not_found`, `not_enabled`", body = ErrorBody),
        (status = 500, description = "`internal`: the resolver could not be built", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn verify(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<DomainView>, ApiError> {
    let (domains, account) = service(&state, &headers)?;
    let Path(name) = name.map_err(super::path_rejection)?;
    Ok(Json(view(&domains.verify(&account, &name).await.map_err(error)?)))
}

/// Publishes new keys in the idle slot; they sign at `activates_at`.
#[utoipa::path(
    post,
    path = "/v1/domains/{domain}/rotate",
    tag = "domains",
    security(("api_key" = [])),
    params(("domain" = String, Path, description = "The domain, Unicode or punycode")),
    responses(
        (status = 200, description = "The domain", body = DomainView),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `domains`), `operator_key`", body = ErrorBody),
        (status = 404, description = "`domain_not_found`, `not_enabled`", body = ErrorBody),
        (status = 409, description = "`rotation_in_progress`", body = ErrorBody),
        (status = 500, description = "`internal`: key generation or storage failed", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn rotate(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<DomainView>, ApiError> {
    let (domains, account) = service(&state, &headers)?;
    let Path(name) = name.map_err(super::path_rejection)?;
    Ok(Json(view(&domains.rotate(&account, &name).await.map_err(error)?)))
}

/// Diagnostics of a domain.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CheckReport {
    domain: String,
    ok: bool,
    #[schema(value_type = Vec<RecordCheckDoc>)]
    checks: Vec<RecordCheck>,
}

/// Diagnostics: SPF look-ups, DKIM through the CNAME, DMARC alignment, MX, bounce MX, reverse DNS.
#[utoipa::path(
    get,
    path = "/v1/domains/{domain}/check",
    tag = "domains",
    security(("api_key" = [])),
    params(("domain" = String, Path, description = "The domain, Unicode or punycode")),
    responses(
        (status = 200, description = "The findings", body = CheckReport),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `domains`), `operator_key`", body = ErrorBody),
        (status = 404, description = "`domain_not_found`, `not_enabled`", body = ErrorBody),
        (status = 500, description = "`internal`: the resolver could not be built", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    )
)]
pub async fn check(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<CheckReport>, ApiError> {
    let (domains, account) = service(&state, &headers)?;
    let Path(name) = name.map_err(super::path_rejection)?;
    let s = domains.get(&account, &name).await.map_err(error)?;
    let checks = domains.check(&account, &name).await.map_err(error)?;
    let ok = checks.iter().all(|c| c.result == herald_schemas::CheckResult::Ok);
    Ok(Json(CheckReport { domain: s.domain, ok, checks }))
}

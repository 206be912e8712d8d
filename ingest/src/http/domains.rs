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

use super::{authenticate, ApiError, ApiState};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
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
    let account = authenticate(state, headers)?;
    let domains = state.domains.clone().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_enabled", "sender domains are not enabled on this server")
    })?;
    Ok((domains, account))
}

#[derive(Serialize)]
struct Selector {
    selector: String,
    slot: u8,
    algorithm: herald_schemas::KeyAlgorithm,
    /// `active` (signs), `published` (signs at `activates_at`), `retiring` (withdrawn at
    /// `retires_at`).
    state: &'static str,
    created_at: String,
}

/// The JSON shape of a domain (no key material beyond what DNS publishes).
pub fn view(s: &DomainState) -> serde_json::Value {
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
    json!({
        "domain": s.domain,
        "unicode": idna::domain_to_unicode(&s.domain).0,
        "status": s.status,
        "added_at": rfc3339(s.added_at),
        "bounce_domain": s.bounce_domain(),
        "tracking_domain": s.tracking_domain(),
        "dmarc_rua": s.dmarc_rua,
        "bimi_logo": s.bimi_logo,
        "selectors": selectors,
        "rotated_at": rfc3339(s.rotated_at),
        "activates_at": s.pending.map(|p| rfc3339(p.activate_at)),
        "retires_at": s.retiring.map(|r| rfc3339(r.retire_at)),
        "checked_at": s.checked_at.map(rfc3339),
        "checks": s.checks,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    domain: String,
    dmarc_rua: Option<String>,
    bimi_logo: Option<String>,
    tracking_label: Option<String>,
    ed25519: Option<bool>,
}

pub async fn add(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Json<AddBody>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
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
    v["records"] = serde_json::to_value(domains.records(&s)).unwrap_or_default();
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(v)))
}

pub async fn list(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let (domains, account) = service(&state, &headers)?;
    let all = domains.list(&account).await.map_err(error)?;
    Ok(Json(json!({ "domains": all.iter().map(view).collect::<Vec<_>>() })))
}

pub async fn show(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (domains, account) = service(&state, &headers)?;
    Ok(Json(view(&domains.get(&account, &name).await.map_err(error)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    tracking_label: Option<String>,
    #[serde(default, deserialize_with = "present")]
    dmarc_rua: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    bimi_logo: Option<Option<String>>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

pub async fn update(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<UpdateBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (domains, account) = service(&state, &headers)?;
    let Json(b) = body.map_err(super::json_rejection)?;
    let req = UpdateDomain { tracking_label: b.tracking_label, dmarc_rua: b.dmarc_rua, bimi_logo: b.bimi_logo };
    Ok(Json(view(&domains.update(&account, &name, req).await.map_err(error)?)))
}

pub async fn remove(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (domains, account) = service(&state, &headers)?;
    domains.remove(&account, &name).await.map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct RecordsQuery {
    format: Option<String>,
}

pub async fn records(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<RecordsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (domains, account) = service(&state, &headers)?;
    let Query(q) =
        query.map_err(|_| malformed("the query string is not valid: use `format=zone` or nothing".into()))?;
    let s = domains.get(&account, &name).await.map_err(error)?;
    let records = domains.records(&s);
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(json!({ "domain": s.domain, "records": records })).into_response()),
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

pub async fn verify(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (domains, account) = service(&state, &headers)?;
    Ok(Json(view(&domains.verify(&account, &name).await.map_err(error)?)))
}

pub async fn rotate(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (domains, account) = service(&state, &headers)?;
    Ok(Json(view(&domains.rotate(&account, &name).await.map_err(error)?)))
}

#[derive(Serialize)]
struct CheckReport {
    domain: String,
    ok: bool,
    checks: Vec<RecordCheck>,
}

pub async fn check(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (domains, account) = service(&state, &headers)?;
    let s = domains.get(&account, &name).await.map_err(error)?;
    let checks = domains.check(&account, &name).await.map_err(error)?;
    let ok = checks.iter().all(|c| c.result == herald_schemas::CheckResult::Ok);
    Ok(Json(serde_json::to_value(CheckReport { domain: s.domain, ok, checks }).unwrap_or_default()))
}

//! `/v1/admin/accounts`: operators create, list, show, update, suspend, resume and delete
//! accounts (operator keys only, [`super::auth::operator`]). The work is in
//! `herald_engine::accounts::service`; every command answers once the projection shows it.

use super::openapi::ErrorBody;
use super::{ApiError, ApiState};
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use herald_engine::accounts::state::Status;
use herald_engine::accounts::{AccountError, AccountInfo, AccountPatch, Accounts, KeyInfo, Source, UserInfo};
use herald_engine::projector::rfc3339;
use herald_schemas::{AccountDefaults, AccountId, AccountLimits, AccountSettings, FromDomainsPolicy};
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::Arc;

/// The reply of an [`AccountError`].
pub fn error(e: AccountError) -> ApiError {
    let (status, code) = match &e {
        AccountError::NotFound(_) => (StatusCode::NOT_FOUND, "account_not_found"),
        AccountError::Exists(_) => (StatusCode::CONFLICT, "account_exists"),
        AccountError::KeyNotFound { .. } => (StatusCode::NOT_FOUND, "key_not_found"),
        AccountError::UserNotFound { .. } => (StatusCode::NOT_FOUND, "smtp_user_not_found"),
        AccountError::UserTaken(_) => (StatusCode::CONFLICT, "smtp_user_taken"),
        AccountError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        AccountError::Log(_) => (StatusCode::SERVICE_UNAVAILABLE, "log_unavailable"),
        AccountError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        AccountError::Lag(_) => (StatusCode::SERVICE_UNAVAILABLE, "projection_lag"),
    };
    let message = match &e {
        AccountError::Log(_) => {
            tracing::warn!(error = %e, "accounts: log unavailable");
            "the change was not recorded because the event log is unavailable; try again".to_owned()
        }
        AccountError::Store(_) => {
            tracing::warn!(error = %e, "accounts: store unavailable");
            "the store is unavailable; try again shortly".to_owned()
        }
        _ => e.to_string(),
    };
    ApiError::new(status, code, message)
}

/// The service and the acting operator (`operator:<name>`).
pub fn service(state: &ApiState, headers: &HeaderMap) -> Result<(Arc<Accounts>, String), ApiError> {
    let name = super::auth::operator(state, headers)?;
    let service = state.admin.clone().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_enabled", "account administration is not enabled on this server")
    })?;
    Ok((service, format!("operator:{name}")))
}

/// Default send options, named as in `POST /v1/send`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    pub inlinizecss: bool,
    pub clicktracking: bool,
    pub openstracking: bool,
    pub bouncetracking: bool,
    pub listunsubscribe: bool,
}

impl From<Defaults> for AccountDefaults {
    fn from(d: Defaults) -> Self {
        AccountDefaults {
            inline_css: d.inlinizecss,
            click_tracking: d.clicktracking,
            opens_tracking: d.openstracking,
            bounce_tracking: d.bouncetracking,
            list_unsubscribe: d.listunsubscribe,
        }
    }
}

impl From<AccountDefaults> for Defaults {
    fn from(d: AccountDefaults) -> Self {
        Defaults {
            inlinizecss: d.inline_css,
            clicktracking: d.click_tracking,
            openstracking: d.opens_tracking,
            bouncetracking: d.bounce_tracking,
            listunsubscribe: d.list_unsubscribe,
        }
    }
}

/// Which From domains the account may use: `default` (`any` if a static `[[dkim]]` key names
/// the account, else `verified`), `verified`, `any`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FromDomains {
    Default,
    Verified,
    Any,
}

impl From<FromDomains> for FromDomainsPolicy {
    fn from(f: FromDomains) -> Self {
        match f {
            FromDomains::Default => FromDomainsPolicy::Default,
            FromDomains::Verified => FromDomainsPolicy::Verified,
            FromDomains::Any => FromDomainsPolicy::Any,
        }
    }
}

impl From<FromDomainsPolicy> for FromDomains {
    fn from(f: FromDomainsPolicy) -> Self {
        match f {
            FromDomainsPolicy::Default => FromDomains::Default,
            FromDomainsPolicy::Verified => FromDomains::Verified,
            FromDomainsPolicy::Any => FromDomains::Any,
        }
    }
}

/// A new account; everything is optional.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// 1-64 of `a-z 0-9 . _ -`; default: `acct_…`.
    id: Option<String>,
    name: Option<String>,
    /// The sending pool; default: the default pool.
    pool: Option<String>,
    defaults: Option<Defaults>,
    /// Messages (one per recipient) in any 24 hours.
    #[schema(minimum = 1)]
    messages_per_day: Option<u64>,
    /// Messages (one per recipient) per second, per node.
    #[schema(minimum = 1)]
    messages_per_second: Option<u32>,
    from_domains: Option<FromDomains>,
    /// Where the bounce and complaint digest goes.
    report_email: Option<String>,
    /// Seconds per digest (within `[reports] min_interval_secs..max_interval_secs`);
    /// default: `[reports] interval_secs` (hourly).
    #[schema(minimum = 1)]
    report_interval_secs: Option<u32>,
    /// Networks that may send over SMTP without AUTH, as this account.
    relay_networks: Option<Vec<String>>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// Settings to change; absent fields stay, `null` clears.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccount {
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pool: Option<Option<String>>,
    defaults: Option<Defaults>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 1)]
    messages_per_day: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1)]
    messages_per_second: Option<Option<u32>>,
    from_domains: Option<FromDomains>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    report_email: Option<Option<String>>,
    /// `null`: back to the default interval.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1)]
    report_interval_secs: Option<Option<u32>>,
    relay_networks: Option<Vec<String>>,
}

/// Why an account is suspended.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendBody {
    reason: Option<String>,
}

/// An API key as listed (the key itself is shown only once, when issued).
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub key_id: String,
    pub name: String,
    /// The first characters of the key.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<String>,
    pub created_at: Option<String>,
    pub revoked_at: Option<String>,
    /// `config` (an `api_keys` entry) or `api`.
    pub source: String,
}

/// An SMTP user as listed.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub username: String,
    pub added_at: Option<String>,
    /// `config` or `api`.
    pub source: String,
}

/// An account as operators see it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AccountView {
    id: String,
    name: String,
    /// `active` or `suspended`.
    status: String,
    suspended_reason: Option<String>,
    suspended_at: Option<String>,
    /// `config` (only in the config) or `api` (in the projection).
    source: String,
    /// Where it was first defined: `config` or `api`.
    origin: String,
    created_at: Option<String>,
    updated_at: Option<String>,
    pool: Option<String>,
    defaults: Defaults,
    messages_per_day: Option<u64>,
    messages_per_second: Option<u32>,
    from_domains: FromDomains,
    report_email: Option<String>,
    /// Seconds per bounce digest; `null`: the default (`[reports] interval_secs`).
    report_interval_secs: Option<u32>,
    relay_networks: Vec<String>,
    keys: Vec<KeyView>,
    smtp_users: Vec<UserView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AccountList {
    accounts: Vec<AccountView>,
}

fn source(s: Source) -> String {
    match s {
        Source::Config => "config".into(),
        Source::Api => "api".into(),
    }
}

pub fn key_view(k: KeyInfo) -> KeyView {
    KeyView {
        key_id: k.key_id,
        name: k.name,
        prefix: k.prefix,
        scopes: k.scopes,
        expires_at: k.expires_at.map(rfc3339),
        created_at: k.created_at.map(rfc3339),
        revoked_at: k.revoked_at.map(rfc3339),
        source: source(k.source),
    }
}

pub fn user_view(u: UserInfo) -> UserView {
    UserView { username: u.username, added_at: u.added_at.map(rfc3339), source: source(u.source) }
}

fn view(a: AccountInfo) -> AccountView {
    let s = a.settings;
    AccountView {
        name: if s.name.is_empty() { a.id.0.clone() } else { s.name },
        id: a.id.0,
        status: match a.status {
            Status::Active => "active".into(),
            Status::Suspended => "suspended".into(),
        },
        suspended_reason: a.suspended_reason,
        suspended_at: a.suspended_at.map(rfc3339),
        source: source(a.source),
        origin: match a.origin {
            herald_schemas::AccountOrigin::Api => "api".into(),
            herald_schemas::AccountOrigin::Config => "config".into(),
        },
        created_at: a.created_at.map(rfc3339),
        updated_at: a.updated_at.map(rfc3339),
        pool: s.pool,
        defaults: s.defaults.into(),
        messages_per_day: s.limits.messages_per_day,
        messages_per_second: s.limits.messages_per_second,
        from_domains: s.from_domains.into(),
        report_email: s.report_email,
        report_interval_secs: a.report_interval_secs,
        relay_networks: s.relay_networks,
        keys: a.keys.into_iter().map(key_view).collect(),
        smtp_users: a.smtp_users.into_iter().map(user_view).collect(),
    }
}

/// 422 `invalid_request` for a pool this node's shaping does not know (`[[pools]]`).
fn known_pool(state: &ApiState, pool: Option<&str>) -> Result<(), ApiError> {
    match (pool, &state.shaping) {
        (Some(name), Some(shaper)) if !shaper.has_pool(name) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("no pool named `{name:.64}` in [[pools]]"),
        )),
        _ => Ok(()),
    }
}

/// Creates an account.
#[utoipa::path(
    post,
    path = "/v1/admin/accounts",
    tag = "admin",
    security(("operator_key" = [])),
    request_body = CreateAccount,
    responses(
        (status = 201, description = "Created", body = AccountView),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_enabled`", body = ErrorBody),
        (status = 409, description = "`account_exists`", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Json<CreateAccount>, JsonRejection>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    let (service, actor) = service(&state, &headers)?;
    let Json(b) = body.map_err(super::json_rejection)?;
    let settings = AccountSettings {
        name: b.name.unwrap_or_default(),
        pool: b.pool,
        defaults: b.defaults.unwrap_or_default().into(),
        limits: AccountLimits { messages_per_day: b.messages_per_day, messages_per_second: b.messages_per_second },
        from_domains: b.from_domains.map(Into::into).unwrap_or_default(),
        report_email: b.report_email,
        relay_networks: b.relay_networks.unwrap_or_default(),
    };
    known_pool(&state, settings.pool.as_deref())?;
    let info = service.create(&actor, b.id, settings, b.report_interval_secs).await.map_err(error)?;
    Ok((StatusCode::CREATED, Json(view(info))))
}

/// Every account, by id: those created through the API and those of the config.
#[utoipa::path(
    get,
    path = "/v1/admin/accounts",
    tag = "admin",
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The accounts", body = AccountList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_enabled`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Result<Json<AccountList>, ApiError> {
    let (service, _) = service(&state, &headers)?;
    let all = service.list().await.map_err(error)?;
    Ok(Json(AccountList { accounts: all.into_iter().map(view).collect() }))
}

fn id(p: Result<Path<String>, PathRejection>) -> Result<AccountId, ApiError> {
    let Path(id) = p.map_err(super::path_rejection)?;
    Ok(AccountId(id))
}

/// One account, with its keys (never the keys themselves) and SMTP users.
#[utoipa::path(
    get,
    path = "/v1/admin/accounts/{id}",
    tag = "admin",
    security(("operator_key" = [])),
    params(("id" = String, Path, description = "The account id")),
    responses(
        (status = 200, description = "The account", body = AccountView),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`account_not_found`, `not_enabled`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<AccountView>, ApiError> {
    let (service, _) = service(&state, &headers)?;
    Ok(Json(view(service.get(&id(path)?).await.map_err(error)?)))
}

/// Changes an account's settings.
#[utoipa::path(
    patch,
    path = "/v1/admin/accounts/{id}",
    tag = "admin",
    security(("operator_key" = [])),
    params(("id" = String, Path, description = "The account id")),
    request_body = UpdateAccount,
    responses(
        (status = 200, description = "The account", body = AccountView),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`account_not_found`, `not_enabled`", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<UpdateAccount>, JsonRejection>,
) -> Result<Json<AccountView>, ApiError> {
    let (service, actor) = service(&state, &headers)?;
    let id = id(path)?;
    let Json(b) = body.map_err(super::json_rejection)?;
    known_pool(&state, b.pool.as_ref().and_then(|p| p.as_deref()))?;
    let patch = AccountPatch {
        name: b.name,
        pool: b.pool,
        defaults: b.defaults.map(Into::into),
        messages_per_day: b.messages_per_day,
        messages_per_second: b.messages_per_second,
        from_domains: b.from_domains.map(Into::into),
        report_email: b.report_email,
        relay_networks: b.relay_networks,
        report_interval_secs: b.report_interval_secs,
    };
    Ok(Json(view(service.update(&actor, &id, patch).await.map_err(error)?)))
}

/// Suspends an account: its sends are refused (REST 403 `account_suspended`, SMTP 550
/// 5.7.1) and its queued mail waits, without using up attempts.
#[utoipa::path(
    post,
    path = "/v1/admin/accounts/{id}/suspend",
    tag = "admin",
    security(("operator_key" = [])),
    params(("id" = String, Path, description = "The account id")),
    request_body(content = SuspendBody, description = "Optional; the reason is shown to operators"),
    responses(
        (status = 200, description = "The account", body = AccountView),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`account_not_found`, `not_enabled`", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn suspend(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<Json<AccountView>, ApiError> {
    let (service, actor) = service(&state, &headers)?;
    let id = id(path)?;
    let body = body.map_err(super::bytes_rejection)?;
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        String::new()
    } else {
        let b: SuspendBody = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", format!("the JSON body is not valid: {e}"))
        })?;
        b.reason.unwrap_or_default()
    };
    Ok(Json(view(service.suspend(&actor, &id, reason).await.map_err(error)?)))
}

/// Resumes a suspended account; its held mail goes out.
#[utoipa::path(
    post,
    path = "/v1/admin/accounts/{id}/resume",
    tag = "admin",
    security(("operator_key" = [])),
    params(("id" = String, Path, description = "The account id")),
    responses(
        (status = 200, description = "The account", body = AccountView),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`account_not_found`, `not_enabled`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn resume(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<AccountView>, ApiError> {
    let (service, actor) = service(&state, &headers)?;
    Ok(Json(view(service.resume(&actor, &id(path)?).await.map_err(error)?)))
}

/// Deletes an account: its keys and users stop working and its queued mail is failed
/// without being sent. A config account stays deleted even though the config lists it.
#[utoipa::path(
    delete,
    path = "/v1/admin/accounts/{id}",
    tag = "admin",
    security(("operator_key" = [])),
    params(("id" = String, Path, description = "The account id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`account_not_found`, `not_enabled`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let (service, actor) = service(&state, &headers)?;
    service.delete(&actor, &id(path)?).await.map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

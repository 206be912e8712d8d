//! An account's credentials, for operators: API keys (`/v1/admin/accounts/{id}/keys`:
//! issue, shown once; list; revoke) and SMTP users (`…/smtp-users`: add with a password,
//! hashed here with argon2, or with a PHC hash; list; remove).

use super::admin::{error, key_view, service, user_view, KeyView, UserView};
use super::openapi::ErrorBody;
use super::{ApiError, ApiState};
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use herald_engine::accounts::NewKeyRequest;
use herald_schemas::AccountId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A key to issue.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label for people.
    name: Option<String>,
    /// Any of `send`, `read`, `domains`, `suppressions`, `webhooks`.
    scopes: Vec<String>,
    /// RFC 3339; the key stops working then. Default: never.
    expires_at: Option<String>,
}

/// A key just issued: `key` is shown this once and never again.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IssuedKey {
    key: String,
    #[serde(flatten)]
    info: KeyView,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyList {
    keys: Vec<KeyView>,
}

/// An SMTP user: `password` (hashed here with argon2id) or `password_hash` (a PHC string),
/// not both. Adding an existing user name replaces its password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddUser {
    username: String,
    /// At least 12 characters.
    password: Option<String>,
    /// `$argon2id$…`, as `herald accounts hash-password` prints.
    password_hash: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserList {
    smtp_users: Vec<UserView>,
}

fn account(p: Result<Path<String>, PathRejection>) -> Result<AccountId, ApiError> {
    let Path(id) = p.map_err(super::path_rejection)?;
    Ok(AccountId(id))
}

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", m)
}

/// Issues an API key; the reply is the only place the key ever appears.
#[utoipa::path(
    post,
    path = "/v1/admin/accounts/{id}/keys",
    tag = "admin",
    security(("operator_key" = [])),
    params(("id" = String, Path, description = "The account id")),
    request_body = CreateKey,
    responses(
        (status = 201, description = "The key, shown once", body = IssuedKey),
        (status = 400, description = "`malformed_request`, `invalid_time`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`account_not_found`, `not_enabled`", body = ErrorBody),
        (status = 422, description = "`invalid_request`: an unknown scope, no scope, an expiry in the past", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn create_key(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<CreateKey>, JsonRejection>,
) -> Result<(StatusCode, Json<IssuedKey>), ApiError> {
    let (service, actor) = service(&state, &headers)?;
    let id = account(path)?;
    let Json(b) = body.map_err(super::json_rejection)?;
    let expires_at = b.expires_at.as_deref().map(|t| super::stats::parse_time("expires_at", t)).transpose()?;
    let req = NewKeyRequest { name: b.name.unwrap_or_default(), scopes: b.scopes, expires_at };
    let issued = service.create_key(&actor, &id, req).await.map_err(error)?;
    Ok((StatusCode::CREATED, Json(IssuedKey { key: issued.key, info: key_view(issued.info) })))
}

/// The account's keys, revoked ones included (never the keys themselves).
#[utoipa::path(
    get,
    path = "/v1/admin/accounts/{id}/keys",
    tag = "admin",
    security(("operator_key" = [])),
    params(("id" = String, Path, description = "The account id")),
    responses(
        (status = 200, description = "The keys", body = KeyList),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`account_not_found`, `not_enabled`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    )
)]
pub async fn keys(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<KeyList>, ApiError> {
    let (service, _) = service(&state, &headers)?;
    let keys = service.keys(&account(path)?).await.map_err(error)?;
    Ok(Json(KeyList { keys: keys.into_iter().map(key_view).collect() }))
}

/// Revokes a key (also a key of the config: it stays revoked while the config lists it).
#[utoipa::path(
    delete,
    path = "/v1/admin/accounts/{id}/keys/{key_id}",
    tag = "admin",
    security(("operator_key" = [])),
    params(
        ("id" = String, Path, description = "The account id"),
        ("key_id" = String, Path, description = "The key's id (`key_…`, or `cfg_…` for a config key)"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`account_not_found`, `key_not_found`, `not_enabled`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn revoke_key(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let (service, actor) = service(&state, &headers)?;
    let Path((id, key_id)) = path.map_err(super::path_rejection)?;
    service.revoke_key(&actor, &AccountId(id), &key_id).await.map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds an SMTP user (or replaces its password).
#[utoipa::path(
    post,
    path = "/v1/admin/accounts/{id}/smtp-users",
    tag = "admin",
    security(("operator_key" = [])),
    params(("id" = String, Path, description = "The account id")),
    request_body = AddUser,
    responses(
        (status = 201, description = "Added", body = UserView),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`account_not_found`, `not_enabled`", body = ErrorBody),
        (status = 409, description = "`smtp_user_taken`: another account has the name", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        (status = 500, description = "`internal`: hashing the password failed", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn add_user(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<AddUser>, JsonRejection>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let (service, actor) = service(&state, &headers)?;
    let id = account(path)?;
    let Json(b) = body.map_err(super::json_rejection)?;
    let hash = match (b.password, b.password_hash) {
        (Some(p), None) => {
            if p.chars().count() < 12 || p.len() > 1024 {
                return Err(invalid("`password` must be 12 to 1024 characters"));
            }
            tokio::task::spawn_blocking(move || crate::smtp::auth::hash_password(&p))
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(|| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "hashing the password failed")
                })?
        }
        (None, Some(h)) => h,
        _ => return Err(invalid("give `password` or `password_hash`, one of them")),
    };
    let user = service.add_user(&actor, &id, &b.username, hash).await.map_err(error)?;
    Ok((StatusCode::CREATED, Json(user_view(user))))
}

/// The account's SMTP users (never their hashes).
#[utoipa::path(
    get,
    path = "/v1/admin/accounts/{id}/smtp-users",
    tag = "admin",
    security(("operator_key" = [])),
    params(("id" = String, Path, description = "The account id")),
    responses(
        (status = 200, description = "The users", body = UserList),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`account_not_found`, `not_enabled`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    )
)]
pub async fn users(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<UserList>, ApiError> {
    let (service, _) = service(&state, &headers)?;
    let users = service.users(&account(path)?).await.map_err(error)?;
    Ok(Json(UserList { smtp_users: users.into_iter().map(user_view).collect() }))
}

/// Removes an SMTP user (also one of the config).
#[utoipa::path(
    delete,
    path = "/v1/admin/accounts/{id}/smtp-users/{username}",
    tag = "admin",
    security(("operator_key" = [])),
    params(
        ("id" = String, Path, description = "The account id"),
        ("username" = String, Path, description = "The AUTH user name"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "`malformed_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`account_not_found`, `smtp_user_not_found`, `not_enabled`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`, `projection_lag`", body = ErrorBody),
    )
)]
pub async fn remove_user(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let (service, actor) = service(&state, &headers)?;
    let Path((id, username)) = path.map_err(super::path_rejection)?;
    service.remove_user(&actor, &AccountId(id), &username).await.map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

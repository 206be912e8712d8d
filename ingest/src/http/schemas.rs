//! OpenAPI shapes of replies that handlers build as JSON values (the suppression list, the
//! bounce list, the shaping commands) and of request bodies they decode by hand. Only the
//! document uses these types; the handlers' `json!` and these must agree (the schemathesis
//! run and `ops/tests/openapi.rs` check the document against real replies).
#![allow(dead_code)]

use utoipa::ToSchema;

/// One suppression-list entry.
#[derive(ToSchema)]
pub struct Suppression {
    /// The address, domain lower-cased.
    address: String,
    /// `hard_bounce`, `complaint`, `unsubscribe`, `manual`, `soft_bounces`, …
    reason: String,
    detail: String,
    message_id: Option<String>,
    /// RFC 3339; `null`: never.
    expires_at: Option<String>,
    created_at: String,
}

/// A page of the suppression list.
#[derive(ToSchema)]
pub struct SuppressionPage {
    suppressions: Vec<Suppression>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// `PUT /v1/suppressions/{address}` (every field optional; an empty body is a manual entry).
#[derive(ToSchema)]
pub struct PutSuppression {
    reason: Option<String>,
    detail: Option<String>,
    /// RFC 3339.
    expires_at: Option<String>,
}

/// How many entries an import added or replaced.
#[derive(ToSchema)]
pub struct Imported {
    imported: u64,
}

/// One bounce.
#[derive(ToSchema)]
pub struct Bounce {
    id: String,
    message_id: String,
    recipient: String,
    /// `hard`, `soft`, `undetermined`.
    #[schema(rename = "type")]
    bounce_type: String,
    class: String,
    /// `failed` or `delayed`.
    action: String,
    /// `sync` (the receiving server's reply) or `dsn`.
    source: String,
    code: Option<u16>,
    enhanced: Option<String>,
    diagnostic: String,
    remote_mta: Option<String>,
    reporting_mta: Option<String>,
    at: String,
}

/// A page of bounces.
#[derive(ToSchema)]
pub struct BouncePage {
    bounces: Vec<Bounce>,
    next_cursor: Option<String>,
}

/// `POST /v1/admin/providers/{name}/suspend`.
#[derive(ToSchema)]
pub struct SuspendProvider {
    /// `30m`, `2h`, `1d`, or seconds (1 s to 30 days).
    duration: String,
    source: Option<String>,
    /// Required for `default`, refused for other providers.
    domain: Option<String>,
    reason: Option<String>,
}

/// A suspension in force.
#[derive(ToSchema)]
pub struct ProviderSuspended {
    id: String,
    provider: String,
    source: Option<String>,
    domain: Option<String>,
    until: String,
}

/// `POST /v1/admin/providers/{name}/resume`.
#[derive(ToSchema)]
pub struct ResumeProvider {
    source: Option<String>,
    domain: Option<String>,
    id: Option<String>,
    reason: Option<String>,
}

/// How many throttles were lifted.
#[derive(ToSchema)]
pub struct ProviderResumed {
    provider: String,
    lifted: u64,
}

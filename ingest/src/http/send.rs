//! `POST /v1/send`: accept a MIME message for one or more recipients.
//!
//! Accepts `application/json` or `application/x-www-form-urlencoded` with the fields
//! `envelope`, `recipient` (one, a list, or a repeated form field), `body`, and the
//! optional booleans `inlinizecss`, `clicktracking`, `bouncetracking`, `openstracking`,
//! `listunsubscribe`. An option not given comes from the body's `X-Herald-Options` header
//! (removed), else from the account's defaults ([`crate::options`]).
//! The message goes through the checks SMTP uses too ([`crate::message`]: 422
//! `invalid_mime`), its From domains must be the account's ([`crate::sender`]: 422
//! `from_domain_not_verified`), and a recipient named twice is sent once. An
//! `Idempotency-Key` makes retries safe ([`super::idempotency`]). Replies 202 with one id
//! per recipient only after every event is durably in the log; any refusal appends nothing.

use super::openapi::ErrorBody;
use super::{authenticate, idempotency, ApiError, ApiState};
use crate::accept::{self, crlf};
use crate::address::{parse_mailbox, Mailbox};
use crate::message;
use crate::options::{self, Overrides};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_engine::accounts::{state::Status, Scope};
use herald_engine::submit::SubmitError;
use herald_schemas::Timestamp;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

/// The request once decoded, whatever its encoding.
#[derive(Debug, Default)]
struct SendRequest {
    envelope: Option<String>,
    recipients: Vec<String>,
    body: Option<String>,
    options: Overrides,
}

/// The 202 reply: one id per recipient, in request order.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    messages: Vec<AcceptedMessage>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct AcceptedMessage {
    recipient: String,
    /// 32 lower-case hex digits (UUIDv7).
    id: String,
}

/// One recipient, or several.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
enum RecipientsDoc {
    One(String),
    Many(Vec<String>),
}

/// A message to send (JSON; the form encoding has the same fields, `recipient` repeated).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct SendDoc {
    /// Envelope sender (MAIL FROM), a mailbox.
    envelope: String,
    recipient: RecipientsDoc,
    /// The full RFC 5322 message.
    body: String,
    inlinizecss: Option<bool>,
    clicktracking: Option<bool>,
    bouncetracking: Option<bool>,
    openstracking: Option<bool>,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// Accepts one MIME message for one or more recipients.
#[utoipa::path(
    post,
    path = "/v1/send",
    tag = "send",
    security(("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request safe: the same key and request within 24 hours replays the first reply")),
    request_body(content(
        (SendDoc = "application/json"),
        (SendDoc = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 202, description = "Every recipient's message is durably in the log", body = Accepted),
        (status = 400, description = "`malformed_request`, `missing_field`, `invalid_idempotency_key`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`account_suspended`, `insufficient_scope` (needs `send`), `operator_key`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_in_use`", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_address`, `too_many_recipients`, `invalid_mime`, `from_domain_not_verified`, `idempotency_key_reused`", body = ErrorBody),
        (status = 429, description = "`rate_limited` (per second), `daily_limit_exceeded`", body = ErrorBody),
        (status = 503, description = "`log_unavailable`, `store_unavailable`", body = ErrorBody),
    )
)]
pub async fn handle(State(state): State<Arc<ApiState>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Send)?;
    let account = principal.account;
    let settings = {
        let snapshot = state.accounts.current();
        let a = snapshot.account(&account).cloned();
        match a {
            Some(a) if a.status == Status::Suspended => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "account_suspended",
                    "this account is suspended and may not send; contact the operator",
                ))
            }
            Some(a) => a.settings.clone(),
            None => Default::default(),
        }
    };
    let idempotency_key = idempotency::key(&headers)?;
    // Encodings inflate the MIME body (JSON escapes, percent-encoding): allow 3x + 64 KiB
    // for the request, then hold the decoded `body` to the configured limit.
    let request_limit = state.max_body_bytes.saturating_mul(3).saturating_add(64 * 1024);
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the message body is limited to {} bytes", state.max_body_bytes),
        )
    };
    let raw = axum::body::to_bytes(body, request_limit).await.map_err(|e| {
        if e.into_inner().downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            too_large()
        } else {
            bad("malformed_request", "the request body could not be read completely")
        }
    })?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let request = match mime.as_str() {
        "application/json" => from_json(&raw)?,
        "application/x-www-form-urlencoded" => from_form(&raw)?,
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "Content-Type must be application/json or application/x-www-form-urlencoded, not `{other:.60}`"
                ),
            ))
        }
    };
    let envelope =
        request.envelope.ok_or_else(|| bad("missing_field", "`envelope` (the envelope sender) is required"))?;
    if request.recipients.is_empty() {
        return Err(bad("missing_field", "`recipient` is required"));
    }
    if request.recipients.len() > state.max_recipients {
        return Err(unprocessable(
            "too_many_recipients",
            format!("{} recipients; at most {} per request", request.recipients.len(), state.max_recipients),
        ));
    }
    let body = request.body.ok_or_else(|| bad("missing_field", "`body` (the MIME message) is required"))?;
    // The limit applies to what the client sent, after CRLF normalization.
    let body = crlf(body.into_bytes());
    let fingerprint = idempotency_key.as_ref().map(|_| {
        let o = request.options;
        let flags = [o.inline_css, o.click_tracking, o.bounce_tracking, o.opens_tracking, o.list_unsubscribe]
            .map(|f| f.map_or(2, u8::from));
        let parts = [envelope.as_bytes(), &body, &flags].into_iter();
        idempotency::fingerprint(parts.chain(request.recipients.iter().map(|r| r.as_bytes())))
    });
    if body.len() > state.max_body_bytes {
        return Err(too_large());
    }
    let sender = parse_mailbox(&envelope).map_err(|e| unprocessable("invalid_address", format!("envelope: {e}")))?;
    let recipients = recipients(&request.recipients)?;
    let (body, from_header) = options::take_header(body).map_err(|e| unprocessable("invalid_options", e))?;
    let defaults: herald_schemas::SendOptions = settings.defaults.into();
    let send_options = request.options.over(from_header.over(defaults));
    let stamp = message::Stamp { hostname: &state.hostname, now: Timestamp::now() };
    let prepared = message::prepare(body, &stamp).map_err(|e| unprocessable("invalid_mime", e.to_string()))?;
    state
        .sender
        .check(&account, &prepared.from_domains)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "from_domain_not_verified", e.to_string()))?;

    let count = recipients.len();
    // The body travels inline, or is stored once for a fan-out (durable before the events).
    let body = state.submitter.place_body(&account, prepared.message, recipients.len()).await.map_err(|e| match e {
        e @ SubmitError::FanoutTooLarge { .. } => unprocessable("fanout_too_large", e.to_string()),
        SubmitError::Log(e) => {
            tracing::warn!(error = %e, "send: storing the body failed; request refused");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "log_unavailable",
                "the message was not accepted because the event log is unavailable; try again",
            )
        }
    })?;
    let (events, accepted) = accept::build_events(&account, &sender, recipients, send_options, body);
    let probe = accepted[0].id.clone();
    let messages = accepted.into_iter().map(|a| AcceptedMessage { recipient: a.recipient, id: a.id.0 }).collect();
    let reply = serde_json::to_string(&Accepted { messages }).expect("a reply serializes");
    let held = match (idempotency_key, fingerprint) {
        (Some(key), Some(fingerprint)) => {
            match idempotency::begin(state.store.as_ref(), &account, key, fingerprint, reply.clone(), probe).await? {
                idempotency::Begin::Replay(first) => return Ok(accepted_reply(first, true)),
                idempotency::Begin::Fresh(held) => Some(held),
            }
        }
        _ => None,
    };
    // Limits last, after an idempotent replay (which sends nothing) was answered.
    let within = match state.limits.rate(&account, &settings.limits, count) {
        Ok(()) => state.limits.daily(&account, &settings.limits, count).await,
        Err(e) => Err(e),
    };
    if let Err(e) = within {
        if let Some(held) = held {
            held.finish(state.store.as_ref(), false).await;
        }
        return Err(limited(e));
    }
    let appended = state.submitter.submit(events).await;
    if let Some(held) = held {
        held.finish(state.store.as_ref(), appended.is_ok()).await;
    }
    appended.map_err(|e| {
        tracing::warn!(error = %e, "send: append failed; request refused");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "log_unavailable",
            "the message was not accepted because the event log is unavailable; try again",
        )
    })?;
    Ok(accepted_reply(reply, false))
}

/// 429 for a limit, 503 when the daily count cannot be read.
fn limited(e: crate::limits::Exceeded) -> ApiError {
    use crate::limits::Exceeded;
    let code = match e {
        Exceeded::Rate { .. } | Exceeded::RateBurst { .. } => "rate_limited",
        Exceeded::Daily { .. } => "daily_limit_exceeded",
        Exceeded::Unavailable => {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store is unavailable; try again shortly",
            )
        }
    };
    metrics::counter!("herald_ingest_limited_total", "limit" => code).increment(1);
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, e.to_string())
}

/// 202 with the reply body; `Idempotent-Replayed: true` when it repeats an earlier reply.
fn accepted_reply(body: String, replayed: bool) -> Response {
    let mut r = (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if replayed {
        r.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
    }
    r
}

/// Checks every recipient; a recipient named twice (domains compared without case) is
/// sent once, in the order first named.
fn recipients(raw: &[String]) -> Result<Vec<Mailbox>, ApiError> {
    let mut seen = std::collections::HashSet::with_capacity(raw.len());
    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        let m = parse_mailbox(r).map_err(|e| unprocessable("invalid_address", format!("recipient: {e}")))?;
        if seen.insert(m.address.clone()) {
            out.push(m);
        }
    }
    Ok(out)
}

/// The JSON fields of a request, for error messages.
const FIELDS: &str =
    "envelope, recipient, body, inlinizecss, clicktracking, bouncetracking, openstracking, listunsubscribe";

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Decodes a JSON request by hand, so that every error names the field and what it must
/// be (serde's messages name Rust types).
fn from_json(raw: &[u8]) -> Result<SendRequest, ApiError> {
    let value: Value = serde_json::from_slice(raw).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Eof => "the JSON request body ends early".to_owned(),
            _ => format!("the request body is not valid JSON (line {}, column {})", e.line(), e.column()),
        };
        bad("malformed_request", what)
    })?;
    let Value::Object(fields) = value else {
        return Err(bad("malformed_request", format!("the request body must be a JSON object, not {}", kind(&value))));
    };
    let mut r = SendRequest::default();
    for (name, v) in fields {
        let string = |v: Value| match v {
            Value::String(s) => Ok(s),
            other => Err(bad("malformed_request", format!("`{name}` must be a string, not {}", kind(&other)))),
        };
        match name.as_str() {
            "envelope" => r.envelope = Some(string(v)?),
            "body" => r.body = Some(string(v)?),
            "recipient" => {
                let list = match v {
                    Value::String(s) => vec![Value::String(s)],
                    Value::Array(items) => items,
                    other => {
                        return Err(bad(
                            "malformed_request",
                            format!("`recipient` must be a string or a list of strings, not {}", kind(&other)),
                        ))
                    }
                };
                for item in list {
                    match item {
                        Value::String(s) => r.recipients.push(s),
                        other => {
                            return Err(bad(
                                "malformed_request",
                                format!("every `recipient` must be a string, not {}", kind(&other)),
                            ))
                        }
                    }
                }
            }
            "inlinizecss" => r.options.inline_css = json_flag(&name, v)?,
            "clicktracking" => r.options.click_tracking = json_flag(&name, v)?,
            "bouncetracking" => r.options.bounce_tracking = json_flag(&name, v)?,
            "openstracking" => r.options.opens_tracking = json_flag(&name, v)?,
            "listunsubscribe" => r.options.list_unsubscribe = json_flag(&name, v)?,
            other => {
                return Err(bad("malformed_request", format!("unknown field `{other:.60}`; the fields are {FIELDS}")))
            }
        }
    }
    Ok(r)
}

fn json_flag(name: &str, v: Value) -> Result<Option<bool>, ApiError> {
    match v {
        Value::Bool(b) => Ok(Some(b)),
        Value::Null => Ok(None),
        Value::String(t) => parse_bool(name, &t).map(Some),
        other => Err(bad("malformed_request", format!("`{name}` must be a boolean, not {}", kind(&other)))),
    }
}

fn from_form(raw: &[u8]) -> Result<SendRequest, ApiError> {
    let mut r = SendRequest::default();
    for (key, value) in form_urlencoded::parse(raw) {
        let value = value.into_owned();
        match key.as_ref() {
            "envelope" => r.envelope = Some(value),
            "recipient" | "recipient[]" => r.recipients.push(value),
            "body" => r.body = Some(value),
            "inlinizecss" | "clicktracking" | "bouncetracking" | "openstracking" | "listunsubscribe" => {
                r.options.set(&key, &value).map_err(|e| bad("malformed_request", e))?
            }
            other => {
                return Err(bad(
                    "malformed_request",
                    format!("unknown form field `{other:.60}`; the fields are {FIELDS}"),
                ))
            }
        }
    }
    Ok(r)
}

fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    options::parse_bool(v)
        .ok_or_else(|| bad("malformed_request", format!("`{name}` must be a boolean (true or false), not `{v:.40}`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_error(raw: &str) -> String {
        let e = from_json(raw.as_bytes()).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "malformed_request"));
        e.message
    }

    #[test]
    fn json_errors_are_sentences() {
        assert_eq!(
            json_error(r#"{"recipient":42}"#),
            "`recipient` must be a string or a list of strings, not a number"
        );
        assert_eq!(json_error(r#"{"recipient":["a@b.test",7]}"#), "every `recipient` must be a string, not a number");
        assert_eq!(json_error(r#"{"envelope":{}}"#), "`envelope` must be a string, not an object");
        assert_eq!(json_error(r#"{"clicktracking":3}"#), "`clicktracking` must be a boolean, not a number");
        assert!(json_error(r#"{"bogus":1}"#).starts_with("unknown field `bogus`; the fields are envelope"));
        assert_eq!(json_error("[1]"), "the request body must be a JSON object, not a list");
        assert_eq!(json_error(r#"{"a": "#), "the JSON request body ends early");
        assert_eq!(json_error("{x}"), "the request body is not valid JSON (line 1, column 2)");
        let r = from_json(br#"{"recipient":"a@b.test","clicktracking":"yes","openstracking":null}"#).unwrap();
        assert_eq!(r.recipients, vec!["a@b.test"]);
        assert_eq!((r.options.click_tracking, r.options.opens_tracking), (Some(true), None));
    }

    #[test]
    fn duplicate_recipients_are_sent_once() {
        let raw: Vec<String> =
            ["Bob@Example.org", "bob@EXAMPLE.org", "bob@example.org", "alice@example.org"].map(String::from).into();
        let r = recipients(&raw).unwrap();
        let addresses: Vec<&str> = r.iter().map(|m| m.address.as_str()).collect();
        // The local part keeps its case (RFC 5321 §2.4); only the domain is case-blind.
        assert_eq!(addresses, vec!["Bob@example.org", "bob@example.org", "alice@example.org"]);
    }

    #[test]
    fn form_repeated_recipients() {
        let r = from_form(b"envelope=a%40b.test&recipient=x%40y.test&recipient=z%40w.test&body=x&clicktracking=true")
            .unwrap();
        assert_eq!(r.recipients, vec!["x@y.test", "z@w.test"]);
        assert_eq!((r.options.click_tracking, r.options.inline_css), (Some(true), None));
        assert!(from_form(b"bogus=1").is_err());
    }
}

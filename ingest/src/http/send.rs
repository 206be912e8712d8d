//! `POST /v1/send`: accept a MIME message for one or more recipients.
//!
//! Accepts `application/json` or `application/x-www-form-urlencoded` with the fields
//! `envelope`, `recipient` (one, a list, or a repeated form field), `body`, and the
//! optional booleans `inlinizecss`, `clicktracking`, `bouncetracking`, `openstracking`.
//! Replies 202 with one id per recipient only after every event is durably in the log;
//! any refusal appends nothing.

use super::{authenticate, ApiError, ApiState};
use crate::accept::{self, crlf};
use crate::address::parse_mailbox;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use herald_engine::log::LogError;
use herald_engine::submit::SubmitError;
use herald_schemas::SendOptions;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The request once decoded, whatever its encoding.
#[derive(Debug, Default)]
struct SendRequest {
    envelope: Option<String>,
    recipients: Vec<String>,
    body: Option<String>,
    options: SendOptions,
}

#[derive(Serialize)]
pub struct Accepted {
    messages: Vec<AcceptedMessage>,
}

#[derive(Serialize)]
struct AcceptedMessage {
    recipient: String,
    id: String,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

pub async fn handle(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let account = authenticate(&state, &headers)?;
    // Encodings inflate the MIME body (JSON escapes, percent-encoding): allow 3x + 64 KiB
    // for the request, then hold the decoded `body` to the configured limit.
    let request_limit = state.max_body_bytes.saturating_mul(3).saturating_add(64 * 1024);
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("message body is limited to {} bytes", state.max_body_bytes),
        )
    };
    let raw = axum::body::to_bytes(body, request_limit).await.map_err(|e| {
        let e = e.into_inner();
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            too_large()
        } else {
            bad("malformed_request", format!("could not read the request body: {e}"))
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
                format!("Content-Type must be application/json or application/x-www-form-urlencoded, not `{other}`"),
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
    // The limit applies to what is stored and sent: the body after CRLF normalization.
    let body = crlf(body.into_bytes());
    if body.len() > state.max_body_bytes {
        return Err(too_large());
    }
    let sender = parse_mailbox(&envelope).map_err(|e| unprocessable("invalid_address", format!("envelope: {e}")))?;
    let mut recipients = Vec::with_capacity(request.recipients.len());
    for r in &request.recipients {
        recipients.push(parse_mailbox(r).map_err(|e| unprocessable("invalid_address", format!("recipient: {e}")))?);
    }
    check_mime(&body)?;

    let unavailable = |e: LogError| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "log_unavailable", format!("not accepted, try again: {e}"))
    };
    let body = state.submitter.place_body(&account, body, recipients.len()).await.map_err(|e| match e {
        e @ SubmitError::FanoutTooLarge { .. } => unprocessable("fanout_too_large", e.to_string()),
        SubmitError::Log(e) => unavailable(e),
    })?;
    let (events, accepted) = accept::build_events(&account, &sender, recipients, request.options, body);
    let reply = accepted.into_iter().map(|a| AcceptedMessage { recipient: a.recipient, id: a.id.0 }).collect();
    state.submitter.submit(events).await.map_err(unavailable)?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { messages: reply })))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    envelope: Option<String>,
    recipient: Option<OneOrMany>,
    body: Option<String>,
    inlinizecss: Option<Flag>,
    clicktracking: Option<Flag>,
    bouncetracking: Option<Flag>,
    openstracking: Option<Flag>,
}

fn from_json(raw: &[u8]) -> Result<SendRequest, ApiError> {
    let j: JsonRequest =
        serde_json::from_slice(raw).map_err(|e| bad("malformed_request", format!("invalid JSON: {e}")))?;
    let flag = |name: &str, f: Option<Flag>| -> Result<bool, ApiError> {
        match f {
            None => Ok(false),
            Some(Flag::Bool(b)) => Ok(b),
            Some(Flag::Text(t)) => parse_bool(name, &t),
        }
    };
    Ok(SendRequest {
        envelope: j.envelope,
        recipients: match j.recipient {
            None => vec![],
            Some(OneOrMany::One(r)) => vec![r],
            Some(OneOrMany::Many(rs)) => rs,
        },
        body: j.body,
        options: SendOptions {
            inline_css: flag("inlinizecss", j.inlinizecss)?,
            click_tracking: flag("clicktracking", j.clicktracking)?,
            bounce_tracking: flag("bouncetracking", j.bouncetracking)?,
            opens_tracking: flag("openstracking", j.openstracking)?,
        },
    })
}

fn from_form(raw: &[u8]) -> Result<SendRequest, ApiError> {
    let mut r = SendRequest::default();
    for (key, value) in form_urlencoded::parse(raw) {
        let value = value.into_owned();
        match key.as_ref() {
            "envelope" => r.envelope = Some(value),
            "recipient" | "recipient[]" => r.recipients.push(value),
            "body" => r.body = Some(value),
            "inlinizecss" => r.options.inline_css = parse_bool("inlinizecss", &value)?,
            "clicktracking" => r.options.click_tracking = parse_bool("clicktracking", &value)?,
            "bouncetracking" => r.options.bounce_tracking = parse_bool("bouncetracking", &value)?,
            "openstracking" => r.options.opens_tracking = parse_bool("openstracking", &value)?,
            other => return Err(bad("malformed_request", format!("unknown form field `{other}`"))),
        }
    }
    Ok(r)
}

fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(bad("malformed_request", format!("`{name}` must be a boolean, not `{v}`"))),
    }
}

/// The shared MIME check, as this route's error.
fn check_mime(body: &[u8]) -> Result<(), ApiError> {
    accept::check_mime(body).map_err(|m| unprocessable("invalid_mime", m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_refusals_become_422_invalid_mime() {
        // The cases themselves are tested in `accept`; this is the route's mapping.
        assert!(check_mime(b"From: a@b.test\r\n\r\nhi\r\n").is_ok());
        let err = check_mime(b"hello world").unwrap_err();
        assert_eq!((err.status, err.code), (axum::http::StatusCode::UNPROCESSABLE_ENTITY, "invalid_mime"));
    }

    #[test]
    fn form_repeated_recipients() {
        let r = from_form(b"envelope=a%40b.test&recipient=x%40y.test&recipient=z%40w.test&body=x&clicktracking=true")
            .unwrap();
        assert_eq!(r.recipients, vec!["x@y.test", "z@w.test"]);
        assert!(r.options.click_tracking && !r.options.inline_css);
        assert!(from_form(b"bogus=1").is_err());
    }
}

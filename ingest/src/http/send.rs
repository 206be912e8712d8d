//! `POST /v1/send`: accept a MIME message for one or more recipients.
//!
//! Accepts `application/json` or `application/x-www-form-urlencoded` with the fields
//! `envelope`, `recipient` (one, a list, or a repeated form field), `body`, and the
//! optional booleans `inlinizecss`, `clicktracking`, `bouncetracking`, `openstracking`.
//! Replies 202 with one id per recipient only after every event is durably in the log;
//! any refusal appends nothing.

use super::{authenticate, ApiError, ApiState};
use crate::address::parse_mailbox;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use herald_schemas::{Body as MimeBody, MessageAccepted, MessageId, SendOptions, Timestamp};
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

pub async fn handle(State(state): State<Arc<ApiState>>, headers: HeaderMap, body: Body) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let account = authenticate(&state, &headers)?;
    // Encodings inflate the MIME body (JSON escapes, percent-encoding): allow 3x + 64 KiB
    // for the request, then hold the decoded `body` to the configured limit.
    let request_limit = state.max_body_bytes.saturating_mul(3).saturating_add(64 * 1024);
    let too_large = || {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("message body is limited to {} bytes", state.max_body_bytes))
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
    let envelope = request.envelope.ok_or_else(|| bad("missing_field", "`envelope` (the envelope sender) is required"))?;
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

    let accepted_at = Timestamp::now();
    let mut events = Vec::with_capacity(recipients.len());
    let mut reply = Vec::with_capacity(recipients.len());
    for r in recipients {
        let id = MessageId::generate();
        reply.push(AcceptedMessage { recipient: r.address.clone(), id: id.0.clone() });
        events.push(MessageAccepted {
            account: account.clone(),
            message_id: id,
            envelope_sender: sender.address.clone(),
            recipient: r.address,
            recipient_domain: r.domain,
            options: request.options,
            body: MimeBody::Inline(body.clone()),
            accepted_at,
        });
    }
    state
        .submitter
        .submit(events)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "log_unavailable", format!("not accepted, try again: {e}")))?;
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
    let j: JsonRequest = serde_json::from_slice(raw).map_err(|e| bad("malformed_request", format!("invalid JSON: {e}")))?;
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

/// Normalizes line endings to CRLF, as SMTP and DKIM canonicalization expect.
fn crlf(body: Vec<u8>) -> Vec<u8> {
    if !body.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r') && !body.starts_with(b"\n") {
        return body;
    }
    let mut out = Vec::with_capacity(body.len() + body.len() / 40);
    let mut prev = 0u8;
    for &b in &body {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// A body must be an RFC 5322 message: a header section with a From field, then a body.
fn check_mime(body: &[u8]) -> Result<(), ApiError> {
    let invalid = |m: &str| unprocessable("invalid_mime", m.to_owned());
    let header_end = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no blank line ends the header section"))?;
    for line in body[..header_end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !folded && !line.is_empty() {
            let colon = line.iter().position(|&b| b == b':');
            let name_ok = colon.is_some_and(|c| c > 0 && line[..c].iter().all(|b| (33..=126).contains(b)));
            if !name_ok {
                return Err(invalid(&format!("malformed header line: {}", String::from_utf8_lossy(&line[..line.len().min(60)]))));
            }
        }
    }
    let parsed = mail_parser::MessageParser::new().parse_headers(body).ok_or_else(|| invalid("unparsable message"))?;
    let from = parsed.from().and_then(|f| f.first()).and_then(|a| a.address());
    if from.is_none_or(|a| !a.contains('@')) {
        return Err(invalid("the message has no From: address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_checks() {
        assert!(check_mime(b"From: a@b.test\r\nSubject: x\r\n\r\nhi\r\n").is_ok());
        assert!(check_mime(b"From: a@b.test\r\nSubject: x\r\n  folded\r\n\r\n").is_ok());
        assert_eq!(check_mime(b"hello world").unwrap_err().code, "invalid_mime");
        assert_eq!(check_mime(b"Subject: x\r\n\r\nbody").unwrap_err().code, "invalid_mime");
        assert_eq!(check_mime(b"From a@b.test\r\n\r\nbody").unwrap_err().code, "invalid_mime");
    }

    #[test]
    fn line_endings_become_crlf() {
        assert_eq!(crlf(b"a\nb\r\nc\n".to_vec()), b"a\r\nb\r\nc\r\n");
        assert_eq!(crlf(b"a\r\n".to_vec()), b"a\r\n");
    }

    #[test]
    fn form_repeated_recipients() {
        let r = from_form(b"envelope=a%40b.test&recipient=x%40y.test&recipient=z%40w.test&body=x&clicktracking=true").unwrap();
        assert_eq!(r.recipients, vec!["x@y.test", "z@w.test"]);
        assert!(r.options.click_tracking && !r.options.inline_css);
        assert!(from_form(b"bogus=1").is_err());
    }
}

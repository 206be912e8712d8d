//! `/u/<R>`: one-click unsubscribe (RFC 8058). `POST` with the body
//! `List-Unsubscribe=One-Click` (form-urlencoded or multipart/form-data) records
//! `RecipientUnsubscribed` and answers `200` once the event is durable (`503` if the log
//! does not take it in time: the sender may retry). No redirect, no cookie, no
//! authentication. `GET` only shows a page whose button makes that POST: a GET (a link
//! scanner, a prefetch) never unsubscribes.

use super::{not_found, Common, Peer, Tracker};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_engine::rewrite::escape_html;
use herald_engine::rewrite::token;
use herald_schemas::{EngagementEvent, RecipientUnsubscribed, Timestamp};
use std::sync::Arc;

fn html(status: StatusCode, body: String) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::HeaderName::from_static("x-frame-options"), "DENY"),
        (
            header::HeaderName::from_static("content-security-policy"),
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        ),
    ];
    (status, headers, body).into_response()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}\
button{font-size:1rem;padding:.6rem 1.2rem;border:0;border-radius:.3rem;background:#333;color:#fff;cursor:pointer}";

pub async fn page(State(t): State<Arc<Tracker>>, Path(tok): Path<String>) -> Response {
    let Some(claims) = token::verify_recipient(&t.keys, &tok) else {
        return not_found();
    };
    metrics::counter!("herald_tracking_requests_total", "route" => "unsubscribe_page", "outcome" => "ok").increment(1);
    html(
        StatusCode::OK,
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\">\
             <title>Unsubscribe</title><style>{STYLE}</style></head><body><h1>Unsubscribe</h1>\
             <p>Stop receiving these emails at <strong>{}</strong>?</p>\
             <form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
             <button type=\"submit\">Unsubscribe</button></form></body></html>",
            escape_html(&claims.recipient)
        ),
    )
}

/// Whether `body` says `List-Unsubscribe=One-Click` (RFC 8058 §3.1).
fn one_click(headers: &HeaderMap, body: &[u8]) -> bool {
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    if ctype.starts_with("multipart/form-data") {
        let text = String::from_utf8_lossy(body);
        return text.split("name=\"List-Unsubscribe\"").nth(1).is_some_and(|rest| {
            rest.split("\r\n\r\n").nth(1).is_some_and(|v| v.trim_start().starts_with("One-Click"))
        });
    }
    form_urlencoded::parse(body).any(|(k, v)| k == "List-Unsubscribe" && v == "One-Click")
}

pub async fn handle(
    State(t): State<Arc<Tracker>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(tok): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(claims) = token::verify_recipient(&t.keys, &tok) else {
        return not_found();
    };
    if !one_click(&headers, &body) {
        metrics::counter!("herald_tracking_requests_total", "route" => "unsubscribe", "outcome" => "bad_request")
            .increment(1);
        return (
            StatusCode::BAD_REQUEST,
            [(header::CACHE_CONTROL, "no-store")],
            "expected List-Unsubscribe=One-Click\n",
        )
            .into_response();
    }
    let (user_agent, ip) = t.client(&headers, peer);
    let recipient = claims.recipient.clone();
    let c = Common::new(claims, user_agent, ip, None);
    let event = EngagementEvent::RecipientUnsubscribed(RecipientUnsubscribed {
        event_id: c.event_id,
        account: herald_schemas::AccountId(c.claims.account),
        message_id: herald_schemas::MessageId(c.claims.message_id),
        recipient: c.claims.recipient,
        client: c.client,
        unsubscribed_at: Timestamp::now(),
    });
    if !t.appender.append(t.record(event)).await {
        metrics::counter!("herald_tracking_requests_total", "route" => "unsubscribe", "outcome" => "unavailable")
            .increment(1);
        return html(StatusCode::SERVICE_UNAVAILABLE, "<!doctype html><p>Please try again in a minute.</p>".into());
    }
    metrics::counter!("herald_tracking_requests_total", "route" => "unsubscribe", "outcome" => "ok").increment(1);
    html(
        StatusCode::OK,
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Unsubscribed</title><style>{STYLE}</style></head>\
             <body><h1>Unsubscribed</h1><p><strong>{}</strong> will not receive these emails any more.</p></body></html>",
            escape_html(&recipient)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_click_bodies() {
        let form = HeaderMap::new();
        assert!(one_click(&form, b"List-Unsubscribe=One-Click"));
        assert!(!one_click(&form, b"List-Unsubscribe=Yes"));
        assert!(!one_click(&form, b""));
        let mut multi = HeaderMap::new();
        multi.insert(header::CONTENT_TYPE, "multipart/form-data; boundary=x".parse().unwrap());
        let body = b"--x\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--x--\r\n";
        assert!(one_click(&multi, body));
        assert_eq!(escape_html("<a&\">"), "&lt;a&amp;&quot;&gt;");
    }
}

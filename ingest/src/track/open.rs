//! `GET /o/<R>` (and `HEAD`): the 1×1 transparent GIF; records `MessageOpened`. Answered
//! before the event is appended ([`super::appender`]).

use super::machine::{self, Target};
use super::{not_found, Common, Tracker};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use herald_engine::rewrite::{pixel, token};
use herald_schemas::{EngagementEvent, MessageOpened, Timestamp};
use std::net::SocketAddr;

/// The answer to an open of `tok` from `peer` (`head` for a `HEAD` request).
pub fn answer(t: &Tracker, head: bool, headers: &HeaderMap, peer: SocketAddr, tok: &str) -> Response {
    let Some(claims) = token::verify_recipient(&t.keys, tok) else {
        return not_found();
    };
    let (user_agent, ip) = t.client(headers, peer);
    let machine = machine::classify(head, &user_agent, ip, Target::Open, t.settings.too_soon_secs);
    let c = Common::new(claims, user_agent, ip, machine);
    let event = EngagementEvent::MessageOpened(MessageOpened {
        event_id: c.event_id,
        account: herald_schemas::AccountId(c.claims.account),
        message_id: herald_schemas::MessageId(c.claims.message_id),
        recipient: c.claims.recipient,
        client: c.client,
        opened_at: Timestamp::now(),
    });
    t.appender.queue(t.record(event));
    t.counters.open.of(machine.is_some()).increment(1);
    let mut response = Response::new(Body::from(pixel::GIF));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    *response.status_mut() = StatusCode::OK;
    response
}

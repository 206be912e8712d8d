//! `GET /c/<R>.<L>` (and `HEAD`): `302 Found` to the author's URL, exactly as the link token
//! carries it; records `LinkClicked`. Answered before the event is appended ([`super::appender`]).

use super::machine::{self, Target};
use super::{not_found, now_secs, Common, Tracker};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use herald_engine::rewrite::token;
use herald_schemas::{EngagementEvent, LinkClicked, Timestamp};
use std::net::SocketAddr;

/// The answer to a click on `tok` from `peer` (`head` for a `HEAD` request).
pub fn answer(t: &Tracker, head: bool, headers: &HeaderMap, peer: SocketAddr, tok: &str) -> Response {
    let Some((claims, index, url)) = token::verify_click(&t.keys, tok) else {
        return not_found();
    };
    // Tokens only carry what a browser could have followed; the header check is a backstop.
    let Ok(location) = HeaderValue::from_str(&url) else { return not_found() };
    let (user_agent, ip) = t.client(headers, peer);
    let age = now_secs() - claims.issued_at as i64;
    let machine = machine::classify(head, &user_agent, ip, Target::Click { age }, t.settings.too_soon_secs);
    let c = Common::new(claims, user_agent, ip, machine);
    let event = EngagementEvent::LinkClicked(LinkClicked {
        event_id: c.event_id,
        account: herald_schemas::AccountId(c.claims.account),
        message_id: herald_schemas::MessageId(c.claims.message_id),
        recipient: c.claims.recipient,
        url,
        link_index: index,
        client: c.client,
        clicked_at: Timestamp::now(),
    });
    t.appender.queue(t.record(event));
    t.counters.click.of(machine.is_some()).increment(1);
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::FOUND;
    let h = response.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

//! `GET /o/<R>` (and `HEAD`): the 1×1 transparent GIF; records `MessageOpened`. Answered
//! before the event is appended ([`super::appender`]).

use super::machine::{self, Target};
use super::{not_found, Common, Peer, Tracker};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_engine::rewrite::{pixel, token};
use herald_schemas::{EngagementEvent, MessageOpened, Timestamp};
use std::sync::Arc;

pub async fn handle(
    State(t): State<Arc<Tracker>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
    Path(tok): Path<String>,
) -> Response {
    let Some(claims) = token::verify_recipient(&t.keys, &tok) else {
        return not_found();
    };
    let (user_agent, ip) = t.client(&headers, peer);
    let machine = machine::classify(method == Method::HEAD, &user_agent, ip, Target::Open, t.settings.too_soon_secs);
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
    let outcome = if machine.is_some() { "machine" } else { "ok" };
    metrics::counter!("herald_tracking_requests_total", "route" => "open", "outcome" => outcome).increment(1);
    (StatusCode::OK, [(header::CONTENT_TYPE, "image/gif"), (header::CACHE_CONTROL, "no-store")], pixel::GIF)
        .into_response()
}

//! The tracking server: `GET /c/<token>` (302 to the author's URL), `GET /o/<token>` (the
//! 1×1 GIF), `GET /u/<token>` (a page whose button unsubscribes) and `POST /u/<token>`
//! (RFC 8058 one-click unsubscribe), for any Host. Tokens are verified
//! (`herald_engine::rewrite::token`), so nothing is read from a database and a forged or
//! altered token is a 404: there is no open redirect and no `?url=`. Every answer carries
//! `Cache-Control: no-store`. Events go to `<prefix>.engagement` through [`appender`].
//!
//! A file per route: [`click`], [`open`], [`unsubscribe`]; [`machine`] tells machines from
//! people; [`listener`] accepts plain HTTP or TLS; [`serve_threads`] runs HTTP/1 on each
//! connection, on a thread per core, and answers `GET`/`HEAD` of `/c/` and `/o/` (nearly
//! every request) without the router.
//!
//! `GET /tls-allowed?domain=` answers `200` for the hosts Herald's links use (`default_host`
//! and the tracking domain of every sender domain), `404` otherwise: the `ask` hook of a proxy
//! that obtains certificates on demand (`docs/engagement.md#deploying-the-tracking-server`).

pub mod appender;
pub mod click;
pub mod listener;
pub mod machine;
pub mod open;
pub mod unsubscribe;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use herald_engine::log::Record;
use herald_engine::rewrite::token::{Claims, Keys};
use herald_engine::routing::Router as Partitions;
use herald_schemas::{encode, Client, EngagementEvent, Event, MachineReason};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Settings of the tracking server (`[tracking]`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Clicks this many seconds or less after the token was issued are taken for machines.
    pub too_soon_secs: u64,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

pub struct Tracker {
    pub keys: Keys,
    /// Host (without port) of `[tracking] default_host`.
    pub default_host: String,
    /// Sender domains, for `/tls-allowed`.
    pub domains: Option<herald_engine::domains::cache::DomainCache>,
    pub appender: appender::Appender,
    /// `<prefix>.engagement`, named once (a `format!` per event was measurable).
    pub engagement_topic: String,
    pub partitions: Partitions,
    pub settings: Settings,
    pub counters: Counters,
}

/// `herald_tracking_requests_total` of clicks and opens, registered once (a lookup by name
/// and labels per request was measurable at tens of thousands of requests per second).
pub struct Counters {
    pub click: Outcomes,
    pub open: Outcomes,
}

/// A route's counters by outcome.
pub struct Outcomes {
    ok: metrics::Counter,
    machine: metrics::Counter,
}

impl Outcomes {
    fn new(route: &'static str) -> Self {
        let outcome =
            |o: &'static str| metrics::counter!("herald_tracking_requests_total", "route" => route, "outcome" => o);
        Outcomes { ok: outcome("ok"), machine: outcome("machine") }
    }

    /// The counter of a request from a person, or (`machine`) from a machine.
    pub fn of(&self, machine: bool) -> &metrics::Counter {
        if machine {
            &self.machine
        } else {
            &self.ok
        }
    }
}

impl Counters {
    /// Registers the counters with the metrics recorder installed now.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Counters { click: Outcomes::new("click"), open: Outcomes::new("open") }
    }
}

/// The client address a connection came from, for `ConnectInfo`.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The tracking routes, every one of them ([`serve_threads`] answers most requests before the router).
pub fn router(tracker: Arc<Tracker>) -> Router {
    let [(click, answer_click), (open, answer_open)] = DIRECT;
    Router::new()
        .route(&format!("{click}{{token}}"), direct_route(answer_click))
        .route(&format!("{open}{{token}}"), direct_route(answer_open))
        .route("/u/{token}", get(unsubscribe::page).post(unsubscribe::handle))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/tls-allowed", get(tls_allowed))
        .fallback(|| async { not_found() })
        .with_state(tracker)
}

/// How a click or an open is answered: (tracker, `HEAD`?, headers, peer, token).
type DirectAnswer = fn(&Tracker, bool, &HeaderMap, SocketAddr, &str) -> Response;

/// The routes [`serve_threads`] answers without the router (`GET` and `HEAD` of `<prefix><token>`).
const DIRECT: [(&str, DirectAnswer); 2] = [("/c/", click::answer), ("/o/", open::answer)];

/// The router's way to the same answer, for requests [`serve_threads`] leaves to it.
fn direct_route(answer: DirectAnswer) -> axum::routing::MethodRouter<Arc<Tracker>> {
    get(
        move |State(t): State<Arc<Tracker>>,
              ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
              method: Method,
              headers: HeaderMap,
              Path(tok): Path<String>| async move { answer(&t, method == Method::HEAD, &headers, peer, &tok) },
    )
}

#[derive(serde::Deserialize)]
pub struct Domain {
    domain: Option<String>,
}

/// Whether a certificate may be obtained for `domain`.
async fn tls_allowed(
    axum::extract::State(t): axum::extract::State<Arc<Tracker>>,
    axum::extract::Query(q): axum::extract::Query<Domain>,
) -> Response {
    let Some(domain) = q.domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase()) else { return not_found() };
    let ours = domain == t.default_host
        || t.domains.as_ref().is_some_and(|c| c.current().domains.values().any(|s| s.tracking_domain() == domain));
    if ours {
        (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")], "ok\n").into_response()
    } else {
        not_found()
    }
}

/// The answer to anything unknown, forged or altered.
pub fn not_found() -> Response {
    metrics::counter!("herald_tracking_requests_total", "route" => "other", "outcome" => "not_found").increment(1);
    (StatusCode::NOT_FOUND, [(header::CACHE_CONTROL, "no-store")], "not found\n").into_response()
}

impl Tracker {
    /// Who is asking: user agent (at most 512 bytes) and address (through trusted proxies).
    pub fn client(&self, headers: &HeaderMap, peer: SocketAddr) -> (String, IpAddr) {
        let mut ua = headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        if ua.len() > 512 {
            let mut cut = 512;
            while !ua.is_char_boundary(cut) {
                cut -= 1;
            }
            ua.truncate(cut);
        }
        (ua, client_ip(peer.ip(), headers, &self.settings.trusted_proxies))
    }

    /// Builds the record of `event`, on the partition of the recipient's domain.
    pub fn record(&self, event: EngagementEvent) -> Record {
        let domain = event.recipient().rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
        let partition = self.partitions.partition(&domain, &event.message_id().0);
        Record {
            topic: self.engagement_topic.clone(),
            partition,
            key: domain,
            value: encode(&Event::Engagement(event)),
        }
    }
}

/// Fields every engagement event has, from the token and the request.
pub struct Common {
    pub event_id: String,
    pub claims: Claims,
    pub client: Client,
}

impl Common {
    pub fn new(claims: Claims, user_agent: String, ip: IpAddr, machine: Option<MachineReason>) -> Self {
        Common {
            event_id: uuid::Uuid::now_v7().simple().encode_lower(&mut uuid::Uuid::encode_buffer()).to_owned(),
            claims,
            client: Client { user_agent, ip: ip_text(ip), machine },
        }
    }
}

/// An address as text; an IPv4 one without `Display`, which cost more than any other
/// formatting in a click.
fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                text.push_str(digits.format(octet));
            }
            text
        }
        v6 => v6.to_string(),
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the last address
/// in `X-Forwarded-For` that is not one.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
        v4 => v4,
    };
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    hops.into_iter().rev().find(|ip| !is_trusted(ip)).unwrap_or(peer)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    herald_schemas::Timestamp::now().millis() / 1000
}

/// How long a connection may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connections may take to finish their requests at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves the tracking routes until `shutdown` on a thread per core, each with its own
/// single-threaded runtime, the way nginx runs a worker per core: this
/// task accepts and hands each connection, in turn, to a thread, where it stays, so a
/// request costs no hand-off between threads. Each connection is HTTP/1.1 with keep-alive,
/// in its own task; `GET` and `HEAD` of `/c/<token>` and `/o/<token>` are answered directly,
/// everything else goes through [`router`]. At `shutdown` accepting stops, each connection
/// finishes the request it is on, and the threads wait up to [`DRAIN`] for them.
pub async fn serve_threads(
    bound: listener::Bound,
    tracker: Arc<Tracker>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut handoff, mut finished) = (Vec::new(), Vec::new());
    for i in 0..threads {
        let (to, conns) = tokio::sync::mpsc::unbounded_channel();
        let (tls, tracker, shutdown) = (bound.tls.clone(), tracker.clone(), shutdown.clone());
        let (done, ended) = tokio::sync::oneshot::channel();
        std::thread::Builder::new().name(format!("tracking-{i}")).spawn(move || {
            let served = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(serve_handed(conns, tls, tracker, shutdown)));
            let _ = done.send(served);
        })?;
        handoff.push(to);
        finished.push(ended);
    }
    for turn in (0..threads).cycle() {
        let (tcp, peer) = tokio::select! {
            conn = bound.accept() => conn,
            _ = shutdown.cancelled() => break,
        };
        let _ = handoff[turn].send((tcp, peer));
    }
    drop((bound, handoff));
    let mut result = Ok(());
    for ended in finished {
        match ended.await {
            Ok(served) => result = result.and(served),
            Err(_) => result = Err(std::io::Error::other("a tracking thread panicked")),
        }
    }
    result
}

/// One serving thread: the connections handed to it, until `shutdown`, then the drain.
async fn serve_handed(
    mut conns: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tracker: Arc<Tracker>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let router = router(tracker.clone());
    // Every connection task holds a receiver; all are gone once `closed` resolves.
    let (open, live) = tokio::sync::watch::channel(());
    loop {
        let (tcp, peer) = tokio::select! {
            conn = conns.recv() => match conn { Some(c) => c, None => break },
            _ = shutdown.cancelled() => break,
        };
        let service = Connection { tracker: tracker.clone(), router: router.clone(), peer };
        let (tls, shutdown, live) = (tls.clone(), shutdown.clone(), live.clone());
        tokio::spawn(async move {
            let Some(io) = listener::ready(tcp, tls.as_ref()).await else { return drop(live) };
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            let mut conn = std::pin::pin!(http.serve_connection(TokioIo::new(io), service));
            tokio::select! {
                _ = conn.as_mut() => return drop(live),
                _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
            drop(live);
        });
    }
    drop((conns, live));
    let _ = tokio::time::timeout(DRAIN, open.closed()).await;
}

/// The service of one connection.
struct Connection {
    tracker: Arc<Tracker>,
    router: Router,
    peer: SocketAddr,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Connection {
    type Response = Response;
    type Error = Infallible;
    type Future = futures::future::Either<Ready<Result<Response, Infallible>>, Answer>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        use futures::future::Either;
        let head = request.method() == Method::HEAD;
        if head || request.method() == Method::GET {
            let path = request.uri().path();
            // A token never holds '/' or '%' (URL-safe base64 and '.'); anything else is the
            // router's (which decodes the path segment). A byte scan: `str::contains` with a
            // set of chars decodes every character.
            for (prefix, answer) in DIRECT {
                if let Some(tok) = path.strip_prefix(prefix).filter(|t| !t.bytes().any(|b| b == b'/' || b == b'%')) {
                    return Either::Left(ready(Ok(answer(&self.tracker, head, request.headers(), self.peer, tok))));
                }
            }
        }
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(Peer(self.peer)));
        let mut router = self.router.clone();
        Either::Right(Box::pin(async move { tower_service::Service::call(&mut router, request).await }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_text() {
        for ip in ["0.0.0.0", "10.0.0.7", "192.168.100.255", "255.255.255.255", "::1", "2001:db8::5"] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(parsed), parsed.to_string());
        }
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 198.51.100.1, 10.0.0.7".parse().unwrap());
        assert_eq!(client_ip("10.0.0.2".parse().unwrap(), &h, &trusted), "198.51.100.1".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip("192.0.2.5".parse().unwrap(), &h, &trusted), "192.0.2.5".parse::<IpAddr>().unwrap());
        assert_eq!(
            client_ip("10.0.0.2".parse().unwrap(), &HeaderMap::new(), &trusted),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
    }
}

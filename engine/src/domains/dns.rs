//! Herald's authoritative DNS server for its service zone (hickory-server), over UDP and
//! TCP. Answers come from the current [`ZoneData`], swapped in whole whenever the
//! projection changes, so a rotation is served without a restart. Over UDP an answer
//! larger than the client's buffer (512 octets without EDNS) is truncated with TC set;
//! the client retries over TCP and gets all of it.

use super::zone::{Answer, ZoneData};
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The zone being served; [`ZoneHandle::replace`] swaps in a new one atomically.
#[derive(Clone)]
pub struct ZoneHandle(Arc<RwLock<Arc<ZoneData>>>);

impl ZoneHandle {
    pub fn new(zone: ZoneData) -> Self {
        ZoneHandle(Arc::new(RwLock::new(Arc::new(zone))))
    }

    pub fn replace(&self, zone: ZoneData) {
        let mut guard = self.0.write().unwrap_or_else(|p| p.into_inner());
        *guard = Arc::new(zone);
    }

    pub fn current(&self) -> Arc<ZoneData> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

struct Handler {
    zone: ZoneHandle,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let zone = self.zone.current();
        let mut edns = Edns::new();
        let response_edns = request.edns.as_ref().map(|req| {
            edns.set_max_payload(req.max_payload().max(512));
            edns.set_version(0);
            &edns
        });
        let builder = MessageResponseBuilder::new(&request.queries, response_edns);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let query = request.queries.queries().first();
        let outcome = match (request.metadata.message_type, request.metadata.op_code, query) {
            (MessageType::Query, OpCode::Query, Some(q)) => {
                let name = q.name().to_string();
                let answer = zone.lookup(&name, q.query_type());
                metrics::counter!("herald_dns_queries_total", "answer" => answer_label(&answer)).increment(1);
                match answer {
                    Answer::Records(records) => {
                        metadata.authoritative = true;
                        response_handle.send_response(builder.build(metadata, records.iter(), [], [], [])).await
                    }
                    Answer::NoData | Answer::NxDomain => {
                        metadata.authoritative = true;
                        if answer == Answer::NxDomain {
                            metadata.response_code = ResponseCode::NXDomain;
                        }
                        response_handle.send_response(builder.build(metadata, [], [], [&zone.soa], [])).await
                    }
                    Answer::Refused => {
                        response_handle.send_response(builder.error_msg(&request.metadata, ResponseCode::Refused)).await
                    }
                }
            }
            (MessageType::Query, OpCode::Query, None) => {
                response_handle.send_response(builder.error_msg(&request.metadata, ResponseCode::FormErr)).await
            }
            _ => response_handle.send_response(builder.error_msg(&request.metadata, ResponseCode::NotImp)).await,
        };
        outcome.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "sending a DNS response failed");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
        })
    }
}

fn answer_label(a: &Answer<'_>) -> &'static str {
    match a {
        Answer::Records(_) => "records",
        Answer::NoData => "nodata",
        Answer::NxDomain => "nxdomain",
        Answer::Refused => "refused",
    }
}

/// Binds UDP and TCP on `listen` (the same port for both).
pub async fn bind(listen: SocketAddr) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let udp = tokio::net::UdpSocket::bind(listen).await?;
    let tcp = tokio::net::TcpListener::bind(udp.local_addr()?).await?;
    Ok((udp, tcp))
}

/// Serves `zone` on the bound sockets until `shutdown`.
pub async fn serve(
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
    zone: ZoneHandle,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let mut server = hickory_server::Server::new(Handler { zone });
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(10), 64);
    shutdown.cancelled().await;
    server.shutdown_gracefully().await.map_err(|e| e.to_string())
}

/// Rebuilds the served zone whenever the domain snapshot changes, until `shutdown`.
pub async fn follow(
    cache: super::cache::DomainCache,
    settings: super::zone::ZoneSettings,
    handle: ZoneHandle,
    shutdown: CancellationToken,
) {
    let mut rx = cache.subscribe();
    loop {
        let snapshot = rx.borrow_and_update().clone();
        let domains: Vec<_> = snapshot.domains.values().cloned().collect();
        // The SOA serial: seconds since the epoch at the rebuild, so it grows with every change.
        let serial = (herald_schemas::Timestamp::now().millis() / 1000) as u32;
        handle.replace(super::zone::build(&settings, &domains, serial));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

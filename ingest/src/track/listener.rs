//! Serving the tracking routes on plain HTTP or, with `[tracking] tls_cert`/`tls_key`, on
//! TLS. One task accepts and hands each connection, in turn, to one of the serving threads
//! (`super::serve_threads`); TLS handshakes run on that thread in the connection's own task
//! (at most 10 s), so a slow client never holds up `accept`.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The tracking server's bound socket and its TLS settings (plain HTTP without).
pub struct Bound {
    pub(super) tcp: tokio::net::TcpListener,
    pub(super) tls: Option<TlsAcceptor>,
}

impl Bound {
    pub fn new(tcp: tokio::net::TcpListener, tls: Option<TlsAcceptor>) -> Bound {
        Bound { tcp, tls }
    }

    /// The next connection, for another runtime (errors are logged and waited out).
    pub(super) async fn accept(&self) -> (std::net::TcpStream, SocketAddr) {
        loop {
            match self.tcp.accept().await.and_then(|(s, peer)| {
                let _ = s.set_nodelay(true);
                Ok((s.into_std()?, peer))
            }) {
                Ok(conn) => return conn,
                Err(e) => {
                    tracing::warn!(error = %e, "tracking accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// A connection handed to this runtime, ready for HTTP: TLS completed when configured;
/// `None` when it failed or timed out.
pub(super) async fn ready(tcp: std::net::TcpStream, tls: Option<&TlsAcceptor>) -> Option<Box<dyn Io>> {
    let tcp = tokio::net::TcpStream::from_std(tcp).ok()?;
    match tls {
        None => Some(Box::new(tcp)),
        Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
            Ok(Ok(s)) => Some(Box::new(s)),
            _ => None,
        },
    }
}

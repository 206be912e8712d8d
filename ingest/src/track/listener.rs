//! Serving the tracking routes on plain HTTP or, with `[tracking] tls_cert`/`tls_key`, on
//! TLS. TLS handshakes run in their own tasks (at most 10 s each), so a slow client never
//! holds up `accept`.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A listener of plain or TLS connections.
pub struct Listener {
    inner: Inner,
}

enum Inner {
    Plain(TcpListener),
    Tls(mpsc::Receiver<(Box<dyn Io>, SocketAddr)>),
}

impl Listener {
    pub fn plain(listener: TcpListener) -> Self {
        Listener { inner: Inner::Plain(listener) }
    }

    /// Accepts on `listener` and completes handshakes with `tls` in the background.
    pub fn tls(listener: TcpListener, tls: TlsAcceptor) -> Self {
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "tracking accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (tls, ready) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(10), tls.accept(stream)).await {
                        let _ = ready.send((Box::new(s) as Box<dyn Io>, peer)).await;
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Listener { inner: Inner::Tls(rx) }
    }
}

impl Listener {
    /// The next connection and its peer's address (errors are logged and waited out).
    pub async fn accept(&mut self) -> (Box<dyn Io>, SocketAddr) {
        match &mut self.inner {
            Inner::Plain(l) => loop {
                match TcpListener::accept(l).await {
                    Ok((s, peer)) => {
                        let _ = s.set_nodelay(true);
                        return (Box::new(s), peer);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "tracking accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            },
            Inner::Tls(rx) => match rx.recv().await {
                Some(conn) => conn,
                None => std::future::pending().await,
            },
        }
    }
}

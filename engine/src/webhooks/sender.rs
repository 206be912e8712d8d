//! One webhook request: signed, with a timeout, never following a redirect, through the
//! guarded resolver; and what its answer means (pure: [`classify`]).

use super::endpoints::Live;
use super::signing::signature_header;
use super::ssrf;
use herald_schemas::Timestamp;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// What an attempt's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx.
    Delivered(u16),
    /// 410: the endpoint is gone; it is disabled.
    Gone,
    /// Anything else: try again later; `retry_after` from a 429 or 503.
    Failed { status: Option<u16>, error: String, retry_after: Option<Duration> },
}

/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The meaning of an HTTP status (and its `Retry-After`, for 429 and 503).
pub fn classify(status: u16, retry_after: Option<&str>) -> Answer {
    match status {
        200..=299 => Answer::Delivered(status),
        410 => Answer::Gone,
        _ => {
            let retry_after =
                if status == 429 || status == 503 { retry_after.and_then(parse_retry_after) } else { None };
            Answer::Failed { status: Some(status), error: format!("the endpoint answered {status}"), retry_after }
        }
    }
}

/// `Retry-After` as delay-seconds or an HTTP date, capped at a day.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let fmt = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let at = time::PrimitiveDateTime::parse(v, &fmt).ok()?.assume_utc();
        let secs = (at - time::OffsetDateTime::now_utc()).whole_seconds().max(0) as u64;
        Duration::from_secs(secs)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

type Connector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector<ssrf::GuardedResolver>>;
type Stream = hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>;
type Body = http_body_util::Full<bytes::Bytes>;

/// Sends webhook requests: HTTP/1.1 over plain TCP or TLS (rustls with aws-lc-rs and the
/// Mozilla roots, plus `extra_roots`), no proxy, no redirects. Keep-alive connections are
/// kept per endpoint in its lane ([`Idle`]) and driven by the request that uses them, so a
/// request costs no pool lookup and no hand-off to a connection task.
pub struct Sender {
    connector: Connector,
    allow_private: bool,
    timeout: Duration,
}

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("webhook HTTP client: {0}")]
pub struct ClientError(String);

/// How long an unused connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// One endpoint's unused keep-alive connections (at most its concurrency: a connection is
/// only made by a request holding one of the lane's slots).
#[derive(Default)]
pub struct Idle(std::sync::Mutex<Vec<Conn>>);

impl Idle {
    /// A connection to `origin` that is still open, if one is idle; closes expired ones.
    fn take(&self, origin: &str) -> Option<Conn> {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut conn) = idle.pop() {
            if conn.origin == origin && conn.reusable() {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, mut conn: Conn) {
        conn.idle_since = Instant::now();
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
    }

    /// Closes the connections unused for [`IDLE_TIMEOUT`] or closed by the other side.
    pub fn sweep(&self) {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain_mut(Conn::reusable);
    }
}

/// One keep-alive HTTP/1.1 connection: hyper's request handle and the connection itself,
/// which is polled only while a request runs on it.
pub struct Conn {
    /// `scheme://authority` it was made for.
    origin: String,
    send: hyper::client::conn::http1::SendRequest<Body>,
    conn: Pin<Box<hyper::client::conn::http1::Connection<Stream, Body>>>,
    idle_since: Instant,
}

impl Conn {
    /// Whether the idle connection can take a request: not idle for [`IDLE_TIMEOUT`], and
    /// still open (polling it once lets it notice that the other side closed it meanwhile).
    fn reusable(&mut self) -> bool {
        use futures::FutureExt;
        self.idle_since.elapsed() < IDLE_TIMEOUT
            && self.conn.as_mut().now_or_never().is_none()
            && !self.send.is_closed()
    }

    /// One request and its answer (status, `Retry-After`); whether the connection can be
    /// used again.
    async fn exchange(&mut self, request: http::Request<Body>) -> (Result<(u16, Option<String>), hyper::Error>, bool) {
        use futures::future::{select, Either};
        let send = &mut self.send;
        let talk = async {
            send.ready().await?;
            let resp = send.send_request(request).await?;
            let status = resp.status().as_u16();
            let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            // Read (at most 64 KiB of) the body so the connection can be reused.
            let limited = http_body_util::Limited::new(resp.into_body(), 64 << 10);
            let whole = http_body_util::BodyExt::collect(limited).await.is_ok();
            Ok::<_, hyper::Error>(((status, retry_after), whole))
        };
        let talk = std::pin::pin!(talk);
        match select(talk, self.conn.as_mut()).await {
            Either::Left((Ok((answer, whole)), _)) => (Ok(answer), whole),
            Either::Left((Err(e), _)) => (Err(e), false),
            // The connection ended (the other side closed it): what it read is delivered.
            Either::Right((_, talk)) => (talk.await.map(|(answer, _)| answer), false),
        }
    }
}

/// Why an attempt failed before an answer.
enum Failure {
    Connect(String),
    Request(hyper::Error),
}

impl Sender {
    /// `extra_roots`: PEM certificates trusted besides the Mozilla roots (private CAs, tests).
    pub fn new(allow_private: bool, timeout: Duration, extra_roots: Option<&[u8]>) -> Result<Sender, ClientError> {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(pem) = extra_roots {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| ClientError(format!("extra root certificate: {e}")))?;
                roots.add(cert).map_err(|e| ClientError(format!("extra root certificate: {e}")))?;
            }
        }
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(ssrf::GuardedResolver {
            allow_private,
        });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Sender { connector, allow_private, timeout })
    }

    /// One signed POST of `body` to the endpoint, on one of `idle`'s connections or a new
    /// one, within `limit` (the sender's timeout when `None`); the answer and how long it took.
    pub async fn send(
        &self,
        endpoint: &Live,
        idle: &Idle,
        webhook_id: &str,
        body: bytes::Bytes,
        limit: Option<Duration>,
    ) -> (Answer, Duration) {
        use http::header::{HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
        let started = Instant::now();
        let failed = |error: String| Answer::Failed { status: None, error, retry_after: None };
        // The URL is checked and parsed once per endpoint version (`Live` is replaced when
        // the endpoint changes); names are checked again at each connection by the resolver.
        let target = endpoint.target.get_or_init(|| {
            let url = ssrf::check_url(&endpoint.endpoint.url, self.allow_private).map_err(|e| e.to_string())?;
            let uri = url.as_str().parse::<http::Uri>().map_err(|e| format!("request failed: {e}"))?;
            let origin = format!("{}://{}", url.scheme(), uri.authority().map(|a| a.as_str()).unwrap_or_default());
            let host = uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
            let path = uri.path_and_query().map_or("/", |p| p.as_str()).parse::<http::Uri>().ok();
            match (host, path) {
                (Some(host), Some(path)) => Ok(super::endpoints::Target { uri, origin, host, path }),
                _ => Err("request failed: the URL has no host".to_owned()),
            }
        });
        let target = match target {
            Ok(t) => t,
            Err(e) => return (failed(e.clone()), started.elapsed()),
        };
        let now = Timestamp::now();
        let ts = now.millis().div_euclid(1000);
        let signature = signature_header(endpoint.secrets(now), webhook_id, ts, &body);
        let mut request = http::Request::new(http_body_util::Full::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = target.path.clone();
        let headers = request.headers_mut();
        headers.reserve(6); // grown once, not per insert
        headers.insert(HOST, target.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("Herald-Webhooks/", env!("CARGO_PKG_VERSION"))));
        let (id, signature) = (HeaderValue::from_str(webhook_id), HeaderValue::try_from(signature));
        let (Ok(id), Ok(signature)) = (id, signature) else {
            return (failed("request failed: a header value is not valid".into()), started.elapsed());
        };
        headers.insert("webhook-id", id);
        headers.insert("webhook-timestamp", HeaderValue::from(ts));
        headers.insert("webhook-signature", signature);
        let exchange = async {
            let mut conn = match idle.take(&target.origin) {
                Some(conn) => conn,
                None => self.connect(target).await.map_err(Failure::Connect)?,
            };
            let (answer, reusable) = conn.exchange(request).await;
            if reusable {
                idle.put(conn);
            }
            let (status, retry_after) = answer.map_err(Failure::Request)?;
            Ok(classify(status, retry_after.as_deref()))
        };
        let within = limit.unwrap_or(self.timeout).min(self.timeout);
        let answer = match tokio::time::timeout(within, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(Failure::Connect(e))) => failed(format!("could not connect: {e}")),
            Ok(Err(Failure::Request(e))) => failed(format!("request failed: {}", innermost(&e))),
            Err(_) if within < self.timeout => {
                failed(format!("no answer within {} ms; continued on the retry tiers", within.as_millis()))
            }
            Err(_) => failed(format!("timed out after {} s", self.timeout.as_secs())),
        };
        (answer, started.elapsed())
    }

    /// A new connection to the target (through the guarded resolver; TLS for `https`).
    async fn connect(&self, target: &super::endpoints::Target) -> Result<Conn, String> {
        use tower_service::Service;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await.map_err(|e| innermost(&*e))?;
        let io = connector.call(target.uri.clone()).await.map_err(|e| innermost(&*e))?;
        let (send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| innermost(&e))?;
        Ok(Conn { origin: target.origin.clone(), send, conn: Box::pin(conn), idle_since: Instant::now() })
    }
}

/// The innermost cause of an error, which says the most.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::endpoints::Endpoint;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// How the test server ends a connection after each answer.
    #[derive(Clone, Copy)]
    enum After {
        KeepAlive,
        /// `Connection: close`, then closes.
        Close,
        /// Closes 50 ms after answering, without saying so (an idle timeout on its side).
        SilentClose,
    }

    /// A loopback HTTP/1.1 server answering 204 to each request; counts its connections.
    async fn server(after: After) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook?x=1", listener.local_addr().unwrap());
        let (conns, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c, r) = (conns.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request: the head, then Content-Length bytes of body.
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                        assert!(head.starts_with("post /hook?x=1 http/1.1\r\n"), "{head}");
                        assert!(head.contains("\r\nhost: 127.0.0.1:"), "{head}");
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap();
                        while buf.len() < head_end + len {
                            let mut chunk = [0u8; 4096];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + len);
                        r.fetch_add(1, Ordering::SeqCst);
                        let close = matches!(after, After::Close);
                        let answer = if close {
                            "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
                        } else {
                            "HTTP/1.1 204 No Content\r\n\r\n"
                        };
                        s.write_all(answer.as_bytes()).await.unwrap();
                        match after {
                            After::KeepAlive => {}
                            After::Close => return,
                            After::SilentClose => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, conns, requests)
    }

    fn live(url: &str) -> Live {
        Live::new(Endpoint {
            id: "ep_1".into(),
            account: herald_schemas::AccountId("acme".into()),
            url: url.into(),
            events: vec![],
            description: String::new(),
            enabled: true,
            disabled_reason: None,
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            previous_secret: None,
            previous_until: None,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        })
    }

    async fn send_n(after: After, n: usize, pause: Duration) -> (usize, usize) {
        let (url, conns, requests) = server(after).await;
        let (sender, endpoint, idle) =
            (Sender::new(true, Duration::from_secs(5), None).unwrap(), live(&url), Idle::default());
        for i in 0..n {
            let (answer, _) =
                sender.send(&endpoint, &idle, &format!("msg_{i}"), bytes::Bytes::from_static(b"{}"), None).await;
            assert_eq!(answer, Answer::Delivered(204), "request {i}");
            tokio::time::sleep(pause).await;
        }
        (conns.load(Ordering::SeqCst), requests.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_kept_alive_connection_takes_every_request() {
        assert_eq!(send_n(After::KeepAlive, 5, Duration::ZERO).await, (1, 5));
    }

    #[tokio::test]
    async fn a_closed_connection_is_not_used_again() {
        assert_eq!(send_n(After::Close, 3, Duration::ZERO).await, (3, 3), "a new connection after each close");
        // Closed while idle, unannounced: noticed before the next request, which goes on a new one.
        assert_eq!(send_n(After::SilentClose, 3, Duration::from_millis(200)).await, (3, 3));
    }

    #[tokio::test]
    async fn idle_connections_are_swept() {
        let (url, conns, _) = server(After::SilentClose).await;
        let (sender, endpoint, idle) =
            (Sender::new(true, Duration::from_secs(5), None).unwrap(), live(&url), Idle::default());
        let (answer, _) = sender.send(&endpoint, &idle, "msg_1", bytes::Bytes::from_static(b"{}"), None).await;
        assert_eq!(answer, Answer::Delivered(204));
        assert_eq!(idle.0.lock().unwrap().len(), 1, "kept for the next request");
        tokio::time::sleep(Duration::from_millis(200)).await;
        idle.sweep();
        assert!(idle.0.lock().unwrap().is_empty(), "closed by the other side: dropped");
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(200, None), Answer::Delivered(200));
        assert_eq!(classify(204, None), Answer::Delivered(204));
        assert_eq!(classify(410, None), Answer::Gone);
        let Answer::Failed { retry_after, status, .. } = classify(429, Some("120")) else { panic!() };
        assert_eq!((status, retry_after), (Some(429), Some(Duration::from_secs(120))));
        let Answer::Failed { retry_after, .. } = classify(503, Some("999999")) else { panic!() };
        assert_eq!(retry_after, Some(MAX_RETRY_AFTER), "capped at a day");
        let Answer::Failed { retry_after, .. } = classify(500, Some("120")) else { panic!() };
        assert_eq!(retry_after, None, "only 429 and 503 carry Retry-After");
        let Answer::Failed { retry_after, .. } = classify(301, None) else { panic!() };
        assert_eq!(retry_after, None, "a redirect is a failure, never followed");
        let Answer::Failed { retry_after, .. } = classify(503, Some("Wed, 21 Oct 2015 07:28:00 GMT")) else { panic!() };
        assert_eq!(retry_after, Some(Duration::ZERO), "a date in the past: no extra wait");
    }
}

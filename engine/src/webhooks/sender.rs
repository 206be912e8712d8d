//! One webhook request: signed, with a timeout, never following a redirect, through the
//! guarded resolver; and what its answer means (pure: [`classify`]).

use super::endpoints::Live;
use super::signing::signature_header;
use super::ssrf;
use herald_schemas::Timestamp;
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

/// Sends webhook requests: HTTP/1.1 over plain TCP or TLS (rustls with aws-lc-rs and the
/// Mozilla roots, plus `extra_roots`), connections pooled per host, no proxy, no redirects.
pub struct Sender {
    client: hyper_util::client::legacy::Client<Connector, http_body_util::Full<bytes::Bytes>>,
    allow_private: bool,
    timeout: Duration,
}

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("webhook HTTP client: {0}")]
pub struct ClientError(String);

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
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(https);
        Ok(Sender { client, allow_private, timeout })
    }

    /// One signed POST of `body` to the endpoint; the answer and how long it took.
    pub async fn send(&self, endpoint: &Live, webhook_id: &str, body: bytes::Bytes) -> (Answer, Duration) {
        use http::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
        let started = Instant::now();
        let failed = |error: String| Answer::Failed { status: None, error, retry_after: None };
        // The URL is checked and parsed once per endpoint version (`Live` is replaced when
        // the endpoint changes); names are checked again at each connection by the resolver.
        let target = endpoint.target.get_or_init(|| {
            let url = ssrf::check_url(&endpoint.endpoint.url, self.allow_private).map_err(|e| e.to_string())?;
            url.as_str().parse::<http::Uri>().map_err(|e| format!("request failed: {e}"))
        });
        let uri = match target {
            Ok(u) => u.clone(),
            Err(e) => return (failed(e.clone()), started.elapsed()),
        };
        let now = Timestamp::now();
        let ts = now.millis().div_euclid(1000);
        let signature = signature_header(endpoint.secrets(now), webhook_id, ts, &body);
        let mut request = http::Request::new(http_body_util::Full::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
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
            let resp = self.client.request(request).await?;
            let status = resp.status().as_u16();
            let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            // Read (at most 64 KiB of) the body so the connection can be reused.
            let limited = http_body_util::Limited::new(resp.into_body(), 64 << 10);
            let _ = http_body_util::BodyExt::collect(limited).await;
            Ok::<_, hyper_util::client::legacy::Error>(classify(status, retry_after.as_deref()))
        };
        let answer = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => failed(describe(&e)),
            Err(_) => failed(format!("timed out after {} s", self.timeout.as_secs())),
        };
        (answer, started.elapsed())
    }
}

/// A transport error as a sentence (the innermost cause says the most).
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let what = if e.is_connect() { "could not connect" } else { "request failed" };
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("{what}: {cause}")
}

#[cfg(test)]
mod tests {
    use super::*;

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

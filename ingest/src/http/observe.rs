//! Request metrics for every route: `herald_http_requests_total{route,method,status}` and
//! `herald_http_request_duration_seconds{route,method}`. The route is axum's matched
//! template (`/v1/messages/{id}`), never the path a client sent, so label values stay
//! bounded however many ids or junk paths arrive.

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;

/// The middleware (`axum::middleware::from_fn(observe::track)`).
pub async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.unwrap_or_else(|| "unmatched".to_owned());
    metrics::histogram!("herald_http_request_duration_seconds", "route" => route.clone(), "method" => method)
        .record(started.elapsed().as_secs_f64());
    let status = status_class(response.status().as_u16());
    metrics::counter!("herald_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}

/// The method as a bounded label value.
pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `2xx`, `4xx`, …
pub fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(429), "4xx");
        assert_eq!(status_class(999), "5xx");
        assert_eq!(method_label(&Method::from_bytes(b"PROPFIND").unwrap()), "other");
    }
}

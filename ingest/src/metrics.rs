//! Every metric ingestion records (REST API, SMTP server, tracking server, bounce MX),
//! described once; the types and the rules are `herald_engine::metrics`'.

use herald_engine::metrics::{fixed, open, Kind, Label, Metric};
use Kind::{Counter, Histogram};

const fn m(
    name: &'static str,
    kind: Kind,
    labels: &'static [Label],
    help: &'static str,
    source: &'static str,
) -> Metric {
    Metric { name, kind, labels, help, source, buckets: &[] }
}

/// The API's route label: the matched route template, never the raw path.
const ROUTE: Label = open("route", "the matched route template (`/v1/send`, `/v1/messages/{id}`, …), or `unmatched`");
const METHOD: Label = open("method", "`GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD`, `OPTIONS`, or `other`");

/// Ingestion's metrics.
pub const INGEST: &[Metric] = &[
    m("herald_http_requests_total", Counter, &[ROUTE, METHOD, fixed("status", &["1xx", "2xx", "3xx", "4xx", "5xx"])], "API requests answered, by route, method and status class.", "ingest/src/http/observe.rs"),
    m("herald_http_request_duration_seconds", Histogram, &[ROUTE, METHOD], "Time from a request's arrival to its response head, by route.", "ingest/src/http/observe.rs"),
    m("herald_http_errors_total", Counter, &[open("code", "a stable error code (`api.md`)")], "API error replies, by code.", "ingest/src/http/mod.rs"),
    m("herald_http_idempotency_requests_total", Counter, &[fixed("outcome", &["new", "replayed", "reused", "in_progress", "taken_over"])], "`POST /v1/send` requests with an `Idempotency-Key`, by what the key's state made of them.", "ingest/src/http/idempotency.rs"),
    m("herald_ingest_reencoded_messages_total", Counter, &[], "Messages (REST or SMTP) whose parts were re-encoded because a body line was over 998 octets.", "ingest/src/message/mod.rs"),
    m("herald_ingest_limited_total", Counter, &[fixed("limit", &["rate_limited", "daily_limit_exceeded"])], "REST requests refused by an account's own limits (429).", "ingest/src/http/send.rs"),
    m("herald_ingest_from_domain_refusals_total", Counter, &[], "Messages refused because a `From:` domain is not the account's (REST 422, SMTP 550 5.7.1).", "ingest/src/sender.rs"),
    m("herald_smtp_ingest_refusals_total", Counter, &[open("reason", "a refusal kind (`smtp.md`, bounded set)")], "Inbound SMTP (submission and bounce MX) refusals and errors, by kind.", "ingest/src/smtp/reply.rs"),
    m("herald_smtp_ingest_sessions_total", Counter, &[], "Inbound SMTP sessions started (after the connection limits).", "ingest/src/smtp/mod.rs"),
    m("herald_smtp_ingest_messages_total", Counter, &[], "Messages (transactions) accepted over inbound SMTP; recipients are in `herald_ingest_accepted_messages_total`.", "ingest/src/smtp/data.rs"),
    m("herald_tracking_requests_total", Counter, &[fixed("route", &["click", "open", "unsubscribe_page", "unsubscribe", "other"]), fixed("outcome", &["ok", "machine", "not_found", "bad_request", "unavailable"])], "Tracking-server requests by route and outcome (`not_found`: unknown path or forged/altered token).", "ingest/src/track/"),
    m("herald_tracking_events_appended_total", Counter, &[], "Engagement events appended to `<prefix>.engagement`.", "ingest/src/track/appender.rs"),
    m("herald_tracking_events_dropped_total", Counter, &[], "Opens and clicks not recorded because the queue to the log was full (the log was down or slow).", "ingest/src/track/appender.rs"),
    m("herald_bounce_mx_messages_total", Counter, &[fixed("outcome", &["events", "unknown_message", "success_dsn", "auto_reply", "unrecognized"])], "Messages the bounce MX accepted, by what they produced; its refusals are counted in `herald_smtp_ingest_refusals_total`.", "ingest/src/inbound/mod.rs"),
];

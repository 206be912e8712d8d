//! Herald's bundled load generator and smart sink, as a library so tests and the
//! `herald-loadtest` binary share one implementation.
//!
//! - [`generator`] injects messages over REST (`POST /v1/send`) or SMTP and measures the
//!   round trip of each request or transaction.
//! - [`sink`] is a lean SMTP server that accepts, counts, optionally saves and refuses a
//!   configurable share of recipients, and measures end-to-end latency from the
//!   [`message::HEADER`] header the generator stamps on every message.
//! - [`safety`] keeps runs on loopback and test domains unless told otherwise.
//! - [`scenario`] reads `loadtest/scenarios/*.toml`; [`run`] plays one against a running
//!   Herald. [`report`] holds the histograms and the printed tables.

pub mod cli;
pub mod generator;
pub mod message;
pub mod progress;
pub mod report;
pub mod run;
pub mod safety;
pub mod scenario;
pub mod sink;
pub mod tls;

/// Installs rustls' aws-lc-rs provider once per process; later calls are no-ops.
pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Microseconds since the Unix epoch, the clock both sides of a run share.
pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

//! The binary's metrics: the Prometheus recorder behind `GET /metrics`, the metric lists of
//! every crate gathered in one place ([`all`]), build info and the process metrics, and the
//! table of `docs/metrics.md` rendered from the lists ([`markdown`];
//! `ops/tests/metrics.rs` keeps the file equal to it).

use anyhow::Context;
use herald_engine::metrics::{open, Kind, Metric, LATENCY_BUCKETS};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::sync::Arc;

const fn m(
    name: &'static str,
    kind: Kind,
    labels: &'static [herald_engine::metrics::Label],
    help: &'static str,
) -> Metric {
    Metric { name, kind, labels, help, source: "ops/src/metrics.rs", buckets: &[] }
}

/// The binary's own metrics: build info, and the process metrics (`metrics-process`, read
/// from `/proc` at every scrape).
pub const OPS: &[Metric] = &[
    m(
        "herald_build_info",
        Kind::Gauge,
        &[
            open("version", "the crate version"),
            open("commit", "the git commit the image was built from (`HERALD_GIT_COMMIT` at build time), or `unknown`"),
        ],
        "Always 1; its labels say which build runs.",
    ),
    m("process_cpu_seconds_total", Kind::Counter, &[], "CPU time (user and system) the process used, in seconds."),
    m("process_open_fds", Kind::Gauge, &[], "Open file descriptors."),
    m("process_max_fds", Kind::Gauge, &[], "The open file descriptor limit."),
    m("process_virtual_memory_bytes", Kind::Gauge, &[], "Virtual memory size, in bytes."),
    m("process_virtual_memory_max_bytes", Kind::Gauge, &[], "The virtual memory limit, in bytes."),
    m("process_resident_memory_bytes", Kind::Gauge, &[], "Resident memory (RSS), in bytes."),
    m("process_start_time_seconds", Kind::Gauge, &[], "When the process started, in seconds since the epoch."),
    m("process_threads", Kind::Gauge, &[], "Threads of the process."),
];

/// Every metric Herald exports, in the order of `docs/metrics.md`.
pub fn all() -> Vec<Metric> {
    herald_engine::metrics::ENGINE.iter().chain(herald_ingest::metrics::INGEST).chain(OPS).copied().collect()
}

/// The build's version label and commit.
pub fn build() -> (&'static str, &'static str) {
    (env!("CARGO_PKG_VERSION"), option_env!("HERALD_GIT_COMMIT").unwrap_or("unknown"))
}

/// Installs the global recorder, describes every metric, initialises the fixed series and
/// returns the render function behind `GET /metrics` (which refreshes the process metrics
/// first).
pub fn install() -> anyhow::Result<herald_ingest::http::MetricsRender> {
    let mut builder = PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS).context("metric buckets")?;
    for metric in all().iter().filter(|m| m.kind == Kind::Histogram && !m.buckets.is_empty()) {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(metric.name.into()), metric.buckets)
            .context("metric buckets")?;
    }
    let handle = builder.install_recorder().context("installing the metrics recorder")?;
    let process = metrics_process::Collector::default();
    process.describe();
    let ours: Vec<Metric> = all().into_iter().filter(|m| m.name.starts_with("herald_")).collect();
    herald_engine::metrics::describe(&ours);
    let (version, commit) = build();
    metrics::gauge!("herald_build_info", "version" => version, "commit" => commit).set(1.0);
    process.collect();
    Ok(Arc::new(move || {
        process.collect();
        handle.render()
    }))
}

/// The table of `docs/metrics.md`: one row per metric.
pub fn markdown() -> String {
    let mut out = String::from("| name | type | labels | meaning | where |\n|---|---|---|---|---|\n");
    for metric in all() {
        let labels = if metric.labels.is_empty() {
            "–".to_owned()
        } else {
            metric
                .labels
                .iter()
                .map(|l| {
                    if l.values.is_empty() {
                        format!("`{}`: {}", l.name, l.about)
                    } else {
                        let values: Vec<String> = l.values.iter().map(|v| format!("`{v}`")).collect();
                        format!("`{}`: {}", l.name, values.join(", "))
                    }
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let mut help = metric.help.to_owned();
        if !metric.buckets.is_empty() {
            let b: Vec<String> = metric.buckets.iter().map(|b| b.to_string()).collect();
            help.push_str(&format!(" Buckets: {}.", b.join(", ")));
        }
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | `{}` |\n",
            metric.name,
            metric.kind.as_str(),
            labels.replace('|', "\\|"),
            help.replace('|', "\\|"),
            metric.source
        ));
    }
    out
}

//! Every metric the engine records, described once: name, type, labels, help and the file
//! that records it. `herald serve` describes them to the recorder at start (so `/metrics`
//! carries `# HELP` and `# TYPE` for each) and initialises the series whose labels are a
//! fixed set to 0, so a dashboard reads 0 rather than "No data" before the first event.
//! `docs/metrics.md` is generated from these lists (`ops/tests/metrics.rs` fails when it
//! drifts, or when code records a `herald_*` name that is not listed here).
//!
//! Adding a metric: add an entry to [`ENGINE`] (or `herald_ingest::metrics::INGEST`), record
//! it where it happens, run `HERALD_BLESS=1 cargo test -p herald --test metrics` and commit
//! the regenerated `docs/metrics.md`. Names follow `herald_<area>_<name>_<unit>[_total]`;
//! label values must come from a bounded set (never an address or a raw domain).

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A label: its name and either its fixed values (the series are initialised to 0) or, for
/// an open but bounded label (a provider, a consumer group), what its values are.
#[derive(Debug, Clone, Copy)]
pub struct Label {
    pub name: &'static str,
    pub values: &'static [&'static str],
    pub about: &'static str,
}

/// A label with a fixed set of values.
pub const fn fixed(name: &'static str, values: &'static [&'static str]) -> Label {
    Label { name, values, about: "" }
}

/// A label whose bounded values depend on the deployment (providers, groups, topics).
pub const fn open(name: &'static str, about: &'static str) -> Label {
    Label { name, values: &[], about }
}

/// One metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [Label],
    /// The `# HELP` text (one line).
    pub help: &'static str,
    /// Where it is recorded (files, relative to the repository).
    pub source: &'static str,
    /// Histogram buckets; empty for [`LATENCY_BUCKETS`].
    pub buckets: &'static [f64],
}

/// Buckets of every latency histogram without its own: 0.5 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A delivery attempt may wait up to `delivery.command_timeout_secs` (300 s by default) for
/// one SMTP reply: its buckets reach 10 minutes.
pub const ATTEMPT_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Counts of commands folded into one embedded-log transaction.
const COMMAND_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 8192.0];

/// Counts of partition commits folded into one Kafka transaction.
const TXN_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

const GROUP: Label = open("group", "a consumer group: `<prefix>-delivery`, `<prefix>-projector`, `<prefix>-domain-projector`, `<prefix>-engagement-projector`, `<prefix>-feedback-projector`, `<prefix>-account-projector`");
const TOPIC: Label = open("topic", "a Herald topic (`<prefix>.messages`, a retry tier, …)");
const PARTITION: Label = open("partition", "a partition number (below `backend.partitions`)");
const PROVIDER: Label = open("provider", "a providers-file name, or `default`");
const SOURCE: Label = open("source", "a pool address, or `default`");
const OUTCOME: Label = fixed("outcome", &["delivered", "deferred", "failed"]);
const THROTTLE: Label = fixed("action", &["suspend", "scale_rate", "limit_rate", "cap_connections"]);

const fn m(
    name: &'static str,
    kind: Kind,
    labels: &'static [Label],
    help: &'static str,
    source: &'static str,
) -> Metric {
    Metric { name, kind, labels, help, source, buckets: &[] }
}

use Kind::{Counter, Gauge, Histogram};

/// The engine's metrics.
pub const ENGINE: &[Metric] = &[
    m("herald_ingest_accepted_messages_total", Counter, &[], "Messages (one per recipient) durably appended to the log by ingestion.", "engine/src/submit.rs"),
    m("herald_ingest_refused_fanout_total", Counter, &[], "Requests refused for body × recipients over `bodies.max_fanout_bytes`.", "engine/src/submit.rs"),
    m("herald_log_append_seconds", Histogram, &[fixed("backend", &["embedded", "kafka"])], "Time of one `EventLog::append` (ingestion) until durable, failed ones included; consumers' commits are in `herald_consumer_commit_seconds`.", "engine/src/log/{embedded,kafka/mod}.rs"),
    m("herald_log_commit_seconds", Histogram, &[], "Embedded log: time of one group-commit write transaction, fsync included.", "engine/src/log/embedded/writer.rs"),
    Metric { buckets: COMMAND_BUCKETS, ..m("herald_log_commit_commands", Histogram, &[], "Embedded log: appends and consumer commits (output records + position) folded into one transaction (1 to 8192 commands, at most 64 MiB).", "engine/src/log/embedded/writer.rs") },
    m("herald_log_trimmed_records_total", Counter, &[], "Embedded log: records deleted by retention.", "engine/src/log/embedded.rs"),
    m("herald_log_written_bytes_total", Counter, &[], "Embedded log: bytes of write-ahead frames written (appends and consumer commits).", "engine/src/log/embedded/writer.rs"),
    m("herald_log_checkpoint_seconds", Histogram, &[], "Embedded log: time of one checkpoint, a durable redb commit with its quick-repair state that lets the write-ahead file start a new generation (every 500 ms while appends keep coming, or when the file passes 24 MiB); slow checkpoints delay appends queued behind them.", "engine/src/log/embedded/writer.rs"),
    m("herald_log_write_failures_total", Counter, &[], "Embedded log: failed group writes or checkpoints (ENOSPC, EIO); each starts a recovery, and appends fail until it succeeds. Alert on any increase.", "engine/src/log/embedded/writer.rs"),
    m("herald_log_recoveries_total", Counter, &[], "Embedded log: recoveries that reopened the database and replayed the write-ahead file.", "engine/src/log/embedded/writer.rs"),
    m("herald_log_compactions_total", Counter, &[], "Embedded log: compactions run when idle.", "engine/src/log/embedded/writer.rs"),
    m("herald_log_reclaimed_bytes_total", Counter, &[], "Embedded log: bytes given back to the disk by compaction.", "engine/src/log/embedded/writer.rs"),
    m("herald_log_transaction_seconds", Histogram, &[], "Kafka: one transaction of the consumers' group commit (produce, `send_offsets_to_transaction`, commit).", "engine/src/log/kafka/txn.rs"),
    Metric { buckets: TXN_BUCKETS, ..m("herald_log_transaction_commits", Histogram, &[], "Kafka: partition commits folded into one transaction (1 to 256).", "engine/src/log/kafka/txn.rs") },
    m("herald_log_transactions_total", Counter, &[fixed("outcome", &["committed", "aborted"])], "Kafka consumer transactions by outcome (an aborted one left nothing visible; its commits are retried).", "engine/src/log/kafka/txn.rs"),
    m("herald_log_producer_rebuilds_total", Counter, &[fixed("producer", &["idempotent", "transactional"])], "Kafka producers replaced after a fatal error.", "engine/src/log/kafka/{mod,txn}.rs"),
    m("herald_log_offset_out_of_range_total", Counter, &[TOPIC], "Kafka: a group's committed offset is below the log start (retention deleted unprocessed records); the partition stops instead of skipping. Alert `HeraldConsumerBehindRetention`.", "engine/src/log/kafka/group.rs"),
    m("herald_log_misrouted_records_total", Counter, &[], "Kafka: records that reached a consumer's main queue instead of their partition's queue (never expected; alert `HeraldMisroutedRecords`).", "engine/src/log/kafka/group.rs"),
    m("herald_bodies_stored_total", Counter, &[], "Message bodies stored once on `<prefix>.bodies` (fan-outs above `bodies.inline_below_bytes`).", "engine/src/bodies.rs"),
    m("herald_bodies_stored_bytes_total", Counter, &[], "Bytes of the bodies stored once on `<prefix>.bodies`.", "engine/src/bodies.rs"),
    m("herald_bodies_loaded_total", Counter, &[], "Stored bodies read back from the log into the delivery cache (cache misses).", "engine/src/bodies.rs"),
    m("herald_bodies_read_seconds", Histogram, &[], "Time of one read of a stored body by position.", "engine/src/bodies.rs"),
    m("herald_consumer_partitions", Gauge, &[GROUP], "Partitions this node's consumers of the group own now.", "engine/src/consumer/mod.rs"),
    m("herald_consumer_assignments_total", Counter, &[GROUP], "Partitions assigned to this node.", "engine/src/consumer/mod.rs"),
    m("herald_consumer_revocations_total", Counter, &[GROUP, fixed("lost", &["true", "false"])], "Revocations (each of one or more partitions); `lost`: the node had been thrown out of the group and committed nothing.", "engine/src/consumer/mod.rs"),
    m("herald_consumer_commit_seconds", Histogram, &[GROUP], "One atomic commit of output records and position.", "engine/src/consumer/partition.rs"),
    m("herald_consumer_commit_failures_total", Counter, &[GROUP], "Failed commits (retried with backoff; alert `HeraldConsumerCommitsFailing`).", "engine/src/consumer/partition.rs"),
    m("herald_consumer_poll_errors_total", Counter, &[GROUP], "Failed polls of a partition (retried with backoff).", "engine/src/consumer/partition.rs"),
    m("herald_consumer_aborted_chunks_total", Counter, &[GROUP], "Chunks (attempts, for the worker) still in flight when a stop's drain time ran out; made again by the next owner.", "engine/src/consumer/partition.rs"),
    m("herald_consumer_lag_records", Gauge, &[GROUP, TOPIC, PARTITION], "Records of a partition this node owns that the group has not finished: not yet read, or read and waiting or in flight (sampled every 10 s; 0 once the partition is handed over). On a retry tier this is the tier's depth. Kafka: a transaction marker may count as one record until the next record arrives.", "engine/src/consumer/partition.rs"),
    m("herald_consumer_oldest_unfinished_age_seconds", Gauge, &[GROUP, TOPIC, PARTITION], "Age of the partition's oldest record the group has read and not finished, counted from its append or, on a retry tier, from when it became due (0 when none; sampled every 10 s). For the delivery group: how late the oldest undelivered message is.", "engine/src/consumer/partition.rs"),
    m("herald_delivery_attempts_total", Counter, &[OUTCOME], "Delivery attempts by recorded outcome (`failed` includes retries exhausted).", "engine/src/worker.rs"),
    Metric { buckets: ATTEMPT_BUCKETS, ..m("herald_delivery_attempt_seconds", Histogram, &[], "Time of one attempt: DKIM signing, MX look-up, SMTP session(s); buckets reach 600 s, beyond the 300 s command timeout.", "engine/src/worker.rs") },
    m("herald_delivery_smtp_transactions_total", Counter, &[fixed("session", &["new", "reused"])], "Outbound SMTP transactions (delivery to a remote MX or smart host) that got a server verdict, by whether the session came from the connection cache.", "engine/src/delivery/smtp.rs"),
    m("herald_delivery_suppressed_total", Counter, &[], "Messages not attempted because their recipient is suppressed.", "engine/src/feedback/sending.rs"),
    m("herald_dkim_signatures_total", Counter, &[], "DKIM signatures added at send time (one per key per message).", "engine/src/delivery/dkim.rs"),
    m("herald_worker_poison_records_total", Counter, &[], "Records on a delivery topic that did not decode; skipped.", "engine/src/worker.rs"),
    m("herald_provider_deliveries_total", Counter, &[PROVIDER, SOURCE, OUTCOME], "Attempts per provider and source by outcome.", "engine/src/shaping/mod.rs"),
    m("herald_provider_deferrals_total", Counter, &[PROVIDER, SOURCE, fixed("class", &["policy", "connection", "tls", "other"])], "Deferrals by class: `policy` (421 or 4.7.x), `connection` (4.4.x), `tls` (4.7.10, TLS required), `other`.", "engine/src/shaping/mod.rs"),
    m("herald_provider_parked_total", Counter, &[PROVIDER, fixed("reason", &["suspended", "warmup", "rate", "connections"])], "Messages set aside without an attempt (they come back through the log).", "engine/src/shaping/mod.rs"),
    m("herald_provider_queue_wait_seconds", Histogram, &[PROVIDER], "Time a message waited in memory for its lane's rate.", "engine/src/shaping/mod.rs"),
    m("herald_provider_rate_messages_per_second", Gauge, &[PROVIDER, SOURCE], "Admissions per second on this node over the last 10 s.", "engine/src/shaping/mod.rs"),
    m("herald_provider_connections", Gauge, &[PROVIDER, SOURCE, fixed("state", &["open", "busy"])], "The lanes' SMTP connections on this node.", "engine/src/shaping/mod.rs"),
    m("herald_provider_waiting_messages", Gauge, &[PROVIDER, SOURCE], "Messages waiting in memory for their lane.", "engine/src/shaping/mod.rs"),
    m("herald_provider_share_ratio", Gauge, &[PROVIDER, SOURCE], "This node's share of the provider's cluster-wide limits (1: alone).", "engine/src/shaping/mod.rs"),
    m("herald_provider_throttles_total", Counter, &[PROVIDER, THROTTLE], "Throttles begun by this node (rules and operators).", "engine/src/shaping/mod.rs"),
    m("herald_provider_throttles_active", Gauge, &[PROVIDER, THROTTLE], "Throttles in force across the cluster, as this node applies them (a `suspend` at 1: the provider is suspended).", "engine/src/shaping/mod.rs"),
    m("herald_shaping_append_failures_total", Counter, &[], "Failed appends to `<prefix>.shaping` (retried; usage reports are dropped).", "engine/src/shaping/feed.rs"),
    m("herald_shaping_poison_records_total", Counter, &[], "Records on `<prefix>.shaping` that did not decode; skipped.", "engine/src/shaping/feed.rs"),
    m("herald_projector_poison_records_total", Counter, &[], "Records read by the projector that did not decode; skipped.", "engine/src/projector.rs"),
    m("herald_projector_events_total", Counter, &[], "Projected events applied to the store, duplicates skipped by the store included.", "engine/src/projector.rs"),
    m("herald_accounts_known", Gauge, &[], "Accounts in this node's snapshot (API-made and config, deleted ones left out).", "engine/src/accounts/directory.rs"),
    m("herald_accounts_cache_rebuilds_total", Counter, &[], "Times this node rebuilt its account snapshot (a change seen in the projection's positions, or one made here).", "engine/src/accounts/directory.rs"),
    m("herald_account_events_total", Counter, &[open("type", "an account event type (`account.created`, `account.api_key_created`, …)")], "Account events applied by the account projector.", "engine/src/accounts/projector.rs"),
    m("herald_delivery_account_held_total", Counter, &[], "Queued messages of suspended accounts set aside by a worker (no attempt used).", "engine/src/worker.rs"),
    m("herald_domain_events_total", Counter, &[open("type", "a domain event type (`domain.added`, …)")], "Sender-domain events folded by the domain projector (replays included).", "engine/src/domains/projector.rs"),
    m("herald_domain_status_changes_total", Counter, &[fixed("to", &["pending", "verified", "failing"])], "Sender-domain verification status transitions (`failing`: a verified domain's records stopped checking out).", "engine/src/domains/service.rs"),
    m("herald_domain_keys_sealed_total", Counter, &[fixed("reason", &["new", "migrated", "rewrapped"])], "DKIM private keys sealed under a master key into the domains topic: new keys, key files from before ADR 0017, re-wraps under a newer master key.", "engine/src/domains/service.rs"),
    m("herald_keys_reloads_total", Counter, &[fixed("outcome", &["changed", "failed"])], "Reloads of the master keyring file that changed it, or failed (the previous keyring stays).", "engine/src/domains/vault.rs"),
    m("herald_dns_queries_total", Counter, &[fixed("answer", &["records", "nodata", "nxdomain", "refused"])], "Queries answered by Herald's DNS server.", "engine/src/domains/dns.rs"),
    m("herald_rewrite_messages_total", Counter, &[], "Messages rewritten before signing (some option asked for it).", "engine/src/rewrite/mod.rs"),
    m("herald_rewrite_bodies_prepared_total", Counter, &[], "Distinct bodies prepared (parsed, inlined, link-scanned): the per-body work.", "engine/src/rewrite/mod.rs"),
    m("herald_rewrite_cache_hits_total", Counter, &[], "Messages whose prepared body came from the cache (only the token was made).", "engine/src/rewrite/mod.rs"),
    m("herald_rewrite_cache_bytes", Gauge, &[], "Bytes of prepared bodies held (bounded by `[tracking] body_cache_mb`).", "engine/src/rewrite/cache.rs"),
    m("herald_rewrite_skipped_total", Counter, &[fixed("reason", &["unparsable", "bad_transfer_encoding", "charset", "html", "css"])], "Messages or parts left as they were (or CSS left in `<style>`), by why.", "engine/src/rewrite/mod.rs"),
    m("herald_engagement_events_total", Counter, &[fixed("kind", &["opened", "clicked", "unsubscribed"]), fixed("machine", &["true", "false"])], "Engagement events projected (replays included).", "engine/src/engagement.rs"),
    m("herald_feedback_bounces_total", Counter, &[fixed("source", &["sync", "dsn"]), fixed("type", &["permanent", "transient", "undetermined"]), open("class", "a bounce class (`bounce-rules.md`, 20 values)")], "Bounces classified: refusals seen by the worker, DSNs and text bounces read by the bounce MX.", "engine/src/feedback/{sending,receive}.rs"),
    m("herald_feedback_complaints_total", Counter, &[fixed("feedback_type", &["abuse", "fraud", "virus", "auth-failure", "not-spam", "other"])], "ARF complaints attributed to a message.", "engine/src/feedback/receive.rs"),
    m("herald_feedback_projected_events_total", Counter, &[fixed("kind", &["bounce", "complaint", "suppressed", "lifted", "message_suppressed"]), open("detail", "the bounce type or suppression reason, else `-`")], "Feedback events applied by the feedback projector (replays included).", "engine/src/feedback/projector.rs"),
    m("herald_suppression_index_entries", Gauge, &[], "Entries in this node's suppression index (expired ones until replaced or lifted).", "engine/src/feedback/index.rs"),
    m("herald_suppression_index_bytes", Gauge, &[], "Capacity of the suppression index's tables, in bytes.", "engine/src/feedback/index.rs"),
    m("herald_webhooks_attempts_total", Counter, &[fixed("outcome", &["delivered", "failed", "gone", "dropped"])], "Webhook requests made (and deliveries dropped without one: endpoint deleted or disabled).", "engine/src/webhooks/dispatch.rs"),
    m("herald_webhooks_request_seconds", Histogram, &[], "Time of one webhook request (bounded by the inline budget for first attempts).", "engine/src/webhooks/dispatch.rs"),
    m("herald_webhooks_event_to_delivery_seconds", Histogram, &[], "From the event's time to the 2xx of its webhook.", "engine/src/webhooks/dispatch.rs"),
    m("herald_webhooks_set_aside_total", Counter, &[], "First attempts not made because the endpoint is failing (set aside on retry tier 0).", "engine/src/webhooks/dispatch.rs"),
    m("herald_webhooks_poison_records_total", Counter, &[], "Undecodable records skipped by the webhook dispatchers.", "engine/src/webhooks/dispatch.rs"),
    m("herald_reports_intervals_total", Counter, &[fixed("outcome", &["sent", "empty", "elsewhere"])], "Report intervals settled by this node: its report appended here, nothing to report, or reported by another node (or before a restart).", "engine/src/reports/runner.rs"),
    m("herald_reports_errors_total", Counter, &[], "Bounce reports that failed (store or log unavailable); tried again at the next tick.", "engine/src/reports/runner.rs"),
];

/// Describes `metrics` to the installed recorder and initialises to 0 every series whose
/// labels all have fixed values (a histogram is registered without a sample). Without a
/// recorder (tests, library use) it does nothing.
pub fn describe(metrics: &[Metric]) {
    for metric in metrics {
        let help = metric.help;
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, help),
            Kind::Histogram => metrics::describe_histogram!(metric.name, help),
        }
        if metric.labels.iter().all(|l| !l.values.is_empty()) {
            for labels in combinations(metric.labels) {
                match metric.kind {
                    Kind::Counter => metrics::counter!(metric.name, labels.clone()).increment(0),
                    Kind::Gauge => metrics::gauge!(metric.name, labels.clone()).increment(0.0),
                    Kind::Histogram => drop(metrics::histogram!(metric.name, labels.clone())),
                }
            }
        }
    }
}

/// Every combination of the labels' fixed values (one empty set for no labels).
pub fn combinations(labels: &[Label]) -> Vec<Vec<metrics::Label>> {
    let mut out: Vec<Vec<metrics::Label>> = vec![vec![]];
    for label in labels {
        out = out
            .into_iter()
            .flat_map(|set| {
                label.values.iter().map(move |v| {
                    let mut next = set.clone();
                    next.push(metrics::Label::new(label.name, *v));
                    next
                })
            })
            .collect();
    }
    out
}

/// Zero series of a consumer group's counters, at the start of its consumers.
pub fn init_group(group: &str) {
    for name in [
        "herald_consumer_assignments_total",
        "herald_consumer_commit_failures_total",
        "herald_consumer_poll_errors_total",
        "herald_consumer_aborted_chunks_total",
    ] {
        metrics::counter!(name, "group" => group.to_owned()).increment(0);
    }
    metrics::gauge!("herald_consumer_partitions", "group" => group.to_owned()).increment(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_cover_every_value_pair() {
        let labels = [fixed("a", &["1", "2"]), fixed("b", &["x", "y", "z"])];
        let sets = combinations(&labels);
        assert_eq!(sets.len(), 6);
        assert!(sets.iter().any(|s| s[0].value() == "2" && s[1].value() == "z"));
        assert_eq!(combinations(&[]).len(), 1, "a metric without labels has one series");
    }
}

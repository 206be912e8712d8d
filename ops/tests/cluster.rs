//! Scale-out with real `herald serve` processes on the shared Kafka and Cassandra (unique
//! topic prefix and keyspace per test): nodes join and leave the consumer groups with no
//! config change.
//! - three nodes under load, `kill -9` of one, a fourth started: every acknowledged
//!   message reaches the sink, duplicates stay within the bound, and every message shows
//!   `delivered` through any node's API;
//! - a rolling restart of every node under load: nothing lost, no duplicate;
//! - failover after `kill -9` and handover on SIGTERM, timed (figures for
//!   docs/benchmarks.md);
//! - three nodes sharing one provider's rate limit: the cluster, not each node, keeps it.

mod support;

/// The scenarios run one at a time: each runs several `herald` processes on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

use std::collections::HashSet;
use std::time::{Duration, Instant};
use support::dns::{Knot, Zone};
use support::herald::Backends;
use support::node::{arrivals, send, Cluster, Node};
use support::sink::Sink;

const PARTITIONS: u32 = 8;

fn zones(n: usize) -> Vec<Zone> {
    (0..n)
        .map(|d| Zone { origin: format!("d{d}.test"), records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()] })
        .collect()
}

/// Sends `recipients` spread over the running nodes, `parallel` at a time; returns the
/// acknowledged (id, recipient) pairs. A send to a node that is down is tried on another.
async fn spread(nodes: &[String], recipients: Vec<String>, parallel: usize) -> Vec<(String, String)> {
    let http = reqwest::Client::new();
    let mut acked = Vec::new();
    for (c, chunk) in recipients.chunks(parallel).enumerate() {
        let sends = chunk.iter().enumerate().map(|(i, r)| {
            let http = http.clone();
            let r = r.clone();
            async move {
                for k in 0..nodes.len() {
                    let base = &nodes[(c + i + k) % nodes.len()];
                    if let Some(id) = send(&http, base, &r).await {
                        return Some((id, r));
                    }
                }
                None
            }
        });
        acked.extend(futures::future::join_all(sends).await.into_iter().flatten());
    }
    acked
}

/// Waits until every one of `recipients` reached the sink. On a timeout the panic says how
/// many arrived, which domains the missing ones are for, and the end of each node's log.
async fn wait_all_at_sink(sink: &Sink, recipients: &[String], secs: u64, what: &str, nodes: &[&Node]) -> Duration {
    let started = Instant::now();
    support::until(secs, what, || async {
        let got = arrivals(sink);
        let missing: Vec<String> = recipients.iter().filter(|r| !got.contains_key(*r)).cloned().collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Missing { missing, of: recipients.len(), nodes })
        }
    })
    .await;
    started.elapsed()
}

/// Recipients not at the sink yet; shown (with the nodes' logs, read only then) when a
/// wait times out.
struct Missing<'a> {
    missing: Vec<String>,
    of: usize,
    nodes: &'a [&'a Node],
}

impl std::fmt::Display for Missing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut domains: Vec<&str> = self.missing.iter().filter_map(|r| r.split('@').nth(1)).collect();
        domains.sort();
        domains.dedup();
        let example = &self.missing[..self.missing.len().min(5)];
        write!(f, "{} of {} missing (domains {domains:?}; e.g. {example:?})", self.missing.len(), self.of)?;
        for n in self.nodes {
            write!(f, "\n--- {} (running: {}):\n{}", n.name, n.is_running(), n.log_tail(40))?;
        }
        Ok(())
    }
}

fn bases(nodes: &[&Node]) -> Vec<String> {
    nodes.iter().filter(|n| n.is_running()).map(|n| n.base.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_kill_one_start_a_fourth() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&zones(30));
    let (sink, addr) = Sink::start(0).await;
    let cluster = Cluster::new(Backends::KafkaCql, knot.port, addr.port(), PARTITIONS);
    let mut a = Node::start(&cluster, dir.path(), "a").await;
    let b = Node::start(&cluster, dir.path(), "b").await;
    let c = Node::start(&cluster, dir.path(), "c").await;
    let all: Vec<String> = (0..3000).map(|i| format!("r{i}@d{}.test", i % 30)).collect();
    let mut acked = spread(&bases(&[&a, &b, &c]), all[..1200].to_vec(), 30).await;
    a.kill();
    let killed_at = Instant::now();
    acked.extend(spread(&bases(&[&a, &b, &c]), all[1200..2000].to_vec(), 30).await);
    let d = Node::start(&cluster, dir.path(), "d").await;
    acked.extend(spread(&bases(&[&a, &b, &c, &d]), all[2000..].to_vec(), 30).await);
    assert_eq!(acked.len(), all.len(), "every send was acknowledged by a running node");
    let recipients: Vec<String> = acked.iter().map(|(_, r)| r.clone()).collect();
    wait_all_at_sink(&sink, &recipients, 240, "every acknowledged message at the sink", &[&a, &b, &c, &d]).await;
    eprintln!(
        "FIGURE 3 nodes + kill -9 + a 4th: all 3000 delivered {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = arrivals(&sink);
    let twice: usize = got.values().map(|n| n - 1).sum();
    let duplicates = support::node::redeliveries(&sink);
    eprintln!(
        "FIGURE duplicates after one kill -9 under load (3000 messages): {duplicates} delivered twice \
         ({twice} recipients reached twice, {} of them sent twice by the client after a timeout)",
        twice.saturating_sub(duplicates)
    );
    // The documented bound (docs/ARCHITECTURE.md, "Duplicates"): the attempts in flight or
    // finished but not yet committed on the killed node, at most a window in flight and a
    // window finished (`delivery.batch_size`, 256, each) per partition it owned; one of
    // three nodes owns at most 3 of the 8 partitions. Earlier runs saw 0; a faster machine
    // sees 0–335 (stops 26 and 27), the attempts that had finished and waited for their
    // transaction when the node died.
    let bound = 2 * 256 * PARTITIONS.div_ceil(3) as usize;
    assert!(duplicates <= bound, "{duplicates} duplicates after one kill -9 (bound {bound})");
    // Every message is `delivered` through any node's API.
    let http = reqwest::Client::new();
    let apis = bases(&[&b, &c, &d]);
    for (i, (id, _)) in acked.iter().enumerate() {
        support::node::wait_delivered(&http, &apis[i % apis.len()], id).await;
    }
    drop((b, c, d));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&zones(16));
    let (sink, addr) = Sink::start(0).await;
    let cluster = Cluster::new(Backends::KafkaCql, knot.port, addr.port(), PARTITIONS);
    let mut nodes = [
        Node::start(&cluster, dir.path(), "a").await,
        Node::start(&cluster, dir.path(), "b").await,
        Node::start(&cluster, dir.path(), "c").await,
    ];
    let all: Vec<String> = (0..1600).map(|i| format!("r{i}@d{}.test", i % 16)).collect();
    let mut acked = Vec::new();
    let mut stops = Vec::new();
    for (round, chunk) in all.chunks(400).enumerate() {
        let live: Vec<String> = nodes.iter().filter(|n| n.is_running()).map(|n| n.base.clone()).collect();
        // Load, and one node restarting meanwhile (the last round only sends).
        let load = spread(&live, chunk.to_vec(), 10);
        if round < nodes.len() {
            let node = &mut nodes[round];
            let restart = async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let took = node.stop(Duration::from_secs(40)).await;
                node.restart().await;
                took
            };
            let (got, took) = tokio::join!(load, restart);
            acked.extend(got);
            stops.push(took.as_secs_f64());
        } else {
            acked.extend(load.await);
        }
    }
    let recipients: Vec<String> = acked.iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(recipients.len(), all.len(), "every send was acknowledged by a running node");
    wait_all_at_sink(
        &sink,
        &recipients,
        240,
        "every acknowledged message at the sink",
        &nodes.iter().collect::<Vec<_>>(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = arrivals(&sink);
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    eprintln!("FIGURE rolling restart of 3 nodes under load (1600 messages): graceful stops took {stops:?} s; duplicates {duplicates}");
    let unique: HashSet<&String> = recipients.iter().collect();
    assert_eq!(unique.len(), got.len(), "nothing lost");
    assert_eq!(duplicates, 0, "graceful handovers deliver nothing twice");
}

/// Sends one message to each of `n` domains through `base`; returns the recipients.
async fn one_per_domain(base: &str, n: usize, tag: &str) -> Vec<String> {
    let recipients: Vec<String> = (0..n).map(|d| format!("{tag}{d}@d{d}.test")).collect();
    let acked = spread(&[base.to_owned()], recipients.clone(), n).await;
    assert_eq!(acked.len(), n);
    recipients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_after_kill_9_and_handover_on_sigterm() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let domains = 32; // covers all 8 partitions
    let knot = Knot::start(&zones(domains));
    let (sink, addr) = Sink::start(0).await;
    let cluster = Cluster::new(Backends::KafkaCql, knot.port, addr.port(), PARTITIONS);
    let mut a = Node::start(&cluster, dir.path(), "a").await;
    let b = Node::start(&cluster, dir.path(), "b").await;
    // Both own partitions once deliveries flow on every partition.
    let warm: Vec<String> = (0..domains).map(|d| format!("warm{d}@d{d}.test")).collect();
    let warm_ids = spread(std::slice::from_ref(&b.base), warm.clone(), domains).await;
    assert_eq!(warm_ids.len(), domains);
    wait_all_at_sink(&sink, &warm, 90, "warm-up deliveries", &[&a, &b]).await;
    // Nothing in flight on `a` at the kill: every warm-up attempt is committed (the
    // projection reads committed transactions only), however loaded the machine is.
    let http = reqwest::Client::new();
    for (id, _) in &warm_ids {
        support::node::wait_delivered(&http, &b.base, id).await;
    }

    a.kill();
    let killed = Instant::now();
    let after_kill = one_per_domain(&b.base, domains, "kill").await;
    wait_all_at_sink(&sink, &after_kill, 60, "deliveries on every partition after kill -9", &[&a, &b]).await;
    let failover = killed.elapsed();

    a.restart().await;
    let rejoin = one_per_domain(&b.base, domains, "rejoin").await;
    wait_all_at_sink(&sink, &rejoin, 90, "deliveries after the node rejoined", &[&a, &b]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let stopping = Instant::now();
    let stop = a.stop(Duration::from_secs(40));
    let after_stop = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        one_per_domain(&b.base, domains, "stop").await
    };
    let (stop_took, after_stop) = tokio::join!(stop, after_stop);
    wait_all_at_sink(&sink, &after_stop, 60, "deliveries on every partition after SIGTERM", &[&b]).await;
    let handover = stopping.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let duplicates: usize = arrivals(&sink).values().map(|n| n - 1).sum();
    eprintln!(
        "FIGURE failover after kill -9: every partition delivering again after {:.1} s (session timeout 6 s); \
         handover on SIGTERM: {:.1} s (stop took {:.1} s); duplicates {duplicates}",
        failover.as_secs_f64(),
        handover.as_secs_f64(),
        stop_took.as_secs_f64()
    );
    // Goal ≤ 15 s (7.5 s measured alone, docs/benchmarks.md); the bound leaves room for the
    // other suites sharing the two cores in a full run.
    assert!(failover <= Duration::from_secs(30), "failover took {failover:?} (goal ≤ 15 s)");
    assert!(
        handover <= Duration::from_secs(15),
        "handover took {handover:?}; the stopped node's log:\n{}",
        a.log_tail(80)
    );
    assert_eq!(duplicates, 0, "no message was delivered twice");
    drop(b);
}

/// Cluster-wide limits (`docs/shaping.md#cluster-wide-limits`): a provider limited to
/// 30 msg/s, 900 messages to 24 of its customers' domains sent through three nodes, whose
/// partitions (and so the provider's traffic) are spread over all three. Each node takes a
/// share of the limit weighted by the demand the nodes report, so the sink sees a shared
/// limit, not each delivering node's own 30/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_provider_limit() {
    const LIMIT: f64 = 30.0;
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut zones: Vec<Zone> = (0..24)
        .map(|d| Zone { origin: format!("p{d}.test"), records: vec!["@ MX 10 mx.provider.test.".into()] })
        .collect();
    zones.push(Zone { origin: "provider.test".into(), records: vec!["mx A 127.0.0.1".into()] });
    let knot = Knot::start(&zones);
    let (sink, addr) = Sink::start(0).await;
    let providers = dir.path().join("providers.toml");
    std::fs::write(
        &providers,
        format!(
            "replace_shipped = true\n[providers.default]\nmax_connections = 20\n\
             [providers.shared]\nmx_suffixes = [\".provider.test\"]\nmessages_per_second = {LIMIT}\n"
        ),
    )
    .unwrap();
    let mut cluster = Cluster::new(Backends::KafkaCql, knot.port, addr.port(), PARTITIONS);
    cluster.delivery = format!("providers_file = \"{}\"", providers.display());
    let a = Node::start(&cluster, dir.path(), "a").await;
    let b = Node::start(&cluster, dir.path(), "b").await;
    let c = Node::start(&cluster, dir.path(), "c").await;
    // Every node owns part of the delivery group before the load starts.
    let group = cluster.group("delivery");
    for n in [&a, &b, &c] {
        support::eventually(60, &format!("{} to own partitions", n.name), || async {
            let text = metrics_text(&n.base).await;
            let prefix = format!("herald_consumer_partitions{{group=\"{group}\"}} ");
            let owned: f64 = text.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())?;
            (owned > 0.0).then_some(())
        })
        .await;
    }
    let all: Vec<String> = (0..900).map(|i| format!("r{i}@p{}.test", i % 24)).collect();
    let acked = spread(&bases(&[&a, &b, &c]), all.clone(), 30).await;
    assert_eq!(acked.len(), all.len());
    wait_all_at_sink(&sink, &all, 240, "every message at the sink", &[&a, &b, &c]).await;
    let mut times: Vec<Instant> = sink.messages().iter().map(|m| m.at).collect();
    times.sort();
    let span = (*times.last().unwrap() - times[0]).as_secs_f64();
    let rate = (times.len() - 1) as f64 / span;
    // Busiest 5 s window once every node has reported its demand (the shares' error bound:
    // a node sees the others' demand one report interval plus the log's latency late).
    let settled: Vec<Instant> = times.iter().copied().filter(|t| *t - times[0] >= Duration::from_secs(5)).collect();
    let busiest = (0..settled.len())
        .map(|i| settled[i..].iter().take_while(|t| **t - settled[i] < Duration::from_secs(5)).count())
        .max()
        .unwrap_or(0);
    let first5 = times.iter().take_while(|t| **t - times[0] < Duration::from_secs(5)).count();
    let mut nodes_delivering = 0;
    for n in [&a, &b, &c] {
        let text = metrics_text(&n.base).await;
        let delivered = text.lines().any(|l| {
            l.starts_with("herald_provider_deliveries_total{")
                && l.contains("provider=\"shared\"")
                && l.contains("outcome=\"delivered\"")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0)
        });
        nodes_delivering += usize::from(delivered);
    }
    eprintln!(
        "FIGURE 3 nodes sharing a {LIMIT} msg/s provider limit: {rate:.1} msg/s over {span:.1} s at the sink \
         (busiest 5 s after the first 5 s: {busiest}; first 5 s: {first5}); {nodes_delivering} nodes delivered"
    );
    assert!(nodes_delivering >= 2, "the provider's traffic was spread over {nodes_delivering} node(s)");
    // Shared, not per node: nodes that each took the whole limit would reach
    // `nodes_delivering × LIMIT`. The documented bound (docs/shaping.md): once the reports
    // flow, the applied shares add up to at most one, so any 5 s holds the limit's 5 s
    // within the pacers' bursts and the reporting delay (20 % here); the first 5 s add
    // at most what each node sent before it saw the others' reports.
    assert!(rate < LIMIT * 1.2, "{rate:.1} msg/s at the sink for a cluster-wide {LIMIT}/s");
    assert!((busiest as f64) < LIMIT * 5.0 * 1.2, "{busiest} messages within 5 s for a cluster-wide {LIMIT}/s");
    assert!(rate >= LIMIT * 0.6, "{rate:.1} msg/s: the cluster should use most of its {LIMIT}/s");
    drop((a, b, c));
}

/// A node's `/metrics` text (empty when it does not answer).
async fn metrics_text(base: &str) -> String {
    match reqwest::get(format!("{base}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

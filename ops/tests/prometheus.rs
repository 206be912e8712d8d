//! Prometheus against Herald: the shipped rules (`ops/prometheus/herald-rules.yml`) load and
//! their `promtool` unit tests pass, every alert has a unit test and a runbook section in
//! `docs/operations.md`; and a real Prometheus scrapes a running `herald serve` whose
//! `/metrics` has `# HELP` and `# TYPE` for every metric, the fixed series initialised to 0,
//! process and build info, per-route HTTP counts, `/readyz` answering 200 with the log and
//! the store up, and consumer lag that rises while the
//! sink defers and falls back to 0 once everything is delivered; the recording rules
//! evaluate over the scraped series (promtool and prometheus from Debian's `prometheus`
//! package, installed by `ops/scripts/install-peers.sh`).

mod support;

use herald_engine::metrics::Kind;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use support::dns::{Knot, Zone};
use support::herald::Backends;
use support::node::{Cluster, Node};
use support::sink::Sink;

fn promtool(args: &[&str]) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("promtool (Debian prometheus; ops/scripts/install-peers.sh installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).unwrap()
}

fn alert_names() -> Vec<String> {
    read("ops/prometheus/herald-rules.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: ").map(str::to_owned))
        .collect()
}

#[test]
fn rules_load_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", "herald-rules.yml"]);
    assert!(checked.contains("SUCCESS: 21 rules found"), "{checked}");
    promtool(&["test", "rules", "herald-rules.test.yml"]);
}

#[test]
fn every_alert_has_a_unit_test_and_a_runbook() {
    let tests = read("ops/prometheus/herald-rules.test.yml");
    let runbook = read("docs/operations.md");
    let alerts = alert_names();
    assert!(alerts.len() >= 15, "{alerts:?}");
    for alert in alerts {
        let firing = format!("alertname: {alert}\n        exp_alerts:\n          - exp_labels:");
        assert!(tests.contains(&firing), "{alert} has no promtool test in which it fires");
        assert!(runbook.contains(&format!("\n### {alert}\n")), "docs/operations.md has no `### {alert}` runbook");
        let anchor = format!("runbook_url: \"docs/operations.md#{}\"", alert.to_lowercase());
        assert!(read("ops/prometheus/herald-rules.yml").contains(&anchor), "{alert}: runbook_url should be {anchor}");
    }
}

/// `/metrics` text: sample values by series, and the HELP and TYPE of each family.
struct Exposition {
    samples: BTreeMap<String, f64>,
    help: BTreeSet<String>,
    types: BTreeMap<String, String>,
}

fn parse(text: &str) -> Exposition {
    let mut e = Exposition { samples: BTreeMap::new(), help: BTreeSet::new(), types: BTreeMap::new() };
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            e.help.insert(rest.split(' ').next().unwrap().to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            e.types.insert(it.next().unwrap().to_owned(), it.next().unwrap().to_owned());
        } else if !line.starts_with('#') {
            let (series, value) = line.rsplit_once(' ').unwrap();
            e.samples.insert(series.to_owned(), value.parse().unwrap());
        }
    }
    e
}

impl Exposition {
    fn family(series: &str) -> &str {
        series.split('{').next().unwrap()
    }

    /// Sum of the samples of `name` whose labels contain every one of `having`.
    fn sum(&self, name: &str, having: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(s, _)| Self::family(s) == name && having.iter().all(|h| s.contains(h)))
            .map(|(_, v)| v)
            .sum()
    }

    fn has(&self, name: &str, having: &[&str]) -> bool {
        self.samples.keys().any(|s| Self::family(s) == name && having.iter().all(|h| s.contains(h)))
    }
}

async fn scrape(http: &reqwest::Client, base: &str) -> Exposition {
    parse(&http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap())
}

/// The exposition is complete: HELP and TYPE for every family, the type the list says, no
/// unlisted metric, every series of fixed labels present.
fn check_exposition(e: &Exposition) {
    let listed: BTreeMap<&str, Kind> = herald::metrics::all().iter().map(|m| (m.name, m.kind)).collect();
    for series in e.samples.keys() {
        let name = Exposition::family(series);
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| e.types.get(*f).is_some_and(|t| t == "histogram")))
            .unwrap_or(name);
        assert!(e.help.contains(family), "{family} has no # HELP");
        let kind = listed.get(family).unwrap_or_else(|| panic!("{family} is exported but not in a metric list"));
        assert_eq!(e.types.get(family).map(String::as_str), Some(kind.as_str()), "# TYPE of {family}");
    }
    for m in herald::metrics::all() {
        if m.name.starts_with("herald_") && m.labels.iter().all(|l| !l.values.is_empty()) {
            let name = if m.kind == Kind::Histogram { format!("{}_count", m.name) } else { m.name.to_owned() };
            for labels in herald_engine::metrics::combinations(m.labels) {
                let want: Vec<String> = labels.iter().map(|l| format!("{}=\"{}\"", l.key(), l.value())).collect();
                let want: Vec<&str> = want.iter().map(String::as_str).collect();
                assert!(e.has(&name, &want), "{name}{want:?} is not initialised");
            }
        }
    }
    assert!(e.sum("process_resident_memory_bytes", &[]) > 1e6, "process metrics");
    assert!(e.sum("process_open_fds", &[]) > 0.0);
    assert!(e.has("herald_build_info", &[&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))]));
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_prometheus(dir: &Path, target: &str) -> (Prometheus, String) {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus/herald-rules.yml");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: herald\n    static_configs:\n      - targets: ['{target}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let port = support::free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus (Debian prometheus)");
    (Prometheus(child), format!("http://127.0.0.1:{port}"))
}

/// The value of the first series `query` returns in Prometheus.
async fn query(http: &reqwest::Client, prometheus: &str, query: &str) -> Option<f64> {
    let r: serde_json::Value = http
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    r["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

async fn scraped_by_prometheus(backends: Backends) {
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&[Zone {
        origin: "example.test".into(),
        records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()],
    }]);
    let (sink, sink_addr) = Sink::start(0).await;
    sink.defer_all(true);
    let mut cluster = Cluster::new(backends, knot.port, sink_addr.port(), 2);
    cluster.delivery = "retry_initial_secs = 1\nretry_max_delay_secs = 2".into();
    let node = Node::start(&cluster, dir.path(), "n1").await;
    let http = reqwest::Client::new();
    let delivery = cluster.group("delivery");

    check_exposition(&scrape(&http, &node.base).await);
    let ready = http.get(format!("{}/readyz", node.base)).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200, "/readyz: {:?}", ready.text().await);

    for i in 0..10 {
        assert!(support::node::send(&http, &node.base, &format!("r{i}@example.test")).await.is_some());
    }
    let _ = http.get(format!("{}/v1/nothing-here", node.base)).send().await.unwrap();
    let group = format!("group=\"{delivery}\"");
    support::eventually(60, "deferred messages to show as lag on the retry tiers", || async {
        let e = scrape(&http, &node.base).await;
        (e.sum("herald_consumer_lag_records", &[&group, ".retry."]) > 0.0).then_some(())
    })
    .await;
    let e = scrape(&http, &node.base).await;
    check_exposition(&e);
    assert_eq!(e.sum("herald_http_requests_total", &["route=\"/v1/send\"", "method=\"POST\"", "status=\"2xx\""]), 10.0);
    assert_eq!(e.sum("herald_http_requests_total", &["route=\"unmatched\"", "status=\"4xx\""]), 1.0);
    assert!(e.sum("herald_http_request_duration_seconds_count", &["route=\"/v1/send\""]) >= 10.0);
    assert!(e.sum("herald_delivery_attempts_total", &["outcome=\"deferred\""]) >= 1.0);

    let (_prometheus, prom) = start_prometheus(dir.path(), node.base.trim_start_matches("http://"));
    let lag_rule = format!("sum(herald:consumer_lag_records:sum{{{group}, topic=~\".*retry.*\"}})");
    support::eventually(60, "Prometheus to scrape Herald and evaluate the lag recording rule", || async {
        let up = query(&http, &prom, "up{job=\"herald\"}").await?;
        let lag = query(&http, &prom, &lag_rule).await?;
        (up == 1.0 && lag > 0.0).then_some(())
    })
    .await;
    let rules: serde_json::Value = http.get(format!("{prom}/api/v1/rules")).send().await.unwrap().json().await.unwrap();
    let groups = rules["data"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 4);
    for rule in groups.iter().flat_map(|g| g["rules"].as_array().unwrap()) {
        assert_eq!(rule["health"], "ok", "{rule}");
    }

    sink.defer_all(false);
    support::eventually(90, "every message delivered and the delivery lag back to 0", || async {
        let e = scrape(&http, &node.base).await;
        let delivered = e.sum("herald_delivery_attempts_total", &["outcome=\"delivered\""]);
        let lag = e.sum("herald_consumer_lag_records", &[&group]);
        let age = e.sum("herald_consumer_oldest_unfinished_age_seconds", &[&group]);
        (delivered >= 10.0 && lag == 0.0 && age == 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_herald_embedded() {
    scraped_by_prometheus(Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_herald_kafka_cql() {
    scraped_by_prometheus(Backends::KafkaCql).await;
}

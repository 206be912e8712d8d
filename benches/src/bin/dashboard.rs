//! The dashboard's stats page at scale: an account with `--messages` messages (default
//! 1,000,000) spread over the last 30 days is written into the embedded projection store
//! through its own write path (`ProjectionStore::apply` and `apply_engagement`, as the
//! projectors do), a `herald serve` is started on that data directory, and headless
//! Chromium (`ops/tests/ui/first_render.py`, Selenium) loads `/ui/#/stats` `--runs` times:
//! first contentful paint and the time until the charts are drawn (the page's
//! `herald:stats-rendered` mark), both from navigation start. The API call behind the page
//! is timed alone too (reqwest), to tell server time from browser time.
//!
//! Usage (after `cargo build -p herald -p herald-benches`, or `--release`):
//!   target/<profile>/dashboard [--messages N] [--runs N] [--herald PATH]

use anyhow::{Context, Result};
use herald_benches::procs::{free_port, Proc};
use herald_engine::store::embedded::EmbeddedStore;
use herald_engine::store::{EngagementKind, EngagementRow, Kind, Projected, ProjectionStore};
use herald_schemas::{AccountId, MessageId, Timestamp};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DAY: i64 = 86_400_000;
const KEY: &str = "dashboard-bench-key";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// Message `i` of `n`: accepted at its time between the start of the UTC day 29 days ago
/// and `end` (the 30 days the page shows by default), one attempt
/// (97 % delivered, 2 % deferred then delivered, 1 % failed); 20 % opened, 5 % clicked.
fn events(account: &AccountId, i: u64, n: u64, end: i64) -> (Vec<Projected>, Vec<EngagementRow>) {
    let start = (end / DAY - 29) * DAY;
    let at = start + ((i as i128 * (end - start) as i128) / n as i128) as i64;
    let id = MessageId(format!("{i:032x}"));
    let recipient = format!("r{}@example{}.test", i, i % 100);
    let ev = |seq: u32, kind: Kind, at: i64| Projected {
        account: account.clone(),
        message_id: id.clone(),
        seq,
        recipient: recipient.clone(),
        kind,
        at: Timestamp(at),
        detail: serde_json::json!({ "type": if seq == 0 { "message.accepted" } else { "delivery.attempted" } }),
    };
    let mut out = vec![ev(0, Kind::Accepted, at)];
    match i % 100 {
        0 => out.push(ev(1, Kind::Failed, at + 2_000)),
        1 | 2 => {
            out.push(ev(1, Kind::Deferred, at + 2_000));
            out.push(ev(2, Kind::Delivered, at + 62_000));
        }
        _ => out.push(ev(1, Kind::Delivered, at + 2_000)),
    }
    let mut engagement = vec![];
    let row = |kind, url: Option<&str>| EngagementRow {
        account: account.clone(),
        message_id: id.clone(),
        event_id: format!("{i:x}-{kind:?}"),
        kind,
        at: Timestamp(at + 600_000),
        machine: false,
        url: url.map(str::to_owned),
        detail: serde_json::json!({}),
    };
    if i.is_multiple_of(5) {
        engagement.push(row(EngagementKind::Opened, None));
    }
    if i.is_multiple_of(20) {
        engagement.push(row(EngagementKind::Clicked, Some("https://shop.example/sale")));
    }
    (out, engagement)
}

async fn seed(path: &Path, n: u64) -> Result<f64> {
    let store = EmbeddedStore::open(path)?;
    let account = AccountId("bench".into());
    let end = Timestamp::now().millis();
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let (mut batch, mut engaged) = (vec![], vec![]);
        for j in i..(i + 5_000).min(n) {
            let (e, g) = events(&account, j, n, end);
            batch.extend(e);
            engaged.extend(g);
        }
        store.apply(&batch).await?;
        store.apply_engagement(&engaged).await?;
        i += 5_000;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn start_herald(herald: &Path, dir: &Path) -> Result<(Proc, u16)> {
    let http = free_port();
    let config = dir.join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndata_dir = \"{d}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[smtp]\nlisten = \"127.0.0.1:{smtp}\"\n\
             [bounces]\nlisten = \"127.0.0.1:{bounces}\"\n[tracking]\nlisten = \"127.0.0.1:{tracking}\"\n\
             [[accounts]]\nid = \"bench\"\napi_keys = [\"{KEY}\"]\n",
            d = dir.join("data").display(),
            smtp = free_port(),
            bounces = free_port(),
            tracking = free_port(),
        ),
    )?;
    let child = Command::new(herald)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("{} (cargo build -p herald)", herald.display()))?;
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "herald did not listen on {http}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((proc, http))
}

/// Median and 90th percentile of `v` (sorted here).
fn summary(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

async fn api_times(http: u16, runs: usize) -> Result<(f64, f64, serde_json::Value)> {
    let client = reqwest::Client::new();
    let now = Timestamp::now().millis();
    let to = (now / DAY + 1) * DAY;
    let from = to - 30 * DAY;
    let iso = |ms: i64| herald_engine::projector::rfc3339(Timestamp(ms));
    let url = format!("http://127.0.0.1:{http}/v1/stats/series?from={}&to={}&interval=day", iso(from), iso(to));
    let mut times = vec![];
    let mut total = serde_json::Value::Null;
    for _ in 0..runs {
        let t = Instant::now();
        let v: serde_json::Value = client.get(&url).bearer_auth(KEY).send().await?.error_for_status()?.json().await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        total = v["total"].clone();
    }
    let (p50, p90) = summary(&mut times);
    Ok((p50, p90, total))
}

/// Loads `/ui/#/<route>` `runs` times in Chromium and prints the figures.
fn browser(http: u16, runs: usize, route: &str, what: &str) -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/tests/ui/first_render.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(format!("http://127.0.0.1:{http}"))
        .arg(KEY)
        .arg(runs.to_string())
        .arg(route)
        .output()
        .context("python3 with selenium (ops/scripts/install-peers.sh)")?;
    anyhow::ensure!(out.status.success(), "first_render.py: {}", String::from_utf8_lossy(&out.stderr));
    let (mut fcp, mut drawn, mut ttfb, mut api) = (vec![], vec![], vec![], vec![]);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let ms = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        fcp.push(ms("fcp"));
        drawn.push(ms("rendered"));
        ttfb.push(ms("ttfb"));
        api.push(ms("api"));
    }
    let (f50, f90) = summary(&mut fcp);
    let (d50, d90) = summary(&mut drawn);
    let ((t50, _), (a50, _)) = (summary(&mut ttfb), summary(&mut api));
    println!("stats page ({what}), {runs} loads in Chromium:");
    println!("  page's first byte p50 {t50:.0} ms, the series request p50 {a50:.0} ms");
    println!("  first contentful paint p50 {f50:.0} ms, p90 {f90:.0} ms");
    println!("  charts drawn p50 {d50:.0} ms, p90 {d90:.0} ms (goal < 300 ms)");
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let n: u64 = arg("--messages").and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let runs: usize = arg("--runs").and_then(|v| v.parse().ok()).unwrap_or(20);
    let herald: PathBuf = arg("--herald").map(PathBuf::from).unwrap_or_else(|| {
        std::env::current_exe().ok().and_then(|p| Some(p.parent()?.join("herald"))).unwrap_or_default()
    });
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("data"))?;
    let secs = seed(&dir.path().join("data/projection.redb"), n).await?;
    println!("seeded {n} messages over 30 days in {secs:.1} s ({:.0} messages/s)", n as f64 / secs);

    let (_herald, http) = start_herald(&herald, dir.path())?;
    let (p50, p90, total) = api_times(http, runs).await?;
    println!("GET /v1/stats/series (30 days, per day): p50 {p50:.1} ms, p90 {p90:.1} ms; total {total}");
    anyhow::ensure!(total["accepted"] == n, "the page's numbers cover the {n} messages");

    for (route, what) in [("stats", "30 days per day"), ("stats?interval=hour", "30 days per hour, 720 points")] {
        browser(http, runs, route, what)?;
    }
    Ok(())
}

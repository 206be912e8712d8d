//! Webhook delivery figures (issue 15), in one run on one machine, against one local
//! receiver (axum, HTTP/1.1; it answers 202 and records when each request arrived and,
//! from the body's `timestamp`, how old its event was):
//!
//! 1. **Baseline**: the bundled REST load generator (`herald-loadtest send --target
//!    http://…`) POSTs N requests to the receiver over C connections; its rate is what the
//!    receiver takes from a fast client.
//! 2. **Webhooks, backlog**: a release `herald serve` (embedded backends, Knot for DNS,
//!    Postfix's `smtp-sink` as the MX) with `[webhooks] enabled = false` delivers N
//!    messages (their `message.delivered` events wait in the log); Herald restarts with
//!    webhooks on and `endpoint_concurrency = C`, and drains the backlog to the receiver's
//!    endpoint. The rate is measured at the receiver, first to last request, as in 1.
//! 3. **Latency**: with webhooks on, the load generator sends messages at R/s (default 500)
//!    for S seconds; event-to-webhook latency (the event's `timestamp` to the request's
//!    arrival) p50/p99 at the receiver.
//!
//! Usage (after `nice -n 10 cargo build --release -p herald -p herald-benches -p herald-loadtest`):
//!   target/release/webhooks [--events N] [--connections C] [--rate R] [--seconds S]

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use herald_benches::procs::{cpu_seconds, free_port, knot, wait_port, Proc};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

struct Args {
    events: u64,
    connections: usize,
    rate: u64,
    seconds: u64,
}

fn args() -> Result<Args> {
    let mut a = Args { events: 20_000, connections: 16, rate: 500, seconds: 20 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().context("a value after the flag");
        match flag.as_str() {
            "--events" => a.events = value()?.parse()?,
            "--connections" => a.connections = value()?.parse()?,
            "--rate" => a.rate = value()?.parse()?,
            "--seconds" => a.seconds = value()?.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// What the receiver saw since the last reset.
#[derive(Default)]
struct Seen {
    count: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
    /// Event-to-arrival latencies, in milliseconds.
    latencies: Mutex<Vec<f64>>,
}

impl Seen {
    fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
        *self.first.lock().unwrap() = None;
        *self.last.lock().unwrap() = None;
        self.latencies.lock().unwrap().clear();
    }

    /// Requests per second from the first to the last request.
    fn rate(&self) -> f64 {
        let (first, last) = (*self.first.lock().unwrap(), *self.last.lock().unwrap());
        match (first, last) {
            (Some(f), Some(l)) if l > f => (self.count.load(Ordering::SeqCst) - 1) as f64 / (l - f).as_secs_f64(),
            _ => 0.0,
        }
    }

    fn wait(&self, n: u64, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while self.count.load(Ordering::SeqCst) < n {
            if Instant::now() > deadline {
                bail!("the receiver got {} of {n} requests in {limit:?}", self.count.load(Ordering::SeqCst));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

async fn receive(State(seen): State<Arc<Seen>>, body: Bytes) -> StatusCode {
    let now = Instant::now();
    seen.first.lock().unwrap().get_or_insert(now);
    *seen.last.lock().unwrap() = Some(now);
    seen.count.fetch_add(1, Ordering::SeqCst);
    if let Some(ts) = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["timestamp"].as_str().map(str::to_owned))
        .and_then(|t| time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok())
    {
        let now = time::OffsetDateTime::from(SystemTime::now());
        seen.latencies.lock().unwrap().push((now - ts).as_seconds_f64() * 1000.0);
    }
    StatusCode::ACCEPTED
}

async fn start_receiver() -> Result<(u16, Arc<Seen>)> {
    let seen = Arc::new(Seen::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new().fallback(receive).with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((port, seen))
}

fn bin(name: &str) -> Result<PathBuf> {
    let path = std::env::current_exe()?.parent().unwrap().join(name);
    if !path.exists() {
        bail!("{} missing: cargo build --release -p herald -p herald-benches -p herald-loadtest", path.display());
    }
    Ok(path)
}

/// `herald-loadtest send` against `target`; returns when it is done.
fn loadtest(target: &str, connections: usize, extra: &[&str]) -> Result<()> {
    let c = connections.to_string();
    let status = Command::new(bin("herald-loadtest")?)
        .args(["send", "--target", target, "-c", &c, "--size", "1k", "--domain", "example.test", "-q"])
        .args(["--api-key", "k"])
        .args(extra)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("herald-loadtest failed against {target}");
    }
    Ok(())
}

/// Writes the config and starts `herald serve` (webhooks on or off); its HTTP port.
fn start_herald(dir: &Path, dns_port: u16, sink_port: u16, webhooks: bool, connections: usize) -> Result<(Proc, u16)> {
    let http_port = free_port();
    std::fs::write(
        dir.join("herald.toml"),
        format!(
            "[storage]\ndata_dir = \"{d}/data\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[tracking]\nlisten = \"127.0.0.1:0\"\n[bounces]\nlisten = \"127.0.0.1:0\"\n[delivery]\ndns_servers = [\"127.0.0.1:{dns_port}\"]\nmx_port = {sink_port}\nhelo_name = \"mta.herald.test\"\ndomain_concurrency = 20\n[webhooks]\nenabled = {webhooks}\nallow_private_targets = true\nendpoint_concurrency = {connections}\n[[accounts]]\nid = \"bench\"\napi_keys = [\"k\"]\nfrom_domains = \"any\"\n",
            d = dir.display()
        ),
    )?;
    let herald = Proc(
        Command::new(bin("herald")?)
            .args(["serve", "--config"])
            .arg(dir.join("herald.toml"))
            .env("RUST_LOG", "warn")
            .spawn()?,
    );
    wait_port(http_port)?;
    Ok((herald, http_port))
}

/// Messages the account's statistics count as delivered.
async fn delivered(http: &reqwest::Client, port: u16) -> Result<u64> {
    let v: serde_json::Value = http
        .get(format!("http://127.0.0.1:{port}/v1/stats?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z"))
        .bearer_auth("k")
        .send()
        .await?
        .json()
        .await?;
    Ok(v["delivered"].as_u64().unwrap_or(0))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let dir = tempfile::tempdir()?;
    let (_knot, dns_port) = knot(dir.path())?;
    let sink_port = free_port();
    let _sink = Proc(
        Command::new("smtp-sink")
            .args(["-u", "nobody", &format!("127.0.0.1:{sink_port}"), "256"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("smtp-sink (Debian postfix)")?,
    );
    wait_port(sink_port)?;
    let (rport, seen) = start_receiver().await?;
    let n = a.events.to_string();

    // 1. The load generator straight to the receiver.
    let target = format!("http://127.0.0.1:{rport}");
    let me = std::process::id();
    let receiver_cpu = cpu_seconds(me)?;
    tokio::task::block_in_place(|| loadtest(&target, a.connections, &["-n", &n]))?;
    tokio::task::block_in_place(|| seen.wait(a.events, Duration::from_secs(60)))?;
    let receiver_us = (cpu_seconds(me)? - receiver_cpu) * 1e6 / a.events as f64;
    let baseline = seen.rate();
    println!(
        "loadtest → receiver : {baseline:9.0} req/s ({} requests, {} connections; receiver CPU {receiver_us:.1} µs/request)",
        a.events, a.connections
    );

    // 2. N events waiting in the log, then drained by the dispatcher.
    let http = reqwest::Client::new();
    let (herald, port) = start_herald(dir.path(), dns_port, sink_port, false, a.connections)?;
    let r = http
        .post(format!("http://127.0.0.1:{port}/v1/webhooks"))
        .bearer_auth("k")
        .json(&serde_json::json!({"url": format!("http://127.0.0.1:{rport}/hook"), "events": ["message.delivered"]}))
        .send()
        .await?;
    if r.status() != 201 {
        bail!("creating the endpoint: {} {}", r.status(), r.text().await?);
    }
    let herald_target = format!("http://127.0.0.1:{port}");
    tokio::task::block_in_place(|| loadtest(&herald_target, 20, &["-n", &n]))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while delivered(&http, port).await? < a.events {
        if Instant::now() > deadline {
            bail!("Herald delivered {} of {} in 10 minutes", delivered(&http, port).await?, a.events);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(herald);
    seen.reset();
    let receiver_cpu = cpu_seconds(me)?;
    let (herald, port) = start_herald(dir.path(), dns_port, sink_port, true, a.connections)?;
    tokio::task::block_in_place(|| seen.wait(a.events, Duration::from_secs(600)))?;
    // Herald's CPU from its start (a small part) to the last webhook, per webhook.
    let herald_us = cpu_seconds(herald.0.id())? * 1e6 / a.events as f64;
    let receiver_us = (cpu_seconds(me)? - receiver_cpu) * 1e6 / a.events as f64;
    let webhooks = seen.rate();
    println!(
        "herald → receiver   : {webhooks:9.0} webhooks/s ({} events drained, endpoint_concurrency {}; Herald CPU {herald_us:.1} µs/webhook from its start, receiver {receiver_us:.1} µs/request)",
        a.events, a.connections
    );
    println!("ratio               : webhooks/loadtest = {:.2} (goal ≥ 0.5)", webhooks / baseline);

    // 3. Latency at a steady rate.
    seen.reset();
    let (rate, secs) = (a.rate.to_string(), format!("{}s", a.seconds));
    let herald_target = format!("http://127.0.0.1:{port}");
    tokio::task::block_in_place(|| loadtest(&herald_target, 20, &["--rate", &rate, "-d", &secs]))?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut l = seen.latencies.lock().unwrap().clone();
    l.sort_by(f64::total_cmp);
    println!(
        "latency at {} msg/s   : p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} webhooks in {} s)",
        a.rate,
        percentile(&l, 0.5),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN),
        l.len(),
        a.seconds
    );
    Ok(())
}

//! Memory and storage figures of issue 9 §1 and issue 10 item 11, against a release
//! `herald` binary (this build's, or another one given with `--herald`, e.g. main's, to
//! measure "before" in the same session). Peers: Knot (MX), Postfix's `smtp-sink`.
//!
//! Scenarios (`--scenario`):
//! - `fanout`: one `POST /v1/send` of a `--body-kb` body to `--recipients` recipients;
//!   prints the 202 latency, RSS before, peak during the request, peak during delivery and
//!   10 s after, bytes the log wrote and the data directory's growth per recipient.
//! - `deferred`: `--messages` single-recipient 1 KB messages (or `--per-request` recipients
//!   sharing a body) to a sink that defers every RCPT, retries an hour away; prints RSS and
//!   bytes on disk per deferred message once all are deferred.
//! - `restart`: fills an ingest-only node's embedded log with `--gb` GB of 100 KB messages,
//!   `kill -9`, then times the restart until `/healthz` answers.
//!
//! Usage (after `cargo build --release -p herald -p herald-benches`):
//!   target/release/bodies --scenario fanout [--body-kb 1024] [--recipients 1000] [--herald PATH]

use anyhow::{bail, Context, Result};
use herald_benches::procs::{free_port, knot, Proc};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    scenario: String,
    herald: PathBuf,
    body_kb: usize,
    recipients: usize,
    messages: u64,
    per_request: usize,
    gb: f64,
    concurrency: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        scenario: "fanout".into(),
        herald: std::env::current_exe()?.parent().unwrap().join("herald"),
        body_kb: 1024,
        recipients: 1000,
        messages: 1_000_000,
        per_request: 1,
        gb: 2.0,
        concurrency: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--scenario" => a.scenario = value()?,
            "--herald" => a.herald = value()?.into(),
            "--body-kb" => a.body_kb = value()?.parse()?,
            "--recipients" => a.recipients = value()?.parse()?,
            "--messages" => a.messages = value()?.parse()?,
            "--per-request" => a.per_request = value()?.parse()?,
            "--gb" => a.gb = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn wait_port(port: u16, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bail!("nothing listens on {port}")
}

/// `smtp-sink`, counting messages; `defer`: every RCPT answered 451.
fn sink(port: u16, defer: bool) -> Result<Proc> {
    let mut cmd = Command::new("smtp-sink");
    cmd.args(["-u", "nobody"]);
    if defer {
        cmd.args(["-r", "RCPT"]);
    }
    let child = cmd.arg(format!("127.0.0.1:{port}")).arg("256").stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    wait_port(port, Duration::from_secs(10))?;
    Ok(Proc(child))
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    let out = Command::new("du").args(["-sb"]).arg(dir).output().ok();
    out.and_then(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

/// Samples RSS every 10 ms; the peak since the last `take`.
struct Sampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}
impl Sampler {
    fn start(pid: u32) -> Sampler {
        let (peak, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                p.fetch_max(status_kb(pid, "VmRSS:"), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Sampler { peak, stop }
    }
    fn take(&self) -> u64 {
        self.peak.swap(0, Ordering::SeqCst)
    }
}
impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct Herald {
    proc: Proc,
    http: u16,
    data: PathBuf,
}

fn herald(a: &Args, dir: &Path, dns: u16, mx: u16, extra: &str) -> Result<Herald> {
    let http = free_port();
    let data = dir.join("data");
    std::fs::write(
        dir.join("herald.toml"),
        format!(
            "[storage]\ndata_dir = \"{d}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\nmax_recipients = 100000\n[smtp]\nlisten = \"127.0.0.1:{smtp}\"\n[delivery]\ndns_servers = [\"127.0.0.1:{dns}\"]\nmx_port = {mx}\nhelo_name = \"mta.herald.test\"\n{extra}\n[[accounts]]\nid = \"bench\"\napi_keys = [\"k\"]\n",
            d = data.display(),
            smtp = free_port(),
        ),
    )?;
    let child = Command::new(&a.herald)
        .args(["serve", "--config"])
        .arg(dir.join("herald.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("{} (cargo build --release -p herald)", a.herald.display()))?;
    let h = Herald { proc: Proc(child), http, data };
    wait_port(http, Duration::from_secs(60))?;
    Ok(h)
}

fn message(kb: usize) -> String {
    let mut m = String::from("From: News <news@sender.test>\r\nSubject: bench\r\nMessage-ID: <b@sender.test>\r\n\r\n");
    let mut i = 0u64;
    while m.len() < kb * 1024 {
        m.push_str(&format!("{i:08} Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"));
        i += 1;
    }
    m
}

async fn metric(client: &reqwest::Client, http: u16, name: &str) -> f64 {
    let Ok(r) = client.get(format!("http://127.0.0.1:{http}/metrics")).send().await else { return 0.0 };
    let text = r.text().await.unwrap_or_default();
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok()).sum()
}

async fn statuses(client: &reqwest::Client, http: u16) -> serde_json::Value {
    let url = format!("http://127.0.0.1:{http}/v1/stats?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z");
    match client.get(url).bearer_auth("k").send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

const MB: f64 = 1024.0 * 1024.0;

async fn fanout(a: &Args, dir: &Path) -> Result<()> {
    let (_knot, dns) = knot(dir)?;
    let mx = free_port();
    let _sink = sink(mx, false)?;
    let h = herald(a, dir, dns, mx, "")?;
    let pid = h.proc.0.id();
    let client = reqwest::Client::new();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss0, disk0) = (status_kb(pid, "VmRSS:"), dir_bytes(&h.data));
    let sampler = Sampler::start(pid);
    let recipients: Vec<String> = (0..a.recipients).map(|i| format!("r{i}@example.test")).collect();
    let payload = serde_json::json!({"envelope": "b@sender.test", "recipient": recipients, "body": message(a.body_kb)})
        .to_string();
    let wal0 = metric(&client, h.http, "herald_log_written_bytes_total").await;
    let started = Instant::now();
    let r = client
        .post(format!("http://127.0.0.1:{}/v1/send", h.http))
        .bearer_auth("k")
        .header("content-type", "application/json")
        .body(payload)
        .send()
        .await?;
    let latency = started.elapsed();
    if r.status() != 202 {
        bail!("POST answered {}: {}", r.status(), r.text().await?);
    }
    let peak_request = sampler.take();
    let wal1 = metric(&client, h.http, "herald_log_written_bytes_total").await;
    let disk1 = dir_bytes(&h.data);
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let s = statuses(&client, h.http).await;
        if s["delivered"].as_u64().unwrap_or(0) >= a.recipients as u64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("not all delivered: {s}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delivered = started.elapsed();
    let peak_delivery = sampler.take();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (rss_after, disk2) = (status_kb(pid, "VmRSS:"), dir_bytes(&h.data));
    let n = a.recipients as f64;
    println!("fanout {} KB x {} recipients ({})", a.body_kb, a.recipients, a.herald.display());
    println!(
        "  202 after          : {:.3} s (all delivered after {:.1} s)",
        latency.as_secs_f64(),
        delivered.as_secs_f64()
    );
    println!("  RSS before         : {:.1} MB", rss0 as f64 / 1024.0);
    println!(
        "  RSS peak, request  : {:.1} MB (+{:.1})",
        peak_request as f64 / 1024.0,
        (peak_request as f64 - rss0 as f64) / 1024.0
    );
    println!(
        "  RSS peak, delivery : {:.1} MB (+{:.1})",
        peak_delivery as f64 / 1024.0,
        (peak_delivery as f64 - rss0 as f64) / 1024.0
    );
    println!("  RSS 10 s after     : {:.1} MB", rss_after as f64 / 1024.0);
    if wal1 > 0.0 {
        println!("  log bytes written by the request: {:.0} ({:.0} per recipient)", wal1 - wal0, (wal1 - wal0) / n);
    }
    println!(
        "  data dir growth    : {:.1} MB after the request ({:.0} B per recipient), {:.1} MB after delivery",
        (disk1 as f64 - disk0 as f64) / MB,
        (disk1 as f64 - disk0 as f64) / n,
        (disk2 as f64 - disk0 as f64) / MB
    );
    Ok(())
}

async fn deferred(a: &Args, dir: &Path) -> Result<()> {
    let (_knot, dns) = knot(dir)?;
    let mx = free_port();
    let _sink = sink(mx, true)?;
    let h = herald(a, dir, dns, mx, "retry_initial_secs = 3600\nretry_max_delay_secs = 3600")?;
    let pid = h.proc.0.id();
    let client = reqwest::Client::builder().pool_max_idle_per_host(a.concurrency).build()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss0, disk0) = (status_kb(pid, "VmRSS:"), dir_bytes(&h.data));
    let body = message(1);
    let requests = a.messages.div_ceil(a.per_request as u64);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency {
        let (client, next, body, url) =
            (client.clone(), next.clone(), body.clone(), format!("http://127.0.0.1:{}/v1/send", h.http));
        let per = a.per_request;
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= requests {
                    return Ok::<_, anyhow::Error>(());
                }
                let recipients: Vec<String> = (0..per).map(|j| format!("r{i}x{j}@example.test")).collect();
                let payload = serde_json::json!({"envelope": "b@sender.test", "recipient": recipients, "body": body});
                let r = client.post(&url).bearer_auth("k").json(&payload).send().await?;
                if r.status() != 202 {
                    bail!("POST answered {}", r.status());
                }
            }
        });
    }
    let sampler = Sampler::start(pid);
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let accepted = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let deferred = metric(&client, h.http, "herald_delivery_attempts_total{outcome=\"deferred\"}").await;
        if deferred >= a.messages as f64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {deferred} deferred");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let all_deferred = started.elapsed();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (rss, peak, disk) = (status_kb(pid, "VmRSS:"), sampler.take(), dir_bytes(&h.data));
    let n = a.messages as f64;
    println!("deferred {} x 1 KB, {} per request ({})", a.messages, a.per_request, a.herald.display());
    println!("  accepted in {:.0} s, all deferred after {:.0} s", accepted.as_secs_f64(), all_deferred.as_secs_f64());
    println!(
        "  RSS before {:.1} MB, peak {:.1} MB, at rest with all deferred {:.1} MB",
        rss0 as f64 / 1024.0,
        peak as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    println!(
        "  per deferred message: {:.0} B of RSS, {:.0} B on disk",
        (rss as f64 - rss0 as f64) * 1024.0 / n,
        (disk as f64 - disk0 as f64) / n
    );
    Ok(())
}

async fn restart(a: &Args, dir: &Path) -> Result<()> {
    let (_knot, dns) = knot(dir)?;
    let mx = free_port();
    let roles = "[cluster]\nroles = [\"smtp\"]";
    let h = herald(a, dir, dns, mx, roles)?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(a.concurrency).build()?;
    let body = message(100);
    let target = (a.gb * 1024.0 * MB) as u64;
    let started = Instant::now();
    let log = h.data.join("log.redb");
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency {
        let (client, body, stop, url) =
            (client.clone(), body.clone(), stop.clone(), format!("http://127.0.0.1:{}/v1/send", h.http));
        tasks.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let payload =
                    serde_json::json!({"envelope": "b@sender.test", "recipient": "r@example.test", "body": body});
                client.post(&url).bearer_auth("k").json(&payload).send().await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) < target {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the log did not reach {} GB", a.gb);
        }
    }
    // Still appending when killed.
    let Herald { proc: mut p, http, .. } = h;
    p.0.kill()?;
    p.0.wait()?;
    stop.store(true, Ordering::SeqCst);
    while tasks.join_next().await.is_some() {}
    let size = std::fs::metadata(&log)?.len();
    let t = Instant::now();
    let child = Command::new(&a.herald)
        .args(["serve", "--config"])
        .arg(dir.join("herald.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let _p = Proc(child);
    loop {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{http}/healthz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("no /healthz within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("restart after kill -9 ({})", a.herald.display());
    println!(
        "  log {:.2} GB filled in {:.0} s; /healthz {:.2} s after the restart",
        size as f64 / 1024.0 / MB,
        started.elapsed().as_secs_f64() - t.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))?;
    match a.scenario.as_str() {
        "fanout" => fanout(&a, dir.path()).await,
        "deferred" => deferred(&a, dir.path()).await,
        "restart" => restart(&a, dir.path()).await,
        other => bail!("unknown scenario {other}"),
    }
}

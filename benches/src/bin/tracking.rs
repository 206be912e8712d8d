//! Tracking redirects per second: Herald's tracking server against nginx answering
//! `return 302` on the same machine, with the same client (`wrk`), threads, connections and
//! duration, in one run (alternated, twice each).
//!
//! Herald (release, embedded log) verifies the click token, answers `302` and appends a
//! `LinkClicked` per request (batched, `track::appender`); nginx (`worker_processes auto`, no
//! access log) only answers. The driver checks that both redirect to the same URL, and reports
//! how many click events Herald appended and dropped.
//!
//! `--roles track` runs Herald as a tracking node (`[cluster] roles = ["track"]`: the
//! redirects and the click events' appends, no projector or workers in the process), the way
//! a cluster serves a busy click domain; the default runs every role in the one process.
//!
//! Usage (after `cargo build --release -p herald -p herald-benches`):
//!   target/release/tracking [--seconds S] [--connections C] [--threads T] [--rounds N] [--roles track]

use anyhow::{bail, Context, Result};
use herald_benches::procs::{cpu_seconds, free_port, tree_cpu_seconds, wait_port, Proc};
use herald_engine::rewrite::token::{self, Claims, Keys};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const TARGET: &str = "https://shop.example/landing?utm_source=newsletter&utm_medium=email&id=42";
const SECRET: [u8; 32] = [0x5a; 32];

struct Args {
    seconds: u64,
    connections: usize,
    threads: usize,
    rounds: usize,
    /// `[cluster] roles` of the Herald node, as a TOML array; every role when `None`.
    roles: Option<String>,
}

fn args() -> Result<Args> {
    let mut a = Args { seconds: 10, connections: 64, threads: 2, rounds: 2, roles: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().context("missing value");
        match arg.as_str() {
            "--seconds" => a.seconds = value()?.parse()?,
            "--connections" => a.connections = value()?.parse()?,
            "--threads" => a.threads = value()?.parse()?,
            "--rounds" => a.rounds = value()?.parse::<usize>()?.max(1),
            "--roles" => {
                let roles: Vec<String> = value()?.split(',').map(|r| format!("\"{}\"", r.trim())).collect();
                a.roles = Some(format!("[{}]", roles.join(", ")));
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn herald(dir: &Path, http: u16, tracking: u16, roles: Option<&str>) -> Result<Proc> {
    use base64::Engine;
    let secret = base64::engine::general_purpose::STANDARD.encode(SECRET);
    std::fs::write(
        dir.join("herald.toml"),
        format!(
            "[storage]\ndata_dir = \"{d}/data\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[smtp]\nenabled = false\n\
             [tracking]\nlisten = \"127.0.0.1:{tracking}\"\ndefault_host = \"127.0.0.1:{tracking}\"\nscheme = \"http\"\n\
             [[tracking.keys]]\nid = \"b1\"\nsecret = \"{secret}\"\n[delivery]\ndns_servers = [\"127.0.0.1:9\"]\n\
             [[accounts]]\nid = \"bench\"\napi_keys = [\"k\"]\n{cluster}",
            d = dir.display(),
            cluster = roles.map(|r| format!("[cluster]\nroles = {r}\n")).unwrap_or_default()
        ),
    )?;
    let bin = std::env::current_exe()?.parent().unwrap().join("herald");
    let child = Command::new(&bin)
        .args(["serve", "--config"])
        .arg(dir.join("herald.toml"))
        .env("RUST_LOG", "warn")
        .spawn()
        .with_context(|| format!("{} (build it: cargo build --release -p herald)", bin.display()))?;
    wait_port(tracking)?;
    Ok(Proc(child))
}

fn nginx(dir: &Path, port: u16) -> Result<Proc> {
    let d = dir.join("nginx");
    std::fs::create_dir_all(&d)?;
    std::fs::write(
        d.join("nginx.conf"),
        format!(
            "daemon off;\nworker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n  server {{\n    listen 127.0.0.1:{port};\n\
             location / {{ add_header Cache-Control no-store always; return 302 {TARGET}; }}\n  }}\n}}\n",
            d = d.display()
        ),
    )?;
    let child = Command::new("nginx")
        .args(["-p"])
        .arg(&d)
        .args(["-c"])
        .arg(d.join("nginx.conf"))
        .stderr(Stdio::null())
        .spawn()
        .context("nginx (ops/scripts/install-peers.sh installs nginx-light)")?;
    wait_port(port)?;
    Ok(Proc(child))
}

/// The `Location` of one GET of `url`.
fn location(url: &str) -> Result<String> {
    let out =
        Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", url]).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.split_once(' ') {
        Some(("302", loc)) => Ok(loc.to_owned()),
        _ => bail!("{url} answered {text}"),
    }
}

/// wrk's requests per second.
fn wrk(a: &Args, url: &str) -> Result<f64> {
    let out = Command::new("wrk")
        .args(["-t", &a.threads.to_string(), "-c", &a.connections.to_string(), "-d", &format!("{}s", a.seconds)])
        .args(["-H", "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"])
        .arg(url)
        .output()
        .context("wrk (ops/scripts/install-peers.sh installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.contains("Non-2xx or 3xx") || text.contains("Socket errors") {
        bail!("wrk saw errors against {url}:\n{text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:").and_then(|v| v.trim().parse().ok()))
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))
}

fn metric(http: u16, name: &str) -> f64 {
    let out = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{http}/metrics")]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

fn main() -> Result<()> {
    let a = args()?;
    let dir = tempfile::tempdir()?;
    let (http, tracking, nginx_port) = (free_port(), free_port(), free_port());
    let herald_proc = herald(dir.path(), http, tracking, a.roles.as_deref())?;
    let nginx_proc = nginx(dir.path(), nginx_port)?;
    let nginx_pid = nginx_proc.0.id();
    let keys = Keys::new(&[("b1".into(), SECRET.to_vec())], None).map_err(anyhow::Error::msg)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as u32;
    let claims = Claims {
        key_id: String::new(),
        account: "bench".into(),
        message_id: "0190f0c4a1b27c3d8e9f001122334455".into(),
        recipient: "reader@example.test".into(),
        issued_at: now - 3600,
        bind: [9; token::BIND],
    };
    let tok = format!(
        "{}.{}",
        token::recipient_token(&keys, &claims),
        token::link_token(&keys, "bench", &claims.bind, 0, TARGET)
    );
    let herald_url = format!("http://127.0.0.1:{tracking}/c/{tok}");
    let nginx_url = format!("http://127.0.0.1:{nginx_port}/c/{tok}");
    for url in [&herald_url, &nginx_url] {
        let loc = location(url)?;
        if loc != TARGET {
            bail!("{url} redirects to {loc}");
        }
    }
    let (mut h, mut n) = (vec![], vec![]);
    // CPU seconds each server used during its runs, and the requests it answered.
    let (mut h_cpu, mut n_cpu) = (0.0, 0.0);
    for _ in 0..a.rounds {
        let before = tree_cpu_seconds(nginx_pid)?;
        n.push(wrk(&a, &nginx_url)?);
        n_cpu += tree_cpu_seconds(nginx_pid)? - before;
        let before = cpu_seconds(herald_proc.0.id())?;
        h.push(wrk(&a, &herald_url)?);
        h_cpu += cpu_seconds(herald_proc.0.id())? - before;
    }
    let per_request = |cpu: f64, rps: &[f64]| cpu * 1e6 / (rps.iter().sum::<f64>() * a.seconds as f64);
    let (h_us, n_us) = (per_request(h_cpu, &h), per_request(n_cpu, &n));
    std::thread::sleep(Duration::from_secs(1)); // let the last batch reach the log
    let appended = metric(http, "herald_tracking_events_appended_total ");
    let dropped = metric(http, "herald_tracking_events_dropped_total ");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (herald_rps, nginx_rps) = (mean(&h), mean(&n));
    println!(
        "herald : {herald_rps:8.0} redirects/s (runs {h:.0?}); {appended} click events appended, {dropped} dropped; CPU {h_us:.1} µs/request"
    );
    println!("nginx  : {nginx_rps:8.0} redirects/s (runs {n:.0?}), return 302; CPU {n_us:.1} µs/request");
    println!("ratio  : herald/nginx = {:.2}", herald_rps / nginx_rps);
    println!(
        "{}",
        serde_json::json!({"figure": "tracking_redirects", "roles": a.roles.as_deref().unwrap_or("all"), "seconds": a.seconds, "connections": a.connections, "threads": a.threads, "herald_rps": herald_rps.round(), "nginx_rps": nginx_rps.round(), "ratio": (herald_rps / nginx_rps * 100.0).round() / 100.0, "events_appended": appended, "events_dropped": dropped, "herald_cpu_us_per_request": (h_us * 10.0).round() / 10.0, "nginx_cpu_us_per_request": (n_us * 10.0).round() / 10.0})
    );
    Ok(())
}

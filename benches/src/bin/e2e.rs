//! End-to-end throughput, Herald versus Postfix, in one run on one machine.
//!
//! Herald: N single-recipient 5 KB messages POSTed over HTTP/1.1 keep-alive by C concurrent
//! clients, DKIM RSA-2048 signed at send time, MX found through Knot, delivered to
//! Postfix's `smtp-sink`; measured from the first POST to the sink's N-th message.
//! Postfix: `smtp-source` sends N 5 KB messages over C sessions to a private Postfix relay
//! (ops/scripts/postfix-relay.sh) that relays them, unsigned, to a fresh `smtp-sink`;
//! measured from smtp-source's start to the sink's N-th message.
//!
//! With `--ingest smtp`, Herald receives the same way Postfix does: `smtp-source` (a new
//! connection per message) into Herald's SMTP listener as a smart host (relay network), then
//! Herald signs and delivers to the sink; measured from smtp-source's start to the sink's
//! N-th message.
//!
//! With `--engagement`, Herald alone runs twice on the 20 KB newsletter
//! (`herald_benches::newsletter_20k`, a `<style>` block and 30 links), with a fresh data
//! directory each: once without options, once with CSS inlining, click and open tracking;
//! it prints both rates and their ratio (the cost of send-time rewriting end to end).
//!
//! Traffic shaping (`docs/shaping.md`): `--compare-providers` runs Herald twice in one run,
//! with the shipped providers file and with none (`replace_shipped = true`), and prints the
//! ratio; `--rate R --seconds S` limits the `default` provider to R msg/s, queues R·(S+15)
//! messages and counts what the sink receives in the S seconds after the first arrival.
//!
//! `--backend kafka-cql` runs Herald on Kafka and Cassandra (`HERALD_TEST_KAFKA`,
//! `HERALD_TEST_CQL`, default `127.0.0.1:9092` / `127.0.0.1:9042`; a fresh topic prefix and
//! keyspace per run) instead of the embedded log and store. Every run also prints Herald's
//! own CPU time per message (user + system of the `herald` process, from `/proc`, between
//! the first request and the last arrival): the servers it uses are not counted. It also
//! prints the whole machine's busy CPU per message in each phase (`/proc/stat`), and with
//! `E2E_WATCH=kafka=PID,cassandra=PID` those servers' own; `E2E_BACKEND_EXTRA` adds lines to
//! the `[backend]` section of Herald's config on Kafka + CQL (librdkafka options, for
//! example); `E2E_METRICS=FILE` keeps
//! Herald's `/metrics` after its phase. `--settle S` syncs and waits S seconds before each
//! phase, so that neither pays for the write-back the other left (runs back to back make
//! Postfix, which fsyncs every queue file, slower than it is). `--warmup N` runs N Herald
//! phases first and does not report them (Kafka and Cassandra just started are slower).
//!
//! Usage (after `cargo build --release -p herald -p herald-benches`):
//!   target/release/e2e [--messages N] [--concurrency C] [--ingest http|smtp] [--backend embedded|kafka-cql] [--skip-postfix] [--warmup N] [--settle S] [--engagement]
//!   target/release/e2e --compare-providers [--messages N] [--concurrency C]
//!   target/release/e2e --rate R [--seconds S]

use anyhow::{bail, Context, Result};
use herald_benches::procs::{cpu_seconds, free_port, knot, machine_cpu_seconds, wait_port, Proc};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    messages: u64,
    concurrency: usize,
    smtp: bool,
    skip_postfix: bool,
    engagement: bool,
    /// The operator's providers file text (`None`: only the shipped one).
    providers: Option<String>,
    compare_providers: bool,
    rate: Option<u64>,
    seconds: u64,
    /// Kafka + Cassandra instead of the embedded log and store.
    kafka_cql: bool,
    /// Seconds to wait before each phase, so that neither pays for the other's aftermath
    /// (the kernel writing back what the last phase left dirty, the servers' flushes).
    settle: u64,
    /// Herald phases run first and not reported: servers just started (Kafka's and
    /// Cassandra's JIT compilers) cost two to three times more per message.
    warmup: u32,
}

/// A providers file with nothing but an unlimited `default`.
const NO_PROVIDERS: &str = "replace_shipped = true\n";

fn args() -> Result<Args> {
    let mut a = Args {
        messages: 10_000,
        concurrency: 20,
        smtp: false,
        skip_postfix: false,
        engagement: false,
        providers: None,
        compare_providers: false,
        rate: None,
        seconds: 60,
        kafka_cql: false,
        settle: 0,
        warmup: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--messages" => a.messages = it.next().context("--messages N")?.parse()?,
            "--concurrency" => a.concurrency = it.next().context("--concurrency C")?.parse()?,
            "--skip-postfix" => a.skip_postfix = true,
            "--engagement" => a.engagement = true,
            "--compare-providers" => a.compare_providers = true,
            "--rate" => a.rate = Some(it.next().context("--rate R")?.parse()?),
            "--seconds" => a.seconds = it.next().context("--seconds S")?.parse()?,
            "--settle" => a.settle = it.next().context("--settle SECONDS")?.parse()?,
            "--warmup" => a.warmup = it.next().context("--warmup RUNS")?.parse()?,
            "--backend" => {
                a.kafka_cql = match it.next().as_deref() {
                    Some("kafka-cql") => true,
                    Some("embedded") => false,
                    _ => bail!("--backend embedded|kafka-cql"),
                }
            }
            "--ingest" => {
                a.smtp = match it.next().as_deref() {
                    Some("smtp") => true,
                    Some("http") => false,
                    _ => bail!("--ingest http|smtp"),
                }
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// smtp-sink with `-c`: counts messages; remembers when the count reached `target`.
struct Sink {
    _proc: Proc,
    count: Arc<AtomicU64>,
    reached: Arc<Mutex<Option<Instant>>>,
}

fn start_sink(port: u16, target: u64) -> Result<Sink> {
    let mut child = Command::new("smtp-sink")
        .args(["-u", "nobody", "-c", &format!("127.0.0.1:{port}"), "256"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("smtp-sink (Debian postfix)")?;
    let mut out = child.stdout.take().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let reached = Arc::new(Mutex::new(None));
    let (c, r) = (count.clone(), reached.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut line = Vec::new();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                return;
            }
            for &b in &buf[..n] {
                if b == b'\r' || b == b'\n' {
                    let text = String::from_utf8_lossy(&line);
                    if let Some(m) = text.split("mesg=").nth(1).and_then(|v| v.trim().parse::<u64>().ok()) {
                        c.store(m, Ordering::SeqCst);
                        if m >= target {
                            r.lock().unwrap().get_or_insert_with(Instant::now);
                        }
                    }
                    line.clear();
                } else {
                    line.push(b);
                }
            }
        }
    });
    wait_port(port)?;
    Ok(Sink { _proc: Proc(child), count, reached })
}

fn wait_sink(sink: &Sink, target: u64, limit: Duration) -> Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = *sink.reached.lock().unwrap() {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!("sink got {} of {target} messages in {limit:?}", sink.count.load(Ordering::SeqCst));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn rsa_pem() -> Result<String> {
    use aws_lc_rs::encoding::AsDer;
    use base64::Engine;
    let key =
        aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(|e| anyhow::anyhow!("{e}"))?;
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    Ok(format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n")))
}

fn body_5k() -> String {
    String::from_utf8(herald_benches::message_5k()).unwrap()
}

/// What Herald is sent: the MIME body and extra request fields (options).
struct Payload {
    body: String,
    options: serde_json::Value,
}

/// One Herald run: end-to-end rate, acceptance rate, a note, and Herald's CPU µs/message.
async fn herald(a: &Args, dir: &Path, dns_port: u16, payload: &Payload) -> Result<(f64, f64, String, f64)> {
    let sink_port = free_port();
    let sink = start_sink(sink_port, a.messages)?;
    let (herald, http_port, smtp_port) = start_herald(a, dir, dns_port, sink_port)?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(a.concurrency).build()?;
    let watch = Watch::start()?;
    let cpu_before = cpu_seconds(herald.0.id())?;
    let (rate, ingest, note) = if a.smtp {
        herald_smtp(a, &sink, smtp_port, http_port, &client).await?
    } else {
        herald_http(a, &sink, http_port, &client, payload).await?
    };
    let cpu = cpu_seconds(herald.0.id())? - cpu_before;
    let machine = watch.note(a.messages)?;
    let cpu_us = cpu * 1e6 / a.messages as f64;
    let elapsed = a.messages as f64 / rate;
    let note = format!("{note}; Herald CPU {cpu_us:.0} µs/msg ({:.0}% of one core); {machine}", cpu / elapsed * 100.0);
    if let Ok(path) = std::env::var("E2E_METRICS") {
        // Herald's own counters after the run (commits, transactions, chunk sizes).
        let text = client.get(format!("http://127.0.0.1:{http_port}/metrics")).send().await?.text().await?;
        std::fs::write(path, text)?;
    }
    Ok((rate, ingest, note, cpu_us))
}

/// POSTs over HTTP; returns (end-to-end rate, acceptance rate, note).
async fn herald_http(
    a: &Args,
    sink: &Sink,
    http_port: u16,
    client: &reqwest::Client,
    payload: &Payload,
) -> Result<(f64, f64, String)> {
    let url = format!("http://127.0.0.1:{http_port}/v1/send");
    let mut request =
        serde_json::json!({"envelope": "bounces@sender.test", "recipient": "b@example.test", "body": payload.body});
    if let (Some(r), Some(o)) = (request.as_object_mut(), payload.options.as_object()) {
        r.extend(o.clone());
    }
    let payload = Arc::new(request.to_string());
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency {
        let (client, url, payload, next, n) = (client.clone(), url.clone(), payload.clone(), next.clone(), a.messages);
        tasks.spawn(async move {
            let mut first_id = None;
            while next.fetch_add(1, Ordering::SeqCst) < n {
                let r = client
                    .post(&url)
                    .bearer_auth("k")
                    .header("content-type", "application/json")
                    .body(payload.as_bytes().to_vec())
                    .send()
                    .await?;
                if r.status() != 202 {
                    bail!("POST answered {}", r.status());
                }
                let v: serde_json::Value = r.json().await?;
                first_id.get_or_insert(v["messages"][0]["id"].as_str().unwrap_or_default().to_owned());
            }
            Ok(first_id)
        });
    }
    let mut some_id = None;
    while let Some(r) = tasks.join_next().await {
        some_id = some_id.or(r??);
    }
    let ingested = started.elapsed();
    let last = wait_sink(sink, a.messages, Duration::from_secs(900))?;
    let total = last.duration_since(started).as_secs_f64();
    // Check that what was measured was signed.
    let id = some_id.unwrap_or_default();
    let view: serde_json::Value = client
        .get(format!("http://127.0.0.1:{http_port}/v1/messages/{id}"))
        .bearer_auth("k")
        .send()
        .await?
        .json()
        .await?;
    let mut dkim = view["events"][1]["dkim"].as_str().unwrap_or("?").to_owned();
    let metrics = client.get(format!("http://127.0.0.1:{http_port}/metrics")).send().await?.text().await?;
    let counter = |name: &str| {
        metrics.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
    };
    let (prepared, rewritten) =
        (counter("herald_rewrite_bodies_prepared_total "), counter("herald_rewrite_messages_total "));
    dkim.push_str(&format!("; rewritten {rewritten} messages from {prepared} prepared bodies"));
    Ok((a.messages as f64 / total, a.messages as f64 / ingested.as_secs_f64(), dkim))
}

/// Writes the config (with `a.providers` as the operator's providers file) and starts
/// `herald serve`; returns it with its HTTP and SMTP ports.
fn start_herald(a: &Args, dir: &Path, dns_port: u16, sink_port: u16) -> Result<(Proc, u16, u16)> {
    std::fs::write(dir.join("dkim.pem"), rsa_pem()?)?;
    let http_port = free_port();
    let smtp_port = free_port();
    let providers = match &a.providers {
        Some(text) => {
            std::fs::write(dir.join("providers.toml"), text)?;
            format!("providers_file = \"{}/providers.toml\"\n", dir.display())
        }
        None => String::new(),
    };
    let backend = if a.kafka_cql {
        let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
        let unique = format!("bench{}_{millis}", std::process::id());
        let kafka = std::env::var("HERALD_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
        let cql = std::env::var("HERALD_TEST_CQL").unwrap_or_else(|_| "127.0.0.1:9042".into());
        format!(
            "[backend]\nlog = \"kafka\"\nstore = \"cql\"\nkafka_brokers = \"{kafka}\"\ncql_nodes = [\"{cql}\"]\ntopic_prefix = \"{unique}\"\ncql_keyspace = \"{unique}\"\nkafka_replication = 1\nkafka_min_insync_replicas = 1\nkafka_allow_weak_durability = true\n{extra}\n",
            extra = std::env::var("E2E_BACKEND_EXTRA").unwrap_or_default()
        )
    } else {
        String::new()
    };
    // Several nodes could share Kafka: every node must verify every tracking token.
    let tracking_keys = if a.kafka_cql {
        "keys = [{ id = \"b1\", secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\" }]\n"
    } else {
        ""
    };
    std::fs::write(
        dir.join("herald.toml"),
        format!(
            "{backend}[storage]\ndata_dir = \"{d}/data\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[smtp]\nlisten = \"127.0.0.1:{smtp_port}\"\nmax_connections_per_ip = 1000\n[tracking]\nlisten = \"127.0.0.1:0\"\n{tracking_keys}[bounces]\nlisten = \"127.0.0.1:0\"\n[delivery]\ndns_servers = [\"127.0.0.1:{dns_port}\"]\nmx_port = {sink_port}\nhelo_name = \"mta.herald.test\"\ndomain_concurrency = {c}\n{providers}[[accounts]]\nid = \"bench\"\napi_keys = [\"k\"]\nrelay_networks = [\"127.0.0.0/8\"]\n[[dkim]]\ndomain = \"sender.test\"\nselector = \"s1\"\nprivate_key = \"{d}/dkim.pem\"\naccounts = [\"bench\"]\n",
            d = dir.display(),
            c = a.concurrency
        ),
    )?;
    let bin = std::env::current_exe()?.parent().unwrap().join("herald");
    let herald = Proc(
        Command::new(&bin)
            .args(["serve", "--config"])
            .arg(dir.join("herald.toml"))
            .env("RUST_LOG", "warn")
            .spawn()
            .with_context(|| format!("{} (build it: cargo build --release -p herald)", bin.display()))?,
    );
    wait_port(http_port)?;
    Ok((herald, http_port, smtp_port))
}

/// smtp-source into Herald's SMTP listener; returns (end-to-end rate, acceptance rate, DKIM note).
async fn herald_smtp(
    a: &Args,
    sink: &Sink,
    smtp_port: u16,
    http_port: u16,
    client: &reqwest::Client,
) -> Result<(f64, f64, String)> {
    wait_port(smtp_port)?;
    let started = Instant::now();
    let source = Command::new("smtp-source")
        .args(["-l", "5120", "-m", &a.messages.to_string(), "-s", &a.concurrency.to_string()])
        .args(["-f", "news@sender.test", "-t", "b@example.test", &format!("127.0.0.1:{smtp_port}")])
        .status()?;
    if !source.success() {
        bail!("smtp-source failed");
    }
    let ingested = started.elapsed();
    let last = wait_sink(sink, a.messages, Duration::from_secs(900))?;
    let total = last.duration_since(started).as_secs_f64();
    let metrics = client.get(format!("http://127.0.0.1:{http_port}/metrics")).send().await?.text().await?;
    let counter = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let (accepted, signed) =
        (counter("herald_ingest_accepted_messages_total"), counter("herald_dkim_signatures_total"));
    if accepted < a.messages as f64 || signed < a.messages as f64 {
        bail!("accepted {accepted}, signed {signed}, of {}", a.messages);
    }
    Ok((a.messages as f64 / total, a.messages as f64 / ingested.as_secs_f64(), format!("{signed} DKIM signatures")))
}

fn postfix(a: &Args, dir: &Path) -> Result<f64> {
    let sink_port = free_port();
    let sink = start_sink(sink_port, a.messages)?;
    let listen = free_port();
    let script: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/scripts/postfix-relay.sh");
    let pf = dir.join("postfix");
    let ok = Command::new("bash")
        .arg(&script)
        .args(["start"])
        .arg(&pf)
        .args([listen.to_string(), sink_port.to_string()])
        .status()?;
    if !ok.success() {
        bail!("postfix-relay.sh start failed");
    }
    let watch = Watch::start()?;
    let started = Instant::now();
    let source = Command::new("smtp-source")
        .args(["-l", "5120", "-m", &a.messages.to_string(), "-s", &a.concurrency.to_string()])
        .args(["-f", "news@sender.test", "-t", "b@example.test", &format!("127.0.0.1:{listen}")])
        .status();
    let result = source.map_err(anyhow::Error::from).and_then(|s| {
        if !s.success() {
            bail!("smtp-source failed");
        }
        wait_sink(&sink, a.messages, Duration::from_secs(900))
    });
    // The servers Herald used are still running: their background work (flushes,
    // compaction) in this phase takes CPU from Postfix.
    let note = watch.note(a.messages)?;
    let _ = Command::new("bash").arg(&script).arg("stop").arg(&pf).status();
    let last = result?;
    println!("postfix : {note}");
    Ok(a.messages as f64 / last.duration_since(started).as_secs_f64())
}

/// Waits `--settle` seconds (after a `sync`), so that a phase starts on a quiet machine.
fn settle(a: &Args) {
    if a.settle > 0 {
        let _ = Command::new("sync").status();
        std::thread::sleep(Duration::from_secs(a.settle));
    }
}

/// The CPU used over a phase: the whole machine's (every process: the MTA, the servers,
/// the sink, the driver) and that of the servers named in `E2E_WATCH=kafka=PID,cassandra=PID`.
struct Watch {
    machine: (f64, f64),
    servers: Vec<(String, u32, f64)>,
}

impl Watch {
    fn start() -> Result<Watch> {
        let servers = std::env::var("E2E_WATCH")
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| {
                let (name, pid) = kv.split_once('=')?;
                let pid: u32 = pid.trim().parse().ok()?;
                Some((name.to_owned(), pid, cpu_seconds(pid).unwrap_or(0.0)))
            })
            .collect();
        Ok(Watch { machine: machine_cpu_seconds()?, servers })
    }

    /// Busy µs per message and the share of the cores that was idle since the start, then
    /// each watched server's µs per message.
    fn note(&self, messages: u64) -> Result<String> {
        let now = machine_cpu_seconds()?;
        let (busy, idle) = (now.0 - self.machine.0, now.1 - self.machine.1);
        let per_message = |seconds: f64| seconds * 1e6 / messages as f64;
        let mut note =
            format!("machine CPU {:.0} µs/msg, {:.0}% idle", per_message(busy), idle / (busy + idle).max(1e-9) * 100.0);
        for (name, pid, before) in &self.servers {
            let used = cpu_seconds(*pid).unwrap_or(*before) - before;
            note.push_str(&format!("; {name} CPU {:.0} µs/msg", per_message(used)));
        }
        Ok(note)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let dir = tempfile::tempdir()?;
    let (_knot, dns_port) = knot(dir.path())?;
    if a.engagement {
        return engagement(&a, dir.path(), dns_port).await;
    }
    if let Some(rate) = a.rate {
        return rate_accuracy(&a, dir.path(), dns_port, rate).await;
    }
    if a.compare_providers {
        return compare_providers(a, dir.path(), dns_port).await;
    }
    let payload = Payload { body: body_5k(), options: serde_json::json!({}) };
    for i in 0..a.warmup {
        let warm = dir.path().join(format!("warmup-{i}"));
        std::fs::create_dir_all(&warm)?;
        let (rate, _, _, _) = herald(&a, &warm, dns_port, &payload).await?;
        println!("warmup  : {rate:8.0} msg/s (not reported)");
    }
    settle(&a);
    let (herald_rate, ingest_rate, dkim, cpu_us) = herald(&a, dir.path(), dns_port, &payload).await?;
    let how = if a.smtp {
        "smtp-source start → last arrival; accepted over SMTP at"
    } else {
        "first POST → last arrival; accepted over HTTP at"
    };
    println!("herald  : {herald_rate:8.0} msg/s end to end ({how} {ingest_rate:.0} msg/s); {dkim}");
    let backend = if a.kafka_cql { "kafka-cql" } else { "embedded" };
    if a.skip_postfix {
        println!(
            "{}",
            serde_json::json!({"backend": backend, "messages": a.messages, "herald_msgs_per_s": herald_rate.round(), "herald_cpu_us_per_msg": cpu_us.round()})
        );
        return Ok(());
    }
    settle(&a);
    let postfix_rate = postfix(&a, dir.path())?;
    println!("postfix : {postfix_rate:8.0} msg/s end to end (smtp-source start → last arrival), unsigned");
    println!("ratio   : herald/postfix = {:.2}", herald_rate / postfix_rate);
    println!(
        "{}",
        serde_json::json!({"backend": backend, "herald_cpu_us_per_msg": cpu_us.round(), "ingest": if a.smtp { "smtp" } else { "http" }, "messages": a.messages, "concurrency": a.concurrency, "herald_msgs_per_s": herald_rate.round(), "herald_ingest_msgs_per_s": ingest_rate.round(), "postfix_msgs_per_s": postfix_rate.round(), "ratio": (herald_rate / postfix_rate * 100.0).round() / 100.0})
    );
    Ok(())
}

/// The newsletter without options, then with CSS inlining, click and open tracking.
async fn engagement(a: &Args, dir: &Path, dns_port: u16) -> Result<()> {
    let body = String::from_utf8(herald_benches::newsletter_20k())?;
    let mut rates = vec![];
    for (name, options) in [
        ("off", serde_json::json!({})),
        ("on", serde_json::json!({"inlinizecss": true, "clicktracking": true, "openstracking": true})),
    ] {
        let run = dir.join(format!("engagement-{name}"));
        std::fs::create_dir_all(&run)?;
        let (rate, ingest, note, _) = herald(a, &run, dns_port, &Payload { body: body.clone(), options }).await?;
        println!("herald {name:>3}: {rate:8.0} msg/s end to end (accepted over HTTP at {ingest:.0} msg/s); {note}");
        rates.push(rate);
    }
    println!("ratio  : on/off = {:.2}", rates[1] / rates[0]);
    println!(
        "{}",
        serde_json::json!({"figure": "engagement", "messages": a.messages, "concurrency": a.concurrency, "off_msgs_per_s": rates[0].round(), "on_msgs_per_s": rates[1].round(), "ratio": (rates[1] / rates[0] * 100.0).round() / 100.0})
    );
    Ok(())
}

/// The P1 relay with the shipped providers file, then with none, in one run.
async fn compare_providers(a: Args, dir: &Path, dns_port: u16) -> Result<()> {
    let payload = Payload { body: body_5k(), options: serde_json::json!({}) };
    let none = Args { providers: Some(NO_PROVIDERS.into()), ..a };
    let mut rates = vec![];
    for (name, args) in [("shipped", &a), ("none", &none)] {
        let run = dir.join(format!("providers-{name}"));
        std::fs::create_dir_all(&run)?;
        let (rate, ingest, _, _) = herald(args, &run, dns_port, &payload).await?;
        println!("herald {name:>7}: {rate:8.0} msg/s end to end (accepted over HTTP at {ingest:.0} msg/s)");
        rates.push(rate);
    }
    println!("ratio  : shipped/none = {:.2}", rates[0] / rates[1]);
    println!(
        "{}",
        serde_json::json!({"figure": "providers", "messages": a.messages, "concurrency": a.concurrency, "shipped_msgs_per_s": rates[0].round(), "none_msgs_per_s": rates[1].round(), "ratio": (rates[0] / rates[1] * 100.0).round() / 100.0})
    );
    Ok(())
}

/// Rate accuracy: the `default` provider limited to `rate` msg/s, R·(S+15) messages
/// queued, the sink's arrivals counted over the S seconds after the first one.
async fn rate_accuracy(a: &Args, dir: &Path, dns_port: u16, rate: u64) -> Result<()> {
    let a = Args {
        providers: Some(format!("replace_shipped = true\n[providers.default]\nmessages_per_second = {rate}\n")),
        messages: rate * (a.seconds + 15),
        ..*a
    };
    let sink_port = free_port();
    let sink = start_sink(sink_port, a.messages)?;
    let (_herald, http_port, _) = start_herald(&a, dir, dns_port, sink_port)?;
    let body = serde_json::json!({"envelope": "bounces@sender.test", "recipient": "b@example.test", "body": body_5k()});
    let body = Arc::new(body.to_string());
    let (next, url) = (Arc::new(AtomicU64::new(0)), format!("http://127.0.0.1:{http_port}/v1/send"));
    let client = reqwest::Client::builder().pool_max_idle_per_host(a.concurrency).build()?;
    let mut posters = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency {
        let (client, url, body, next, n) = (client.clone(), url.clone(), body.clone(), next.clone(), a.messages);
        posters.spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < n {
                let r = client.post(&url).bearer_auth("k").header("content-type", "application/json");
                let r = r.body(body.as_bytes().to_vec()).send().await?;
                if r.status() != 202 {
                    bail!("POST answered {}", r.status());
                }
            }
            Ok(())
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while sink.count.load(Ordering::SeqCst) == 0 {
        if Instant::now() > deadline {
            bail!("nothing arrived in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (first, t0) = (sink.count.load(Ordering::SeqCst), Instant::now());
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let n = sink.count.load(Ordering::SeqCst) - first;
    let measured = n as f64 / t0.elapsed().as_secs_f64();
    posters.abort_all();
    println!("rate   : limit {rate} msg/s, measured {measured:.2} msg/s over {} s", a.seconds);
    println!(
        "{}",
        serde_json::json!({"figure": "rate", "limit": rate, "seconds": a.seconds, "measured": (measured * 100.0).round() / 100.0, "ratio": (measured / rate as f64 * 1000.0).round() / 1000.0})
    );
    Ok(())
}

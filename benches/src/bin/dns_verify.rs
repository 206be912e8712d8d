//! Wall time of verifying one sender domain end to end (every record the customer
//! publishes, resolved through a real DNS server), with a cold resolver (a new one per
//! run, empty cache) and a warm one (one resolver reused, so answers come from its cache).
//!
//! Usage: dns_verify --resolver 127.0.0.1:PORT --zone herald.test --domain sender.test
//!        --token TOKEN [--runs N]
//! (benches/dns/run.sh starts Knot and Herald and passes these.)

use anyhow::{bail, Context, Result};
use herald_engine::domains::{lookup, records::ServiceZone, state, verify};
use herald_schemas::*;
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let mut resolver = None;
    let (mut zone, mut domain, mut token, mut runs) = (String::new(), String::new(), String::new(), 50usize);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--resolver" => resolver = Some(v.parse::<std::net::SocketAddr>()?),
            "--zone" => zone = v,
            "--domain" => domain = v,
            "--token" => token = v,
            "--runs" => runs = v.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    let resolver = resolver.context("--resolver is required")?;
    let key = DkimKey {
        selector: "hd1".into(),
        algorithm: KeyAlgorithm::RsaSha256,
        public_key: String::new(),
        key_file: String::new(),
        created_at: Timestamp(0),
    };
    let added = DomainEvent::Added(DomainAdded {
        account: AccountId("bench".into()),
        domain,
        token,
        bounce_label: "bounce".into(),
        tracking_label: "clicks".into(),
        dmarc_rua: None,
        bimi_logo: None,
        keys: vec![key],
        request_id: "bench".into(),
        added_at: Timestamp(0),
    });
    let s = state::apply(None, &added, 0).context("state")?;
    let zone = ServiceZone::new(&zone);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let timeout = Duration::from_secs(2);
        let mut cold = vec![];
        for _ in 0..runs {
            let started = Instant::now();
            let r = lookup::resolver(&[resolver], timeout).map_err(anyhow::Error::msg)?;
            let checks = verify::verify(&r, &zone, &s).await;
            cold.push(started.elapsed());
            if let Some(bad) = checks.iter().find(|c| c.result != CheckResult::Ok) {
                bail!("not a clean zone: {} {:?}: {}", bad.record, bad.result, bad.message);
            }
        }
        let r = lookup::resolver(&[resolver], timeout).map_err(anyhow::Error::msg)?;
        verify::verify(&r, &zone, &s).await;
        let mut warm = vec![];
        for _ in 0..runs {
            let started = Instant::now();
            verify::verify(&r, &zone, &s).await;
            warm.push(started.elapsed());
        }
        let queries = verify::verify(&r, &zone, &s).await.len();
        report("cold", &mut cold, queries);
        report("warm", &mut warm, queries);
        Ok(())
    })
}

fn report(name: &str, times: &mut [Duration], checks: usize) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "verify {name}: {checks} checks, runs {}, median {:.2} ms, p90 {:.2} ms, min {:.2} ms",
        times.len(),
        ms(times[times.len() / 2]),
        ms(times[times.len() * 9 / 10]),
        ms(times[0])
    );
}

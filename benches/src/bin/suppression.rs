//! The suppression check at send time, at a million suppressed addresses: the node's
//! in-memory index (memory and cost per check, and its start-up load from the store) against
//! asking the store for every message (embedded redb; CQL when `--cql host:port`).
//!
//! `suppression [--entries N] [--cql host:port] [--cql-entries N]` (release build).

use herald_engine::feedback::index::SuppressionIndex;
use herald_engine::store::cql::CqlStore;
use herald_engine::store::embedded::EmbeddedStore;
use herald_engine::store::feedback::{FeedbackChange, FeedbackStore, Suppression};
use herald_schemas::{AccountId, SuppressionReason, Timestamp};
use std::sync::Arc;
use std::time::Instant;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn address(i: u64) -> String {
    format!("user{i}@example{}.test", i % 1000)
}

fn entry(account: &AccountId, i: u64) -> Suppression {
    Suppression {
        account: account.clone(),
        address: address(i),
        reason: SuppressionReason::HardBounce,
        message_id: None,
        detail: "permanent bounce (invalid-recipient): 550 5.1.1 user unknown".into(),
        expires_at: None,
        created_at: Timestamp::now(),
        id: format!("bench-{i}"),
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

async fn fill(store: &dyn FeedbackStore, account: &AccountId, n: u64) -> f64 {
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        let batch: Vec<FeedbackChange> =
            (i..(i + 2000).min(n)).map(|j| FeedbackChange::Suppress(entry(account, j))).collect();
        store.apply_feedback(&batch).await.unwrap();
        i += 2000;
    }
    t.elapsed().as_secs_f64()
}

/// Sequential, then 64 concurrent point look-ups (`checks` each, half hits): µs per check.
async fn store_checks(store: Arc<dyn FeedbackStore>, account: &AccountId, n: u64, checks: u64) -> (f64, f64) {
    let t = Instant::now();
    for k in 0..checks {
        let i = (k * 7919) % (2 * n);
        let found = store.suppression(account, &address(i)).await.unwrap().is_some();
        assert_eq!(found, i < n);
    }
    let sequential = t.elapsed().as_secs_f64() * 1e6 / checks as f64;
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..64u64 {
        let (store, account) = (store.clone(), account.clone());
        tasks.spawn(async move {
            for k in 0..checks / 64 {
                let i = ((k * 64 + w) * 7919) % (2 * n);
                store.suppression(&account, &address(i)).await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let concurrent = t.elapsed().as_secs_f64() * 1e6 / checks as f64;
    (sequential, concurrent)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = arg("--entries").and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let account = AccountId("acme".into());

    // 1. The index alone.
    let before = rss_bytes();
    let index = SuppressionIndex::default();
    let t = Instant::now();
    for i in 0..n {
        index.insert(&account, &address(i), None);
    }
    let build = t.elapsed().as_secs_f64();
    let grown = rss_bytes().saturating_sub(before);
    let now = Timestamp::now();
    let probes: Vec<String> = (0..1_000_000u64).map(|k| address((k * 7919) % (2 * n))).collect();
    let t = Instant::now();
    let mut hits = 0;
    for p in &probes {
        hits += index.is_suppressed(&account, p, now) as u64;
    }
    let per_check = t.elapsed().as_secs_f64() * 1e9 / probes.len() as f64;
    println!(
        "index: {n} entries, built in {build:.2} s; RSS +{:.1} MB ({:.1} bytes/entry), tables {:.1} MB",
        grown as f64 / 1e6,
        grown as f64 / n as f64,
        index.memory_bytes() as f64 / 1e6
    );
    println!("index: {per_check:.0} ns per check (1M checks, {hits} hits)");
    drop(index);

    // 2. The embedded store: filling, loading the index from it, point look-ups.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("p.redb")).unwrap());
    let filled = fill(store.as_ref(), &account, n).await;
    let index = SuppressionIndex::default();
    let t = Instant::now();
    let loaded = index.load(store.as_ref()).await.unwrap();
    println!(
        "embedded store: {n} entries written in {filled:.1} s; index loaded from it in {:.2} s ({loaded})",
        t.elapsed().as_secs_f64()
    );
    let (seq, conc) = store_checks(store.clone(), &account, n, 100_000).await;
    println!("embedded store: {seq:.2} µs per look-up sequential, {conc:.2} µs with 64 concurrent");

    // 3. CQL, when asked.
    if let Some(node) = arg("--cql") {
        let m: u64 = arg("--cql-entries").and_then(|v| v.parse().ok()).unwrap_or(n);
        let keyspace = format!("bench_sup_{}", &herald_schemas::MessageId::generate().0[20..]);
        let cql = Arc::new(CqlStore::connect(&[node], &keyspace).await.unwrap());
        let filled = fill(cql.as_ref(), &account, m).await;
        let index = SuppressionIndex::default();
        let t = Instant::now();
        let loaded = index.load(cql.as_ref()).await.unwrap();
        println!(
            "cql store: {m} entries written in {filled:.1} s; index loaded from it in {:.2} s ({loaded})",
            t.elapsed().as_secs_f64()
        );
        let (seq, conc) = store_checks(cql, &account, m, 20_000).await;
        println!(
            "cql store: {seq:.0} µs per look-up sequential, {conc:.1} µs with 64 concurrent (keyspace {keyspace})"
        );
    }
}

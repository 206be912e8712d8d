//! Keys in the log (ADR 0017) on the shared Kafka and Cassandra, with two nodes that share
//! nothing but the backends and a copy of the master keyring (separate data directories):
//! - node A (`project`, the API and Herald's DNS) creates a sender domain; node B (`deliver`
//!   only) signs its mail without ever having created the key, and dkimpy verifies it;
//! - a domain from before ADR 0017 (its key a file in A's data directory, its events without
//!   a sealed key) is migrated into the log, and B signs for it too;
//! - the master key is rotated under the running cluster (staged `open-only`, promoted,
//!   every key re-wrapped by the domain's owner, the old master key removed): B, restarted
//!   with only the new master key, still signs for both domains;
//! - no API response carries key material.

mod support;

use herald::config::{Config, Role};
use herald_engine::domains::{keys, state::DomainState, vault::Keyring};
use herald_schemas::{AccountId, DomainAdded, DomainEvent, Event, KeyAlgorithm, Timestamp};
use serde_json::{json, Value};
use std::path::Path;
use support::dns::{Knot, Zone};
use support::herald::{config, start, Backends, Running, KEY};
use support::sink::Sink;

const ZONE: &str = "herald.test";

fn write_keyring(path: &Path, lines: &[&str]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).unwrap();
    std::io::Write::write_all(&mut f, format!("{}\n", lines.join("\n")).as_bytes()).unwrap();
}

/// Zone-file lines (absolute names) of the records the API lists for a domain.
fn record_lines(records: &Value) -> Vec<String> {
    records["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let value = r["value"].as_str().unwrap();
            let value = if r["type"] == "TXT" { format!("\"{value}\"") } else { value.to_owned() };
            format!("{}. {} {value}", r["name"].as_str().unwrap(), r["type"].as_str().unwrap())
        })
        .collect()
}

async fn post(h: &Running, path: &str, body: Value) -> (u16, Value) {
    let r = h.http.post(format!("{}{path}", h.base)).bearer_auth(KEY).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// A node's config: its own data directory and keyring file, the test's backends.
fn node(dir: &Path, name: &str, base: &Config, roles: Vec<Role>) -> Config {
    let mut c = base.clone();
    c.storage.data_dir = dir.join(name).join("data");
    c.keys.master_key_file = Some(dir.join(name).join("master.keys"));
    c.keys.reload_secs = 1;
    c.cluster.roles = roles;
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    let tracking_port = support::free_port();
    c.tracking.listen = format!("127.0.0.1:{tracking_port}").parse().unwrap();
    c.tracking.default_host = format!("127.0.0.1:{tracking_port}");
    c
}

/// Sends from `from`, waits for delivery through A, and checks the signature with dkimpy
/// (following the customer's CNAME from Knot into A's zone).
async fn signed_and_verified(a: &Running, sink: &Sink, knot: u16, dns: u16, from: &str, subject: &str) {
    let body = format!(
        "From: <{from}>\r\nTo: <alice@rcpt.test>\r\nSubject: {subject}\r\nDate: Sat, 28 Nov 2026 01:00:00 +0000\r\n\r\nHello.\r\n"
    );
    let (code, reply) = a
        .send_json(KEY, &json!({ "envelope": "bounces@sender.test", "recipient": "alice@rcpt.test", "body": body }))
        .await;
    assert_eq!(code, 202, "{reply}");
    let id = reply["messages"][0]["id"].as_str().unwrap().to_owned();
    let view = a.wait_status(&id, "delivered", 60).await;
    let domain = from.split_once('@').unwrap().1;
    let note = view["events"][1]["dkim"].as_str().unwrap_or_default();
    assert!(note.starts_with(&format!("signed d={domain} s=hd1")), "{subject}: {view}");
    let data = {
        let all = sink.received.lock().unwrap();
        let needle = format!("Subject: {subject}\r\n");
        all.iter().find(|m| String::from_utf8_lossy(&m.data).contains(&needle)).unwrap().data.clone()
    };
    let report = support::dkim_verify_zones(&data, knot, &[(ZONE, dns)]).unwrap_or_else(|e| panic!("{subject}: {e}"));
    assert!(report.contains(&format!("ok d={domain} s=hd1")), "{report}");
}

/// The master key ids of `domain`'s sealed keys, as the store holds them.
async fn sealed_ids(store: &dyn herald_engine::store::ProjectionStore, domain: &str) -> Vec<u32> {
    let state: Option<DomainState> = store.domain(domain).await.unwrap();
    state.map(|s| s.sealed.iter().map(|k| k.master_key_id).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_signs_with_keys_it_never_created_and_the_master_key_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start(&[
        Zone { origin: "rcpt.test".into(), records: vec!["@ MX 10 mx".into(), "mx A 127.0.0.1".into()] },
        Zone { origin: "sender.test".into(), records: vec![] },
        Zone { origin: "legacy.test".into(), records: vec![] },
    ]);
    let (sink, addr) = Sink::start(0).await;
    let mut base = config(&dir.path().join("unused"), knot.port, addr.port(), Backends::KafkaCql, vec![]);
    base.dns.zone = ZONE.into();
    base.dns.resolvers = vec![format!("127.0.0.1:{}", knot.port)];
    base.dns.sending_ips = vec!["127.0.0.1".parse().unwrap()];
    base.dns.resolver_timeout_ms = 1000;
    base.dns.refresh_ms = 200;
    base.domains.rotation_interval_secs = 0;
    base.domains.maintenance_interval_secs = 1;
    base.domains.reverify_secs = 3600;
    base.delivery.max_age_secs = 300;
    let dns_port = support::free_port();
    let mut a_config = node(dir.path(), "a", &base, vec![Role::Project]);
    a_config.dns.enabled = true;
    a_config.dns.listen = format!("127.0.0.1:{dns_port}").parse().unwrap();
    let b_config = node(dir.path(), "b", &base, vec![Role::Deliver]);
    let (k1, k2) = (Keyring::generate_line(1), Keyring::generate_line(2));
    for n in ["a", "b"] {
        std::fs::create_dir_all(dir.path().join(n)).unwrap();
        write_keyring(&dir.path().join(n).join("master.keys"), &[&k1]);
    }

    // A domain from before ADR 0017: its claim in the log, its private key a file of A's.
    let legacy_key = keys::generate(KeyAlgorithm::RsaSha256, 1, Timestamp::now()).unwrap();
    keys::KeyStore::new(a_config.storage.data_dir.join("dkim"))
        .write("legacy.test", &legacy_key.key.key_file, &legacy_key.pem)
        .unwrap();
    let log = herald::serve::open_log(&a_config).await.unwrap();
    let router = herald_engine::routing::Router::new(a_config.backend.partitions, Default::default());
    let added = DomainEvent::Added(DomainAdded {
        account: AccountId("acme".into()),
        domain: "legacy.test".into(),
        token: "legacytok".into(),
        bounce_label: "bounce".into(),
        tracking_label: "clicks".into(),
        dmarc_rua: None,
        bimi_logo: None,
        keys: vec![legacy_key.key.clone()],
        request_id: "legacy".into(),
        added_at: Timestamp::now(),
    });
    log.append(vec![herald_engine::log::Record {
        topic: herald::serve::topics(&a_config).domains(),
        partition: router.key_partition("legacy.test"),
        key: "legacy.test".into(),
        value: herald_schemas::encode(&Event::Domain(added)),
    }])
    .await
    .unwrap();
    drop(log);
    let store = herald::serve::open_store(&a_config).await.unwrap();

    let a = start(a_config).await;
    let mut b = start(b_config.clone()).await;

    // A creates sender.test; both domains' records go into the customer's zones; verified.
    let (code, added) = post(&a, "/v1/domains", json!({ "domain": "sender.test" })).await;
    assert_eq!(code, 201, "{added}");
    let legacy = support::eventually(30, "legacy.test projected", || async {
        let (code, v) = a.get(KEY, "/v1/domains/legacy.test").await;
        (code == 200).then_some(v)
    })
    .await;
    for (domain, view) in [("sender.test", &added), ("legacy.test", &legacy)] {
        let text = view.to_string();
        for secret in ["PRIVATE", "sealed", "ciphertext", "nonce", "key_file"] {
            assert!(!text.contains(secret), "{domain}: `{secret}` in an API response: {text}");
        }
    }
    let mut lines = vec![];
    for domain in ["sender.test", "legacy.test"] {
        let (_, records) = a.get(KEY, &format!("/v1/domains/{domain}/records")).await;
        lines.extend(record_lines(&records));
    }
    let zone = |origin: &str| Zone {
        origin: origin.into(),
        records: lines
            .iter()
            .filter(|l| l.split_whitespace().next().unwrap().ends_with(&format!("{origin}.")))
            .cloned()
            .chain(["@ MX 10 mail".to_owned(), "mail A 127.0.0.1".to_owned()])
            .collect(),
    };
    knot.replace(&zone("sender.test"));
    knot.replace(&zone("legacy.test"));
    for domain in ["sender.test", "legacy.test"] {
        let (code, v) = post(&a, &format!("/v1/domains/{domain}/verify"), json!({})).await;
        assert_eq!((code, v["status"].as_str()), (200, Some("verified")), "{domain}: {v:#}");
    }

    // The legacy key is migrated into the log by A (which has the file); nobody wrote a file
    // for sender.test; B has no key directory at all, and signs for both.
    support::eventually(30, "legacy.test's key sealed into the log", || async {
        (sealed_ids(store.as_ref(), "legacy.test").await == vec![1]).then_some(())
    })
    .await;
    assert_eq!(sealed_ids(store.as_ref(), "sender.test").await, vec![1]);
    assert!(!dir.path().join("a/data/dkim/sender.test").exists(), "no key file for a new domain");
    assert!(!dir.path().join("b/data/dkim").exists(), "B never had a key file");
    // B signs only for domains its cache (refreshed from the store every `dns.refresh_ms`)
    // shows verified: wait for the store, then for a few of B's refreshes.
    support::eventually(30, "both domains verified in the store", || async {
        let mut verified = true;
        for domain in ["sender.test", "legacy.test"] {
            let state: Option<DomainState> = store.domain(domain).await.unwrap();
            verified &= state.is_some_and(|s| s.status == herald_schemas::VerificationStatus::Verified);
        }
        verified.then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    signed_and_verified(&a, &sink, knot.port, dns_port, "news@sender.test", "b-signs-new").await;
    signed_and_verified(&a, &sink, knot.port, dns_port, "news@legacy.test", "b-signs-migrated").await;

    // Master-key rotation under the running cluster: stage key 2 everywhere (it opens, it
    // does not seal), then promote it everywhere; A, which owns the domains topic, re-wraps
    // every key under it.
    for n in ["a", "b"] {
        write_keyring(&dir.path().join(n).join("master.keys"), &[&k1, &format!("{k2} open-only")]);
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(sealed_ids(store.as_ref(), "sender.test").await, vec![1], "a staged key re-wraps nothing");
    for n in ["a", "b"] {
        write_keyring(&dir.path().join(n).join("master.keys"), &[&k2, &k1]);
    }
    support::eventually(30, "every key re-wrapped under master key 2", || async {
        let (s, l) = (sealed_ids(store.as_ref(), "sender.test").await, sealed_ids(store.as_ref(), "legacy.test").await);
        (s == vec![2] && l == vec![2]).then_some(())
    })
    .await;
    // Key 1 retired; B restarted (nothing cached) with only key 2 still signs for both.
    for n in ["a", "b"] {
        write_keyring(&dir.path().join(n).join("master.keys"), &[&k2]);
    }
    b.stop().await;
    std::fs::remove_dir_all(dir.path().join("a/data/dkim")).unwrap();
    b = start(b_config).await;
    signed_and_verified(&a, &sink, knot.port, dns_port, "news@sender.test", "after-rotation-new").await;
    signed_and_verified(&a, &sink, knot.port, dns_port, "news@legacy.test", "after-rotation-migrated").await;
    b.stop().await;
    a.stop().await;
}

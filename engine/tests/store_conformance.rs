//! One conformance suite for every `ProjectionStore` backend (events and counters, sender
//! domains, idempotency keys): embedded redb and a real CQL
//! server (`HERALD_TEST_CQL=host:port`, set by `ops/scripts/test.sh`; without it the CQL
//! tests fail rather than skip).

use herald_engine::store::{
    cql::CqlStore, embedded::EmbeddedStore, Claim, EngagementKind, EngagementRow, IdempotencyRecord, Kind, LinkStats,
    Projected, ProjectionStore, Stats, Status,
};
use herald_schemas::{AccountId, MessageId, Timestamp};
use std::sync::Arc;
use std::time::Duration;

const HOUR: i64 = 3_600_000;
/// 2026-11-22T10:00:00Z
const T0: i64 = 1_795_341_600_000;

fn event(account: &str, id: &str, seq: u32, kind: Kind, at: i64) -> Projected {
    Projected {
        account: AccountId(account.into()),
        message_id: MessageId(id.into()),
        seq,
        recipient: format!("{id}@example.test"),
        kind,
        at: Timestamp(at),
        detail: serde_json::json!({ "seq": seq, "kind": kind }),
    }
}

async fn suite(store: Arc<dyn ProjectionStore>) {
    let a = AccountId("acme".into());
    let b = AccountId("other".into());
    // Out of order, across two hours, with one redelivered batch.
    let batch = vec![
        event("acme", "m1", 1, Kind::Deferred, T0 + 10),
        event("acme", "m1", 0, Kind::Accepted, T0),
        event("acme", "m2", 0, Kind::Accepted, T0 + 20),
        event("acme", "m1", 2, Kind::Delivered, T0 + HOUR + 5),
        event("acme", "m3", 0, Kind::Accepted, T0 + HOUR + 6),
        event("acme", "m3", 1, Kind::Failed, T0 + HOUR + 7),
        event("other", "m9", 0, Kind::Accepted, T0 + 30),
    ];
    store.apply(&batch).await.unwrap();
    store.apply(&batch[..4]).await.unwrap(); // at-least-once: applied twice

    let m1 = store.message(&a, &MessageId("m1".into())).await.unwrap().expect("m1");
    assert_eq!(m1.status, Status::Delivered);
    assert_eq!(m1.events.len(), 3, "duplicates are not stored twice");
    assert_eq!(m1.events.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(m1.recipient, "m1@example.test");
    assert_eq!(store.message(&a, &MessageId("m2".into())).await.unwrap().unwrap().status, Status::Queued);
    assert_eq!(store.message(&a, &MessageId("m3".into())).await.unwrap().unwrap().status, Status::Failed);
    assert!(
        store.message(&a, &MessageId("m9".into())).await.unwrap().is_none(),
        "another account's message is invisible"
    );
    assert!(store.message(&b, &MessageId("m1".into())).await.unwrap().is_none());

    let all = store.stats(&a, Timestamp(T0), Timestamp(T0 + 2 * HOUR)).await.unwrap();
    assert_eq!(
        all,
        Stats { accepted: 3, delivered: 1, deferred: 1, failed: 1, ..Stats::default() },
        "redelivery does not double count"
    );
    let first_hour = store.stats(&a, Timestamp(T0 + 1000), Timestamp(T0 + HOUR)).await.unwrap();
    assert_eq!(first_hour, Stats { accepted: 2, delivered: 0, deferred: 1, failed: 0, ..Stats::default() });
    let other = store.stats(&b, Timestamp(T0), Timestamp(T0 + 2 * HOUR)).await.unwrap();
    assert_eq!(other.accepted, 1);
    let before = store.stats(&a, Timestamp(T0 - 5 * HOUR), Timestamp(T0)).await.unwrap();
    assert_eq!(before, Stats::default());
    feedback_kinds(store.clone()).await;
    engagement(store.clone()).await;
    domains(store.clone()).await;
    idempotency(store).await;
}

fn record(claim: &str, done: bool) -> IdempotencyRecord {
    IdempotencyRecord {
        fingerprint: "f1".into(),
        claim: claim.into(),
        response: r#"{"messages":[]}"#.into(),
        probe: MessageId("m1".into()),
        done,
        claimed_at: Timestamp(T0),
    }
}

/// Idempotency keys: one winner among concurrent claims, changes only by the holder,
/// per account, gone after their time to live.
async fn idempotency(store: Arc<dyn ProjectionStore>) {
    let (a, b) = (AccountId("acme".into()), AccountId("other".into()));
    let day = Duration::from_secs(86_400);
    let claims = (0..8).map(|i| {
        let (store, a) = (store.clone(), a.clone());
        async move { store.claim_idempotency(&a, "k1", &record(&format!("c{i}"), false), day).await.unwrap() }
    });
    let outcomes = futures::future::join_all(claims).await;
    let winners: Vec<usize> = (0..8).filter(|&i| outcomes[i] == Claim::Won).collect();
    assert_eq!(winners.len(), 1, "exactly one concurrent claim wins: {outcomes:?}");
    let holder = format!("c{}", winners[0]);
    for o in &outcomes {
        if let Claim::Held(r) = o {
            assert_eq!(r.claim, holder);
        }
    }
    assert!(!store.replace_idempotency(&a, "k1", "intruder", &record("intruder", true), day).await.unwrap());
    assert!(store.replace_idempotency(&a, "k1", &holder, &record(&holder, true), day).await.unwrap());
    assert_eq!(
        store.claim_idempotency(&a, "k1", &record("late", false), day).await.unwrap(),
        Claim::Held(record(&holder, true))
    );
    assert_eq!(
        store.claim_idempotency(&b, "k1", &record("b", false), day).await.unwrap(),
        Claim::Won,
        "keys are per account"
    );
    store.release_idempotency(&a, "k1", "intruder").await.unwrap();
    assert!(matches!(store.claim_idempotency(&a, "k1", &record("x", false), day).await.unwrap(), Claim::Held(_)));
    store.release_idempotency(&a, "k1", &holder).await.unwrap();
    assert_eq!(store.claim_idempotency(&a, "k1", &record("again", false), day).await.unwrap(), Claim::Won);
    // Time to live: three seconds, then the key is free again. (Cassandra counts a TTL
    // from the write's whole second, so a TTL of n seconds may end after n - 1: a TTL of 1
    // could end before the second claim.)
    let second = Duration::from_secs(3);
    assert_eq!(store.claim_idempotency(&a, "short", &record("s1", false), second).await.unwrap(), Claim::Won);
    assert!(matches!(
        store.claim_idempotency(&a, "short", &record("s2", false), second).await.unwrap(),
        Claim::Held(_)
    ));
    tokio::time::sleep(Duration::from_millis(4100)).await;
    assert_eq!(store.claim_idempotency(&a, "short", &record("s3", false), second).await.unwrap(), Claim::Won);
}

/// Feedback rows: status is the latest word that has one, `info` counts nothing.
async fn feedback_kinds(store: Arc<dyn ProjectionStore>) {
    use herald_engine::store::feedback_seq;
    let a = AccountId("fb".into());
    let t = T0 + 3 * HOUR;
    let batch = vec![
        event("fb", "f1", 0, Kind::Accepted, t),
        event("fb", "f1", 1, Kind::Delivered, t + 1),
        event("fb", "f1", feedback_seq("dsn-a"), Kind::Bounced, t + 2),
        event("fb", "f2", 0, Kind::Accepted, t),
        event("fb", "f2", 1, Kind::Delivered, t + 1),
        event("fb", "f2", feedback_seq("dsn-delayed"), Kind::Info, t + 2),
        event("fb", "f3", 0, Kind::Accepted, t),
        event("fb", "f3", feedback_seq("suppressed-1"), Kind::Suppressed, t + 1),
        event("fb", "f4", 0, Kind::Accepted, t),
        event("fb", "f4", 1, Kind::Failed, t + 1),
        event("fb", "f4", feedback_seq("sync-1"), Kind::SoftBounced, t + 1),
        event("fb", "f2", feedback_seq("arf-1"), Kind::Complained, t + 5),
    ];
    store.apply(&batch).await.unwrap();
    store.apply(&batch).await.unwrap();
    let status = |id: &'static str| {
        let store = store.clone();
        let a = a.clone();
        async move { store.message(&a, &MessageId(id.into())).await.unwrap().unwrap() }
    };
    assert_eq!(status("f1").await.status, Status::Bounced);
    let f2 = status("f2").await;
    assert_eq!(f2.status, Status::Complained);
    assert_eq!(f2.events.len(), 4);
    assert_eq!(status("f3").await.status, Status::Suppressed);
    assert_eq!(status("f4").await.status, Status::Bounced);
    let stats = store.stats(&a, Timestamp(t), Timestamp(t + HOUR)).await.unwrap();
    assert_eq!(
        stats,
        Stats {
            accepted: 4,
            delivered: 2,
            failed: 1,
            bounced_permanent: 1,
            bounced_transient: 1,
            complained: 1,
            suppressed: 1,
            ..Stats::default()
        }
    );
}

fn row(id: &str, event: &str, kind: EngagementKind, at: i64, machine: bool, url: Option<&str>) -> EngagementRow {
    EngagementRow {
        account: AccountId("acme".into()),
        message_id: MessageId(id.into()),
        event_id: event.into(),
        kind,
        at: Timestamp(at),
        machine,
        url: url.map(str::to_owned),
        detail: serde_json::json!({ "type": kind.as_str(), "event_id": event }),
    }
}

/// Opens, clicks and unsubscriptions: listed with the message, counted once per event,
/// uniquely once per message (machines left out), clicks per URL.
async fn engagement(store: Arc<dyn ProjectionStore>) {
    use EngagementKind::*;
    let (a, b) = ("https://a.test/?x=1&y=2", "https://b.test/");
    let batch = vec![
        row("m1", "e1", Opened, T0 + 100, true, None), // Apple MPP: counted, not unique
        row("m1", "e2", Opened, T0 + 200, false, None),
        row("m1", "e3", Opened, T0 + 300, false, None),
        row("m1", "e4", Clicked, T0 + 400, false, Some(a)),
        row("m1", "e5", Clicked, T0 + 500, false, Some(a)),
        row("m1", "e6", Clicked, T0 + 600, false, Some(b)),
        row("m1", "e7", Clicked, T0 + 650, true, Some(b)), // a scanner
        row("m2", "e8", Clicked, T0 + HOUR + 1, false, Some(a)),
        row("m2", "e9", Unsubscribed, T0 + HOUR + 2, false, None),
        row("m2", "e10", Unsubscribed, T0 + HOUR + 3, false, None), // a second POST
    ];
    store.apply_engagement(&batch).await.unwrap();
    store.apply_engagement(&batch[3..9]).await.unwrap(); // redelivered
    let acme = AccountId("acme".into());
    let all = store.stats(&acme, Timestamp(T0), Timestamp(T0 + 2 * HOUR)).await.unwrap();
    assert_eq!(
        (all.opened, all.unique_opened, all.clicked, all.unique_clicked, all.unsubscribed),
        (3, 1, 5, 2, 1),
        "{all:?}"
    );
    assert_eq!(all.accepted, 3, "message counters unchanged");
    let second_hour = store.stats(&acme, Timestamp(T0 + HOUR), Timestamp(T0 + 2 * HOUR)).await.unwrap();
    assert_eq!((second_hour.clicked, second_hour.unique_clicked, second_hour.opened), (1, 1, 0));
    let links = store.links(&acme, Timestamp(T0), Timestamp(T0 + 2 * HOUR)).await.unwrap();
    assert_eq!(
        links,
        [
            LinkStats { url: a.into(), clicks: 3, unique_clicks: 2 },
            LinkStats { url: b.into(), clicks: 2, unique_clicks: 1 },
        ]
    );
    let first_hour = store.links(&acme, Timestamp(T0), Timestamp(T0 + HOUR)).await.unwrap();
    assert_eq!(first_hour[0], LinkStats { url: a.into(), clicks: 2, unique_clicks: 1 });
    assert!(store.links(&AccountId("other".into()), Timestamp(T0), Timestamp(T0 + 2 * HOUR)).await.unwrap().is_empty());
    let m1 = store.message(&acme, &MessageId("m1".into())).await.unwrap().unwrap();
    assert_eq!(m1.status, Status::Delivered, "engagement leaves the status alone");
    let ids: Vec<&str> = m1.events.iter().filter_map(|e| e["event_id"].as_str()).collect();
    assert_eq!(ids, ["e1", "e2", "e3", "e4", "e5", "e6", "e7"], "in time order, each once");
    assert_eq!(m1.events[0]["seq"], 0, "delivery events first");
}

/// Sender-domain rows: one per domain, replaced whole, tombstones kept.
async fn domains(store: Arc<dyn ProjectionStore>) {
    use herald_engine::domains::state::apply;
    use herald_schemas::*;
    assert!(store.domain("sender.test").await.unwrap().is_none());
    let added = |domain: &str| {
        DomainEvent::Added(DomainAdded {
            account: AccountId("acme".into()),
            domain: domain.into(),
            token: "tok".into(),
            bounce_label: "bounce".into(),
            tracking_label: "clicks".into(),
            dmarc_rua: Some("mailto:d@sender.test".into()),
            bimi_logo: None,
            keys: vec![],
            request_id: "r".into(),
            added_at: Timestamp(T0),
        })
    };
    let s = apply(None, &added("sender.test"), 0).unwrap();
    store.put_domain(&s).await.unwrap();
    store.put_domain(&apply(None, &added("b\u{fc}cher.test"), 0).unwrap()).await.unwrap();
    assert_eq!(store.domain("sender.test").await.unwrap().as_ref(), Some(&s));
    let removed = DomainEvent::Removed(DomainRemoved {
        account: AccountId("acme".into()),
        domain: "sender.test".into(),
        removed_at: Timestamp(T0),
    });
    let gone = apply(Some(&s), &removed, 1).unwrap();
    store.put_domain(&gone).await.unwrap();
    assert!(store.domain("sender.test").await.unwrap().unwrap().removed);
    let mut all: Vec<String> = store.domains().await.unwrap().into_iter().map(|d| d.domain).collect();
    all.sort();
    assert_eq!(all, vec!["b\u{fc}cher.test".to_owned(), "sender.test".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backend() {
    let dir = tempfile::tempdir().unwrap();
    suite(Arc::new(EmbeddedStore::open(&dir.path().join("p.redb")).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_backend() {
    let node = std::env::var("HERALD_TEST_CQL")
        .expect("HERALD_TEST_CQL=host:port must name a real CQL server (ops/scripts/test.sh starts Cassandra)");
    let keyspace = format!("herald_test_{}", &herald_schemas::MessageId::generate().0[20..]);
    suite(Arc::new(CqlStore::connect(&[node], &keyspace).await.unwrap())).await;
}

/// The messages projector on CQL (`docs/adr/0021-projection-marks.md`): events past the
/// partition's mark are written without the idempotence read, and a chunk applied again
/// by the next owner (a crash before the commit) is still counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_projector_marks() {
    use herald_engine::consumer::ChunkHandler;
    use herald_engine::log::{embedded::EmbeddedLog, Assignment, EventLog, Topics};
    use herald_engine::projector::Projector;
    use herald_engine::store::ProjectedThrough;

    let node = std::env::var("HERALD_TEST_CQL")
        .expect("HERALD_TEST_CQL=host:port must name a real CQL server (ops/scripts/test.sh starts Cassandra)");
    let keyspace = format!("herald_test_{}", &herald_schemas::MessageId::generate().0[20..]);
    let store: Arc<dyn ProjectionStore> =
        Arc::new(CqlStore::connect(std::slice::from_ref(&node), &keyspace).await.unwrap());
    assert!(store.skips_reads());
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(&dir.path().join("log"), &[], 1).unwrap());
    let topics = Topics { prefix: "marks".into(), retry_tiers: 1 };
    let projector = |store: &Arc<dyn ProjectionStore>| Projector::new(log.clone(), store.clone(), topics.clone());
    let a = Assignment { topic: "marks.messages".into(), partition: 0 };
    let acme = AccountId("acme".into());
    let accepted = |store: Arc<dyn ProjectionStore>| {
        let acme = acme.clone();
        async move { store.stats(&acme, Timestamp(T0), Timestamp(T0 + HOUR)).await.unwrap().accepted }
    };
    let chunk = |items: &[(u64, &str)]| -> Vec<(u64, Projected)> {
        items.iter().map(|(o, id)| (*o, event("acme", id, 0, Kind::Accepted, T0 + (*o % 100_000) as i64))).collect()
    };

    // A new store, a partition never projected: nothing to check; the first chunk sets a mark.
    assert_eq!(store.projected_through(&a.topic, a.partition).await.unwrap(), ProjectedThrough::Never);
    let first = projector(&store);
    first.assigned(&a);
    first.handle(&a, chunk(&[(10, "m1"), (11, "m2")])).await;
    assert_eq!(accepted(store.clone()).await, 2);
    let ProjectedThrough::Through(mark) = store.projected_through(&a.topic, a.partition).await.unwrap() else {
        panic!("no mark after a chunk")
    };
    assert!(mark >= 11, "the mark covers the applied chunk: {mark}");

    // The owner died before committing: the next one applies the same chunk and more.
    let next = projector(&store);
    next.assigned(&a);
    next.handle(&a, chunk(&[(10, "m1"), (11, "m2"), (12, "m3")])).await;
    assert_eq!(accepted(store.clone()).await, 3, "events at or below the mark are checked, not counted again");

    // Far past the mark: applied, and the mark moved past it first.
    next.handle(&a, chunk(&[(mark + 50_000, "m4")])).await;
    assert_eq!(accepted(store.clone()).await, 4);
    let moved = store.projected_through(&a.topic, a.partition).await.unwrap();
    assert!(matches!(moved, ProjectedThrough::Through(t) if t >= mark + 50_000), "{moved:?}");

    // Events past the mark are truly written without the read: the same event given as
    // unseen twice is counted twice (what the mark exists to rule out).
    let unseen = [event("acme", "m5", 0, Kind::Accepted, T0 + 5)];
    store.apply_from(&unseen, 0).await.unwrap();
    store.apply_from(&unseen, 0).await.unwrap();
    assert_eq!(accepted(store.clone()).await, 6);

    // A store projected into before it kept marks (an earlier version: events, no sentinel
    // row): a partition without a mark is unknown, and its first chunk is checked.
    let session =
        scylla::client::session_builder::SessionBuilder::new().known_nodes([node.as_str()]).build().await.unwrap();
    session
        .query_unpaged(format!("DELETE FROM {keyspace}.projection_marks WHERE topic = '' AND partition = -1"), &[])
        .await
        .unwrap();
    let upgraded: Arc<dyn ProjectionStore> = Arc::new(CqlStore::connect(&[node], &keyspace).await.unwrap());
    let b = Assignment { topic: "marks.messages".into(), partition: 1 };
    assert_eq!(upgraded.projected_through(&b.topic, b.partition).await.unwrap(), ProjectedThrough::Unknown);
    upgraded.apply(&[event("acme", "m6", 0, Kind::Accepted, T0 + 6)]).await.unwrap();
    assert_eq!(accepted(upgraded.clone()).await, 7);
    let after_upgrade = projector(&upgraded);
    after_upgrade.assigned(&b);
    after_upgrade.handle(&b, chunk(&[(100, "m6"), (101, "m7")])).await;
    assert_eq!(accepted(upgraded.clone()).await, 8, "m6 again is not counted; m7 is");
}

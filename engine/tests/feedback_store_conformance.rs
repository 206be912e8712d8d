//! One conformance suite for every `FeedbackStore` backend: embedded redb and a real CQL
//! server (`HERALD_TEST_CQL=host:port`, set by `ops/scripts/test.sh`; without it the CQL
//! test fails rather than skips). Also the shared secret (the VERP key every node reads).

use herald_engine::store::cql::CqlStore;
use herald_engine::store::embedded::EmbeddedStore;
use herald_engine::store::feedback::{BounceRow, FeedbackChange, FeedbackStore, Suppression};
use herald_schemas::*;
use std::sync::Arc;

const DAY: i64 = 86_400_000;
/// 2026-11-22T10:00:00Z
const T0: i64 = 1_795_341_600_000;

fn entry(account: &str, address: &str, reason: SuppressionReason, expires: Option<i64>) -> Suppression {
    Suppression {
        account: AccountId(account.into()),
        address: address.into(),
        reason,
        message_id: Some(MessageId("m1".into())),
        detail: format!("{reason:?}"),
        expires_at: expires.map(Timestamp),
        created_at: Timestamp(T0),
        id: format!("id-{address}"),
    }
}

fn bounce(account: &str, id: &str, at: i64, class: BounceClass) -> BounceRow {
    BounceRow {
        account: AccountId(account.into()),
        id: id.into(),
        message_id: MessageId(format!("m-{id}")),
        recipient: format!("{id}@example.test"),
        bounce_type: class.default_type(),
        class,
        action: BounceAction::Failed,
        code: Some(550),
        enhanced: Some("5.1.1".into()),
        diagnostic: "user unknown".into(),
        remote_mta: Some("mx.example.test".into()),
        reporting_mta: None,
        source: BounceSource::Dsn,
        at: Timestamp(at),
    }
}

async fn suppressions(store: &dyn FeedbackStore) {
    let a = AccountId("acme".into());
    let mut changes: Vec<FeedbackChange> = (0..40)
        .map(|i| {
            let reason = if i % 4 == 0 { SuppressionReason::Complaint } else { SuppressionReason::HardBounce };
            FeedbackChange::Suppress(entry("acme", &format!("user{i:02}@example.test"), reason, None))
        })
        .collect();
    changes.push(FeedbackChange::Suppress(entry("other", "user00@example.test", SuppressionReason::Manual, None)));
    // The last change of an address wins, within one batch too.
    changes.push(FeedbackChange::Lift { account: a.clone(), address: "user01@example.test".into() });
    changes.push(FeedbackChange::Suppress(entry(
        "acme",
        "user02@example.test",
        SuppressionReason::Manual,
        Some(T0 + DAY),
    )));
    changes.push(FeedbackChange::Lift { account: a.clone(), address: "user03@example.test".into() });
    changes.push(FeedbackChange::Suppress(entry("acme", "user03@example.test", SuppressionReason::Unsubscribe, None)));
    store.apply_feedback(&changes).await.unwrap();
    store.apply_feedback(&changes).await.unwrap(); // at-least-once

    assert!(store.suppression(&a, "user01@example.test").await.unwrap().is_none());
    let two = store.suppression(&a, "user02@example.test").await.unwrap().unwrap();
    assert_eq!((two.reason, two.expires_at), (SuppressionReason::Manual, Some(Timestamp(T0 + DAY))));
    assert_eq!(
        store.suppression(&a, "user03@example.test").await.unwrap().unwrap().reason,
        SuppressionReason::Unsubscribe
    );
    let zero = store.suppression(&a, "user00@example.test").await.unwrap().unwrap();
    assert_eq!(zero, entry("acme", "user00@example.test", SuppressionReason::Complaint, None));

    // Paging through everything, 7 at a time, returns each entry of the account once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.suppressions(&a, None, cursor.as_deref(), 7).await.unwrap();
        assert!(page.items.len() <= 7);
        seen.extend(page.items.iter().map(|s| s.address.clone()));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 39, "40 entries, one lifted: {seen:?}");
    // By reason.
    let mut complaints = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.suppressions(&a, Some(SuppressionReason::Complaint), cursor.as_deref(), 100).await.unwrap();
        complaints.extend(page.items.into_iter().map(|s| s.address));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(complaints.len(), 10);
    assert!(store.suppressions(&a, None, Some("not a cursor"), 5).await.is_err());

    let mut scanned = Vec::new();
    let n = store
        .scan_suppressions(&mut |acct, addr, exp| scanned.push((acct.0.clone(), addr.to_owned(), exp)))
        .await
        .unwrap();
    assert_eq!(n, 40);
    assert_eq!(scanned.len(), 40);
    assert!(scanned.contains(&("other".into(), "user00@example.test".into(), None)));
    assert!(scanned.contains(&("acme".into(), "user02@example.test".into(), Some(Timestamp(T0 + DAY)))));
}

async fn bounces(store: &dyn FeedbackStore) {
    let a = AccountId("acme".into());
    let mut changes = Vec::new();
    for i in 0..30i64 {
        let class = if i % 3 == 0 { BounceClass::Quota } else { BounceClass::InvalidRecipient };
        // Spread over three days.
        changes.push(FeedbackChange::Bounce(bounce("acme", &format!("b{i:02}"), T0 + (i % 3) * DAY + i, class)));
    }
    changes.push(FeedbackChange::Bounce(bounce("other", "x", T0, BounceClass::Quota)));
    store.apply_feedback(&changes).await.unwrap();
    store.apply_feedback(&changes).await.unwrap();
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.bounces(&a, Timestamp(T0), Timestamp(T0 + 3 * DAY), None, cursor.as_deref(), 4).await.unwrap();
        all.extend(page.items);
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(all.len(), 30, "each bounce once");
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at), "oldest first");
    assert_eq!(all[0], bounce("acme", "b00", T0, BounceClass::Quota));
    let quota =
        store.bounces(&a, Timestamp(T0), Timestamp(T0 + 3 * DAY), Some(BounceClass::Quota), None, 100).await.unwrap();
    assert_eq!(quota.items.len(), 10);
    let first_day = store.bounces(&a, Timestamp(T0), Timestamp(T0 + DAY), None, None, 100).await.unwrap();
    assert_eq!(first_day.items.len(), 10);
    let none = store.bounces(&a, Timestamp(T0 - 5 * DAY), Timestamp(T0), None, None, 100).await.unwrap();
    assert!(none.items.is_empty() && none.next.is_none());

    // Two messages' synchronous bounces in one millisecond share the id `sync-1` (an id is
    // unique within its message): both are listed, each with its own message and that id.
    let same = AccountId("same-ms".into());
    let sync = |message: &str| {
        let mut b = bounce("same-ms", "sync-1", T0 + 7, BounceClass::InvalidRecipient);
        b.message_id = MessageId(message.into());
        b.recipient = format!("{message}@example.test");
        b
    };
    store.apply_feedback(&[FeedbackChange::Bounce(sync("m1")), FeedbackChange::Bounce(sync("m2"))]).await.unwrap();
    let both = store.bounces(&same, Timestamp(T0), Timestamp(T0 + DAY), None, None, 100).await.unwrap();
    let mut got: Vec<(String, String)> = both.items.iter().map(|b| (b.message_id.0.clone(), b.id.clone())).collect();
    got.sort();
    assert_eq!(got, vec![("m1".into(), "sync-1".into()), ("m2".into(), "sync-1".into())]);
    // Paged one at a time, the cursor (on the row key) moves past the first to the second.
    let first = store.bounces(&same, Timestamp(T0), Timestamp(T0 + DAY), None, None, 1).await.unwrap();
    let next = store.bounces(&same, Timestamp(T0), Timestamp(T0 + DAY), None, first.next.as_deref(), 1).await.unwrap();
    assert_eq!(first.items.len() + next.items.len(), 2);
    assert_ne!(first.items[0].message_id, next.items[0].message_id);
}

async fn soft_failures(store: &dyn FeedbackStore) {
    let a = AccountId("acme".into());
    assert!(store.soft_failures(&a, "s@x.test").await.unwrap().is_empty());
    let h = vec![("m1/dsn-1".to_owned(), Timestamp(T0)), ("m2/sync-1".to_owned(), Timestamp(T0 + 5))];
    store.put_soft_failures(&a, "s@x.test", &h).await.unwrap();
    assert_eq!(store.soft_failures(&a, "s@x.test").await.unwrap(), h);
    store.put_soft_failures(&a, "s@x.test", &[]).await.unwrap();
    assert!(store.soft_failures(&a, "s@x.test").await.unwrap().is_empty());
}

/// A shared secret: among racing candidates exactly one is stored, and every caller, then
/// and later, gets that one.
async fn shared_secret(store: Arc<dyn FeedbackStore>) {
    let racers = (0..6).map(|i| {
        let store = store.clone();
        async move { store.shared_secret("verp", &format!("candidate-{i}")).await.unwrap() }
    });
    let got = futures::future::join_all(racers).await;
    assert!(got[0].starts_with("candidate-"), "{got:?}");
    assert!(got.iter().all(|g| g == &got[0]), "one winner for every caller: {got:?}");
    assert_eq!(store.shared_secret("verp", "late").await.unwrap(), got[0]);
    assert_eq!(store.shared_secret("other", "o-1").await.unwrap(), "o-1", "names are separate");
}

async fn suite(store: Arc<dyn FeedbackStore>) {
    suppressions(store.as_ref()).await;
    bounces(store.as_ref()).await;
    soft_failures(store.as_ref()).await;
    shared_secret(store).await;
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
    let keyspace = format!("herald_fb_{}", &herald_schemas::MessageId::generate().0[20..]);
    suite(Arc::new(CqlStore::connect(&[node], &keyspace).await.unwrap())).await;
}

//! Conformance of the account rows and the search read models (messages by recipient,
//! counters hour by hour) on every store backend: embedded redb and a real CQL server
//! (`HERALD_TEST_CQL=host:port`; without it the CQL test fails rather than skips).

use herald_engine::accounts::state::{apply, AccountState};
use herald_engine::store::accounts::AccountStore;
use herald_engine::store::{cql::CqlStore, embedded::EmbeddedStore, Kind, Projected, ProjectionStore, Stats, Status};
use herald_schemas::*;
use std::sync::Arc;

const HOUR: i64 = 3_600_000;
/// 2026-11-22T10:00:00Z
const T0: i64 = 1_795_341_600_000;

fn event(account: &str, id: &str, recipient: &str, seq: u32, kind: Kind, at: i64) -> Projected {
    Projected {
        account: AccountId(account.into()),
        message_id: MessageId(id.into()),
        seq,
        recipient: recipient.into(),
        kind,
        at: Timestamp(at),
        detail: serde_json::json!({ "seq": seq }),
    }
}

async fn search<S: ProjectionStore + ?Sized>(store: &S) {
    let a = AccountId("acme".into());
    let batch = vec![
        event("acme", "m1", "Bob@Example.org", 0, Kind::Accepted, T0),
        event("acme", "m1", "Bob@Example.org", 1, Kind::Delivered, T0 + 10),
        event("acme", "m2", "bob@example.org", 0, Kind::Accepted, T0 + HOUR),
        event("acme", "m3", "bob@example.org", 0, Kind::Accepted, T0 + 2 * HOUR + 1),
        event("acme", "m4", "carol@example.org", 0, Kind::Accepted, T0 + 20),
        event("other", "m9", "bob@example.org", 0, Kind::Accepted, T0 + 30),
    ];
    store.apply(&batch).await.unwrap();
    store.apply(&batch).await.unwrap(); // redelivered: indexed once

    let found = store.messages_to(&a, "BOB@example.ORG", None, 10).await.unwrap();
    let ids: Vec<&str> = found.iter().map(|m| m.id.0.as_str()).collect();
    assert_eq!(ids, vec!["m3", "m2", "m1"], "newest first, case-blind, own account only");
    assert_eq!(found[2].status, Status::Delivered);
    let page = store.messages_to(&a, "bob@example.org", Some(Timestamp(T0 + HOUR)), 10).await.unwrap();
    assert_eq!(page.iter().map(|m| m.id.0.as_str()).collect::<Vec<_>>(), vec!["m1"], "before is exclusive");
    assert_eq!(store.messages_to(&a, "bob@example.org", None, 1).await.unwrap().len(), 1, "limit");
    assert!(store.messages_to(&a, "nobody@example.org", None, 10).await.unwrap().is_empty());

    let hours = store.hourly(&a, Timestamp(T0 + 5), Timestamp(T0 + 3 * HOUR)).await.unwrap();
    let got: Vec<(i64, Stats)> = hours.iter().map(|h| (h.hour, h.stats)).collect();
    assert_eq!(
        got,
        vec![
            (T0, Stats { accepted: 2, delivered: 1, ..Stats::default() }),
            (T0 + HOUR, Stats { accepted: 1, ..Stats::default() }),
            (T0 + 2 * HOUR, Stats { accepted: 1, ..Stats::default() }),
        ]
    );
    assert!(store.hourly(&a, Timestamp(T0 - 5 * HOUR), Timestamp(T0)).await.unwrap().is_empty());
}

async fn accounts<S: AccountStore + ?Sized>(store: &S) {
    let id = AccountId("acme".into());
    assert!(store.account(&id).await.unwrap().is_none());
    assert!(store.account_positions().await.unwrap().is_empty());
    let created = AccountEvent::Created(AccountCreated {
        account: id.clone(),
        settings: AccountSettings {
            name: "Acme".into(),
            relay_networks: vec!["10.0.0.0/8".into()],
            ..Default::default()
        },
        origin: AccountOrigin::Api,
        request_id: "r1".into(),
        actor: "test".into(),
        created_at: Timestamp(T0),
    });
    let s: AccountState = apply(None, &created, 7).unwrap();
    store.put_account(&s, 3).await.unwrap();
    assert_eq!(store.account(&id).await.unwrap().as_ref(), Some(&s));
    assert_eq!(store.account_positions().await.unwrap(), vec![(3, 7)]);
    let deleted =
        AccountEvent::Deleted(AccountDeleted { account: id.clone(), actor: "t".into(), deleted_at: Timestamp(T0) });
    let gone = apply(Some(&s), &deleted, 9).unwrap();
    store.put_account(&gone, 3).await.unwrap();
    let other = apply(
        None,
        &AccountEvent::Created(AccountCreated { account: AccountId("zeta".into()), ..created_fields(&created) }),
        2,
    )
    .unwrap();
    store.put_account(&other, 1).await.unwrap();
    assert!(store.account(&id).await.unwrap().unwrap().deleted, "tombstones are kept");
    let mut ids: Vec<String> = store.accounts().await.unwrap().into_iter().map(|a| a.id.0).collect();
    ids.sort();
    assert_eq!(ids, vec!["acme", "zeta"]);
    let mut positions = store.account_positions().await.unwrap();
    positions.sort();
    assert_eq!(positions, vec![(1, 2), (3, 9)]);
}

fn created_fields(e: &AccountEvent) -> AccountCreated {
    match e {
        AccountEvent::Created(c) => c.clone(),
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backend() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("p.redb")).unwrap());
    search(store.as_ref()).await;
    accounts(store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_backend() {
    let node = std::env::var("HERALD_TEST_CQL")
        .expect("HERALD_TEST_CQL=host:port must name a real CQL server (ops/scripts/test.sh starts Cassandra)");
    let keyspace = format!("herald_acct_{}", &MessageId::generate().0[20..]);
    let store = Arc::new(CqlStore::connect(&[node], &keyspace).await.unwrap());
    search(store.as_ref()).await;
    accounts(store.as_ref()).await;
}

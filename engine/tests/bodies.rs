//! The body store on the embedded log: placement (inline or stored once), resolution by
//! position through the cache, and retention that keeps a body as long as a retry may need
//! it (bodies are trimmed by age alone, at their own retention).

use herald_engine::bodies::{BodyError, BodySettings, BodyStore};
use herald_engine::log::embedded::EmbeddedLog;
use herald_engine::log::{EventLog, Retention, Topics};
use herald_schemas::{AccountId, Body};
use std::sync::Arc;
use std::time::Duration;

fn setup(dir: &std::path::Path) -> (Arc<dyn EventLog>, BodyStore, Topics) {
    let topics = Topics { prefix: "b".into(), retry_tiers: 1 };
    // One partition: every body lands on it, in order.
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(&dir.join("log.redb"), &topics.all(), 1).unwrap());
    let store = BodyStore::new(log.clone(), topics.bodies(), BodySettings::default());
    (log, store, topics)
}

fn body(tag: &str) -> Vec<u8> {
    format!("From: a@sender.test\r\nSubject: {tag}\r\n\r\n{}\r\n", tag.repeat(10_000)).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_or_single_stays_inline_and_fanouts_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let (log, store, topics) = setup(dir.path());
    let acme = AccountId("acme".into());
    assert!(matches!(store.place(&acme, body("x"), 1).await.unwrap(), Body::Inline(_)), "one recipient");
    assert!(matches!(store.place(&acme, b"tiny".to_vec(), 3).await.unwrap(), Body::Inline(_)), "under 64 KiB");
    let stored = store.place(&acme, body("fan"), 1000).await.unwrap();
    let Body::Stored(r) = stored.clone() else { panic!("a fan-out is stored: {stored:?}") };
    assert_eq!((r.partition, r.offset, r.len), (0, 0, body("fan").len() as u64));
    assert!(log.read_at(&topics.bodies(), 0, 1).await.unwrap().is_none(), "one record for 1000 recipients");
    let resolved = store.resolve(&acme, &stored).await.unwrap();
    assert_eq!(&*resolved, body("fan").as_slice());
    // Never another account's body.
    let err = store.resolve(&AccountId("other".into()), &stored).await.err().unwrap();
    assert!(matches!(err, BodyError::Gone(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_bodies_for_their_own_period_and_a_lost_one_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (log, store, topics) = setup(dir.path());
    let acme = AccountId("acme".into());
    let first = store.place(&acme, body("one"), 100).await.unwrap();
    let second = store.place(&acme, body("two"), 100).await.unwrap();
    store.resolve(&acme, &first).await.unwrap(); // now in this store's cache
                                                 // The other topics are trimmed at once, but bodies must stay a week: nothing goes.
    let week = Retention { consumed: Duration::ZERO, by_age: vec![(topics.bodies(), Duration::from_secs(7 * 86_400))] };
    assert_eq!(log.enforce_retention(&week).await.unwrap(), 0);
    // A fresh store (a restart: empty cache) still resolves both from the log.
    let fresh = BodyStore::new(log.clone(), topics.bodies(), BodySettings::default());
    assert_eq!(&*fresh.resolve(&acme, &first).await.unwrap(), body("one").as_slice());
    // Past their retention, bodies go (but a partition's last record stays); a retry that
    // still pointed at one fails with a clear reason instead of sending something else.
    let none = Retention { consumed: Duration::ZERO, by_age: vec![(topics.bodies(), Duration::ZERO)] };
    assert_eq!(log.enforce_retention(&none).await.unwrap(), 1);
    let fresh = BodyStore::new(log.clone(), topics.bodies(), BodySettings::default());
    let err = fresh.resolve(&acme, &first).await.err().unwrap();
    assert!(matches!(err, BodyError::Gone(_)) && err.to_string().contains("no longer in the log"), "{err}");
    assert_eq!(&*fresh.resolve(&acme, &second).await.unwrap(), body("two").as_slice());
    // A node that still has it in its cache may send it: the bytes were checked when loaded.
    assert_eq!(&*store.resolve(&acme, &first).await.unwrap(), body("one").as_slice());
}

//! The bounce reporter on the embedded backends, as two nodes sharing one store and one
//! log: an interval is reported once whoever asks first, a claim whose holder died before
//! appending is taken over after the lease, a live claim is left alone, and an interval
//! with nothing in it gets no report.

use herald_engine::accounts::{AccountCache, Bootstrap};
use herald_engine::log::embedded::EmbeddedLog;
use herald_engine::log::{EventLog, Topics};
use herald_engine::reports::interval::Interval;
use herald_engine::reports::runner::{Outcome, LEASE};
use herald_engine::reports::{Reporter, Settings};
use herald_engine::routing::Router;
use herald_engine::store::embedded::EmbeddedStore;
use herald_engine::store::feedback::{BounceRow, FeedbackChange, FeedbackStore};
use herald_engine::store::{Claim, IdempotencyRecord, ProjectionStore};
use herald_engine::submit::Submitter;
use herald_schemas::*;
use std::sync::Arc;
use std::time::Duration;

const TO: &str = "ops@customer.test";

struct World {
    _dir: tempfile::TempDir,
    log: Arc<dyn EventLog>,
    store: Arc<EmbeddedStore>,
    topics: Topics,
    cache: AccountCache,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics { prefix: "rep".into(), retry_tiers: 1 };
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(&dir.path().join("log.redb"), &topics.all(), 1).unwrap());
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("store.redb")).unwrap());
    let cache = AccountCache::new(vec![Bootstrap {
        id: acme(),
        settings: AccountSettings { report_email: Some(TO.into()), ..Default::default() },
        api_keys: vec![],
        smtp_users: vec![],
        report_interval_secs: Some(3600),
    }]);
    World { _dir: dir, log, store, topics, cache }
}

fn acme() -> AccountId {
    AccountId("acme".into())
}

/// A node's reporter.
fn reporter(w: &World) -> Reporter {
    let submitter = Submitter::new(w.log.clone(), w.topics.clone(), Router::new(1, Default::default()));
    let settings = Settings {
        default_interval_secs: 3600,
        grace: Duration::from_secs(60),
        tick: Duration::from_secs(1),
        local_part: "reports".into(),
        service_domain: "herald.example".into(),
    };
    Reporter::new(w.cache.clone(), w.store.clone(), w.store.clone(), w.store.clone(), submitter, settings)
}

async fn bounce(w: &World, at: Timestamp, recipient: &str, class: BounceClass) {
    let row = BounceRow {
        account: acme(),
        id: format!("sync-{recipient}"),
        message_id: MessageId::generate(),
        recipient: recipient.into(),
        bounce_type: BounceType::Permanent,
        class,
        action: BounceAction::Failed,
        code: Some(550),
        enhanced: Some("5.1.1".into()),
        diagnostic: "550 5.1.1 no such user".into(),
        remote_mta: None,
        reporting_mta: None,
        source: BounceSource::Sync,
        at,
    };
    w.store.apply_feedback(&[FeedbackChange::Bounce(row)]).await.unwrap();
}

/// The reports appended to the log so far.
async fn appended(w: &World) -> Vec<MessageAccepted> {
    let mut out = vec![];
    let mut offset = 0;
    while let Some(r) = w.log.read_at(&w.topics.messages(), 0, offset).await.unwrap() {
        if let Event::MessageAccepted(m) = decode(&r.value).unwrap() {
            out.push(m);
        }
        offset += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_report_an_interval_once() {
    let w = world();
    let now = Timestamp::now();
    let interval = Interval::last_closed(now, 3600, Duration::from_secs(60));
    bounce(&w, Timestamp(interval.from.millis() + 1000), "a@x.test", BounceClass::InvalidRecipient).await;
    bounce(&w, Timestamp(interval.to.millis() - 1), "b@x.test", BounceClass::Quota).await;
    // Outside the interval: not counted.
    bounce(&w, interval.to, "c@x.test", BounceClass::Quota).await;
    let (one, two) = (reporter(&w), reporter(&w));
    let account = w.cache.current().account(&acme()).unwrap().clone();
    let (a, b) = tokio::join!(one.report(&account, TO, interval, now), two.report(&account, TO, interval, now));
    let mut outcomes = vec![a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|o| o.as_str());
    assert!(outcomes.contains(&Outcome::Sent), "{outcomes:?}");
    assert!(!matches!(outcomes.as_slice(), [Outcome::Sent, Outcome::Sent]), "{outcomes:?}");
    // Asked again (a restart, a third node): it was reported.
    assert_eq!(reporter(&w).report(&account, TO, interval, now).await.unwrap(), Outcome::Elsewhere);
    let sent = appended(&w).await;
    assert_eq!(sent.len(), 1, "one report");
    let m = &sent[0];
    assert_eq!((m.recipient.as_str(), m.recipient_domain.as_str()), (TO, "customer.test"));
    assert_eq!(m.envelope_sender, "reports@herald.example");
    let raw = m.body.inline().unwrap();
    let parsed = mail_parser::MessageParser::default().parse(raw).unwrap();
    assert_eq!(parsed.header_raw("X-Herald-Report-Counts").map(str::trim), Some("bounces=2; complaints=0"));
    let text = parsed.body_text(0).unwrap();
    assert!(text.contains("invalid-recipient: 1") && text.contains("quota: 1"), "{text}");
    assert!(text.contains("a@x.test") && !text.contains("c@x.test"), "{text}");
    // The pass over every account finds nothing more to do.
    assert_eq!(reporter(&w).pass(now).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_interval_gets_no_report() {
    let w = world();
    let now = Timestamp::now();
    let interval = Interval::last_closed(now, 3600, Duration::from_secs(60));
    let account = w.cache.current().account(&acme()).unwrap().clone();
    assert_eq!(reporter(&w).report(&account, TO, interval, now).await.unwrap(), Outcome::Empty);
    assert_eq!(reporter(&w).pass(now).await, 0);
    assert!(appended(&w).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_is_taken_over_after_the_lease() {
    let w = world();
    let now = Timestamp::now();
    let interval = Interval::last_closed(now, 3600, Duration::from_secs(60));
    bounce(&w, interval.from, "a@x.test", BounceClass::InvalidRecipient).await;
    let account = w.cache.current().account(&acme()).unwrap().clone();
    let held = |claimed_at: Timestamp| IdempotencyRecord {
        fingerprint: "bounce-report".into(),
        claim: "node-that-died".into(),
        response: String::new(),
        probe: MessageId::generate(),
        done: false,
        claimed_at,
    };
    let key = interval.claim_key();
    let ttl = Duration::from_secs(86_400);
    // A live claim (another node appending right now) is left alone.
    assert_eq!(w.store.claim_idempotency(&acme(), &key, &held(now), ttl).await.unwrap(), Claim::Won);
    assert_eq!(reporter(&w).report(&account, TO, interval, now).await.unwrap(), Outcome::Pending);
    assert!(appended(&w).await.is_empty());
    // Past the lease, with no message in the projection: its holder died; taken over.
    let later = now.saturating_add(LEASE + Duration::from_secs(1));
    assert_eq!(reporter(&w).report(&account, TO, interval, later).await.unwrap(), Outcome::Sent);
    assert_eq!(appended(&w).await.len(), 1);
    assert_eq!(reporter(&w).report(&account, TO, interval, later).await.unwrap(), Outcome::Elsewhere);
}

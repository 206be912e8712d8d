//! The bounce MX's engine half (`feedback::receive`) on the embedded log and store: which
//! RCPTs are accepted (VERP tokens at the default domain and at an account's own bounce
//! domains, `fbl@`), and what a report becomes: the recipient always from Herald's record,
//! another account's message never touched, an unknown message waited for while the
//! projection may lag and ignored after.

use herald_engine::domains::cache::DomainCache;
use herald_engine::domains::state::apply;
use herald_engine::feedback::classify::Classifier;
use herald_engine::feedback::receive::{RcptError, ReceiveError, Receiver, Target};
use herald_engine::feedback::verp::VerpKeys;
use herald_engine::log::{embedded::EmbeddedLog, Assignment, EventLog, Topics};
use herald_engine::projector::project;
use herald_engine::routing::Router;
use herald_engine::store::{embedded::EmbeddedStore, ProjectionStore};
use herald_schemas::*;
use std::sync::Arc;
use std::time::Duration;

fn accepted(account: &str, id: &MessageId, recipient: &str) -> Event {
    Event::MessageAccepted(MessageAccepted {
        account: AccountId(account.into()),
        message_id: id.clone(),
        envelope_sender: "news@sender.test".into(),
        recipient: recipient.into(),
        recipient_domain: recipient.rsplit_once('@').unwrap().1.into(),
        options: SendOptions { bounce_tracking: true, ..SendOptions::default() },
        body: Body::Inline(b"From: news@sender.test\r\n\r\nhi\r\n".to_vec()),
        accepted_at: Timestamp::now(),
    })
}

struct Fixture {
    receiver: Receiver,
    log: Arc<dyn EventLog>,
    topics: Topics,
    keys: VerpKeys,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics { prefix: "t".into(), retry_tiers: 1 };
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(&dir.path().join("log.redb"), &topics.all(), 2).unwrap());
    let store: Arc<dyn ProjectionStore> = Arc::new(EmbeddedStore::open(&dir.path().join("p.redb")).unwrap());
    // acme owns sender.test (bounce domain bounce.sender.test).
    let added = DomainEvent::Added(DomainAdded {
        account: AccountId("acme".into()),
        domain: "sender.test".into(),
        token: "tok".into(),
        bounce_label: "bounce".into(),
        tracking_label: "clicks".into(),
        dmarc_rua: None,
        bimi_logo: None,
        keys: vec![],
        request_id: "r".into(),
        added_at: Timestamp::now(),
    });
    store.put_domain(&apply(None, &added, 0).unwrap()).await.unwrap();
    let cache = DomainCache::default();
    cache.refresh(store.as_ref()).await.unwrap();
    let keys = VerpKeys::new(b"receive-test-secret-0123456789", &[]);
    let receiver = Receiver {
        keys: keys.clone(),
        classifier: Arc::new(Classifier::shipped()),
        store,
        log: log.clone(),
        topics: topics.clone(),
        router: Router::new(2, Default::default()),
        accounts: vec![AccountId("acme".into()), AccountId("other".into())],
        domains: cache,
        default_domain: Some("bounces.herald.test".into()),
    };
    Fixture { receiver, log, topics, keys, _dir: dir }
}

fn dsn(final_recipient: &str) -> String {
    format!(
        "From: MAILER-DAEMON@relay.test\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.test\r\n\r\nFinal-Recipient: rfc822; {final_recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n--b--\r\n"
    )
}

async fn feedback_events(log: &Arc<dyn EventLog>, topics: &Topics) -> Vec<FeedbackEvent> {
    let assignments: Vec<Assignment> = (0..2).map(|p| Assignment { topic: topics.feedback(), partition: p }).collect();
    let mut out = vec![];
    for mut c in log.consume("test-reader", &assignments).await.unwrap() {
        for r in c.poll(100, Duration::from_millis(100)).await.unwrap() {
            if let Event::Feedback(e) = decode(&r.value).unwrap() {
                out.push(e);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rcpt_acceptance_and_reports() {
    let f = fixture().await;
    let (acme, other) = (AccountId("acme".into()), AccountId("other".into()));
    let (m1, m2) = (MessageId::generate(), MessageId::generate());
    let rows: Vec<_> = [accepted("acme", &m1, "Bob@Example.org"), accepted("other", &m2, "lee@example.org")]
        .iter()
        .filter_map(project)
        .collect();
    f.receiver.store.apply(&rows).await.unwrap();
    let t1 = f.keys.local_part(&acme, &m1).unwrap();
    let t2 = f.keys.local_part(&other, &m2).unwrap();

    // RCPT.
    let r = &f.receiver;
    assert_eq!(
        r.recipient(&format!("{t1}@bounce.sender.test")).unwrap(),
        Target::Verp { message_id: m1.clone(), accounts: vec![acme.clone()] }
    );
    assert_eq!(
        r.recipient(&format!("{t2}@bounce.sender.test")),
        Err(RcptError::WrongAccount),
        "another account's token at acme's domain"
    );
    assert!(
        matches!(r.recipient(&format!("{t2}@BOUNCES.herald.test.")), Ok(Target::Verp { .. })),
        "the default domain takes any account's"
    );
    assert_eq!(r.recipient("fbl@bounce.sender.test").unwrap(), Target::Fbl { owner: Some(acme.clone()) });
    assert_eq!(r.recipient("FBL@bounces.herald.test").unwrap(), Target::Fbl { owner: None });
    assert!(matches!(r.recipient(&format!("{t1}@sender.test")), Err(RcptError::NotBounceDomain(_))));
    assert!(matches!(r.recipient("postmaster@bounce.sender.test"), Err(RcptError::Token(_))));
    assert!(matches!(r.recipient(&format!("{t1}@clicks.sender.test")), Err(RcptError::NotBounceDomain(_))));

    // A DSN naming someone else as the final recipient: the event is about acme's message
    // and its own recipient.
    let target = r.recipient(&format!("{t1}@bounce.sender.test")).unwrap();
    let got = r.receive(&[target], dsn("lee@example.org").as_bytes()).await.unwrap();
    assert_eq!(got.events.len(), 1);
    let FeedbackEvent::BounceReceived(b) = &got.events[0] else { panic!("{got:?}") };
    assert_eq!((&b.account, &b.message_id, b.recipient.as_str()), (&acme, &m1, "Bob@Example.org"));
    assert_eq!(
        (b.class, b.bounce_type, b.source),
        (BounceClass::InvalidRecipient, BounceType::Permanent, BounceSource::Dsn)
    );
    let logged = feedback_events(&f.log, &f.topics).await;
    assert_eq!(logged, got.events, "appended before the reply");

    // A complaint to acme's fbl@ naming other's message: ignored.
    let arf = format!(
        "From: fbl@isp.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; boundary=\"a\"\r\n\r\n--a\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: T/1\r\nVersion: 1\r\nOriginal-Mail-From: <{t2}@bounces.herald.test>\r\n\r\n--a--\r\n"
    );
    let fbl = r.recipient("fbl@bounce.sender.test").unwrap();
    let got = r.receive(&[fbl], arf.as_bytes()).await.unwrap();
    assert!(got.events.is_empty());
    assert_eq!(got.ignored, Some("unknown_message"));
    // The same report to the default domain's fbl@ is other's complaint.
    let fbl = r.recipient("fbl@bounces.herald.test").unwrap();
    let got = r.receive(&[fbl], arf.as_bytes()).await.unwrap();
    let FeedbackEvent::ComplaintReceived(c) = &got.events[0] else { panic!("{got:?}") };
    assert_eq!((&c.account, &c.message_id, c.recipient.as_str()), (&other, &m2, "lee@example.org"));

    // A valid token of a message the projection does not show yet: 451 (wait); of an old
    // unknown message: ignored.
    let fresh = MessageId::generate();
    let t = r.recipient(&f.keys.address(&acme, &fresh, "bounces.herald.test").unwrap()).unwrap();
    assert!(matches!(r.receive(&[t], dsn("x@y.test").as_bytes()).await, Err(ReceiveError::NotYetKnown(_))));
    let old = MessageId(format!("{:012x}{}", Timestamp::now().millis() - 7_200_000, &fresh.0[12..]));
    let t = r.recipient(&f.keys.address(&acme, &old, "bounces.herald.test").unwrap()).unwrap();
    let got = r.receive(&[t], dsn("x@y.test").as_bytes()).await.unwrap();
    assert_eq!((got.events.len(), got.ignored), (0, Some("unknown_message")));
    // Auto-replies and successes produce nothing.
    let t = r.recipient(&format!("{t1}@bounce.sender.test")).unwrap();
    let auto = b"From: bob@example.org\r\nAuto-Submitted: auto-replied\r\nSubject: Out of office\r\n\r\naway\r\n";
    assert_eq!(r.receive(&[t], auto).await.unwrap().ignored, Some("auto_reply"));
}

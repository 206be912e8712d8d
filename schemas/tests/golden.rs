//! Golden files: frames written by earlier releases must keep decoding to the same events.
//!
//! Each `tests/golden/v<N>/<name>.bin` is decoded and compared with the fixture of the same
//! name below. A missing file is written only when `HERALD_BLESS=1` (and the test then
//! fails, so a blessing is always a deliberate, reviewed commit). Existing files are never
//! rewritten: changing the shape of a shipped version breaks this test, as it must.

use herald_schemas::*;
use std::path::PathBuf;

fn accepted() -> MessageAccepted {
    MessageAccepted {
        account: AccountId("acme".into()),
        message_id: MessageId("0190f0c4a1b27c3d8e9f001122334455".into()),
        envelope_sender: "bounces@sender.test".into(),
        recipient: "Bob@Example.org".into(),
        recipient_domain: "example.org".into(),
        options: SendOptions { inline_css: true, click_tracking: false, bounce_tracking: true, opens_tracking: false },
        body: Body::Inline(b"From: a@sender.test\r\nTo: Bob@Example.org\r\nSubject: hi\r\n\r\nhello\r\n".to_vec()),
        accepted_at: Timestamp(1_763_800_000_123),
    }
}

fn key(selector: &str) -> DkimKey {
    DkimKey {
        selector: selector.into(),
        algorithm: KeyAlgorithm::RsaSha256,
        public_key: "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA".into(),
        key_file: format!("{selector}-1763800000123.pem"),
        created_at: Timestamp(1_763_800_000_123),
    }
}

fn domain_fixtures() -> Vec<(&'static str, Event)> {
    let acme = || AccountId("acme".into());
    let d = || "xn--bcher-kva.example".to_owned();
    vec![
        (
            "domain_added",
            Event::Domain(DomainEvent::Added(DomainAdded {
                account: acme(),
                domain: d(),
                token: "k3v9x2m4q7".into(),
                bounce_label: "bounce".into(),
                tracking_label: "clicks".into(),
                dmarc_rua: Some("mailto:dmarc@bücher.example".into()),
                bimi_logo: None,
                keys: vec![key("hd1"), DkimKey { algorithm: KeyAlgorithm::Ed25519Sha256, ..key("he1") }],
                request_id: "0190f0c4a1b27c3d8e9f001122334455".into(),
                added_at: Timestamp(1_763_800_000_123),
            })),
        ),
        (
            "domain_keys_published",
            Event::Domain(DomainEvent::KeysPublished(DomainKeysPublished {
                account: acme(),
                domain: d(),
                slot: 2,
                keys: vec![key("hd2")],
                published_at: Timestamp(1_763_800_000_123),
                activate_at: Timestamp(1_763_800_172_923),
            })),
        ),
        (
            "domain_keys_activated",
            Event::Domain(DomainEvent::KeysActivated(DomainKeysActivated {
                account: acme(),
                domain: d(),
                slot: 2,
                activated_at: Timestamp(1_763_800_172_923),
                retire_at: Timestamp(1_764_404_972_923),
            })),
        ),
        (
            "domain_keys_retired",
            Event::Domain(DomainEvent::KeysRetired(DomainKeysRetired {
                account: acme(),
                domain: d(),
                slot: 1,
                retired_at: Timestamp(1_764_404_972_923),
            })),
        ),
        (
            "domain_verified",
            Event::Domain(DomainEvent::Verified(DomainVerified {
                account: acme(),
                domain: d(),
                status: VerificationStatus::Failing,
                checks: vec![RecordCheck {
                    record: "spf".into(),
                    name: d(),
                    result: CheckResult::Conflict,
                    required: true,
                    expected: "v=spf1 include:_spf.herald.example.net ~all".into(),
                    found: vec!["v=spf1 -all".into(), "v=spf1 mx -all".into()],
                    message: "two SPF records found: a domain may have only one".into(),
                }],
                checked_at: Timestamp(1_763_800_000_500),
            })),
        ),
        (
            "domain_updated",
            Event::Domain(DomainEvent::Updated(DomainUpdated {
                account: acme(),
                domain: d(),
                tracking_label: "www2".into(),
                dmarc_rua: None,
                bimi_logo: Some("https://bücher.example/logo.svg".into()),
                updated_at: Timestamp(1_763_800_000_700),
            })),
        ),
        (
            "domain_removed",
            Event::Domain(DomainEvent::Removed(DomainRemoved {
                account: acme(),
                domain: d(),
                removed_at: Timestamp(1_763_800_009_000),
            })),
        ),
    ]
}

fn account_settings() -> AccountSettings {
    AccountSettings {
        name: "Acme Newsletters".into(),
        pool: Some("shared-warm".into()),
        defaults: AccountDefaults {
            inline_css: true,
            click_tracking: false,
            opens_tracking: true,
            bounce_tracking: true,
            list_unsubscribe: false,
        },
        limits: AccountLimits { messages_per_day: Some(1_000_000), messages_per_second: Some(200) },
        from_domains: FromDomainsPolicy::Verified,
        report_email: Some("postmaster@acme.example".into()),
        relay_networks: vec!["10.1.2.0/24".into(), "2001:db8::25".into()],
    }
}

fn account_fixtures() -> Vec<(&'static str, Event)> {
    let acme = || AccountId("acme".into());
    let actor = || "operator:ops-alice".to_owned();
    vec![
        (
            "account_created",
            Event::Account(AccountEvent::Created(AccountCreated {
                account: acme(),
                settings: account_settings(),
                origin: AccountOrigin::Api,
                request_id: "0190f0c4a1b27c3d8e9f001122334455".into(),
                actor: actor(),
                created_at: Timestamp(1_763_800_000_123),
            })),
        ),
        (
            "account_created_from_config",
            Event::Account(AccountEvent::Created(AccountCreated {
                account: acme(),
                settings: AccountSettings { name: "acme".into(), ..AccountSettings::default() },
                origin: AccountOrigin::Config,
                request_id: "0190f0c4a1b27c3d8e9f001122334456".into(),
                actor: "config".into(),
                created_at: Timestamp(1_763_800_000_124),
            })),
        ),
        (
            "account_updated",
            Event::Account(AccountEvent::Updated(AccountUpdated {
                account: acme(),
                settings: AccountSettings { pool: None, from_domains: FromDomainsPolicy::Any, ..account_settings() },
                actor: actor(),
                updated_at: Timestamp(1_763_800_001_000),
            })),
        ),
        (
            "account_suspended",
            Event::Account(AccountEvent::Suspended(AccountSuspended {
                account: acme(),
                reason: "complaint rate over 0.3 % — reviewing".into(),
                actor: actor(),
                suspended_at: Timestamp(1_763_800_002_000),
            })),
        ),
        (
            "account_resumed",
            Event::Account(AccountEvent::Resumed(AccountResumed {
                account: acme(),
                actor: actor(),
                resumed_at: Timestamp(1_763_800_003_000),
            })),
        ),
        (
            "account_deleted",
            Event::Account(AccountEvent::Deleted(AccountDeleted {
                account: acme(),
                actor: actor(),
                deleted_at: Timestamp(1_763_800_009_000),
            })),
        ),
        (
            "account_api_key_created",
            Event::Account(AccountEvent::KeyCreated(ApiKeyCreated {
                account: acme(),
                key_id: "key_0190f0c4a1b27c3d".into(),
                name: "production sender".into(),
                prefix: "hrld_8Kq2".into(),
                sha256: (0u8..32).collect(),
                scopes: vec!["send".into(), "read".into()],
                expires_at: Some(Timestamp(1_795_336_000_000)),
                actor: actor(),
                created_at: Timestamp(1_763_800_004_000),
            })),
        ),
        (
            "account_api_key_revoked",
            Event::Account(AccountEvent::KeyRevoked(ApiKeyRevoked {
                account: acme(),
                key_id: "key_0190f0c4a1b27c3d".into(),
                actor: actor(),
                revoked_at: Timestamp(1_763_800_005_000),
            })),
        ),
        (
            "account_smtp_user_added",
            Event::Account(AccountEvent::SmtpUserAdded(SmtpUserAdded {
                account: acme(),
                username: "relay@acme.example".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
                actor: actor(),
                added_at: Timestamp(1_763_800_006_000),
            })),
        ),
        (
            "account_smtp_user_removed",
            Event::Account(AccountEvent::SmtpUserRemoved(SmtpUserRemoved {
                account: acme(),
                username: "relay@acme.example".into(),
                actor: actor(),
                removed_at: Timestamp(1_763_800_007_000),
            })),
        ),
    ]
}

fn fixtures() -> Vec<(&'static str, Event)> {
    let mut all = message_fixtures();
    all.extend(domain_fixtures());
    all.extend(account_fixtures());
    all
}

fn message_fixtures() -> Vec<(&'static str, Event)> {
    vec![
        ("message_accepted", Event::MessageAccepted(accepted())),
        (
            "delivery_attempted_deferred",
            Event::DeliveryAttempted(DeliveryAttempted {
                account: AccountId("acme".into()),
                message_id: MessageId("0190f0c4a1b27c3d8e9f001122334455".into()),
                recipient: "Bob@Example.org".into(),
                recipient_domain: "example.org".into(),
                attempt: 1,
                mx_host: Some("mx1.example.org".into()),
                mx_ip: Some("192.0.2.25".into()),
                tls: true,
                reply: SmtpReply { code: 451, enhanced: Some("4.7.1".into()), text: "try later".into() },
                outcome: Outcome::Deferred,
                next_attempt_at: Some(Timestamp(1_763_800_060_123)),
                duration_ms: 84,
                attempted_at: Timestamp(1_763_800_000_500),
                dkim: "signed d=sender.test s=s1 a=rsa-sha256".into(),
            }),
        ),
        (
            "delivery_attempted_delivered",
            Event::DeliveryAttempted(DeliveryAttempted {
                account: AccountId("acme".into()),
                message_id: MessageId("0190f0c4a1b27c3d8e9f001122334455".into()),
                recipient: "Bob@Example.org".into(),
                recipient_domain: "example.org".into(),
                attempt: 2,
                mx_host: Some("mx1.example.org".into()),
                mx_ip: Some("2001:db8::25".into()),
                tls: false,
                reply: SmtpReply { code: 250, enhanced: None, text: "ok queued".into() },
                outcome: Outcome::Delivered,
                next_attempt_at: None,
                duration_ms: 12,
                attempted_at: Timestamp(1_763_800_061_000),
                dkim: "unsigned: no key for sender.test".into(),
            }),
        ),
        (
            "delivery_scheduled",
            Event::DeliveryScheduled(DeliveryScheduled {
                attempt: 2,
                not_before: Timestamp(1_763_800_060_123),
                message: accepted(),
            }),
        ),
    ]
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn golden_frames_keep_decoding() {
    let bless = std::env::var("HERALD_BLESS").is_ok_and(|v| v == "1");
    let mut blessed = Vec::new();
    for (name, expected) in fixtures() {
        let path = golden_dir().join(format!("v{SCHEMA_VERSION}/{name}.bin"));
        if !path.exists() {
            assert!(bless, "missing golden file {}; run with HERALD_BLESS=1 once", path.display());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, encode(&expected)).unwrap();
            blessed.push(name);
            continue;
        }
        let frame = std::fs::read(&path).unwrap();
        let decoded = decode(&frame).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(decoded, expected, "{} decodes to something else", path.display());
    }
    assert!(blessed.is_empty(), "wrote new golden files {blessed:?}: commit them and rerun");
}

#[test]
fn every_version_directory_decodes() {
    // Frames of every shipped version, not only the current one, must decode.
    let mut count = 0;
    for dir in std::fs::read_dir(golden_dir()).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let frame = std::fs::read(file.unwrap().path()).unwrap();
            decode(&frame).unwrap();
            count += 1;
        }
    }
    assert!(count >= 4, "expected golden frames, found {count}");
}

#[test]
fn round_trip_and_rejections() {
    for (_, event) in fixtures() {
        assert_eq!(decode(&encode(&event)).unwrap(), event);
    }
    let mut frame = encode(&fixtures()[0].1);
    assert!(matches!(decode(&frame[..3]), Err(CodecError::Truncated(3))));
    frame[2] = 99;
    assert!(matches!(decode(&frame), Err(CodecError::UnknownVersion(99))));
    assert!(matches!(decode(b"XX\x01\x00"), Err(CodecError::BadMagic(_))));
    // A reserved index (another change's event, not in this build) is a poison record.
    assert!(matches!(decode(b"HE\x01\x00\x04"), Err(CodecError::Decode(_))));
    let mut long = encode(&fixtures()[0].1);
    long.push(0);
    assert!(matches!(decode(&long), Err(CodecError::Trailing(1))));
}

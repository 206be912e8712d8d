//! Golden files: frames written by earlier releases must keep decoding to the same events.
//!
//! Each `tests/golden/v<N>/<name>.bin` is decoded and compared with the fixture of the same
//! name below (for an older version, the fixture as the upcast makes it). A missing file of
//! the current version is written only when `HERALD_BLESS=1` (and the test then fails, so a
//! blessing is always a deliberate, reviewed commit). Existing files are never rewritten:
//! changing the shape of a shipped version breaks this test, as it must.

use herald_schemas::*;
use std::path::PathBuf;

/// The message of the fixtures; `list_unsubscribe` exists from version 2 on.
fn accepted_with(list_unsubscribe: bool) -> MessageAccepted {
    MessageAccepted {
        account: AccountId("acme".into()),
        message_id: MessageId("0190f0c4a1b27c3d8e9f001122334455".into()),
        envelope_sender: "bounces@sender.test".into(),
        recipient: "Bob@Example.org".into(),
        recipient_domain: "example.org".into(),
        options: SendOptions {
            inline_css: true,
            click_tracking: false,
            bounce_tracking: true,
            opens_tracking: false,
            list_unsubscribe,
        },
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

/// Domain events added in version 2 (ADR 0017).
fn sealed_fixtures() -> Vec<(&'static str, Event)> {
    let acme = || AccountId("acme".into());
    let d = || "xn--bcher-kva.example".to_owned();
    vec![(
        "domain_keys_sealed",
        Event::Domain(DomainEvent::KeysSealed(DomainKeysSealed {
            account: acme(),
            domain: d(),
            keys: vec![SealedKey {
                key_file: "hd1-1763800000123.pem".into(),
                master_key_id: 2,
                nonce: vec![7; 12],
                ciphertext: vec![0xa5; 48],
            }],
            sealed_at: Timestamp(1_763_800_009_500),
        })),
    )]
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
        (
            "account_report_interval_set",
            Event::Account(AccountEvent::ReportIntervalSet(ReportIntervalSet {
                account: acme(),
                interval_secs: Some(86_400),
                actor: actor(),
                set_at: Timestamp(1_763_800_008_000),
            })),
        ),
        (
            "account_report_interval_reset",
            Event::Account(AccountEvent::ReportIntervalSet(ReportIntervalSet {
                account: acme(),
                interval_secs: None,
                actor: "config".into(),
                set_at: Timestamp(1_763_800_008_500),
            })),
        ),
    ]
}

fn feedback_fixtures() -> Vec<(&'static str, Event)> {
    let acme = || AccountId("acme".into());
    let id = || MessageId("0190f0c4a1b27c3d8e9f001122334455".into());
    let fb = Event::Feedback;
    vec![
        (
            "feedback_bounce_received",
            fb(FeedbackEvent::BounceReceived(BounceReceived {
                account: acme(),
                message_id: id(),
                recipient: "Bob@Example.org".into(),
                recipient_domain: "example.org".into(),
                bounce_type: BounceType::Permanent,
                class: BounceClass::InvalidRecipient,
                action: BounceAction::Failed,
                code: Some(550),
                enhanced: Some("5.1.1".into()),
                diagnostic: "smtp; 550 5.1.1 <Bob@Example.org>: Recipient address rejected: User unknown".into(),
                remote_mta: Some("dns; mx1.example.org".into()),
                reporting_mta: Some("dns; relay.sender.test".into()),
                source: BounceSource::Dsn,
                id: "dsn-3f2a9c1b7d4e5f60".into(),
                received_at: Timestamp(1_763_800_120_000),
            })),
        ),
        (
            "feedback_bounce_received_sync",
            fb(FeedbackEvent::BounceReceived(BounceReceived {
                account: acme(),
                message_id: id(),
                recipient: "Bob@Example.org".into(),
                recipient_domain: "example.org".into(),
                bounce_type: BounceType::Transient,
                class: BounceClass::Reputation,
                action: BounceAction::Delayed,
                code: Some(421),
                enhanced: Some("4.7.28".into()),
                diagnostic: "Our system has detected an unusual rate of unsolicited mail".into(),
                remote_mta: Some("mx1.example.org".into()),
                reporting_mta: None,
                source: BounceSource::Sync,
                id: "sync-2".into(),
                received_at: Timestamp(1_763_800_061_000),
            })),
        ),
        (
            "feedback_complaint_received",
            fb(FeedbackEvent::ComplaintReceived(ComplaintReceived {
                account: acme(),
                message_id: id(),
                recipient: "Bob@Example.org".into(),
                recipient_domain: "example.org".into(),
                feedback_type: "abuse".into(),
                user_agent: Some("SomeGenerator/1.0".into()),
                reporting_mta: Some("dns; mail.example.org".into()),
                arrival_date: Some(Timestamp(1_763_800_000_000)),
                id: "arf-77aa01bc22dd33ee".into(),
                received_at: Timestamp(1_763_803_600_000),
            })),
        ),
        (
            "feedback_recipient_suppressed",
            fb(FeedbackEvent::RecipientSuppressed(RecipientSuppressed {
                account: acme(),
                recipient: "bob@example.org".into(),
                reason: SuppressionReason::SoftBounces,
                message_id: Some(id()),
                detail: "3 transient failures (quota) within 7 days".into(),
                expires_at: Some(Timestamp(1_766_392_120_000)),
                id: "soft-dsn-3f2a9c1b7d4e5f60".into(),
                suppressed_at: Timestamp(1_763_800_120_500),
            })),
        ),
        (
            "feedback_suppression_lifted",
            fb(FeedbackEvent::SuppressionLifted(SuppressionLifted {
                account: acme(),
                recipient: "bob@example.org".into(),
                by: "api".into(),
                id: "0190f0c4a1b27c3d8e9f0011223344ff".into(),
                lifted_at: Timestamp(1_763_900_000_000),
            })),
        ),
        (
            "feedback_message_suppressed",
            fb(FeedbackEvent::MessageSuppressed(MessageSuppressed {
                account: acme(),
                message_id: id(),
                recipient: "Bob@Example.org".into(),
                recipient_domain: "example.org".into(),
                reason: SuppressionReason::HardBounce,
                attempt: 1,
                suppressed_at: Timestamp(1_763_900_000_100),
            })),
        ),
    ]
}

/// The fixtures of schema `version`, as the current build decodes them.
fn fixtures(version: u16) -> Vec<(&'static str, Event)> {
    let mut all = message_fixtures(version >= 2);
    all.extend(domain_fixtures());
    if version >= 2 {
        all.extend(engagement_fixtures());
        all.extend(feedback_fixtures());
        all.extend(shaping_fixtures());
        all.extend(body_fixtures());
        all.extend(webhook_fixtures());
        all.extend(account_fixtures());
        all.extend(sealed_fixtures());
    }
    all
}

fn webhook_fixtures() -> Vec<(&'static str, Event)> {
    let account = AccountId("acme".into());
    let endpoint_id = "ep_01jdx3k7q8r9s0t1v2w3x4y5z6".to_owned();
    vec![
        (
            "webhook_endpoint_created",
            Event::Webhook(WebhookEvent::EndpointCreated(EndpointCreated {
                account: account.clone(),
                endpoint_id: endpoint_id.clone(),
                url: "https://hooks.example.com/herald".into(),
                events: vec!["message.delivered".into(), "message.bounced".into()],
                description: "CRM".into(),
                secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                created_at: Timestamp(1_763_800_000_123),
            })),
        ),
        (
            "webhook_endpoint_updated",
            Event::Webhook(WebhookEvent::EndpointUpdated(EndpointUpdated {
                account: account.clone(),
                endpoint_id: endpoint_id.clone(),
                url: None,
                events: Some(vec![]),
                description: Some("CRM (all events)".into()),
                enabled: Some(true),
                updated_at: Timestamp(1_763_800_100_123),
            })),
        ),
        (
            "webhook_secret_rotated",
            Event::Webhook(WebhookEvent::SecretRotated(SecretRotated {
                account: account.clone(),
                endpoint_id: endpoint_id.clone(),
                secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into(),
                previous_until: Timestamp(1_763_886_400_123),
                rotated_at: Timestamp(1_763_800_000_123),
            })),
        ),
        (
            "webhook_endpoint_disabled",
            Event::Webhook(WebhookEvent::EndpointDisabled(EndpointDisabled {
                account: account.clone(),
                endpoint_id: endpoint_id.clone(),
                reason: "the endpoint answered 410 Gone".into(),
                disabled_at: Timestamp(1_763_800_200_123),
            })),
        ),
        (
            "webhook_endpoint_deleted",
            Event::Webhook(WebhookEvent::EndpointDeleted(EndpointDeleted {
                account: account.clone(),
                endpoint_id: endpoint_id.clone(),
                deleted_at: Timestamp(1_763_800_300_123),
            })),
        ),
        (
            "webhook_attempted",
            Event::Webhook(WebhookEvent::Attempted(WebhookAttempted {
                account: account.clone(),
                endpoint_id: endpoint_id.clone(),
                webhook_id: "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W".into(),
                event_type: "message.delivered".into(),
                attempt: 2,
                status: Some(503),
                error: Some("503 Service Unavailable".into()),
                outcome: WebhookOutcome::Retrying,
                duration_ms: 42,
                attempted_at: Timestamp(1_763_800_005_123),
            })),
        ),
        (
            "webhook_scheduled",
            Event::Webhook(WebhookEvent::Scheduled(WebhookScheduled {
                account,
                endpoint_id,
                webhook_id: "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W".into(),
                event_type: "message.delivered".into(),
                payload: br#"{"type":"message.delivered","timestamp":"2025-11-22T08:26:40.123Z","data":{}}"#.to_vec(),
                attempt: 3,
                not_before: Timestamp(1_763_800_305_123),
                occurred_at: Timestamp(1_763_800_000_000),
            })),
        ),
    ]
}

#[test]
fn webhook_is_event_index_10() {
    for (name, event) in webhook_fixtures() {
        assert_eq!(encode(&event)[4], 10, "{name}");
    }
    for (name, event) in account_fixtures() {
        assert_eq!(encode(&event)[4], 9, "{name}");
    }
}

fn shaping_fixtures() -> Vec<(&'static str, Event)> {
    vec![
        (
            "provider_throttled",
            Event::Shaping(ShapingEvent::Throttled(ProviderThrottled {
                id: "0190f0c4a1b27c3d8e9f0011223344aa".into(),
                provider: "google".into(),
                domain: None,
                source: Some("192.0.2.10".into()),
                action: ThrottleAction::ScaleRate { factor_permille: 250 },
                rule: "gmail-unusual-rate".into(),
                reason: "421 4.7.28 Our system has detected an unusual rate of unsolicited mail".into(),
                node: "n-01".into(),
                at: Timestamp(1_763_800_000_123),
                until: Timestamp(1_763_801_800_123),
            })),
        ),
        (
            "provider_suspended",
            Event::Shaping(ShapingEvent::Throttled(ProviderThrottled {
                id: "0190f0c4a1b27c3d8e9f0011223344ab".into(),
                provider: "default".into(),
                domain: Some("example.org".into()),
                source: None,
                action: ThrottleAction::Suspend,
                rule: "manual".into(),
                reason: "maintenance at the receiver".into(),
                node: "n-02".into(),
                at: Timestamp(1_763_800_000_123),
                until: Timestamp(1_763_807_200_123),
            })),
        ),
        (
            "provider_limited",
            Event::Shaping(ShapingEvent::Throttled(ProviderThrottled {
                id: "0190f0c4a1b27c3d8e9f0011223344ac".into(),
                provider: "yahoo".into(),
                domain: None,
                source: None,
                action: ThrottleAction::LimitRate { messages: 10, per_secs: 60 },
                rule: "yahoo-ts03".into(),
                reason: "421 4.7.0 [TS03] unusual traffic".into(),
                node: "n-01".into(),
                at: Timestamp(1_763_800_000_123),
                until: Timestamp(1_763_801_800_123),
            })),
        ),
        (
            "provider_capped",
            Event::Shaping(ShapingEvent::Throttled(ProviderThrottled {
                id: "0190f0c4a1b27c3d8e9f0011223344ad".into(),
                provider: "outlook".into(),
                domain: None,
                source: Some("2001:db8::25".into()),
                action: ThrottleAction::CapConnections { max: 1 },
                rule: "outlook-connections".into(),
                reason: "421 4.3.2 The maximum number of concurrent connections has exceeded a limit".into(),
                node: "n-03".into(),
                at: Timestamp(1_763_800_000_123),
                until: Timestamp(1_763_803_600_123),
            })),
        ),
        (
            "provider_resumed",
            Event::Shaping(ShapingEvent::Resumed(ProviderResumed {
                provider: "google".into(),
                domain: None,
                source: None,
                id: Some("0190f0c4a1b27c3d8e9f0011223344aa".into()),
                reason: "operator".into(),
                node: "n-01".into(),
                at: Timestamp(1_763_800_600_000),
            })),
        ),
        (
            "source_first_used",
            Event::Shaping(ShapingEvent::SourceFirstUsed(SourceFirstUsed {
                source: "192.0.2.10".into(),
                pool: "dedicated-acme".into(),
                node: "n-01".into(),
                at: Timestamp(1_763_800_000_123),
            })),
        ),
        (
            "usage_reported",
            Event::Shaping(ShapingEvent::UsageReported(UsageReported {
                node: "n-01".into(),
                seq: 42,
                interval_ms: 1000,
                lanes: vec![
                    LaneUsage {
                        provider: "google".into(),
                        source: "192.0.2.10".into(),
                        sent: 20,
                        waiting: 380,
                        day: 3,
                    },
                    LaneUsage { provider: "default".into(), source: "default".into(), sent: 7, waiting: 0, day: 0 },
                ],
                at: Timestamp(1_763_800_001_000),
            })),
        ),
    ]
}

fn engagement_fixtures() -> Vec<(&'static str, Event)> {
    let acme = || AccountId("acme".into());
    let id = || MessageId("0190f0c4a1b27c3d8e9f001122334455".into());
    let client = |machine| Client {
        user_agent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15".into(),
        ip: "2001:db8::7".into(),
        machine,
    };
    vec![
        (
            "message_opened",
            Event::Engagement(EngagementEvent::MessageOpened(MessageOpened {
                event_id: "0190f0c4a1b27c3d8e9f0011223344aa".into(),
                account: acme(),
                message_id: id(),
                recipient: "Bob@Example.org".into(),
                client: client(Some(MachineReason::AppleMpp)),
                opened_at: Timestamp(1_763_800_100_000),
            })),
        ),
        (
            "link_clicked",
            Event::Engagement(EngagementEvent::LinkClicked(LinkClicked {
                event_id: "0190f0c4a1b27c3d8e9f0011223344bb".into(),
                account: acme(),
                message_id: id(),
                recipient: "Bob@Example.org".into(),
                url: "https://shop.example/p?a=1&b=%2F+x#top".into(),
                link_index: 3,
                client: client(None),
                clicked_at: Timestamp(1_763_800_200_000),
            })),
        ),
        (
            "recipient_unsubscribed",
            Event::Engagement(EngagementEvent::RecipientUnsubscribed(RecipientUnsubscribed {
                event_id: "0190f0c4a1b27c3d8e9f0011223344cc".into(),
                account: acme(),
                message_id: id(),
                recipient: "Bob@Example.org".into(),
                client: Client { user_agent: String::new(), ip: "192.0.2.9".into(), machine: None },
                unsubscribed_at: Timestamp(1_763_800_300_000),
            })),
        ),
    ]
}

fn message_fixtures(list_unsubscribe: bool) -> Vec<(&'static str, Event)> {
    let accepted = || accepted_with(list_unsubscribe);
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
    for (name, expected) in fixtures(SCHEMA_VERSION) {
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
fn feedback_is_variant_seven() {
    // The lead assigned index 7 to `Feedback`: the variant index is the first byte after
    // the header (bincode's varint of a small number is the number itself).
    let frame = encode(&feedback_fixtures()[0].1);
    assert_eq!(frame[4], 7, "Event::Feedback must encode as variant 7");
}

#[test]
fn version_1_frames_upcast() {
    // Every version-1 frame decodes into the current types, as the version-1 fixture with
    // what version 2 added at its upcast default (`list_unsubscribe = false`).
    let fixtures = fixtures(1);
    let mut count = 0;
    for file in std::fs::read_dir(golden_dir().join("v1")).unwrap() {
        let path = file.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let expected = &fixtures.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no fixture {name}")).1;
        let frame = std::fs::read(&path).unwrap();
        assert_eq!(&frame[2..4], &1u16.to_le_bytes(), "{} is a version-1 frame", path.display());
        assert_eq!(&decode(&frame).unwrap(), expected, "{} upcasts to something else", path.display());
        if let Event::MessageAccepted(m) = decode(&frame).unwrap() {
            assert!(!m.options.list_unsubscribe);
        }
        count += 1;
    }
    assert_eq!(count, fixtures.len(), "every version-1 fixture has its frame");
}

#[test]
fn engagement_is_event_index_6() {
    // Indices 4 and 5 belong to other changes; the frame's first payload byte is the index.
    for (name, event) in fixtures(SCHEMA_VERSION) {
        if let Event::Engagement(_) = event {
            assert_eq!(encode(&event)[4], 6, "{name}");
        }
    }
    assert!(decode(b"HE\x02\x00\x04").is_err(), "a reserved index never decodes");
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
    for (_, event) in fixtures(SCHEMA_VERSION) {
        assert_eq!(decode(&encode(&event)).unwrap(), event);
    }
    let mut frame = encode(&fixtures(SCHEMA_VERSION)[0].1);
    assert!(matches!(decode(&frame[..3]), Err(CodecError::Truncated(3))));
    frame[2] = 99;
    assert!(matches!(decode(&frame), Err(CodecError::UnknownVersion(99))));
    assert!(matches!(decode(b"XX\x01\x00"), Err(CodecError::BadMagic(_))));
    let mut long = encode(&fixtures(SCHEMA_VERSION)[0].1);
    long.push(0);
    assert!(matches!(decode(&long), Err(CodecError::Trailing(1))));
}

/// Bodies stored once (`Event::Body`, index 4) and a message that refers to one: version 2.
fn body_fixtures() -> Vec<(&'static str, Event)> {
    let accepted = || accepted_with(true);
    vec![
        (
            "body_stored",
            Event::Body(BodyStored {
                account: AccountId("acme".into()),
                sha256: [7; 32],
                data: b"From: a@sender.test\r\nSubject: hi\r\n\r\nhello\r\n".to_vec(),
                stored_at: Timestamp(1_763_800_000_100),
            }),
        ),
        (
            "message_accepted_stored_body",
            Event::MessageAccepted(MessageAccepted {
                body: Body::Stored(BodyRef { partition: 3, offset: 41_234, len: 1_048_576, sha256: [7; 32] }),
                ..accepted()
            }),
        ),
    ]
}

//! The bounce corpus under `tests/feedback/`: every message is read (`report::read`) and,
//! for bounces, classified with the shipped rules; `expected.toml` says what each must
//! give. A file without an entry fails, so the corpus and its expectations stay together.

use herald_engine::feedback::classify::Classifier;
use herald_engine::feedback::report::{self, BounceFormat, Report};
use herald_schemas::BounceAction;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Expected {
    report: String,
    format: Option<String>,
    action: Option<String>,
    code: Option<u16>,
    enhanced: Option<String>,
    class: Option<String>,
    #[serde(rename = "type")]
    bounce_type: Option<String>,
    final_recipient: Option<String>,
    feedback_type: Option<String>,
    candidate: Option<String>,
    original_rcpt_to: Option<String>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/feedback")
}

#[test]
fn every_message_reads_and_classifies_as_expected() {
    let expected: BTreeMap<String, Expected> =
        toml::from_str(&std::fs::read_to_string(dir().join("expected.toml")).unwrap()).unwrap();
    let classifier = Classifier::shipped();
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "eml") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let want = expected.get(&name).unwrap_or_else(|| panic!("{name}.eml has no entry in expected.toml"));
        let raw = std::fs::read(&path).unwrap();
        let got = report::read(&raw);
        let mut check = |what: &str, ok: bool, detail: String| {
            if !ok {
                failures.push(format!("{name}: {what}: {detail}"));
            }
        };
        match (&got, want.report.as_str()) {
            (Report::Bounce(b), "bounce") => {
                let format = match b.format {
                    BounceFormat::Rfc3464 => "rfc3464",
                    BounceFormat::Text => "text",
                };
                let action = match b.action {
                    BounceAction::Failed => "failed",
                    BounceAction::Delayed => "delayed",
                };
                let c = classifier.classify(
                    b.code,
                    b.enhanced.as_deref(),
                    &b.diagnostic,
                    b.action == BounceAction::Delayed,
                );
                check("format", want.format.as_deref() == Some(format), format!("{format} {b:?}"));
                check("action", want.action.as_deref() == Some(action), action.into());
                check("code", want.code == b.code, format!("{:?}", b.code));
                check("enhanced", want.enhanced == b.enhanced, format!("{:?}", b.enhanced));
                check(
                    "class",
                    want.class.as_deref() == Some(c.class.as_str()),
                    format!("{} ({:?})", c.class.as_str(), b.diagnostic),
                );
                check(
                    "type",
                    want.bounce_type.as_deref() == Some(c.bounce_type.as_str()),
                    c.bounce_type.as_str().into(),
                );
                if let Some(r) = &want.final_recipient {
                    check("final recipient", b.final_recipient.as_ref() == Some(r), format!("{:?}", b.final_recipient));
                }
                assert_eq!(b.digest.len(), 16);
            }
            (Report::Complaint(c, _), "complaint") => {
                check(
                    "feedback type",
                    want.feedback_type.as_deref() == Some(c.feedback_type.as_str()),
                    c.feedback_type.clone(),
                );
                if let Some(first) = &want.candidate {
                    check("candidate", c.candidates.first() == Some(first), format!("{:?}", c.candidates));
                }
                if let Some(r) = &want.original_rcpt_to {
                    check("original rcpt", c.original_rcpt_to.as_ref() == Some(r), format!("{:?}", c.original_rcpt_to));
                }
            }
            (Report::Success, "success")
            | (Report::AutoReply, "auto-reply")
            | (Report::Unrecognized, "unrecognized") => {}
            (other, want) => check("report", false, format!("wanted {want}, got {other:?}")),
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(checked, expected.len(), "expected.toml names a file that is missing");
}

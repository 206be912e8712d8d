//! The shipped Prometheus rules (`ops/prometheus/herald-rules.yml`) load, and their
//! `promtool` unit tests pass: the "behind retention" alert fires on
//! `herald_log_offset_out_of_range_total` and the commit-failure alert on sustained
//! `herald_consumer_commit_failures_total` (promtool from Debian's `prometheus` package,
//! installed by `ops/scripts/install-peers.sh`).

use std::path::Path;
use std::process::Command;

fn promtool(args: &[&str]) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("promtool (Debian prometheus; ops/scripts/install-peers.sh installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn rules_load_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", "herald-rules.yml"]);
    assert!(checked.contains("3 rules found"), "{checked}");
    promtool(&["test", "rules", "herald-rules.test.yml"]);
}

#[test]
fn every_metric_the_rules_query_is_documented() {
    let rules =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus/herald-rules.yml")).unwrap();
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md")).unwrap();
    for name in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("herald_")) {
        assert!(docs.contains(&format!("`{name}`")), "{name} is queried by the rules but not in docs/metrics.md");
    }
}

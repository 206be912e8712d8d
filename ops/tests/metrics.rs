//! The metric lists (`herald_engine::metrics`, `herald_ingest::metrics`, `herald::metrics`)
//! are the one source of truth: `docs/metrics.md`'s table is generated from them
//! (`HERALD_BLESS=1` rewrites it), every `herald_*` name the code records is listed, every
//! listed name is recorded somewhere, names and labels follow the conventions, and the
//! Grafana dashboards and Prometheus rules query only metrics Herald exports.

use herald_engine::metrics::Kind;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const BEGIN: &str =
    "<!-- metrics:begin (generated from the metric lists: HERALD_BLESS=1 cargo test -p herald --test metrics) -->\n";
const END: &str = "<!-- metrics:end -->";

#[test]
fn docs_metrics_md_is_generated_from_the_lists() {
    let path = root().join("docs/metrics.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (head, rest) = doc.split_once(BEGIN).expect("docs/metrics.md has the metrics:begin marker");
    let (_, tail) = rest.split_once(END).expect("docs/metrics.md has the metrics:end marker");
    let generated = format!("{head}{BEGIN}{}{END}{tail}", herald::metrics::markdown());
    if std::env::var_os("HERALD_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    assert!(doc == generated, "docs/metrics.md is out of date: run HERALD_BLESS=1 cargo test -p herald --test metrics");
}

/// `"herald_…"` string literals in the crates' sources, outside the metric lists.
fn recorded_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut dirs: Vec<PathBuf> = ["engine/src", "ingest/src", "ops/src"].iter().map(|d| root().join(d)).collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && path.file_name().unwrap() != "metrics.rs" {
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split("\"herald_").skip(1) {
                    let name: String = piece
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if piece[name.len()..].starts_with('"') {
                        names.insert(format!("herald_{name}"));
                    }
                }
            }
        }
    }
    names
}

#[test]
fn every_recorded_metric_is_listed_and_every_listed_one_recorded() {
    let listed: BTreeSet<String> = herald::metrics::all().iter().map(|m| m.name.to_owned()).collect();
    let recorded = recorded_names();
    let unlisted: Vec<_> = recorded.difference(&listed).collect();
    assert!(unlisted.is_empty(), "recorded but not in a metric list (engine/ingest/ops src/metrics.rs): {unlisted:?}");
    let unused: Vec<_> = listed
        .iter()
        .filter(|n| n.starts_with("herald_") && *n != "herald_build_info" && !recorded.contains(*n))
        .collect();
    assert!(unused.is_empty(), "listed but recorded nowhere: {unused:?}");
}

#[test]
fn names_and_labels_follow_the_conventions() {
    let all = herald::metrics::all();
    let mut seen = BTreeSet::new();
    for m in &all {
        assert!(seen.insert(m.name), "{} is listed twice", m.name);
        let body = m.name.strip_prefix("herald_").or_else(|| m.name.strip_prefix("process_")).unwrap_or("");
        assert!(
            !body.is_empty()
                && body
                    .split('_')
                    .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())),
            "{}: herald_<area>_<name>_<unit>, lower case",
            m.name
        );
        assert!(body.contains('_') || m.name.starts_with("process_"), "{}: needs an area and a name", m.name);
        match m.kind {
            Kind::Counter => assert!(m.name.ends_with("_total"), "counter {} must end in _total", m.name),
            Kind::Gauge | Kind::Histogram => assert!(!m.name.ends_with("_total"), "{} is not a counter", m.name),
        }
        if m.kind == Kind::Histogram {
            let unit = ["_seconds", "_bytes", "_commands", "_commits"].iter().any(|u| m.name.ends_with(u));
            assert!(unit, "histogram {} must end in its unit", m.name);
        }
        assert!(!m.help.is_empty() && !m.help.contains('\n'), "{}: one line of help", m.name);
        for l in m.labels {
            assert!(
                !["recipient", "address", "email", "domain", "message_id", "account", "ip"].contains(&l.name),
                "{}: label {} would be unbounded",
                m.name,
                l.name
            );
            assert!(
                !l.values.is_empty() || !l.about.is_empty(),
                "{}: label {} says what its values are",
                m.name,
                l.name
            );
        }
    }
}

/// Metric names in a PromQL expression: identifiers followed by neither `(` (a function)
/// nor a label matcher's `=`, excluding keywords; histogram suffixes are stripped.
fn queried(expr: &str) -> BTreeSet<String> {
    let keywords =
        ["by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"];
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    let mut in_string = false;
    let mut in_braces = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c == '"' {
            in_string = !in_string;
        }
        if !in_string && c == '{' {
            in_braces += 1;
        }
        if !in_string && c == '}' {
            in_braces -= 1;
        }
        if !in_string
            && in_braces == 0
            && (c.is_ascii_alphabetic() || c == '_')
            && (i == 0
                || !(bytes[i - 1] as char).is_ascii_alphanumeric()
                    && bytes[i - 1] != b'_'
                    && bytes[i - 1] != b'$'
                    && bytes[i - 1] != b'.')
        {
            let start = i;
            while i < bytes.len()
                && ((bytes[i] as char).is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            let word = &expr[start..i];
            let next = expr[i..].trim_start().chars().next();
            if next != Some('(')
                && !keywords.contains(&word)
                && !word.contains(':')
                && (word.starts_with("herald_") || word.starts_with("process_"))
            {
                let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| word.strip_suffix(s)).unwrap_or(word);
                out.insert(base.to_owned());
            }
            continue;
        }
        i += 1;
    }
    out
}

/// Every `expr` of the rule files and every `expr` of the dashboards.
fn expressions() -> Vec<(String, String)> {
    let mut out = vec![];
    let rules = root().join("ops/prometheus/herald-rules.yml");
    let text = std::fs::read_to_string(&rules).unwrap();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(e) = line.trim_start().strip_prefix("expr:") {
            let mut expr = e.trim().to_owned();
            if expr == "|" || expr == ">" || expr.is_empty() {
                expr.clear();
                while lines.peek().is_some_and(|l| l.starts_with("          ") || l.trim().is_empty()) {
                    expr.push_str(lines.next().unwrap().trim());
                    expr.push(' ');
                }
            }
            out.push(("herald-rules.yml".to_owned(), expr));
        }
    }
    let dashboards = root().join("ops/grafana/dashboards");
    for entry in std::fs::read_dir(&dashboards).expect("ops/grafana/dashboards") {
        let path = entry.unwrap().path();
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut stack = vec![&json];
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        if (k == "expr" || (k == "query" && v.as_str().is_some_and(|q| q.starts_with("label_values("))))
                            && v.is_string()
                        {
                            out.push((
                                path.file_name().unwrap().to_string_lossy().into_owned(),
                                v.as_str().unwrap().to_owned(),
                            ));
                        } else {
                            stack.push(v);
                        }
                    }
                }
                serde_json::Value::Array(items) => stack.extend(items),
                _ => {}
            }
        }
    }
    out
}

#[test]
fn the_query_parser_finds_metric_names() {
    let q = queried(
        r#"sum by (group, topic) (rate(herald_delivery_attempts_total{outcome="failed"}[5m])) / on (instance) herald_x_bucket > 0"#,
    );
    assert_eq!(
        q.into_iter().collect::<Vec<_>>(),
        vec!["herald_delivery_attempts_total".to_owned(), "herald_x".to_owned()]
    );
}

#[test]
fn dashboards_and_rules_query_only_exported_metrics() {
    let listed: BTreeSet<&str> = herald::metrics::all().iter().map(|m| m.name).collect();
    let expressions = expressions();
    assert!(expressions.len() > 20, "found only {} expressions", expressions.len());
    let mut used = BTreeSet::new();
    for (file, expr) in &expressions {
        let names = queried(expr);
        assert!(
            !names.is_empty() || expr.contains("herald:") || expr.starts_with("up{"),
            "{file}: `{expr}` queries no Herald metric"
        );
        for name in names {
            assert!(listed.contains(name.as_str()), "{file} queries `{name}`, which Herald does not export: `{expr}`");
            used.insert(name);
        }
    }
    for must in [
        "herald_consumer_lag_records",
        "herald_consumer_oldest_unfinished_age_seconds",
        "herald_http_requests_total",
        "process_resident_memory_bytes",
    ] {
        assert!(used.contains(must), "no dashboard or rule shows {must}");
    }
}

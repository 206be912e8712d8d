//! The deployment files hold: the compose file validates against the Compose Specification
//! schema kept in the repo (`check-jsonschema`, PyPI) and a broken one does not; the Helm
//! chart passes `helm lint` and renders (`helm template`) the objects the operations guide
//! promises; the configuration both of them give Herald passes `herald config check` for
//! every role; the chart ships the same rules as `ops/prometheus/`; the Dockerfile is
//! multi-stage and runs as a non-root user.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (ops/scripts/install-peers.sh installs it)"));
    out
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `helm` on PATH, else where `go install` puts it.
fn helm() -> Command {
    let home = std::env::var("HOME").unwrap_or_default();
    let gobin = Path::new(&home).join("go/bin/helm");
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|p| p.join("helm").is_file());
    Command::new(if found || !gobin.is_file() { PathBuf::from("helm") } else { gobin })
}

/// YAML documents as JSON (PyYAML).
fn yaml_docs(yaml: &str) -> Vec<Value> {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", "import sys, json, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "PyYAML could not read the YAML");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `herald config check` of `config` with `env` overrides.
fn config_check(config: &Path, env: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["config", "check", "--config"])
        .arg(config)
        .env("HERALD__STORAGE__DATA_DIR", dir.path())
        .envs(env.iter().map(|(k, v)| (k, v))));
    assert!(out.status.success(), "herald config check {} with {env:?}:\n{}", config.display(), text(&out));
}

#[test]
fn compose_file_follows_the_compose_specification() {
    let dir = root().join("ops/deploy/compose");
    let check = |file: &Path| {
        run(Command::new("check-jsonschema").arg("--schemafile").arg(dir.join("compose-spec.json")).arg(file))
    };
    let ok = check(&dir.join("compose.yaml"));
    assert!(ok.status.success(), "{}", text(&ok));
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("compose.yaml");
    std::fs::write(&broken, "services:\n  herald:\n    image: herald\n    ports: 8080\n    restart_policy: always\n")
        .unwrap();
    assert!(!check(&broken).status.success(), "the schema must refuse a malformed compose file");
}

#[test]
fn compose_cluster_is_complete_and_its_config_checks_for_every_role() {
    let dir = root().join("ops/deploy/compose");
    let docs = yaml_docs(&std::fs::read_to_string(dir.join("compose.yaml")).unwrap());
    let services = docs[0]["services"].as_object().unwrap();
    for s in ["kafka-1", "kafka-2", "kafka-3", "scylla-1", "scylla-2", "scylla-3", "prometheus", "grafana"] {
        assert!(services.contains_key(s), "compose has no {s}");
    }
    let mut roles = vec![];
    for (name, service) in services.iter().filter(|(n, _)| n.starts_with("herald-")) {
        let r = service["environment"]["HERALD__CLUSTER__ROLES"].as_str().unwrap_or_else(|| panic!("{name}: roles"));
        roles.push(r.to_owned());
        config_check(&dir.join("herald.toml"), &[("HERALD__CLUSTER__ROLES".into(), r.into())]);
    }
    let all = roles.join(" ");
    for role in ["smtp", "deliver", "project", "bounces", "track"] {
        assert!(all.contains(&format!("\"{role}\"")), "no compose service runs the {role} role");
    }
    // Every file the services mount exists.
    for service in services.values() {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(dir.join(source).exists(), "compose mounts {source}, which does not exist");
            }
        }
    }
}

#[test]
fn helm_chart_lints_renders_and_configures_herald() {
    let chart = root().join("ops/deploy/helm/herald");
    let lint = run(helm().arg("lint").arg("--strict").arg(&chart));
    assert!(lint.status.success(), "{}", text(&lint));
    let rendered = run(helm().args(["template", "h"]).arg(&chart));
    assert!(rendered.status.success(), "{}", text(&rendered));
    let docs = yaml_docs(&String::from_utf8_lossy(&rendered.stdout));
    let of = |kind: &str| docs.iter().filter(|d| d["kind"] == kind).collect::<Vec<_>>();
    let deployments = of("Deployment");
    assert_eq!(deployments.len(), 3, "a Deployment per role");
    assert_eq!(of("PodDisruptionBudget").len(), 3);
    assert_eq!(of("Service").len(), 3);
    assert_eq!(of("ServiceMonitor").len(), 1);
    assert_eq!(of("PrometheusRule").len(), 1);
    let hpa = of("HorizontalPodAutoscaler");
    assert_eq!(hpa.len(), 1);
    assert_eq!(hpa[0]["spec"]["metrics"][0]["external"]["metric"]["name"], "herald_consumer_lag_records");
    let rules = of("PrometheusRule")[0]["spec"]["groups"].as_array().unwrap().len();
    assert_eq!(rules, 4, "the PrometheusRule carries every rule group");

    let config_map = of("ConfigMap")[0]["data"]["herald.toml"].as_str().unwrap().to_owned();
    let secret: Vec<(String, String)> = of("Secret")[0]["stringData"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("herald.toml");
    std::fs::write(&config, config_map).unwrap();
    for d in &deployments {
        let container = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], true);
        let mut env = secret.clone();
        for e in container["env"].as_array().unwrap() {
            if e["name"] != "HERALD_CONFIG" {
                env.push((e["name"].as_str().unwrap().to_owned(), e["value"].as_str().unwrap().to_owned()));
            }
        }
        config_check(&config, &env);
    }
}

#[test]
fn chart_ships_the_same_rules() {
    let a = std::fs::read_to_string(root().join("ops/prometheus/herald-rules.yml")).unwrap();
    let b = std::fs::read_to_string(root().join("ops/deploy/helm/herald/files/herald-rules.yml")).unwrap();
    assert!(a == b, "copy ops/prometheus/herald-rules.yml to ops/deploy/helm/herald/files/");
}

#[test]
fn dockerfile_is_multi_stage_and_non_root() {
    let docker = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let froms: Vec<&str> = docker.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(froms.last().unwrap().contains("-slim"), "small runtime base: {froms:?}");
    let user = docker.lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    assert!(!user.starts_with('0') && !user.starts_with("root"), "runs as {user}");
    assert!(docker.contains("cargo build --release --locked -p herald --bin herald"));
}

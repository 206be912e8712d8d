//! Scenario files (`loadtest/scenarios/*.toml`): one whole run — the Herald configuration the
//! run expects, the sink's behaviour and the generator's settings — so a figure can be
//! reproduced with one command. See `docs/loadtest.md` for the format.

use std::path::Path;

use serde::Deserialize;

/// Reading a scenario failed.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("reading scenario {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("parsing scenario {path}: {source}")]
    Parse { path: String, source: toml::de::Error },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, printed in the report.
    pub name: String,
    /// What the scenario exercises.
    #[serde(default)]
    pub description: String,
    pub herald: HeraldSection,
    pub sink: SinkSection,
    pub generator: GeneratorSection,
    #[serde(default)]
    pub wait: WaitSection,
}

/// What the Herald under test must be configured with.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeraldSection {
    /// A TOML snippet to merge into Herald's configuration (documentation for the operator;
    /// `run` does not start Herald).
    pub config: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    /// Loopback port the sink listens on; Herald's `[delivery] mx_port` must be the same.
    pub port: u16,
    /// `--reply` rules.
    #[serde(default)]
    pub replies: Vec<String>,
    #[serde(default)]
    pub starttls: bool,
    #[serde(default)]
    pub max_messages_per_connection: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSection {
    pub messages: u64,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default = "default_size")]
    pub size: String,
    #[serde(default = "default_one")]
    pub recipients: u32,
    /// `[LOCALPREFIX@]DOMAIN[:WEIGHT]` entries.
    pub domains: Vec<String>,
    /// Messages per second (absent: as fast as Herald accepts).
    #[serde(default)]
    pub rate: Option<f64>,
    #[serde(default = "default_from")]
    pub from: String,
    #[serde(default)]
    pub headers: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitSection {
    /// How long to wait for the sink to see every accepted recipient.
    #[serde(default = "default_wait")]
    pub timeout_secs: u64,
}

impl Default for WaitSection {
    fn default() -> Self {
        WaitSection { timeout_secs: default_wait() }
    }
}

fn default_concurrency() -> usize {
    20
}
fn default_size() -> String {
    "5k".into()
}
fn default_one() -> u32 {
    1
}
fn default_from() -> String {
    "loadtest@sender.test".into()
}
fn default_wait() -> u64 {
    300
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read { path: p.clone(), source })?;
        Scenario::parse(&text).map_err(|source| ScenarioError::Parse { path: p, source })
    }

    pub fn parse(text: &str) -> Result<Scenario, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_scenarios_parse_and_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let s = Scenario::load(&path).unwrap();
            crate::sink::Rules::parse(&s.sink.replies).unwrap();
            crate::message::parse_domains(&s.generator.domains).unwrap();
            s.generator.size.parse::<crate::message::SizeMix>().unwrap();
            assert!(s.herald.config.contains("mx_port"), "{} must say how Herald reaches the sink", s.name);
            let _: toml::Table = toml::from_str(&s.herald.config).unwrap();
            names.push(s.name);
        }
        names.sort();
        assert_eq!(names, ["mixed-replies", "provider-mix", "relay-5k"]);
    }
}

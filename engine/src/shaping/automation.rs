//! Adaptive backoff: rules in the providers file that read the replies a provider gives
//! and decide to suspend it, slow it down or cap its connections for a while.
//!
//! A rule matches a reply by code, enhanced status code and a regular expression on the
//! reply text (every condition given must hold), fires immediately or once it matched N
//! times within a window (counted per node, per rule and scope), and produces a
//! [`Fired`]: an action, a scope (the source address that got the reply, or the whole
//! provider) and an expiry. The shaper turns it into a `ProviderThrottled` event that every
//! node applies. Pure: the caller passes the clock.

use super::limits::{parse_duration, Rate};
use herald_schemas::{SmtpReply, ThrottleAction};
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a throttle covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The source address that got the reply (reputation is per sending IP).
    #[default]
    Source,
    /// Every source sending to the provider.
    Provider,
}

/// A rule as written in the providers file (`[[providers.<name>.rules]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique within the provider; shown in events, metrics-free logs and the admin API.
    pub name: String,
    /// The reply code (`421`).
    pub code: Option<u16>,
    /// The enhanced status code (`4.7.28`).
    pub enhanced: Option<String>,
    /// A regular expression searched in the reply text (without the code).
    pub text: Option<String>,
    /// `immediately` (the default) or `N/h` (also `N/m`, `N/d`): N matching replies
    /// within that window, on one node.
    pub trigger: Option<String>,
    /// `suspend`, `throttle` (with `factor` or `rate`) or `cap_connections` (with
    /// `connections`).
    pub action: String,
    pub factor: Option<f64>,
    pub rate: Option<Rate>,
    pub connections: Option<u32>,
    /// How long the throttle lasts (`30m`, `2h`).
    pub duration: String,
    #[serde(default)]
    pub scope: Scope,
}

/// When a rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Immediately,
    /// `count` matches within `window`.
    Threshold {
        count: u32,
        window: Duration,
    },
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub code: Option<u16>,
    pub enhanced: Option<String>,
    pub text: Option<regex::Regex>,
    pub trigger: Trigger,
    pub action: ThrottleAction,
    pub duration: Duration,
    pub scope: Scope,
}

impl Rule {
    pub fn compile(spec: &RuleSpec) -> Result<Rule, String> {
        let name = &spec.name;
        if spec.code.is_none() && spec.enhanced.is_none() && spec.text.is_none() {
            return Err(format!("rule {name}: give at least one of code, enhanced, text"));
        }
        let text = match &spec.text {
            Some(t) => Some(
                regex::RegexBuilder::new(t)
                    .case_insensitive(true)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("rule {name}: text is not a regular expression: {e}"))?,
            ),
            None => None,
        };
        let trigger = match spec.trigger.as_deref().map(str::trim) {
            None | Some("immediately") | Some("immediate") => Trigger::Immediately,
            Some(t) => {
                let r =
                    Rate::parse(t).map_err(|_| format!("rule {name}: trigger `{t}` is not `immediately` or N/h"))?;
                Trigger::Threshold { count: r.messages, window: Duration::from_secs(r.per_secs as u64) }
            }
        };
        let action = match spec.action.as_str() {
            "suspend" => ThrottleAction::Suspend,
            "throttle" => match (spec.factor, spec.rate) {
                (Some(f), None) if f > 0.0 && f < 1.0 => {
                    ThrottleAction::ScaleRate { factor_permille: ((f * 1000.0).round() as u32).max(1) }
                }
                (Some(f), None) => return Err(format!("rule {name}: factor {f} must be between 0 and 1")),
                (None, Some(r)) => ThrottleAction::LimitRate { messages: r.messages, per_secs: r.per_secs },
                _ => return Err(format!("rule {name}: throttle needs either factor (0..1) or rate")),
            },
            "cap_connections" => match spec.connections {
                Some(n) if n >= 1 => ThrottleAction::CapConnections { max: n },
                _ => return Err(format!("rule {name}: cap_connections needs connections >= 1")),
            },
            other => return Err(format!("rule {name}: action `{other}` is not suspend, throttle or cap_connections")),
        };
        let duration = parse_duration(&spec.duration).map_err(|e| format!("rule {name}: duration: {e}"))?;
        Ok(Rule {
            name: name.clone(),
            code: spec.code,
            enhanced: spec.enhanced.clone(),
            text,
            trigger,
            action,
            duration,
            scope: spec.scope,
        })
    }

    pub fn matches(&self, reply: &SmtpReply) -> bool {
        self.code.is_none_or(|c| c == reply.code)
            && self.enhanced.as_deref().is_none_or(|e| reply.enhanced.as_deref() == Some(e))
            && self.text.as_ref().is_none_or(|r| r.is_match(&reply.text))
    }
}

/// A rule that fired: the throttle to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub rule: String,
    pub action: ThrottleAction,
    pub duration: Duration,
    /// `Some(source)` for a source-scoped rule.
    pub source: Option<String>,
}

/// Counts matching replies per (provider, rule, scope) for threshold triggers.
#[derive(Default)]
pub struct Counters {
    seen: Mutex<HashMap<(String, String, String), VecDeque<Instant>>>,
}

impl Counters {
    /// The rules of `provider` that fire on `reply`, received from `source` for the lane
    /// `lane` (the provider, or `default/<domain>`).
    pub fn observe(&self, lane: &str, rules: &[Rule], source: &str, reply: &SmtpReply, now: Instant) -> Vec<Fired> {
        let mut fired = Vec::new();
        for rule in rules.iter().filter(|r| r.matches(reply)) {
            let scope_source = (rule.scope == Scope::Source).then(|| source.to_owned());
            let fires = match rule.trigger {
                Trigger::Immediately => true,
                Trigger::Threshold { count, window } => {
                    let key = (lane.to_owned(), rule.name.clone(), scope_source.clone().unwrap_or_default());
                    let mut seen = self.seen.lock().expect("automation counters poisoned");
                    let times = seen.entry(key).or_default();
                    while times.front().is_some_and(|t| now.duration_since(*t) >= window) {
                        times.pop_front();
                    }
                    times.push_back(now);
                    if times.len() >= count as usize {
                        times.clear();
                        true
                    } else {
                        false
                    }
                }
            };
            if fires {
                fired.push(Fired {
                    rule: rule.name.clone(),
                    action: rule.action,
                    duration: rule.duration,
                    source: scope_source,
                });
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_text: &str) -> RuleSpec {
        toml::from_str(toml_text).unwrap()
    }

    fn reply(code: u16, enhanced: &str, text: &str) -> SmtpReply {
        SmtpReply { code, enhanced: Some(enhanced.into()), text: text.into() }
    }

    #[test]
    fn rules_compile_and_refuse_nonsense() {
        let r = Rule::compile(&spec(
            "name = \"g\"\ncode = 421\nenhanced = \"4.7.28\"\naction = \"throttle\"\nfactor = 0.25\nduration = \"30m\"",
        ))
        .unwrap();
        assert_eq!(r.action, ThrottleAction::ScaleRate { factor_permille: 250 });
        assert_eq!(r.trigger, Trigger::Immediately);
        assert_eq!(r.scope, Scope::Source);
        let r = Rule::compile(&spec(
            "name = \"y\"\ntext = '\\[TSS04\\]'\ntrigger = \"2/h\"\naction = \"suspend\"\nduration = \"2h\"\nscope = \"provider\"",
        ))
        .unwrap();
        assert_eq!(r.trigger, Trigger::Threshold { count: 2, window: Duration::from_secs(3600) });
        for bad in [
            "name = \"x\"\naction = \"suspend\"\nduration = \"1h\"",
            "name = \"x\"\ncode = 421\naction = \"explode\"\nduration = \"1h\"",
            "name = \"x\"\ncode = 421\naction = \"throttle\"\nduration = \"1h\"",
            "name = \"x\"\ncode = 421\naction = \"throttle\"\nfactor = 2.0\nduration = \"1h\"",
            "name = \"x\"\ncode = 421\naction = \"cap_connections\"\nduration = \"1h\"",
            "name = \"x\"\ntext = \"(\"\naction = \"suspend\"\nduration = \"1h\"",
            "name = \"x\"\ncode = 421\naction = \"suspend\"\nduration = \"soon\"",
            "name = \"x\"\ncode = 421\naction = \"suspend\"\nduration = \"1h\"\ntrigger = \"often\"",
        ] {
            assert!(Rule::compile(&spec(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_needs_every_condition() {
        let r = Rule::compile(&spec(
            "name = \"g\"\ncode = 421\nenhanced = \"4.7.28\"\ntext = \"unusual rate\"\naction = \"suspend\"\nduration = \"1h\"",
        ))
        .unwrap();
        assert!(r.matches(&reply(421, "4.7.28", "Our system has detected an Unusual Rate of unsolicited mail")));
        assert!(!r.matches(&reply(451, "4.7.28", "unusual rate")));
        assert!(!r.matches(&reply(421, "4.7.0", "unusual rate")));
        assert!(!r.matches(&reply(421, "4.7.28", "try later")));
        assert!(!r.matches(&SmtpReply { code: 421, enhanced: None, text: "unusual rate".into() }));
    }

    #[test]
    fn thresholds_count_within_the_window_per_scope() {
        let rules = vec![Rule::compile(&spec(
            "name = \"t\"\ncode = 421\ntrigger = \"3/h\"\naction = \"suspend\"\nduration = \"1h\"",
        ))
        .unwrap()];
        let c = Counters::default();
        let t0 = Instant::now();
        let r = reply(421, "4.7.0", "busy");
        assert!(c.observe("p", &rules, "10.0.0.1", &r, t0).is_empty());
        assert!(c.observe("p", &rules, "10.0.0.2", &r, t0).is_empty(), "another source counts apart");
        assert!(c.observe("p", &rules, "10.0.0.1", &r, t0 + Duration::from_secs(10)).is_empty());
        // The first match leaves the window: still two.
        assert!(c.observe("p", &rules, "10.0.0.1", &r, t0 + Duration::from_secs(3600)).is_empty());
        let fired = c.observe("p", &rules, "10.0.0.1", &r, t0 + Duration::from_secs(3601));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].source.as_deref(), Some("10.0.0.1"));
        assert!(c.observe("p", &rules, "10.0.0.1", &r, t0 + Duration::from_secs(3602)).is_empty(), "counting restarts");
        assert!(c.observe("p", &rules, "10.0.0.1", &reply(250, "2.0.0", "ok"), t0).is_empty());
    }
}

//! The providers file: which mailbox providers Herald knows, how to recognise them, and
//! the limits and backoff rules of each (`ops/config/providers.toml` is shipped and loaded
//! by default; `docs/shaping.md` is its reference).
//!
//! A recipient domain belongs to a provider when the domain is listed in the provider's
//! `domains`, or when **all** of the domain's MX hosts end with one of the provider's
//! `mx_suffixes` (so a Google Workspace customer's own domain is `google` too). Everything
//! else belongs to `default`, whose limits apply per recipient domain.
//!
//! An operator's file (`[delivery] providers_file`) extends the shipped one: a provider of
//! the same name is merged key by key (`replace = true` in its table starts it afresh),
//! its rules are added (a rule of the same name replaces the shipped one), and new
//! providers are added. `replace_shipped = true` at the top of the file drops the shipped
//! file altogether.

use super::automation::{Rule, RuleSpec};
use super::limits::Rate;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The name of the provider of every domain no other provider claims.
pub const DEFAULT: &str = "default";

/// The providers file shipped with Herald.
pub const SHIPPED: &str = include_str!("../../../ops/config/providers.toml");

/// STARTTLS policy towards a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    /// Use STARTTLS when offered (certificates are not verified); send in clear otherwise.
    #[default]
    Opportunistic,
    /// Never send without TLS: a server that does not offer STARTTLS, or whose handshake
    /// fails, gets the message later (a temporary failure).
    Required,
}

/// One provider as written in a file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// Start from nothing rather than merging into the shipped provider of this name.
    #[serde(default)]
    pub replace: bool,
    #[serde(default)]
    pub mx_suffixes: Vec<String>,
    #[serde(default)]
    pub domains: Vec<String>,
    /// Connections at once, per source address, across the cluster.
    pub max_connections: Option<u32>,
    /// Messages per second (or `N/s|m|h|d`), per source address, across the cluster.
    pub messages_per_second: Option<Rate>,
    /// Messages over one connection before it is closed.
    pub messages_per_connection: Option<u32>,
    /// New connections per second (or `N/s|m|h|d`), per source address, on each node.
    pub connection_rate: Option<Rate>,
    pub tls: Option<TlsPolicy>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// A providers file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersFile {
    /// In an operator's file: ignore the shipped file entirely.
    #[serde(default)]
    pub replace_shipped: bool,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSpec>,
}

/// A provider's limits, per source address.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Limits {
    pub max_connections: Option<u32>,
    pub messages_per_second: Option<Rate>,
    pub messages_per_connection: Option<u32>,
    pub connection_rate: Option<Rate>,
    pub tls: TlsPolicy,
}

/// A compiled provider.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub mx_suffixes: Vec<String>,
    pub domains: Vec<String>,
    pub limits: Limits,
    pub rules: Vec<Rule>,
}

impl Provider {
    pub fn is_default(&self) -> bool {
        self.name == DEFAULT
    }
}

/// Why a providers file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProvidersError {
    #[error("{file}: {source}")]
    Parse { file: String, source: toml::de::Error },
    #[error("{file}: {problem}")]
    Invalid { file: String, problem: String },
}

/// Every provider, with look-ups by domain and by MX host.
#[derive(Debug)]
pub struct Providers {
    list: Vec<Arc<Provider>>,
    by_domain: HashMap<String, usize>,
    by_suffix: HashMap<String, usize>,
    default: usize,
}

fn normalize(name: &str) -> String {
    name.trim().trim_start_matches('.').trim_end_matches('.').to_ascii_lowercase()
}

fn merge(base: &mut ProviderSpec, over: ProviderSpec) {
    if over.replace {
        *base = over;
        return;
    }
    if !over.mx_suffixes.is_empty() {
        base.mx_suffixes = over.mx_suffixes;
    }
    if !over.domains.is_empty() {
        base.domains = over.domains;
    }
    base.max_connections = over.max_connections.or(base.max_connections);
    base.messages_per_second = over.messages_per_second.or(base.messages_per_second);
    base.messages_per_connection = over.messages_per_connection.or(base.messages_per_connection);
    base.connection_rate = over.connection_rate.or(base.connection_rate);
    base.tls = over.tls.or(base.tls);
    for rule in over.rules {
        base.rules.retain(|r| r.name != rule.name);
        base.rules.push(rule);
    }
}

impl Providers {
    /// The shipped file, extended or replaced by the operator's (`(name, text)`).
    pub fn load(shipped: &str, operator: Option<(&str, &str)>) -> Result<Providers, ProvidersError> {
        let parse = |file: &str, text: &str| {
            toml::from_str::<ProvidersFile>(text)
                .map_err(|source| ProvidersError::Parse { file: file.to_owned(), source })
        };
        let mut merged = parse("shipped providers.toml", shipped)?.providers;
        let mut file = "shipped providers.toml".to_owned();
        if let Some((name, text)) = operator {
            let own = parse(name, text)?;
            file = name.to_owned();
            if own.replace_shipped {
                merged.clear();
            }
            for (name, spec) in own.providers {
                match merged.get_mut(&name) {
                    Some(base) => merge(base, spec),
                    None => {
                        merged.insert(name, spec);
                    }
                }
            }
        }
        Providers::compile(merged).map_err(|problem| ProvidersError::Invalid { file, problem })
    }

    fn compile(specs: BTreeMap<String, ProviderSpec>) -> Result<Providers, String> {
        let mut list = Vec::new();
        let (mut by_domain, mut by_suffix) = (HashMap::new(), HashMap::new());
        for (name, spec) in specs {
            if name.is_empty()
                || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(format!("provider name `{name}`: use lower-case letters, digits, - and _"));
            }
            if name == DEFAULT && !(spec.mx_suffixes.is_empty() && spec.domains.is_empty()) {
                return Err(
                    "provider `default` takes the domains no other provider matches: it has no mx_suffixes or domains"
                        .into(),
                );
            }
            if name != DEFAULT && spec.mx_suffixes.is_empty() && spec.domains.is_empty() {
                return Err(format!("provider {name}: give mx_suffixes or domains (or both)"));
            }
            for (what, n) in
                [("max_connections", spec.max_connections), ("messages_per_connection", spec.messages_per_connection)]
            {
                if n == Some(0) {
                    return Err(format!("provider {name}: {what} must be at least 1 (leave it out for no limit)"));
                }
            }
            let mut rules: Vec<Rule> = Vec::new();
            for r in &spec.rules {
                if rules.iter().any(|x| x.name == r.name) {
                    return Err(format!("provider {name}: two rules named {}", r.name));
                }
                rules.push(Rule::compile(r).map_err(|e| format!("provider {name}: {e}"))?);
            }
            let index = list.len();
            let domains: Vec<String> = spec.domains.iter().map(|d| normalize(d)).collect();
            let suffixes: Vec<String> = spec.mx_suffixes.iter().map(|d| normalize(d)).collect();
            for d in &domains {
                if let Some(other) = by_domain.insert(d.clone(), index) {
                    return Err(format!(
                        "domain {d} is listed by two providers ({} and {name})",
                        list_name(&list, other)
                    ));
                }
            }
            for s in &suffixes {
                if s.is_empty() {
                    return Err(format!("provider {name}: an empty mx_suffix would match every host"));
                }
                if let Some(other) = by_suffix.insert(s.clone(), index) {
                    return Err(format!(
                        "MX suffix {s} is listed by two providers ({} and {name})",
                        list_name(&list, other)
                    ));
                }
            }
            list.push(Arc::new(Provider {
                name: name.clone(),
                mx_suffixes: suffixes,
                domains,
                limits: Limits {
                    max_connections: spec.max_connections,
                    messages_per_second: spec.messages_per_second,
                    messages_per_connection: spec.messages_per_connection,
                    connection_rate: spec.connection_rate,
                    tls: spec.tls.unwrap_or_default(),
                },
                rules,
            }));
        }
        let default = match list.iter().position(|p| p.name == DEFAULT) {
            Some(i) => i,
            None => {
                list.push(Arc::new(Provider {
                    name: DEFAULT.into(),
                    mx_suffixes: vec![],
                    domains: vec![],
                    limits: Limits::default(),
                    rules: vec![],
                }));
                list.len() - 1
            }
        };
        Ok(Providers { list, by_domain, by_suffix, default })
    }

    /// No providers but an unlimited `default` (what "no providers file" means).
    pub fn none() -> Providers {
        Providers::compile(BTreeMap::new()).expect("an empty file is valid")
    }

    pub fn all(&self) -> &[Arc<Provider>] {
        &self.list
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.list.iter().find(|p| p.name == name)
    }

    pub fn default_provider(&self) -> &Arc<Provider> {
        &self.list[self.default]
    }

    /// The provider whose MX suffix `host` ends with (the longest suffix wins).
    fn by_host(&self, host: &str) -> Option<usize> {
        let host = normalize(host);
        let mut rest = host.as_str();
        loop {
            if let Some(i) = self.by_suffix.get(rest) {
                return Some(*i);
            }
            rest = rest.split_once('.')?.1;
        }
    }

    /// The provider of `domain`, given its MX hosts when they are known (`None`: the MX
    /// look-up failed, or the domain has no MX; only `domains` then decide).
    pub fn classify(&self, domain: &str, mx_hosts: Option<&[String]>) -> &Arc<Provider> {
        if let Some(i) = self.by_domain.get(&normalize(domain)) {
            return &self.list[*i];
        }
        if let Some(hosts) = mx_hosts.filter(|h| !h.is_empty()) {
            let first = self.by_host(&hosts[0]);
            if let Some(i) = first {
                if hosts[1..].iter().all(|h| self.by_host(h) == first) {
                    return &self.list[i];
                }
            }
        }
        &self.list[self.default]
    }
}

fn list_name(list: &[Arc<Provider>], i: usize) -> &str {
    list.get(i).map(|p| p.name.as_str()).unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [providers.default]
        max_connections = 10

        [providers.google]
        mx_suffixes = [".google.com", ".googlemail.com"]
        domains = ["gmail.com"]
        max_connections = 5
        messages_per_second = "20/s"
        tls = "required"
        [[providers.google.rules]]
        name = "rate"
        code = 421
        enhanced = "4.7.28"
        action = "throttle"
        factor = 0.5
        duration = "30m"

        [providers.yahoo]
        mx_suffixes = [".yahoodns.net"]
    "#;

    fn hosts(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn matching_by_domain_and_by_every_mx() {
        let p = Providers::load(FILE, None).unwrap();
        assert_eq!(p.classify("Gmail.com", None).name, "google");
        let workspace = hosts(&["aspmx.l.google.com.", "alt1.aspmx.l.google.com", "aspmx2.googlemail.com"]);
        assert_eq!(p.classify("customer.example", Some(&workspace)).name, "google");
        let mixed = hosts(&["aspmx.l.google.com", "mx.backup.example"]);
        assert_eq!(p.classify("customer.example", Some(&mixed)).name, "default");
        let two = hosts(&["aspmx.l.google.com", "mta5.am0.yahoodns.net"]);
        assert_eq!(p.classify("odd.example", Some(&two)).name, "default", "all MX hosts must be one provider's");
        assert_eq!(p.classify("y.example", Some(&hosts(&["mta6.am0.yahoodns.net"]))).name, "yahoo");
        assert_eq!(p.classify("notgoogle.example", Some(&hosts(&["mx.evilgoogle.com"]))).name, "default");
        assert_eq!(p.classify("x.example", Some(&[])).name, "default");
        let g = p.get("google").unwrap();
        assert_eq!(g.limits.tls, TlsPolicy::Required);
        assert_eq!(g.limits.messages_per_second, Some(Rate { messages: 20, per_secs: 1 }));
        assert_eq!(g.rules.len(), 1);
    }

    #[test]
    fn operator_file_extends_or_replaces() {
        let own = r#"
            [providers.google]
            max_connections = 2
            [[providers.google.rules]]
            name = "rate"
            code = 421
            action = "suspend"
            duration = "1h"
            [[providers.google.rules]]
            name = "blocked"
            text = "blocked"
            action = "suspend"
            duration = "2h"
            [providers.yahoo]
            replace = true
            domains = ["yahoo.test"]
            [providers.corp]
            domains = ["corp.test"]
            messages_per_second = 1
        "#;
        let p = Providers::load(FILE, Some(("own.toml", own))).unwrap();
        let g = p.get("google").unwrap();
        assert_eq!(g.limits.max_connections, Some(2));
        assert_eq!(g.limits.messages_per_second.unwrap().messages, 20, "kept from the shipped file");
        assert_eq!(g.rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), vec!["rate", "blocked"]);
        assert_eq!(g.rules[0].action, herald_schemas::ThrottleAction::Suspend, "same name replaces");
        let y = p.get("yahoo").unwrap();
        assert!(y.mx_suffixes.is_empty(), "replace starts afresh");
        assert_eq!(p.classify("corp.test", None).name, "corp");
        let replaced = Providers::load(FILE, Some(("own.toml", "replace_shipped = true\n"))).unwrap();
        assert_eq!(replaced.all().len(), 1);
        assert_eq!(replaced.default_provider().limits, Limits::default());
    }

    #[test]
    fn bad_files_are_refused_with_the_file_named() {
        for (bad, needle) in [
            ("[providers.g]\nmx_suffixes = [\"a.com\"]\nmax_conections = 1\n", "max_conections"),
            ("[providers.G]\ndomains = [\"a.test\"]\n", "lower-case"),
            ("[providers.g]\nmax_connections = 1\n", "mx_suffixes or domains"),
            ("[providers.a]\ndomains = [\"x.test\"]\n[providers.b]\ndomains = [\"X.test\"]\n", "two providers"),
            ("[providers.a]\nmx_suffixes = [\".m.test\"]\n[providers.b]\nmx_suffixes = [\"m.test\"]\n", "two providers"),
            ("[providers.default]\ndomains = [\"x.test\"]\n", "default"),
            ("[providers.g]\ndomains = [\"a.test\"]\nmax_connections = 0\n", "at least 1"),
            ("[providers.g]\ndomains = [\"a.test\"]\nmessages_per_second = \"fast\"\n", "not a rate"),
            ("[providers.g]\ndomains = [\"a.test\"]\n[[providers.g.rules]]\nname = \"r\"\ncode = 421\naction = \"suspend\"\nduration = \"1h\"\n[[providers.g.rules]]\nname = \"r\"\ncode = 451\naction = \"suspend\"\nduration = \"1h\"\n", "two rules"),
        ] {
            let err = Providers::load("", Some(("own.toml", bad))).unwrap_err().to_string();
            assert!(err.contains("own.toml") && err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn the_shipped_file_loads() {
        let p = Providers::load(SHIPPED, None).unwrap();
        for name in ["default", "google", "outlook", "office365", "yahoo", "apple"] {
            assert!(p.get(name).is_some(), "shipped file lacks {name}");
        }
        for provider in p.all() {
            assert!(
                !provider.is_default() || provider.limits.messages_per_second.is_none(),
                "default is not rate limited"
            );
        }
        let gmail_421 = herald_schemas::SmtpReply {
            code: 421,
            enhanced: Some("4.7.28".into()),
            text: "[192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address.".into(),
        };
        assert!(p.get("google").unwrap().rules.iter().any(|r| r.matches(&gmail_421)));
        let yahoo = herald_schemas::SmtpReply {
            code: 421,
            enhanced: Some("4.7.0".into()),
            text: "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints"
                .into(),
        };
        assert!(p.get("yahoo").unwrap().rules.iter().any(|r| r.matches(&yahoo)));
        let microsoft = herald_schemas::SmtpReply {
            code: 451,
            enhanced: Some("4.7.650".into()),
            text: "The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.".into(),
        };
        assert!(p.get("outlook").unwrap().rules.iter().any(|r| r.matches(&microsoft)));
    }
}

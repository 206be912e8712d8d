//! Verification: every record the customer publishes, resolved through the configured
//! resolvers, each with a result and the sentence an operator would say after `dig`.

use super::lookup::{self, Found};
use super::records::{selectors, ServiceZone};
use super::spf;
use super::state::DomainState;
use herald_schemas::{CheckResult, RecordCheck};
use hickory_resolver::TokioResolver;

fn check(record: &str, name: &str, required: bool, expected: String) -> RecordCheck {
    RecordCheck {
        record: record.into(),
        name: name.into(),
        result: CheckResult::Ok,
        required,
        expected,
        found: vec![],
        message: String::new(),
    }
}

fn finish(mut c: RecordCheck, result: CheckResult, message: String) -> RecordCheck {
    c.result = result;
    c.message = message;
    c
}

fn unreachable(c: RecordCheck, why: &str) -> RecordCheck {
    let m = format!(
        "could not look up {} (DNS timeout or server failure: {why}); nothing can be said about it yet",
        c.name
    );
    finish(c, CheckResult::Unreachable, m)
}

/// Runs every check for `s`.
pub async fn verify(r: &TokioResolver, zone: &ServiceZone, s: &DomainState) -> Vec<RecordCheck> {
    let mut out = vec![];
    for (sel, slot) in selectors(s) {
        out.push(dkim(r, zone, s, &sel, slot).await);
    }
    out.push(spf_check(r, zone, s).await);
    out.push(dmarc(r, s).await);
    out.push(cname_check(r, "bounce", &s.bounce_domain(), &zone.bounce_target(&s.token), "bounce (return-path)").await);
    out.push(cname_check(r, "tracking", &s.tracking_domain(), &zone.tracking_target(&s.token), "tracking").await);
    if let Some(logo) = &s.bimi_logo {
        out.push(bimi(r, s, logo).await);
    }
    out
}

async fn dkim(r: &TokioResolver, zone: &ServiceZone, s: &DomainState, sel: &str, slot: u8) -> RecordCheck {
    let name = format!("{sel}._domainkey.{}", s.domain);
    let expected = zone.dkim_target(&s.token, sel);
    let mut c = check("dkim", &name, true, format!("{name}. CNAME {expected}."));
    let active = crate::domains::keys::selector(
        s.signing_keys().first().map(|k| k.algorithm).unwrap_or(herald_schemas::KeyAlgorithm::RsaSha256),
        s.active_slot,
    );
    match lookup::cname(r, &name).await {
        Found::Failed(e) => unreachable(c, &e),
        Found::Records(targets) => {
            c.found = targets.clone();
            let target = &targets[0];
            if *target == expected {
                let role = if slot == s.active_slot {
                    "the active selector, signing now"
                } else {
                    "the idle slot for the next key"
                };
                let m = format!("{name} points to {expected} ({role})");
                finish(c, CheckResult::Ok, m)
            } else if let Some(other) =
                selectors(s).iter().map(|(x, _)| x).find(|x| *target == zone.dkim_target(&s.token, x))
            {
                let m = format!(
                    "DKIM CNAME {name} points to `{other}.{}…` but must point to `{sel}.…` (the active selector is `{active}`): the selector names must match",
                    s.token
                );
                finish(c, CheckResult::WrongValue, m)
            } else {
                let m = format!("DKIM CNAME {name} points to `{target}` but must point to `{expected}`");
                finish(c, CheckResult::WrongValue, m)
            }
        }
        Found::Nothing => match lookup::txt(r, &name).await {
            Found::Records(txt) => {
                c.found = txt;
                let m = format!(
                    "{name} has a TXT record instead of the CNAME: remove it and add the CNAME, so Herald can rotate the key without you"
                );
                finish(c, CheckResult::Conflict, m)
            }
            Found::Failed(e) => unreachable(c, &e),
            Found::Nothing => {
                let m = format!("no CNAME at {name}: add `{name}. CNAME {expected}.`");
                finish(c, CheckResult::Missing, m)
            }
        },
    }
}

async fn spf_check(r: &TokioResolver, zone: &ServiceZone, s: &DomainState) -> RecordCheck {
    let include = zone.spf_include();
    let mut c = check("spf", &s.domain, true, format!("v=spf1 include:{include} ~all"));
    let txts = match lookup::txt(r, &s.domain).await {
        Found::Failed(e) => return unreachable(c, &e),
        found => found.records().to_vec(),
    };
    let spfs: Vec<&str> = txts.iter().map(String::as_str).filter(|t| spf::is_spf(t)).collect();
    c.found = spfs.iter().map(|x| x.to_string()).collect();
    let merged = spf::merge(&spfs, &include);
    match spfs.len() {
        0 => {
            let m = format!("no SPF record at {}: publish `v=spf1 include:{include} ~all`", s.domain);
            finish(c, CheckResult::Missing, m)
        }
        1 => {
            let record = spfs[0];
            if let Some((_, false)) = spf::all_position(record) {
                let all = spf::terms(record).into_iter().find(|t| spf::is_all(t)).unwrap_or("all").to_owned();
                let m = format!("`{all}` is not the last term of the SPF record: receivers stop at it and never see what follows; use `{merged}`");
                finish(c, CheckResult::WrongValue, m)
            } else if spf::terms(record).iter().any(|t| t.eq_ignore_ascii_case("+all") || t.eq_ignore_ascii_case("all"))
            {
                let m =
                    "the SPF record ends in `+all`: anyone may send as this domain; use `~all` or `-all`".to_owned();
                finish(c, CheckResult::WrongValue, m)
            } else if !spf::includes(record, &include) {
                let m = format!("the SPF record does not include {include}, so Herald's IPs are not authorized; change it to `{merged}`");
                finish(c, CheckResult::WrongValue, m)
            } else {
                finish(c, CheckResult::Ok, format!("one SPF record, includes {include}, `all` last"))
            }
        }
        n => {
            let count = if n == 2 { "two".to_owned() } else { n.to_string() };
            let m = format!(
                "{count} SPF records found: a domain may have only one (receivers fail SPF with a permanent error); merge them into `{merged}`"
            );
            finish(c, CheckResult::Conflict, m)
        }
    }
}

/// `tag=value` pairs of a DMARC (or BIMI) record, tags lower-cased.
pub fn tags(record: &str) -> Vec<(String, String)> {
    record
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

pub fn is_dmarc(txt: &str) -> bool {
    tags(txt).first().is_some_and(|(k, v)| k == "v" && v.eq_ignore_ascii_case("DMARC1"))
}

async fn dmarc(r: &TokioResolver, s: &DomainState) -> RecordCheck {
    let name = format!("_dmarc.{}", s.domain);
    let rua = s.dmarc_rua.as_deref().map(|x| format!(" rua={x};")).unwrap_or_default();
    let mut c = check("dmarc", &name, true, format!("v=DMARC1; p=none;{rua}"));
    let txts = match lookup::txt(r, &name).await {
        Found::Failed(e) => return unreachable(c, &e),
        found => found.records().to_vec(),
    };
    let records: Vec<&String> = txts.iter().filter(|t| is_dmarc(t)).collect();
    c.found = records.iter().map(|x| x.to_string()).collect();
    match records.len() {
        0 => {
            let m = format!("no DMARC record at {name}: publish `v=DMARC1; p=none;{rua}` and read the reports");
            finish(c, CheckResult::Missing, m)
        }
        1 => {
            let policy = tags(records[0]).into_iter().find(|(k, _)| k == "p").map(|(_, v)| v.to_ascii_lowercase());
            match policy.as_deref() {
                Some("none") => finish(
                    c,
                    CheckResult::Ok,
                    "DMARC policy is p=none: fine to start, not recommended once reports are clean; then move to p=quarantine and p=reject".into(),
                ),
                Some(p @ ("quarantine" | "reject")) => finish(c, CheckResult::Ok, format!("DMARC policy is p={p}")),
                Some(other) => finish(c, CheckResult::WrongValue, format!("DMARC policy p={other} is not none, quarantine or reject")),
                None => finish(c, CheckResult::WrongValue, "the DMARC record has no p= tag: receivers ignore it".into()),
            }
        }
        _ => {
            let m = format!("{} DMARC records at {name}: receivers ignore all of them; keep one", records.len());
            finish(c, CheckResult::Conflict, m)
        }
    }
}

async fn cname_check(r: &TokioResolver, record: &str, name: &str, expected: &str, what: &str) -> RecordCheck {
    let mut c = check(record, name, false, format!("{name}. CNAME {expected}."));
    match lookup::cname(r, name).await {
        Found::Failed(e) => unreachable(c, &e),
        Found::Records(targets) => {
            c.found = targets.clone();
            if targets[0] == expected {
                finish(c, CheckResult::Ok, format!("{what} CNAME {name} points to {expected}"))
            } else {
                let m = format!("{what} CNAME {name} points to `{}` but must point to `{expected}`", targets[0]);
                finish(c, CheckResult::WrongValue, m)
            }
        }
        Found::Nothing => match lookup::addresses(r, name).await {
            Found::Records(ips) => {
                c.found = ips.iter().map(|ip| ip.to_string()).collect();
                let m = format!(
                    "{name} has address records instead of the {what} CNAME: replace them with `CNAME {expected}.`"
                );
                finish(c, CheckResult::Conflict, m)
            }
            _ => {
                let m = format!("no CNAME at {name}: add `{name}. CNAME {expected}.`");
                finish(c, CheckResult::Missing, m)
            }
        },
    }
}

async fn bimi(r: &TokioResolver, s: &DomainState, logo: &str) -> RecordCheck {
    let name = format!("default._bimi.{}", s.domain);
    let mut c = check("bimi", &name, false, format!("v=BIMI1; l={logo};"));
    match lookup::txt(r, &name).await {
        Found::Failed(e) => unreachable(c, &e),
        Found::Nothing => {
            let m = format!("no BIMI record at {name} (optional)");
            finish(c, CheckResult::Missing, m)
        }
        Found::Records(txts) => {
            c.found = txts.clone();
            if txts.iter().any(|t| tags(t).iter().any(|(k, v)| k == "l" && v == logo)) {
                finish(c, CheckResult::Ok, format!("BIMI record points to {logo}"))
            } else {
                finish(c, CheckResult::WrongValue, format!("the BIMI record at {name} does not point to {logo}"))
            }
        }
    }
}

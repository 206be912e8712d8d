//! Diagnostics: the checks an operator runs by hand with dig, for one sender domain.
//! SPF (one record, `all` last, includes Herald, at most 10 look-ups counted recursively),
//! DKIM (found by following the customer's CNAME, `p=` non-empty, equal to the active key),
//! DMARC (present, policy, alignment), MX, and forward-confirmed reverse DNS of each
//! sending IP. Names inside Herald's zone are asked of Herald's own server.

use super::lookup::{self, Found};
use super::records::ServiceZone;
use super::state::DomainState;
use super::{spf, verify};
use herald_schemas::{CheckResult, RecordCheck};
use hickory_resolver::TokioResolver;
use std::net::IpAddr;

/// Resolvers for a diagnosis: `general` for the customer's names, `own` for Herald's zone.
pub struct Resolvers<'a> {
    pub general: &'a TokioResolver,
    pub own: &'a TokioResolver,
}

impl Resolvers<'_> {
    fn for_name<'b>(&'b self, zone: &ServiceZone, name: &str) -> &'b TokioResolver {
        if zone.contains(name) {
            self.own
        } else {
            self.general
        }
    }

    /// TXT at `name`, following one CNAME (into Herald's zone or elsewhere).
    async fn txt_following(&self, zone: &ServiceZone, name: &str) -> (Option<String>, Found<String>) {
        match lookup::cname(self.general, name).await {
            Found::Records(t) => {
                let target = t[0].clone();
                let found = lookup::txt(self.for_name(zone, &target), &target).await;
                (Some(target), found)
            }
            Found::Failed(e) => (None, Found::Failed(e)),
            Found::Nothing => (None, lookup::txt(self.general, name).await),
        }
    }
}

fn row(record: &str, name: &str, result: CheckResult, found: Vec<String>, message: String) -> RecordCheck {
    RecordCheck {
        record: record.into(),
        name: name.into(),
        result,
        required: true,
        expected: String::new(),
        found,
        message,
    }
}

/// Every diagnostic for `s`.
pub async fn diagnose(
    r: &Resolvers<'_>,
    zone: &ServiceZone,
    s: &DomainState,
    sending_ips: &[IpAddr],
) -> Vec<RecordCheck> {
    let mut out = vec![];
    out.extend(spf_lookups(r, zone, s).await);
    out.push(dkim_key(r, zone, s).await);
    out.push(dmarc_alignment(r, s).await);
    out.extend(mx(r, zone, s).await);
    for ip in sending_ips {
        out.push(fcrdns(r.general, *ip).await);
    }
    out
}

async fn spf_lookups(r: &Resolvers<'_>, zone: &ServiceZone, s: &DomainState) -> Vec<RecordCheck> {
    // The verification's SPF check covers "exactly one, all last, includes Herald".
    let checks = verify::verify(r.general, zone, s).await;
    let mut out: Vec<RecordCheck> = checks.into_iter().filter(|c| c.record == "spf").collect();
    let Some(spf_row) = out.first() else { return out };
    if spf_row.found.len() != 1 {
        return out;
    }
    let record = spf_row.found[0].clone();
    let mut total = 0u32;
    let mut queue = vec![record];
    let mut seen = std::collections::HashSet::new();
    let mut trouble = None;
    while let Some(rec) = queue.pop() {
        let (n, follow) = spf::lookups(&rec);
        total += n;
        if total > 10 || seen.len() > 20 {
            break;
        }
        for target in follow {
            if !seen.insert(target.clone()) {
                continue;
            }
            match lookup::txt(r.for_name(zone, &target), &target).await {
                Found::Records(txts) => queue.extend(txts.into_iter().filter(|t| spf::is_spf(t))),
                Found::Nothing => {
                    trouble = Some(format!("{target} has no SPF record (a permanent error for receivers)"))
                }
                Found::Failed(e) => trouble = Some(format!("could not look up {target}: {e}")),
            }
        }
    }
    let (result, message) = match (total, trouble) {
        (n, _) if n > 10 => (CheckResult::WrongValue, format!("SPF needs more than 10 DNS look-ups ({n} counted): receivers fail it with a permanent error; flatten some includes")),
        (n, Some(t)) => (CheckResult::WrongValue, format!("{n} DNS look-ups counted, but {t}")),
        (n, None) => (CheckResult::Ok, format!("SPF needs {n} DNS look-ups (at most 10 allowed)")),
    };
    out.push(row("spf_lookups", &s.domain, result, vec![], message));
    out
}

async fn dkim_key(r: &Resolvers<'_>, zone: &ServiceZone, s: &DomainState) -> RecordCheck {
    let Some(key) = s.signing_keys().first() else {
        return row("dkim_key", &s.domain, CheckResult::Missing, vec![], "no active key".into());
    };
    let name = format!("{}._domainkey.{}", key.selector, s.domain);
    let (via, found) = r.txt_following(zone, &name).await;
    let via = via.map(|t| format!(" (through CNAME {t})")).unwrap_or_default();
    match found {
        Found::Failed(e) => {
            row("dkim_key", &name, CheckResult::Unreachable, vec![], format!("could not look up {name}{via}: {e}"))
        }
        Found::Nothing => {
            row("dkim_key", &name, CheckResult::Missing, vec![], format!("no DKIM key record at {name}{via}"))
        }
        Found::Records(txts) => {
            let p = txts.iter().flat_map(|t| verify::tags(t)).find(|(k, _)| k == "p").map(|(_, v)| v.replace(' ', ""));
            match p.filter(|x| !x.is_empty()) {
                None => row(
                    "dkim_key",
                    &name,
                    CheckResult::WrongValue,
                    txts,
                    format!("the DKIM record at {name}{via} has an empty p=: the key is revoked"),
                ),
                Some(p) if p == key.public_key => row(
                    "dkim_key",
                    &name,
                    CheckResult::Ok,
                    vec![],
                    format!("{name}{via} publishes the active {} key", key.algorithm.dns_k()),
                ),
                Some(_) => row(
                    "dkim_key",
                    &name,
                    CheckResult::WrongValue,
                    txts,
                    format!("{name}{via} publishes a key that is not the active one: signatures will fail"),
                ),
            }
        }
    }
}

async fn dmarc_alignment(r: &Resolvers<'_>, s: &DomainState) -> RecordCheck {
    let name = format!("_dmarc.{}", s.domain);
    match lookup::txt(r.general, &name).await {
        Found::Failed(e) => {
            row("dmarc_alignment", &name, CheckResult::Unreachable, vec![], format!("could not look up {name}: {e}"))
        }
        Found::Nothing => {
            row("dmarc_alignment", &name, CheckResult::Missing, vec![], format!("no DMARC record at {name}"))
        }
        Found::Records(txts) => {
            let Some(record) = txts.iter().find(|t| verify::is_dmarc(t)) else {
                return row("dmarc_alignment", &name, CheckResult::Missing, txts, format!("no DMARC record at {name}"));
            };
            let t = verify::tags(record);
            let get = |k: &str| t.iter().find(|(x, _)| x == k).map(|(_, v)| v.to_ascii_lowercase());
            let policy = get("p").unwrap_or_else(|| "(none given)".into());
            let aspf_strict = get("aspf").as_deref() == Some("s");
            let dkim = format!("DKIM aligned: d={} equals the From domain", s.domain);
            let spf = if aspf_strict {
                format!(
                    "SPF not aligned: aspf=s, but the return path is {}; DKIM alone carries DMARC",
                    s.bounce_domain()
                )
            } else {
                format!("SPF aligned (relaxed) through the return path {}", s.bounce_domain())
            };
            row(
                "dmarc_alignment",
                &name,
                CheckResult::Ok,
                vec![record.clone()],
                format!("policy p={policy}; {dkim}; {spf}"),
            )
        }
    }
}

async fn mx(r: &Resolvers<'_>, zone: &ServiceZone, s: &DomainState) -> Vec<RecordCheck> {
    let mut out = vec![];
    let found = lookup::mx(r.general, &s.domain).await;
    out.push(match found {
        Found::Records(m) => row(
            "mx",
            &s.domain,
            CheckResult::Ok,
            m.iter().map(|(p, h)| format!("{p} {h}")).collect(),
            format!("{} receives mail (replies and DMARC reports can arrive)", s.domain),
        ),
        Found::Nothing => row(
            "mx",
            &s.domain,
            CheckResult::Missing,
            vec![],
            format!("{} has no MX: replies to your messages cannot be delivered", s.domain),
        ),
        Found::Failed(e) => row(
            "mx",
            &s.domain,
            CheckResult::Unreachable,
            vec![],
            format!("could not look up the MX of {}: {e}", s.domain),
        ),
    });
    let bounce = s.bounce_domain();
    let target = zone.bounce_target(&s.token);
    let found = match lookup::cname(r.general, &bounce).await {
        Found::Records(t) if t[0] == target => lookup::mx(r.own, &target).await,
        Found::Records(t) => Found::Failed(format!("{bounce} points to {} instead of {target}", t[0])),
        Found::Nothing => lookup::mx(r.general, &bounce).await,
        Found::Failed(e) => Found::Failed(e),
    };
    out.push(match found {
        Found::Records(m) => row(
            "bounce_mx",
            &bounce,
            CheckResult::Ok,
            m.iter().map(|(p, h)| format!("{p} {h}")).collect(),
            format!("bounces to {bounce} reach {}", zone.mx_host()),
        ),
        Found::Nothing => {
            row("bounce_mx", &bounce, CheckResult::Missing, vec![], format!("{bounce} has no MX: bounces are lost"))
        }
        Found::Failed(e) => row("bounce_mx", &bounce, CheckResult::Unreachable, vec![], e),
    });
    out
}

async fn fcrdns(r: &TokioResolver, ip: IpAddr) -> RecordCheck {
    let name = lookup::reverse_name(ip);
    match lookup::ptr(r, ip).await {
        Found::Failed(e) => {
            row("ptr", &name, CheckResult::Unreachable, vec![], format!("could not look up the PTR of {ip}: {e}"))
        }
        Found::Nothing => row(
            "ptr",
            &name,
            CheckResult::Missing,
            vec![],
            format!("{ip} has no PTR record: many receivers refuse mail from it"),
        ),
        Found::Records(names) => {
            for host in &names {
                if let Found::Records(ips) = lookup::addresses(r, host).await {
                    if ips.contains(&ip) {
                        return row(
                            "ptr",
                            &name,
                            CheckResult::Ok,
                            names.clone(),
                            format!("{ip} → {host} → {ip}: forward-confirmed reverse DNS"),
                        );
                    }
                }
            }
            let m = format!(
                "{ip} has PTR {} but that name does not resolve back to {ip}: not forward-confirmed",
                names.join(", ")
            );
            row("ptr", &name, CheckResult::WrongValue, names, m)
        }
    }
}

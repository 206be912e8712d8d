//! The records a customer publishes for a sender domain, as JSON rows and as a BIND zone
//! snippet, and the names they point to inside Herald's zone.

use super::keys::selector;
use super::spf;
use super::state::DomainState;
use herald_schemas::{CheckResult, KeyAlgorithm};
use serde::Serialize;

/// Names inside Herald's service zone (`[dns] zone`).
#[derive(Debug, Clone)]
pub struct ServiceZone {
    /// Lower-case, no trailing dot.
    pub zone: String,
}

impl ServiceZone {
    pub fn new(zone: &str) -> Self {
        ServiceZone { zone: zone.trim().trim_end_matches('.').to_ascii_lowercase() }
    }

    /// Where `<selector>._domainkey.<domain>` points: `<selector>.<token>.dkim.<zone>`.
    pub fn dkim_target(&self, token: &str, selector: &str) -> String {
        format!("{selector}.{token}.dkim.{}", self.zone)
    }

    /// Where the bounce domain points; Herald serves its MX and SPF.
    pub fn bounce_target(&self, token: &str) -> String {
        format!("{token}.bounce.{}", self.zone)
    }

    /// Where the tracking domain points; Herald serves its A/AAAA.
    pub fn tracking_target(&self, token: &str) -> String {
        format!("{token}.track.{}", self.zone)
    }

    /// The SPF record customers include, listing the sending IPs.
    pub fn spf_include(&self) -> String {
        format!("_spf.{}", self.zone)
    }

    /// The MX host of every bounce domain.
    pub fn mx_host(&self) -> String {
        format!("mx.{}", self.zone)
    }

    pub fn contains(&self, name: &str) -> bool {
        let n = name.trim_end_matches('.').to_ascii_lowercase();
        n == self.zone || n.ends_with(&format!(".{}", self.zone))
    }
}

/// One record to publish.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CustomerRecord {
    /// `dkim`, `bounce`, `tracking`, `spf`, `dmarc`, `bimi`.
    pub purpose: &'static str,
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: &'static str,
    pub value: String,
    pub required: bool,
    /// Advice, e.g. how to merge with an SPF record already published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The DKIM selectors a domain's customer must point at Herald: both slots of each
/// algorithm in use.
pub fn selectors(state: &DomainState) -> Vec<(String, u8)> {
    let mut out = vec![];
    for alg in [KeyAlgorithm::RsaSha256, KeyAlgorithm::Ed25519Sha256] {
        if alg == KeyAlgorithm::RsaSha256 || state.published().any(|(_, k)| k.algorithm == alg) {
            for slot in [1, 2] {
                out.push((selector(alg, slot), slot));
            }
        }
    }
    out
}

/// Every record for `state`. The SPF row merges with the SPF record(s) found by the last
/// verification, if any.
pub fn records(state: &DomainState, zone: &ServiceZone) -> Vec<CustomerRecord> {
    let d = &state.domain;
    let mut out = vec![];
    for (sel, slot) in selectors(state) {
        let active = slot == state.active_slot;
        out.push(CustomerRecord {
            purpose: "dkim",
            name: format!("{sel}._domainkey.{d}"),
            rtype: "CNAME",
            value: format!("{}.", zone.dkim_target(&state.token, &sel)),
            required: true,
            note: Some(if active {
                format!("selector {sel} signs now; Herald rotates keys behind this CNAME, it never changes")
            } else {
                format!("selector {sel} is the slot the next key is published in; add it now so rotation needs nothing from you")
            }),
        });
    }
    out.push(CustomerRecord {
        purpose: "bounce",
        name: state.bounce_domain(),
        rtype: "CNAME",
        value: format!("{}.", zone.bounce_target(&state.token)),
        required: false,
        note: Some(
            "return path: Herald serves its MX and SPF, so bounces come back and SPF aligns with your From domain"
                .into(),
        ),
    });
    out.push(CustomerRecord {
        purpose: "tracking",
        name: state.tracking_domain(),
        rtype: "CNAME",
        value: format!("{}.", zone.tracking_target(&state.token)),
        required: false,
        note: Some("click and open tracking links use this name".into()),
    });
    let found: Vec<&str> = state
        .checks
        .iter()
        .filter(|c| c.record == "spf" && c.result != CheckResult::Missing)
        .flat_map(|c| c.found.iter().map(String::as_str))
        .filter(|t| spf::is_spf(t))
        .collect();
    let spf_value = spf::merge(&found, &zone.spf_include());
    let spf_note = match found.len() {
        0 => None,
        1 if spf::includes(found[0], &zone.spf_include()) => None,
        1 => Some(format!(
            "your domain already publishes `{}`: replace it with this single record (a domain may have only one SPF record; `all` stays last)",
            found[0]
        )),
        n => Some(format!("your domain publishes {n} SPF records: replace them all with this single one (a domain may have only one)")),
    };
    out.push(CustomerRecord {
        purpose: "spf",
        name: d.clone(),
        rtype: "TXT",
        value: spf_value,
        required: true,
        note: spf_note,
    });
    let rua = state.dmarc_rua.as_deref().map(|r| format!(" rua={r};")).unwrap_or_default();
    out.push(CustomerRecord {
        purpose: "dmarc",
        name: format!("_dmarc.{d}"),
        rtype: "TXT",
        value: format!("v=DMARC1; p=none;{rua}"),
        required: true,
        note: Some(
            "start with p=none and read the aggregate reports; once every source of your mail passes, move to p=quarantine, then p=reject"
                .into(),
        ),
    });
    if let Some(logo) = &state.bimi_logo {
        out.push(CustomerRecord {
            purpose: "bimi",
            name: format!("default._bimi.{d}"),
            rtype: "TXT",
            value: format!("v=BIMI1; l={logo};"),
            required: false,
            note: Some("mailbox providers show the logo only with DMARC at p=quarantine or p=reject".into()),
        });
    }
    out
}

/// The records as a BIND zone-file snippet (absolute names).
pub fn zone_snippet(state: &DomainState, records: &[CustomerRecord]) -> String {
    let mut out = format!("; Records for {} (sender domain at Herald)\n", state.domain);
    for r in records {
        if let Some(note) = &r.note {
            out.push_str(&format!("; {note}\n"));
        }
        let value = match r.rtype {
            "TXT" => format!("\"{}\"", r.value.replace('\\', "\\\\").replace('"', "\\\"")),
            _ => r.value.clone(),
        };
        out.push_str(&format!("{}.\t3600\tIN\t{}\t{}\n", r.name, r.rtype, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_schemas::*;

    fn state(ed25519: bool) -> DomainState {
        let key = |sel: &str, algorithm| DkimKey {
            selector: sel.into(),
            algorithm,
            public_key: "p".into(),
            key_file: format!("{sel}.pem"),
            created_at: Timestamp(0),
        };
        let mut keys = vec![key("hd1", KeyAlgorithm::RsaSha256)];
        if ed25519 {
            keys.push(key("he1", KeyAlgorithm::Ed25519Sha256));
        }
        let added = DomainEvent::Added(DomainAdded {
            account: AccountId("acme".into()),
            domain: "example.com".into(),
            token: "tok".into(),
            bounce_label: "bounce".into(),
            tracking_label: "www2".into(),
            dmarc_rua: Some("mailto:d@example.com".into()),
            bimi_logo: Some("https://example.com/logo.svg".into()),
            keys,
            request_id: "r".into(),
            added_at: Timestamp(0),
        });
        crate::domains::state::apply(None, &added, 0).unwrap()
    }

    #[test]
    fn both_slots_bounce_tracking_spf_dmarc_bimi() {
        let zone = ServiceZone::new("herald.example.net");
        let rows = records(&state(false), &zone);
        let names: Vec<(&str, &str)> = rows.iter().map(|r| (r.purpose, r.name.as_str())).collect();
        assert_eq!(
            names,
            vec![
                ("dkim", "hd1._domainkey.example.com"),
                ("dkim", "hd2._domainkey.example.com"),
                ("bounce", "bounce.example.com"),
                ("tracking", "www2.example.com"),
                ("spf", "example.com"),
                ("dmarc", "_dmarc.example.com"),
                ("bimi", "default._bimi.example.com"),
            ]
        );
        assert_eq!(rows[1].value, "hd2.tok.dkim.herald.example.net.");
        assert_eq!(rows[2].value, "tok.bounce.herald.example.net.");
        assert_eq!(rows[4].value, "v=spf1 include:_spf.herald.example.net ~all");
        assert!(rows[4].note.is_none());
        assert_eq!(rows[5].value, "v=DMARC1; p=none; rua=mailto:d@example.com;");
        let snippet = zone_snippet(&state(false), &rows);
        assert!(snippet.contains("hd1._domainkey.example.com.\t3600\tIN\tCNAME\thd1.tok.dkim.herald.example.net.\n"));
        assert!(snippet.contains("example.com.\t3600\tIN\tTXT\t\"v=spf1 include:_spf.herald.example.net ~all\"\n"));
        let with_ed = records(&state(true), &zone);
        assert_eq!(with_ed.iter().filter(|r| r.purpose == "dkim").count(), 4, "he1/he2 too");
    }

    #[test]
    fn spf_advice_merges_with_the_record_found() {
        let zone = ServiceZone::new("herald.example.net");
        let mut s = state(false);
        s.checks = vec![RecordCheck {
            record: "spf".into(),
            name: "example.com".into(),
            result: CheckResult::WrongValue,
            required: true,
            expected: String::new(),
            found: vec!["v=spf1 mx -all".into()],
            message: String::new(),
        }];
        let spf = records(&s, &zone).into_iter().find(|r| r.purpose == "spf").unwrap();
        assert_eq!(spf.value, "v=spf1 mx include:_spf.herald.example.net -all");
        assert!(spf.note.unwrap().contains("replace it with this single record"));
    }
}

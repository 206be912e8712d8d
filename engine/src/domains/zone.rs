//! Herald's service zone as data: built from the sender-domain projection and the
//! operator's settings, rebuilt whenever the projection changes. Pure (no sockets), so the
//! content is tested without a server; [`super::dns`] serves it.
//!
//! ```text
//! <zone>                         SOA, NS
//! _spf.<zone>                    TXT  v=spf1 ip4:… ip6:… -all        (sending IPs)
//! mx.<zone>                      A/AAAA                             (bounce MX)
//! <sel>.<token>.dkim.<zone>      TXT  v=DKIM1; k=rsa; p=…           (each published key)
//! <token>.bounce.<zone>          MX 10 mx.<zone>, TXT SPF           (return path)
//! <token>.track.<zone>           A/AAAA                             (tracking IPs)
//! ```

use super::records::ServiceZone;
use super::state::DomainState;
use hickory_server::proto::rr::rdata::{A, AAAA, MX, NS, SOA, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// What the operator configures about the zone (`[dns]`).
#[derive(Debug, Clone)]
pub struct ZoneSettings {
    pub zone: ServiceZone,
    /// NS names of the zone (default `ns1.<zone>`).
    pub nameservers: Vec<String>,
    /// Addresses served for in-zone name servers (`ns1.<zone>`), if any.
    pub nameserver_ips: Vec<IpAddr>,
    pub hostmaster: String,
    /// Addresses Herald sends from: listed in `_spf.<zone>`.
    pub sending_ips: Vec<IpAddr>,
    /// Addresses of the bounce MX `mx.<zone>`.
    pub mx_ips: Vec<IpAddr>,
    /// Addresses of the click/open tracking server.
    pub tracking_ips: Vec<IpAddr>,
    pub ttl: u32,
}

/// The answer to one question.
#[derive(Debug, PartialEq)]
pub enum Answer<'a> {
    Records(&'a [Record]),
    /// The name exists, without records of that type.
    NoData,
    NxDomain,
    /// Not in this zone.
    Refused,
}

/// The zone's records by (lower-case name, type), plus every existing name.
#[derive(Debug)]
pub struct ZoneData {
    origin: String,
    pub soa: Record,
    records: HashMap<(String, RecordType), Vec<Record>>,
    names: HashSet<String>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn fqdn(name: &str) -> Name {
    Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).unwrap_or_else(|_| Name::root())
}

/// Splits a TXT value into character-strings of at most 255 octets (RFC 1035 §3.3).
pub fn txt_strings(value: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = value;
    while rest.len() > 255 {
        let mut cut = 255;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(rest[..cut].to_owned());
        rest = &rest[cut..];
    }
    out.push(rest.to_owned());
    out
}

/// The SPF record of `_spf.<zone>`.
pub fn spf_record(ips: &[IpAddr]) -> String {
    let mut s = String::from("v=spf1");
    for ip in ips {
        match ip {
            IpAddr::V4(v4) => s.push_str(&format!(" ip4:{v4}")),
            IpAddr::V6(v6) => s.push_str(&format!(" ip6:{v6}")),
        }
    }
    s.push_str(" -all");
    s
}

/// `v=DKIM1; k=…; p=…` of a key.
pub fn dkim_record(key: &herald_schemas::DkimKey) -> String {
    format!("v=DKIM1; k={}; p={}", key.algorithm.dns_k(), key.public_key)
}

struct Builder {
    origin: String,
    ttl: u32,
    records: HashMap<(String, RecordType), Vec<Record>>,
    names: HashSet<String>,
}

impl Builder {
    fn add(&mut self, name: &str, rdata: RData) {
        let k = key(name);
        // Every ancestor up to the origin exists (empty non-terminals answer NODATA).
        let mut n = k.as_str();
        loop {
            self.names.insert(n.to_owned());
            if n == self.origin {
                break;
            }
            match n.split_once('.') {
                Some((_, parent)) if parent.len() >= self.origin.len() => n = parent,
                _ => break,
            }
        }
        let rtype = rdata.record_type();
        self.records.entry((k, rtype)).or_default().push(Record::from_rdata(fqdn(name), self.ttl, rdata));
    }

    fn addresses(&mut self, name: &str, ips: &[IpAddr]) {
        for ip in ips {
            match ip {
                IpAddr::V4(v4) => self.add(name, RData::A(A(*v4))),
                IpAddr::V6(v6) => self.add(name, RData::AAAA(AAAA(*v6))),
            }
        }
    }
}

/// Builds the zone from the live (not removed) domains. `serial` should grow with every
/// change (`dns::follow` uses the rebuild time in seconds).
pub fn build(settings: &ZoneSettings, domains: &[DomainState], serial: u32) -> ZoneData {
    let z = &settings.zone;
    let origin = z.zone.clone();
    let mut b = Builder { origin: origin.clone(), ttl: settings.ttl, records: HashMap::new(), names: HashSet::new() };
    let nameservers: Vec<String> =
        if settings.nameservers.is_empty() { vec![format!("ns1.{origin}")] } else { settings.nameservers.clone() };
    let soa = Record::from_rdata(
        fqdn(&origin),
        settings.ttl,
        RData::SOA(SOA::new(
            fqdn(&nameservers[0]),
            fqdn(&settings.hostmaster.replacen('@', ".", 1)),
            serial,
            3600,
            600,
            1_209_600,
            60,
        )),
    );
    b.add(&origin, soa.data.clone());
    for ns in &nameservers {
        b.add(&origin, RData::NS(NS(fqdn(ns))));
        if z.contains(ns) {
            b.addresses(ns, &settings.nameserver_ips);
        }
    }
    let spf = spf_record(&settings.sending_ips);
    b.add(&z.spf_include(), RData::TXT(TXT::new(txt_strings(&spf))));
    let mx_ips = if settings.mx_ips.is_empty() { &settings.sending_ips } else { &settings.mx_ips };
    b.addresses(&z.mx_host(), mx_ips);
    let bounce_spf = format!("v=spf1 include:{} -all", z.spf_include());
    for d in domains.iter().filter(|d| !d.removed) {
        for (_, k) in d.published() {
            b.add(&z.dkim_target(&d.token, &k.selector), RData::TXT(TXT::new(txt_strings(&dkim_record(k)))));
        }
        let bounce = z.bounce_target(&d.token);
        b.add(&bounce, RData::MX(MX::new(10, fqdn(&z.mx_host()))));
        b.add(&bounce, RData::TXT(TXT::new(vec![bounce_spf.clone()])));
        b.addresses(&z.tracking_target(&d.token), &settings.tracking_ips);
    }
    ZoneData { origin, soa, records: b.records, names: b.names }
}

impl ZoneData {
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn lookup(&self, name: &str, rtype: RecordType) -> Answer<'_> {
        let k = key(name);
        if k != self.origin && !k.ends_with(&format!(".{}", self.origin)) {
            return Answer::Refused;
        }
        if let Some(rs) = self.records.get(&(k.clone(), rtype)) {
            return Answer::Records(rs);
        }
        if self.names.contains(&k) {
            Answer::NoData
        } else {
            Answer::NxDomain
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_schemas::*;

    fn settings() -> ZoneSettings {
        ZoneSettings {
            zone: ServiceZone::new("Herald.Test."),
            nameservers: vec![],
            nameserver_ips: vec!["192.0.2.53".parse().unwrap()],
            hostmaster: "hostmaster.herald.test".into(),
            sending_ips: vec!["192.0.2.10".parse().unwrap(), "2001:db8::10".parse().unwrap()],
            mx_ips: vec![],
            tracking_ips: vec!["192.0.2.80".parse().unwrap()],
            ttl: 300,
        }
    }

    fn state() -> DomainState {
        let key = DkimKey {
            selector: "hd1".into(),
            algorithm: KeyAlgorithm::RsaSha256,
            public_key: "A".repeat(392),
            key_file: "hd1.pem".into(),
            created_at: Timestamp(0),
        };
        let added = DomainEvent::Added(DomainAdded {
            account: AccountId("acme".into()),
            domain: "sender.test".into(),
            token: "tok".into(),
            bounce_label: "bounce".into(),
            tracking_label: "clicks".into(),
            dmarc_rua: None,
            bimi_logo: None,
            keys: vec![key],
            request_id: "r".into(),
            added_at: Timestamp(0),
        });
        super::super::state::apply(None, &added, 0).unwrap()
    }

    #[test]
    fn serves_keys_spf_bounce_tracking_and_apex() {
        let z = build(&settings(), &[state()], 7);
        let Answer::Records(txt) = z.lookup("HD1.tok.dkim.herald.test.", RecordType::TXT) else { panic!() };
        let RData::TXT(t) = &txt[0].data else { panic!() };
        let strings: Vec<String> = t.txt_data.iter().map(|s| String::from_utf8(s.to_vec()).unwrap()).collect();
        assert_eq!(strings.len(), 2, "a 2048-bit key is split into 255-octet strings");
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert!(strings.concat().starts_with("v=DKIM1; k=rsa; p=AAAA"));
        assert_eq!(z.lookup("hd2.tok.dkim.herald.test", RecordType::TXT), Answer::NxDomain);
        assert_eq!(z.lookup("tok.dkim.herald.test", RecordType::TXT), Answer::NoData, "empty non-terminal");
        assert_eq!(z.lookup("example.org", RecordType::A), Answer::Refused);
        let Answer::Records(spf) = z.lookup("_spf.herald.test", RecordType::TXT) else { panic!() };
        assert_eq!(spf[0].data.to_string(), "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all");
        assert!(matches!(z.lookup("tok.bounce.herald.test", RecordType::MX), Answer::Records(r) if r.len() == 1));
        assert!(matches!(z.lookup("mx.herald.test", RecordType::AAAA), Answer::Records(_)));
        assert!(matches!(z.lookup("tok.track.herald.test", RecordType::A), Answer::Records(_)));
        assert!(matches!(z.lookup("herald.test", RecordType::SOA), Answer::Records(_)));
        assert!(matches!(z.lookup("herald.test", RecordType::NS), Answer::Records(_)));
        assert!(matches!(z.lookup("ns1.herald.test", RecordType::A), Answer::Records(_)));
        let mut removed = state();
        removed.removed = true;
        let z = build(&settings(), &[removed], 8);
        assert_eq!(z.lookup("hd1.tok.dkim.herald.test", RecordType::TXT), Answer::NxDomain);
    }

    #[test]
    fn txt_splitting() {
        assert_eq!(txt_strings("abc"), vec!["abc"]);
        let long = "x".repeat(600);
        let parts = txt_strings(&long);
        assert_eq!(parts.iter().map(String::len).collect::<Vec<_>>(), vec![255, 255, 90]);
    }
}

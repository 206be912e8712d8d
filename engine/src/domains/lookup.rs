//! DNS look-ups for verification and diagnostics: hickory-resolver on configurable servers,
//! with answers reduced to what the checks need. A timeout, SERVFAIL or REFUSED is
//! [`Found::Failed`] (the checks report `unreachable`), never "no record".

use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A resolver on `servers` (ip:port), else the system's, with a per-query timeout.
pub fn resolver(servers: &[SocketAddr], timeout: Duration) -> Result<TokioResolver, String> {
    let mut builder = crate::delivery::mx::resolver_builder(servers)?;
    builder.options_mut().timeout = timeout;
    builder.options_mut().attempts = 1;
    builder.build().map_err(|e| e.to_string())
}

/// What a look-up found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<T> {
    Records(Vec<T>),
    /// NXDOMAIN, or the name has no record of that type.
    Nothing,
    /// Timeout, SERVFAIL, REFUSED, network trouble.
    Failed(String),
}

impl<T> Found<T> {
    pub fn records(&self) -> &[T] {
        match self {
            Found::Records(r) => r,
            _ => &[],
        }
    }
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

async fn rdata(r: &TokioResolver, name: &str, rtype: RecordType) -> Found<RData> {
    match r.lookup(fqdn(name).as_str(), rtype).await {
        Ok(lookup) => {
            let found: Vec<RData> =
                lookup.answers().iter().filter(|x| x.record_type() == rtype).map(|x| x.data.clone()).collect();
            if found.is_empty() {
                Found::Nothing
            } else {
                Found::Records(found)
            }
        }
        Err(e) if e.is_no_records_found() => Found::Nothing,
        Err(e) => Found::Failed(e.to_string()),
    }
}

fn map<T>(found: Found<RData>, f: impl Fn(&RData) -> Option<T>) -> Found<T> {
    match found {
        Found::Records(r) => {
            let v: Vec<T> = r.iter().filter_map(f).collect();
            if v.is_empty() {
                Found::Nothing
            } else {
                Found::Records(v)
            }
        }
        Found::Nothing => Found::Nothing,
        Found::Failed(e) => Found::Failed(e),
    }
}

/// Sorts the records, so findings do not depend on the order of an answer.
fn sorted(mut found: Found<String>) -> Found<String> {
    if let Found::Records(r) = &mut found {
        r.sort();
    }
    found
}

/// TXT records, each one's strings concatenated, sorted.
pub async fn txt(r: &TokioResolver, name: &str) -> Found<String> {
    sorted(map(rdata(r, name, RecordType::TXT).await, |d| match d {
        RData::TXT(t) => Some(t.txt_data.iter().map(|s| String::from_utf8_lossy(s)).collect::<String>()),
        _ => None,
    }))
}

/// CNAME targets, lower-case, without the trailing dot.
pub async fn cname(r: &TokioResolver, name: &str) -> Found<String> {
    sorted(map(rdata(r, name, RecordType::CNAME).await, |d| match d {
        RData::CNAME(c) => Some(c.0.to_ascii().trim_end_matches('.').to_ascii_lowercase()),
        _ => None,
    }))
}

/// MX records as `(preference, host)`.
pub async fn mx(r: &TokioResolver, name: &str) -> Found<(u16, String)> {
    map(rdata(r, name, RecordType::MX).await, |d| match d {
        RData::MX(m) => Some((m.preference, m.exchange.to_ascii().trim_end_matches('.').to_ascii_lowercase())),
        _ => None,
    })
}

/// A and AAAA addresses.
pub async fn addresses(r: &TokioResolver, name: &str) -> Found<IpAddr> {
    let v4 = map(rdata(r, name, RecordType::A).await, |d| match d {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        _ => None,
    });
    let v6 = map(rdata(r, name, RecordType::AAAA).await, |d| match d {
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    });
    match (v4, v6) {
        (Found::Failed(e), _) | (_, Found::Failed(e)) => Found::Failed(e),
        (a, b) => {
            let all: Vec<IpAddr> = a.records().iter().chain(b.records()).copied().collect();
            if all.is_empty() {
                Found::Nothing
            } else {
                Found::Records(all)
            }
        }
    }
}

/// The reverse-DNS name of an address (`in-addr.arpa` / `ip6.arpa`).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for byte in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// PTR names of an address.
pub async fn ptr(r: &TokioResolver, ip: IpAddr) -> Found<String> {
    map(rdata(r, &reverse_name(ip), RecordType::PTR).await, |d| match d {
        RData::PTR(p) => Some(p.0.to_ascii().trim_end_matches('.').to_ascii_lowercase()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(reverse_name("192.0.2.10".parse().unwrap()), "10.2.0.192.in-addr.arpa");
        assert!(reverse_name("2001:db8::1".parse().unwrap()).starts_with("1.0.0.0.0.0.0.0"));
        assert!(reverse_name("2001:db8::1".parse().unwrap()).ends_with("8.b.d.0.1.0.0.2.ip6.arpa"));
    }
}

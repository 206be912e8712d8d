//! MX resolution with hickory-resolver (RFC 5321 §5.1, RFC 7505 null MX).

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{ResolverBuilder, TokioResolver};
use std::net::{IpAddr, SocketAddr};

/// Where mail for a domain goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Hosts to try in order: MX preference order (equal preferences shuffled), or the
    /// domain itself when it has no MX but has an address (the implicit MX).
    Hosts(Vec<String>),
    /// RFC 7505: the domain accepts no mail.
    NullMx,
    /// NXDOMAIN: the domain does not exist.
    NoSuchDomain,
}

pub struct MxResolver {
    resolver: TokioResolver,
}

/// A resolver builder on `servers` (ip:port, over UDP and TCP), else on the system's
/// configuration. Delivery and sender-domain verification both start from it.
pub fn resolver_builder(servers: &[SocketAddr]) -> Result<ResolverBuilder<TokioRuntimeProvider>, String> {
    if servers.is_empty() {
        return TokioResolver::builder_tokio().map_err(|e| e.to_string());
    }
    let name_servers = servers
        .iter()
        .map(|s| {
            let mut udp = ConnectionConfig::udp();
            udp.port = s.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = s.port();
            NameServerConfig::new(s.ip(), true, vec![udp, tcp])
        })
        .collect();
    Ok(TokioResolver::builder_with_config(
        ResolverConfig::from_parts(None, vec![], name_servers),
        TokioRuntimeProvider::default(),
    ))
}

impl MxResolver {
    /// Uses `servers` (ip:port) when given, else the system configuration.
    pub fn new(servers: &[SocketAddr]) -> Result<Self, String> {
        Ok(MxResolver { resolver: resolver_builder(servers)?.build().map_err(|e| e.to_string())? })
    }

    /// The route for `domain`. `Err` is a temporary DNS failure (timeout, SERVFAIL).
    pub async fn route(&self, domain: &str) -> Result<Route, String> {
        if domain.starts_with('[') {
            return Ok(Route::Hosts(vec![domain.to_owned()])); // address literal: no DNS
        }
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let mut mxs: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                Ok(order(&mut mxs, domain))
            }
            Err(e) if e.is_nx_domain() => Ok(Route::NoSuchDomain),
            Err(e) if e.is_no_records_found() => Ok(Route::Hosts(vec![domain.to_owned()])),
            Err(e) => Err(trouble(&e)),
        }
    }

    /// Addresses of an MX host, IPv6 and IPv4 as the resolver returns them.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        let ips: Vec<IpAddr> = match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(lookup) => lookup.iter().collect(),
            Err(e) if e.is_no_records_found() => vec![],
            Err(e) => return Err(trouble(&e)),
        };
        if ips.is_empty() {
            return Err(format!("{host} has no address record"));
        }
        Ok(ips)
    }
}

/// A temporary DNS failure as a phrase for the attempt's reply text (the resolver's own
/// messages name its internals; they go to the log instead).
pub fn trouble(e: &NetError) -> String {
    tracing::debug!(error = %e, "dns lookup failed");
    match e {
        NetError::Timeout => "the DNS query timed out".into(),
        NetError::Dns(DnsError::ResponseCode(code)) => format!("the DNS server answered {code}"),
        NetError::NoConnections | NetError::Io(_) | NetError::Busy => "no DNS server could be reached".into(),
        e if e.is_connection_closed() => "no DNS server could be reached".into(),
        _ => "the DNS answer could not be used".into(),
    }
}

/// Orders MX records; a single `.` exchange is a null MX.
pub fn order(mxs: &mut [(u16, String)], domain: &str) -> Route {
    if mxs.is_empty() {
        return Route::Hosts(vec![domain.to_owned()]);
    }
    if mxs.len() == 1 && (mxs[0].1 == "." || mxs[0].1.is_empty()) {
        return Route::NullMx;
    }
    use rand::seq::SliceRandom;
    mxs.shuffle(&mut rand::rng());
    mxs.sort_by_key(|(pref, _)| *pref);
    Route::Hosts(mxs.iter().filter(|(_, h)| h != ".").map(|(_, h)| h.trim_end_matches('.').to_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preference_order_null_mx_and_implicit_mx() {
        let mut mxs = vec![(20, "b.example.".to_owned()), (10, "a.example.".to_owned())];
        assert_eq!(order(&mut mxs, "example"), Route::Hosts(vec!["a.example".into(), "b.example".into()]));
        assert_eq!(order(&mut [(0, ".".to_owned())], "example"), Route::NullMx);
        assert_eq!(order(&mut [], "example"), Route::Hosts(vec!["example".into()]));
    }
}

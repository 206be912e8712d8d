//! Keeping webhook requests away from the service's own network. A customer's URL must not
//! reach loopback, private, link-local (the cloud metadata service at 169.254.169.254),
//! carrier-grade NAT, unique-local, multicast or unspecified addresses, by an IP literal or
//! by a name that resolves to one. Names are checked on the addresses actually connected to
//! (the HTTP connector resolves through [`GuardedResolver`]), so a DNS answer that changes
//! between a check and the connection (DNS rebinding) cannot slip through. Redirects are
//! never followed (`sender.rs`). `[webhooks] allow_private_targets = true` lifts the guard
//! (tests, private deployments).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether `ip` is an address a webhook may not reach.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0) {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return forbidden_v4(Ipv4Addr::new(a, b, c, d));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (fd00:ec2::254: AWS metadata)
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1)
        }
    }
}

fn forbidden_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64.0.0/10
        || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

/// Why a URL cannot be a webhook target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("the URL does not parse: {0}")]
    Malformed(String),
    #[error("the URL must use http or https")]
    Scheme,
    #[error("the URL must not carry a user name or password")]
    Credentials,
    #[error("the URL must not be longer than 2048 characters")]
    TooLong,
    #[error("{0} is a loopback, private, link-local or otherwise internal address")]
    Internal(IpAddr),
}

/// Checks a target URL as given (scheme, credentials, IP literals). Names are checked again
/// at every connection by [`GuardedResolver`].
pub fn check_url(url: &str, allow_private: bool) -> Result<url::Url, UrlError> {
    if url.len() > 2048 {
        return Err(UrlError::TooLong);
    }
    let parsed = url::Url::parse(url).map_err(|e| UrlError::Malformed(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UrlError::Scheme);
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(UrlError::Credentials);
    }
    let ip = match parsed.host() {
        None => return Err(UrlError::Malformed("no host".into())),
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(url::Host::Domain(_)) => None,
    };
    if let Some(ip) = ip.filter(|ip| !allow_private && forbidden(*ip)) {
        return Err(UrlError::Internal(ip));
    }
    Ok(parsed)
}

/// The HTTP connector's resolver: the system's, minus forbidden addresses. A name with only
/// forbidden addresses fails to resolve, with the reason. (IP literals do not come here:
/// [`check_url`] checks them before every request.)
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl GuardedResolver {
    /// The allowed addresses of `host`.
    pub async fn lookup(self, host: &str) -> Result<std::vec::IntoIter<SocketAddr>, std::io::Error> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        let allowed: Vec<SocketAddr> =
            found.iter().copied().filter(|a| self.allow_private || !forbidden(a.ip())).collect();
        if allowed.is_empty() {
            let why = match found.first() {
                Some(a) => UrlError::Internal(a.ip()).to_string(),
                None => format!("{host} has no address"),
            };
            return Err(std::io::Error::other(why));
        }
        Ok(allowed.into_iter())
    }
}

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let this = *self;
        Box::pin(async move { this.lookup(name.as_str()).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "255.255.255.255",
            "224.0.0.1",
        ] {
            assert!(forbidden(ip.parse().unwrap()), "{ip} must be refused");
        }
        for ip in ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "172.32.0.1", "100.128.0.1"] {
            assert!(!forbidden(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn urls_are_checked_as_given() {
        assert!(check_url("https://hooks.example.com/x", false).is_ok());
        assert_eq!(check_url("http://127.0.0.1:8080/", false), Err(UrlError::Internal("127.0.0.1".parse().unwrap())));
        assert!(matches!(check_url("http://[::ffff:7f00:1]/", false), Err(UrlError::Internal(_))));
        assert!(matches!(check_url("http://169.254.169.254/latest/meta-data", false), Err(UrlError::Internal(_))));
        assert!(check_url("http://127.0.0.1:8080/", true).is_ok(), "allowed when private targets are");
        assert_eq!(check_url("ftp://example.com/", false), Err(UrlError::Scheme));
        assert_eq!(check_url("https://user:pw@example.com/", false), Err(UrlError::Credentials));
        assert!(matches!(check_url("not a url", false), Err(UrlError::Malformed(_))));
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_at_connect_time() {
        let refused = GuardedResolver { allow_private: false }.lookup("localhost").await;
        assert!(refused.is_err(), "localhost resolves to loopback only");
        let allowed = GuardedResolver { allow_private: true }.lookup("localhost").await.unwrap();
        assert!(allowed.count() >= 1);
    }
}

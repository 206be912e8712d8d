//! The safety rules: by default the generator only talks to loopback addresses and only
//! addresses recipients in the reserved test TLDs (RFC 2606: `.test`, `.example`,
//! `.invalid`). Anything else needs `--allow-non-test-targets`. Host names are not
//! resolved: only `localhost` and loopback IP literals pass.

use std::net::IpAddr;

/// Suffixes a recipient domain must end with.
pub const TEST_SUFFIXES: [&str; 3] = [".test", ".example", ".invalid"];

/// A target or a recipient domain outside the safe set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SafetyError {
    #[error("target host {0:?} is not a loopback address; pass --allow-non-test-targets to send elsewhere")]
    Host(String),
    #[error(
        "recipient domain {0:?} is not under .test, .example or .invalid; pass --allow-non-test-targets to use it"
    )]
    Domain(String),
}

/// True for `localhost`, `127.0.0.0/8` and `::1` (brackets allowed).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// True when `domain` ends with one of [`TEST_SUFFIXES`].
pub fn is_test_domain(domain: &str) -> bool {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    TEST_SUFFIXES.iter().any(|s| d.ends_with(s) || d == s[1..])
}

/// Checks a run's target host and recipient domains, unless `allow` is set.
pub fn check<'a>(host: &str, domains: impl IntoIterator<Item = &'a str>, allow: bool) -> Result<(), SafetyError> {
    if allow {
        return Ok(());
    }
    if !is_loopback_host(host) {
        return Err(SafetyError::Host(host.into()));
    }
    match domains.into_iter().find(|d| !is_test_domain(d)) {
        Some(d) => Err(SafetyError::Domain(d.into())),
        None => Ok(()),
    }
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
pub fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((h, _)) if !h.contains(':') => h,
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_pass_others_do_not() {
        for ok in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in ["10.0.0.1", "192.168.1.1", "0.0.0.0", "mx.example.com", "localhost.evil.com", "::"] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn only_test_domains_pass() {
        for ok in ["example.test", "a.b.example", "x.invalid", "GMAIL.TEST", "test", "example.test."] {
            assert!(is_test_domain(ok), "{ok}");
        }
        for bad in ["gmail.com", "example.com", "test.com", "mytest", "example.org", "x.testing"] {
            assert!(!is_test_domain(bad), "{bad}");
        }
    }

    #[test]
    fn check_combines_and_the_flag_overrides() {
        assert_eq!(check("127.0.0.1", ["a.test", "b.example"], false), Ok(()));
        assert_eq!(check("10.1.1.1", ["a.test"], false), Err(SafetyError::Host("10.1.1.1".into())));
        assert_eq!(check("127.0.0.1", ["a.test", "gmail.com"], false), Err(SafetyError::Domain("gmail.com".into())));
        assert_eq!(check("smtp.gmail.com", ["gmail.com"], true), Ok(()));
    }

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("127.0.0.1:25"), "127.0.0.1");
        assert_eq!(host_of("[::1]:25"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}

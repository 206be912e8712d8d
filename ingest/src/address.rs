//! Mailbox syntax checks for envelope addresses (RFC 5321 §4.1.2, with SMTPUTF8 allowed).

/// A checked address, with its domain lower-cased for routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub address: String,
    pub domain: String,
}

/// Checks `raw` and returns it with a normalized domain, or why it is not a mailbox.
pub fn parse_mailbox(raw: &str) -> Result<Mailbox, String> {
    let s = raw.trim();
    let s = s.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(s);
    if s.is_empty() {
        return Err("empty address".into());
    }
    if s.len() > 254 {
        return Err(format!("address longer than 254 octets: {s:.40}…"));
    }
    let (local, domain) = s.rsplit_once('@').ok_or_else(|| format!("`{s}` has no @domain"))?;
    if local.is_empty() || local.len() > 64 {
        return Err(format!("local part of `{s}` must be 1 to 64 octets"));
    }
    let quoted = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
    if !quoted {
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(format!("local part of `{s}` has a misplaced dot"));
        }
        if let Some(c) = local.chars().find(|c| c.is_control() || c.is_whitespace() || "()<>[]\\,;:@\"".contains(*c)) {
            return Err(format!("local part of `{s}` contains `{}`", c.escape_default()));
        }
    }
    let domain = check_domain(domain).map_err(|e| format!("domain of `{s}`: {e}"))?;
    Ok(Mailbox { address: format!("{local}@{domain}"), domain })
}

fn check_domain(domain: &str) -> Result<String, String> {
    if domain.starts_with('[') && domain.ends_with(']') {
        let inner = &domain[1..domain.len() - 1];
        let ip = inner.strip_prefix("IPv6:").unwrap_or(inner);
        return ip
            .parse::<std::net::IpAddr>()
            .map(|_| domain.to_owned())
            .map_err(|_| format!("bad address literal {domain}"));
    }
    let domain = domain.trim_end_matches('.').to_lowercase();
    if domain.is_empty() || domain.len() > 253 {
        return Err("must be 1 to 253 octets".into());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(format!("`{domain}` is not a fully qualified domain"));
    }
    for label in labels {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("label `{label}` must be 1 to 63 octets"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label `{label}` starts or ends with a hyphen"));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_alphanumeric() || *c == '-')) {
            return Err(format!("label `{label}` contains `{}`", c.escape_default()));
        }
    }
    Ok(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalizes() {
        let m = parse_mailbox(" <Bob.Smith+tag@Example.ORG.> ").unwrap();
        assert_eq!(m.address, "Bob.Smith+tag@example.org");
        assert_eq!(m.domain, "example.org");
        assert!(parse_mailbox("\"a b\"@example.org").is_ok());
        assert!(parse_mailbox("user@[192.0.2.1]").is_ok());
        assert!(parse_mailbox("josé@exämple.test").is_ok());
    }

    #[test]
    fn refuses_with_a_reason() {
        for bad in [
            "",
            "plain",
            "@example.org",
            "a@",
            "a@localhost",
            "a b@example.org",
            "a..b@example.org",
            "a@-x.org",
            "a@ex_ample.org",
            "a@[300.1.1.1]",
        ] {
            assert!(parse_mailbox(bad).is_err(), "{bad} should be refused");
        }
    }
}

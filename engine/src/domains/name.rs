//! Sender-domain names: Unicode accepted, stored and published as lower-case punycode;
//! syntax per RFC 1035/5890 (letters, digits, hyphens; labels of 1–63 octets; at most 253);
//! public suffixes (`co.uk`, `com`) refused, since nobody owns them.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    /// → 422 `invalid_domain`.
    #[error("`{0}` is not a valid domain name: {1}")]
    Invalid(String, &'static str),
    /// → 422 `public_suffix`.
    #[error("`{0}` is a public suffix (like co.uk): register a domain under it")]
    PublicSuffix(String),
}

/// A checked domain name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainName {
    /// Lower-case ASCII (punycode), no trailing dot.
    pub ascii: String,
    /// The same name in Unicode, for display.
    pub unicode: String,
}

/// Normalizes `input` (Unicode or ASCII, any case, optional trailing dot).
pub fn normalize(input: &str) -> Result<DomainName, NameError> {
    let invalid = |why| NameError::Invalid(input.to_owned(), why);
    let trimmed = input.trim().strip_suffix('.').unwrap_or(input.trim());
    if trimmed.is_empty() {
        return Err(invalid("empty"));
    }
    if trimmed.parse::<std::net::IpAddr>().is_ok() {
        return Err(invalid("an address, not a name"));
    }
    let ascii =
        idna::domain_to_ascii_strict(trimmed).map_err(|_| invalid("not a valid (internationalized) host name"))?;
    check_syntax(&ascii).map_err(invalid)?;
    let is_suffix = psl::suffix(ascii.as_bytes()).is_some_and(|s| s.as_bytes() == ascii.as_bytes());
    if is_suffix {
        return Err(NameError::PublicSuffix(ascii));
    }
    let (unicode, _) = idna::domain_to_unicode(&ascii);
    Ok(DomainName { ascii, unicode })
}

fn check_syntax(ascii: &str) -> Result<(), &'static str> {
    if ascii.len() > 253 {
        return Err("longer than 253 characters");
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err("a sender domain has at least two labels");
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return Err("each label must be 1 to 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err("only letters, digits and hyphens are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label cannot start or end with a hyphen");
        }
    }
    if labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err("the top-level label cannot be numeric");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_names_are_lower_cased_and_trimmed() {
        let n = normalize(" Mail.Example.COM. ").unwrap();
        assert_eq!(n.ascii, "mail.example.com");
        assert_eq!(n.unicode, "mail.example.com");
    }

    #[test]
    fn unicode_names_become_punycode() {
        let n = normalize("Bücher.example").unwrap();
        assert_eq!(n.ascii, "xn--bcher-kva.example");
        assert_eq!(n.unicode, "bücher.example");
        assert_eq!(normalize("xn--bcher-kva.example").unwrap().unicode, "bücher.example");
        assert_eq!(normalize("日本語.jp").unwrap().ascii, "xn--wgv71a119e.jp");
    }

    #[test]
    fn invalid_names_are_refused() {
        for bad in [
            "",
            "example",
            "exa mple.com",
            "-a.example.com",
            "a-.example.com",
            "a..example.com",
            "192.0.2.1",
            "a.123",
            "under_score.example.com",
        ] {
            assert!(matches!(normalize(bad), Err(NameError::Invalid(..))), "{bad:?} accepted");
        }
        let long = format!("{}.example.com", "a".repeat(64));
        assert!(matches!(normalize(&long), Err(NameError::Invalid(..))));
    }

    #[test]
    fn public_suffixes_are_refused_but_names_under_them_are_not() {
        for suffix in ["co.uk", "com", "github.io", "CO.UK."] {
            assert!(
                matches!(normalize(suffix), Err(NameError::PublicSuffix(_)) | Err(NameError::Invalid(..))),
                "{suffix} accepted"
            );
        }
        assert!(matches!(normalize("co.uk"), Err(NameError::PublicSuffix(_))));
        assert_eq!(normalize("example.co.uk").unwrap().ascii, "example.co.uk");
        assert_eq!(normalize("promo.example.co.uk").unwrap().ascii, "promo.example.co.uk");
        // Unknown top-level domains (the test ones) fall under the default `*` rule.
        assert_eq!(normalize("sender.test").unwrap().ascii, "sender.test");
    }
}

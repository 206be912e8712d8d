//! The RFC 5322 checks: characters (no NUL, no bare CR), the header section (field syntax,
//! line and field lengths, UTF-8 only per RFC 6532, how often each field may appear, a From
//! address) and body line lengths. Pure functions over a CRLF message.

use super::Invalid;

/// Longest line, CRLF excluded (RFC 5322 §2.1.1).
pub const MAX_LINE: usize = 998;
/// Longest header field, unfolded (Postfix's `header_size_limit`).
pub const MAX_FIELD: usize = 100 * 1024;

/// Fields that may appear at most once (RFC 5322 §3.6, RFC 2045 §3).
const AT_MOST_ONCE: [&str; 13] = [
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Subject",
    "Date",
    "MIME-Version",
    "Content-Type",
];

/// Where the header section ends: the offset of the blank line's CRLF after the last field,
/// or `None` when the message has no blank line (then it is all header).
pub fn header_end(message: &[u8]) -> Option<usize> {
    if message.starts_with(b"\r\n") {
        return Some(0);
    }
    memchr::memmem::find(message, b"\r\n\r\n").map(|p| p + 2)
}

/// Offset of the body (after the blank line), or the message's length when it has none.
pub fn body_start(message: &[u8]) -> usize {
    header_end(message).map_or(message.len(), |e| e + 2)
}

/// A printable excerpt for an error message: ASCII only, at most `max` characters.
pub fn excerpt(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String =
        text.chars().take(max).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
    if text.chars().count() > max {
        out.push_str("...");
    }
    out
}

/// No NUL and no CR that is not followed by LF, anywhere.
pub fn characters(message: &[u8]) -> Result<(), Invalid> {
    if let Some(p) = memchr::memchr(0, message) {
        return Err(Invalid::Nul { line: line_of(message, p) });
    }
    let mut at = 0;
    while let Some(p) = memchr::memchr(b'\r', &message[at..]) {
        let p = at + p;
        if message.get(p + 1) != Some(&b'\n') {
            return Err(Invalid::BareCr { line: line_of(message, p) });
        }
        at = p + 1;
    }
    Ok(())
}

fn line_of(message: &[u8], offset: usize) -> usize {
    memchr::memchr_iter(b'\n', &message[..offset]).count() + 1
}

/// One header field: its name and the lines it spans (1-based line numbers).
struct Field<'a> {
    name: &'a [u8],
    first_line: usize,
    bytes: usize,
}

/// Checks the header section: field syntax, lengths, encoding, repetitions, a From field.
pub fn header_section(message: &[u8]) -> Result<(), Invalid> {
    let end = header_end(message).unwrap_or(message.len());
    let section = &message[..end];
    let section = section.strip_suffix(b"\n").unwrap_or(section);
    let mut fields: Vec<Field> = Vec::new();
    for (i, line) in section.split(|&b| b == b'\n').enumerate() {
        let number = i + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if section.is_empty() {
            break;
        }
        if line.len() > MAX_LINE {
            return Err(Invalid::HeaderLineTooLong { line: number, len: line.len() });
        }
        if std::str::from_utf8(line).is_err() {
            return Err(Invalid::HeaderNotUtf8 { line: number });
        }
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            let Some(field) = fields.last_mut() else {
                return Err(Invalid::MalformedHeader { line: number, excerpt: excerpt(line, 40) });
            };
            field.bytes += line.len();
            if field.bytes > MAX_FIELD {
                return Err(Invalid::HeaderFieldTooLong { name: excerpt(field.name, 40), line: field.first_line });
            }
            continue;
        }
        let name = match memchr::memchr(b':', line) {
            Some(c) if c > 0 && line[..c].iter().all(|b| (33..=126).contains(b)) => &line[..c],
            _ => return Err(Invalid::MalformedHeader { line: number, excerpt: excerpt(line, 40) }),
        };
        fields.push(Field { name, first_line: number, bytes: line.len() });
    }
    for unique in AT_MOST_ONCE {
        let count = fields.iter().filter(|f| f.name.eq_ignore_ascii_case(unique.as_bytes())).count();
        if count > 1 {
            return Err(Invalid::Repeated { name: unique, count });
        }
    }
    if !fields.iter().any(|f| f.name.eq_ignore_ascii_case(b"From")) {
        return Err(Invalid::NoFrom);
    }
    Ok(())
}

/// The addresses of the From field (at least one), and whether a Sender field is required
/// and present (RFC 5322 §3.6.2: several From mailboxes need one Sender).
pub fn from_addresses(message: &[u8]) -> Result<Vec<String>, Invalid> {
    let parsed = mail_parser::MessageParser::new().parse_headers(message).ok_or(Invalid::NoFrom)?;
    let from = parsed.from().ok_or(Invalid::NoFrom)?;
    let addresses: Vec<String> = from.iter().filter_map(|a| a.address()).map(str::to_owned).collect();
    if addresses.is_empty() || addresses.iter().any(|a| !a.contains('@')) {
        let raw = parsed.header_raw("From").unwrap_or_default();
        return Err(Invalid::BadFrom { excerpt: excerpt(raw.trim().as_bytes(), 60) });
    }
    if addresses.len() > 1 && parsed.header_raw("Sender").is_none() {
        return Err(Invalid::FromNeedsSender { count: addresses.len() });
    }
    Ok(addresses)
}

/// Body lines longer than [`MAX_LINE`]: `(offset of the line, its length)`, in order.
pub fn long_lines(message: &[u8], from: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = from;
    for nl in memchr::memchr_iter(b'\n', &message[from..]).map(|p| p + from).chain(std::iter::once(message.len())) {
        let end = if nl > start && message[nl - 1] == b'\r' { nl - 1 } else { nl };
        if end.saturating_sub(start) > MAX_LINE {
            out.push((start, end - start));
        }
        start = nl + 1;
    }
    out
}

/// 1-based line number of `offset` in the message (for error messages).
pub fn line_number(message: &[u8], offset: usize) -> usize {
    line_of(message, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_and_lines() {
        assert_eq!(characters(b"a\r\nb\0"), Err(Invalid::Nul { line: 2 }));
        assert_eq!(characters(b"a\r\nb\rc\r\n"), Err(Invalid::BareCr { line: 2 }));
        assert_eq!(characters(b"a\r"), Err(Invalid::BareCr { line: 1 }));
        assert!(characters(b"a\r\n").is_ok());
        let m = format!("S: x\r\n\r\nok\r\n{}\r\n{}", "y".repeat(999), "z".repeat(998));
        assert_eq!(long_lines(m.as_bytes(), body_start(m.as_bytes())), vec![(12, 999)]);
    }

    #[test]
    fn header_rules() {
        assert!(header_section(b"From: a@b.test\r\nSubject: x\r\n  folded\r\n\r\nbody").is_ok());
        assert!(header_section(b"From: a@b.test\r\n").is_ok(), "a message may have no body");
        assert_eq!(header_section(b"Subject: x\r\n\r\n"), Err(Invalid::NoFrom));
        assert_eq!(
            header_section(b"From: a@b.test\r\nfrom: c@d.test\r\n\r\n"),
            Err(Invalid::Repeated { name: "From", count: 2 })
        );
        assert!(matches!(header_section(b" folded first\r\n\r\n"), Err(Invalid::MalformedHeader { line: 1, .. })));
        assert!(matches!(header_section(b"hello world"), Err(Invalid::MalformedHeader { line: 1, .. })));
        assert!(matches!(header_section(b"Bad Name: x\r\n\r\n"), Err(Invalid::MalformedHeader { .. })));
        let long = format!("From: a@b.test\r\nSubject: {}\r\n\r\n", "s".repeat(100_000));
        assert_eq!(header_section(long.as_bytes()), Err(Invalid::HeaderLineTooLong { line: 2, len: 100_009 }));
        assert_eq!(header_section(b"From: a@b.test\r\nX: \xff\r\n\r\n"), Err(Invalid::HeaderNotUtf8 { line: 2 }));
        assert!(header_section("From: a@b.test\r\nSubject: Grüße\r\n\r\n".as_bytes()).is_ok());
        let folded: String = (0..200).map(|_| format!(" {}\r\n", "w".repeat(900))).collect();
        let big = format!("From: a@b.test\r\nX-Big: x\r\n{folded}\r\n");
        assert!(matches!(header_section(big.as_bytes()), Err(Invalid::HeaderFieldTooLong { .. })));
    }

    #[test]
    fn from_rules() {
        assert_eq!(from_addresses(b"From: A <a@b.test>\r\n\r\n").unwrap(), vec!["a@b.test"]);
        assert!(matches!(from_addresses(b"From: nobody\r\n\r\n"), Err(Invalid::BadFrom { .. })));
        assert_eq!(from_addresses(b"From: a@b.test, c@d.test\r\n\r\n"), Err(Invalid::FromNeedsSender { count: 2 }));
        assert_eq!(from_addresses(b"From: a@b.test, c@d.test\r\nSender: a@b.test\r\n\r\n").unwrap().len(), 2);
    }
}

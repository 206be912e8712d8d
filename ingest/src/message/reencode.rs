//! Body lines over 998 octets (RFC 5322 §2.1.1), common in generated HTML, are not refused:
//! each MIME leaf part that holds one is re-encoded before the message is stored and signed,
//! as quoted-printable (text) or base64 (anything else, and parts already in base64), and
//! its `Content-Transfer-Encoding` set to match. The decoded content is unchanged. A message
//! that carries a `DKIM-Signature` is refused instead (re-encoding would break it), and so
//! is one whose long line is outside a re-encodable part (a header of a sub-part, a
//! boundary, an attached `message/rfc822`).

use super::check;
use super::Invalid;
use mail_builder::encoders::{Base64Encoder, QuotedPrintableEncoder};
use mail_parser::{Encoding, MessagePart, PartType};

/// How a part's content is written back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    QuotedPrintable,
    Base64,
}

/// `message` with every part holding one of the `long` lines (offset, length) re-encoded.
pub fn reencode(message: &[u8], long: &[(usize, usize)]) -> Result<Vec<u8>, Invalid> {
    let Some(&(first, len)) = long.first() else {
        return Ok(message.to_vec());
    };
    let refuse = |why: &'static str| Invalid::LongLine { line: check::line_number(message, first), len, why };
    let head = &message[..check::body_start(message)];
    if head_has(head, "DKIM-Signature") {
        return Err(refuse("the message carries a DKIM-Signature, which re-encoding would break"));
    }
    let parsed =
        mail_parser::MessageParser::new().parse(message).ok_or_else(|| refuse("its MIME structure is unreadable"))?;
    let mut chosen: Vec<&MessagePart> = Vec::new();
    for &(offset, _) in long {
        let leaf = parsed.parts.iter().find(|p| {
            let leaf = matches!(
                p.body,
                PartType::Text(_) | PartType::Html(_) | PartType::Binary(_) | PartType::InlineBinary(_)
            );
            leaf && (p.offset_body as usize) <= offset && offset < p.offset_end as usize
        });
        let Some(part) = leaf else {
            let line = check::line_number(message, offset);
            return Err(Invalid::LongLine { line, len, why: "it is not inside a part that can be re-encoded" });
        };
        if !chosen.iter().any(|c| std::ptr::eq(*c, part)) {
            chosen.push(part);
        }
    }
    chosen.sort_by_key(|p| p.offset_header);
    let mut out = Vec::with_capacity(message.len() + message.len() / 8);
    let mut at = 0;
    for part in chosen {
        let (h, b, e) = (part.offset_header as usize, part.offset_body as usize, part.offset_end as usize);
        if h < at || b < h || e < b || e > message.len() || !message[..b].ends_with(b"\r\n") {
            return Err(refuse("its MIME structure is unreadable"));
        }
        let raw = &message[b..e];
        let (content, tail) = match raw.strip_suffix(b"\r\n") {
            Some(c) => (c, &b"\r\n"[..]),
            None => (raw, &b""[..]),
        };
        let decoded = match part.encoding {
            Encoding::None => content.to_vec(),
            Encoding::QuotedPrintable => mail_parser::decoders::quoted_printable::quoted_printable_decode(content)
                .ok_or_else(|| refuse("its quoted-printable part does not decode"))?,
            Encoding::Base64 => mail_parser::decoders::base64::base64_decode(content)
                .ok_or_else(|| refuse("its base64 part does not decode"))?,
        };
        let target = match (&part.body, part.encoding) {
            (_, Encoding::Base64) | (PartType::Binary(_) | PartType::InlineBinary(_), _) => Target::Base64,
            _ => Target::QuotedPrintable,
        };
        out.extend_from_slice(&message[at..h]);
        out.extend_from_slice(&part_header(&message[h..b], h == 0, target, &decoded));
        let encoded = match target {
            Target::QuotedPrintable => QuotedPrintableEncoder::new().preserve_line_breaks().encode(&decoded),
            Target::Base64 => Base64Encoder::new().wrap_lines().encode(&decoded),
        }
        .map_err(|_| refuse("encoding it failed"))?;
        out.extend_from_slice(encoded.strip_suffix(b"\r\n").unwrap_or(&encoded));
        out.extend_from_slice(tail);
        at = e;
    }
    out.extend_from_slice(&message[at..]);
    if let Some(&(offset, len)) = check::long_lines(&out, check::body_start(&out)).first() {
        let line = check::line_number(&out, offset);
        return Err(Invalid::LongLine { line, len, why: "re-encoding did not shorten it" });
    }
    Ok(out)
}

/// Whether the header block `head` has a field `name`.
fn head_has(head: &[u8], name: &str) -> bool {
    head.split(|&b| b == b'\n')
        .any(|l| l.len() > name.len() && l[name.len()] == b':' && l[..name.len()].eq_ignore_ascii_case(name.as_bytes()))
}

/// The part's header block (ending with the blank line) with its transfer encoding set to
/// `target`. The message's own header also gets `MIME-Version` and, for UTF-8 text without a
/// `Content-Type`, one that says so.
fn part_header(block: &[u8], root: bool, target: Target, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.len() + 64);
    let mut skipping = false;
    let fields = block.strip_suffix(b"\r\n").unwrap_or(block);
    for line in fields.split_inclusive(|&b| b == b'\n') {
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !folded {
            skipping = head_has(line, "Content-Transfer-Encoding");
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    if root && !head_has(block, "MIME-Version") {
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    if root && !head_has(block, "Content-Type") && !content.is_ascii() && std::str::from_utf8(content).is_ok() {
        out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    }
    out.extend_from_slice(match target {
        Target::QuotedPrintable => b"Content-Transfer-Encoding: quoted-printable\r\n",
        Target::Base64 => b"Content-Transfer-Encoding: base64\r\n",
    });
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long(m: &[u8]) -> Vec<(usize, usize)> {
        check::long_lines(m, check::body_start(m))
    }

    /// Decoded text and HTML of every part, to compare before and after.
    fn decoded(m: &[u8]) -> Vec<String> {
        let p = mail_parser::MessageParser::new().parse(m).unwrap();
        p.parts
            .iter()
            .filter_map(|part| match &part.body {
                PartType::Text(t) | PartType::Html(t) => Some(t.to_string()),
                PartType::Binary(b) | PartType::InlineBinary(b) => Some(format!("{b:?}")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn single_part_text_becomes_quoted_printable() {
        let line = format!("{} é end  ", "word ".repeat(300));
        let m = format!("From: a@b.test\r\nSubject: x\r\n\r\nshort\r\n{line}\r\n.dot\r\n");
        let out = reencode(m.as_bytes(), &long(m.as_bytes())).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"), "{text}");
        assert!(long(&out).is_empty());
        assert_eq!(decoded(&out), vec![format!("short\r\n{line}\r\n.dot\r\n")]);
    }

    #[test]
    fn only_the_html_part_of_an_alternative_is_reencoded() {
        let html = format!("<p>{}</p>", "<b>x</b> ".repeat(200));
        let m = format!(
            "From: a@b.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"B\"\r\n\r\npreamble\r\n--B\r\nContent-Type: text/plain\r\n\r\nplain\r\n--B\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n{html}\r\n--B--\r\n"
        );
        let before = decoded(m.as_bytes());
        let out = reencode(m.as_bytes(), &long(m.as_bytes())).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("Content-Type: text/plain\r\n\r\nplain\r\n--B\r\n"), "{text}");
        assert!(
            text.contains(
                "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            ),
            "{text}"
        );
        assert!(!text.contains("7bit"));
        assert!(text.ends_with("--B--\r\n"), "{text}");
        assert!(long(&out).is_empty());
        assert_eq!(decoded(&out), before);
    }

    #[test]
    fn base64_with_long_lines_is_rewrapped() {
        use base64::Engine;
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
        let m = format!(
            "From: a@b.test\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--x--\r\n"
        );
        let before = decoded(m.as_bytes());
        let out = reencode(m.as_bytes(), &long(m.as_bytes())).unwrap();
        assert!(long(&out).is_empty());
        assert_eq!(decoded(&out), before);
    }

    #[test]
    fn refusals_name_the_line_and_the_reason() {
        let m = format!("From: a@b.test\r\nDKIM-Signature: v=1\r\n\r\n{}\r\n", "x".repeat(1200));
        let err = reencode(m.as_bytes(), &long(m.as_bytes())).unwrap_err();
        assert!(matches!(err, Invalid::LongLine { line: 4, len: 1200, .. }), "{err}");
        assert!(err.to_string().contains("DKIM-Signature"), "{err}");
        let m = format!(
            "From: a@b.test\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n{}\r\n--x\r\n\r\nhi\r\n--x--\r\n",
            "p".repeat(1500)
        );
        assert!(reencode(m.as_bytes(), &long(m.as_bytes())).is_err(), "a long preamble line cannot be re-encoded");
    }
}

//! Back from decoded text to MIME: the part's charset (encoding_rs; characters it cannot
//! represent become HTML numeric references in HTML parts), then its transfer encoding
//! (quoted-printable, base64 or none), keeping a place for the recipient token wherever the
//! text has one. The token is URL-safe ASCII, so per recipient it is copied in, not encoded:
//! - quoted-printable: it gets lines of its own (soft line breaks around it, at most 75
//!   characters a line);
//! - base64: the bytes around it are encoded once; only the few 3-byte groups the token
//!   touches are encoded per recipient (its length is a multiple of 3, so it never shifts
//!   the groups after it);
//! - none (7bit/8bit): as is, as long as no line can exceed 998 octets and a 7bit part stays
//!   7-bit; otherwise the part becomes quoted-printable.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use encoding_rs::Encoding;

/// Decoded text of a part, with places for the recipient token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Text(String),
    Slot,
}

/// Charset-encoded content with places for the recipient token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Raw {
    Bytes(Vec<u8>),
    Slot,
}

/// The final bytes of a prepared message: literal output and token places.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Bytes(Vec<u8>),
    /// The token as is.
    Slot,
    /// The token on lines of its own in a quoted-printable part.
    QpSlot,
    /// Content base64-encoded per recipient: a run of 3-byte groups that holds tokens, on
    /// lines of its own; `crlf`: the last line ends with a line break.
    Base64 {
        window: Vec<Raw>,
        crlf: bool,
    },
}

/// A part's charset, as far as rewriting is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    Utf8,
    /// US-ASCII (declared, or no charset and only 7-bit bytes): anything else becomes a
    /// numeric reference in HTML.
    Ascii,
    Other(&'static Encoding),
}

impl Charset {
    /// The charset of a part declared `label`, whose content is `bytes`; `None` when it cannot
    /// be rewritten without changing it (unknown label, UTF-16, malformed content).
    pub fn detect(label: Option<&str>, bytes: &[u8]) -> Option<(Charset, String)> {
        let label = label.map(|l| l.trim().to_ascii_lowercase());
        let ascii_label = matches!(label.as_deref(), None | Some("us-ascii" | "ascii" | "ansi_x3.4-1968"));
        if ascii_label {
            if bytes.is_ascii() {
                return Some((Charset::Ascii, String::from_utf8(bytes.to_vec()).ok()?));
            }
            if let Ok(s) = std::str::from_utf8(bytes) {
                return Some((Charset::Utf8, s.to_owned()));
            }
            return Charset::Other(encoding_rs::WINDOWS_1252).decode(bytes);
        }
        let encoding = Encoding::for_label(label?.as_bytes())?;
        if encoding == encoding_rs::UTF_8 {
            return Some((Charset::Utf8, String::from_utf8(bytes.to_vec()).ok()?));
        }
        if encoding == encoding_rs::UTF_16LE
            || encoding == encoding_rs::UTF_16BE
            || encoding == encoding_rs::REPLACEMENT
        {
            return None;
        }
        Charset::Other(encoding).decode(bytes)
    }

    fn decode(self, bytes: &[u8]) -> Option<(Charset, String)> {
        let Charset::Other(e) = self else { unreachable!("only legacy charsets decode here") };
        let text = e.decode_without_bom_handling_and_without_replacement(bytes)?;
        Some((self, text.into_owned()))
    }

    /// Encodes `text`; characters the charset lacks become `&#N;` when `html`.
    pub fn encode(self, text: &str, html: bool) -> Vec<u8> {
        match self {
            Charset::Utf8 => text.as_bytes().to_vec(),
            Charset::Ascii if html => {
                let mut out = Vec::with_capacity(text.len());
                for c in text.chars() {
                    if c.is_ascii() {
                        out.push(c as u8);
                    } else {
                        out.extend_from_slice(format!("&#{};", c as u32).as_bytes());
                    }
                }
                out
            }
            Charset::Ascii => text.as_bytes().to_vec(),
            Charset::Other(e) => e.encode(text).0.into_owned(),
        }
    }
}

/// Line breaks as CRLF (lol_html and css-inline may leave bare LF or CR).
pub fn crlf(text: &str) -> String {
    if !text.contains(['\n', '\r']) || !text.replace("\r\n", "").contains(['\n', '\r']) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\r\n");
            }
            '\n' => out.push_str("\r\n"),
            c => out.push(c),
        }
    }
    out
}

/// Encodes every text segment in `charset`, normalizing line breaks.
pub fn to_raw(segs: &[Seg], charset: Charset, html: bool) -> Vec<Raw> {
    segs.iter()
        .map(|s| match s {
            Seg::Text(t) => Raw::Bytes(charset.encode(&crlf(t), html)),
            Seg::Slot => Raw::Slot,
        })
        .collect()
}

/// The transfer encoding of a rewritten part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// 7bit, 8bit or binary: the content as is.
    Identity {
        seven_bit: bool,
    },
    QuotedPrintable,
    Base64,
}

/// Whether `raw` may go out unencoded: no line over 998 octets even with the longest token
/// (`slot_max`), and only 7-bit bytes when the part is 7bit.
pub fn identity_fits(raw: &[Raw], seven_bit: bool, slot_max: usize) -> bool {
    let mut line = 0usize;
    for r in raw {
        match r {
            Raw::Slot => line += slot_max,
            Raw::Bytes(b) => {
                if seven_bit && !b.is_ascii() {
                    return false;
                }
                for &byte in b {
                    if byte == b'\n' {
                        line = 0;
                    } else {
                        line += 1;
                    }
                    if line > 998 {
                        return false;
                    }
                }
            }
        }
        if line > 998 {
            return false;
        }
    }
    true
}

/// Transfer-encodes `raw`. `end_crlf`: end with a line break (as the original did).
pub fn transfer(raw: Vec<Raw>, how: Transfer, end_crlf: bool) -> Vec<Piece> {
    match how {
        Transfer::Identity { .. } => raw
            .into_iter()
            .map(|r| match r {
                Raw::Bytes(b) => Piece::Bytes(b),
                Raw::Slot => Piece::Slot,
            })
            .collect(),
        Transfer::QuotedPrintable => quoted_printable(&raw),
        Transfer::Base64 => base64(raw, end_crlf),
    }
}

/// Quoted-printable (RFC 2045 §6.7) of text whose line breaks are CRLF.
fn quoted_printable(raw: &[Raw]) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut out = Vec::new();
    let mut col = 0usize;
    for r in raw {
        match r {
            Raw::Slot => {
                if col > 0 {
                    out.extend_from_slice(b"=\r\n");
                }
                pieces.push(Piece::Bytes(std::mem::take(&mut out)));
                pieces.push(Piece::QpSlot);
                col = 0;
            }
            Raw::Bytes(b) => qp_bytes(b, &mut out, &mut col),
        }
    }
    pieces.push(Piece::Bytes(out));
    pieces
}

fn qp_bytes(b: &[u8], out: &mut Vec<u8>, col: &mut usize) {
    let mut i = 0;
    while i < b.len() {
        let byte = b[i];
        if byte == b'\r' && b.get(i + 1) == Some(&b'\n') {
            out.extend_from_slice(b"\r\n");
            *col = 0;
            i += 2;
            continue;
        }
        // Whitespace before a line break (or at the end) is encoded; so are `=`, controls,
        // 8-bit bytes, and a `.` or `From ` at the start of a line would be harmless here.
        let at_line_end = b.get(i + 1).is_none_or(|&n| n == b'\r');
        let literal = match byte {
            b' ' | b'\t' => !at_line_end,
            b'=' => false,
            33..=126 => true,
            _ => false,
        };
        let width = if literal { 1 } else { 3 };
        if *col + width > 75 {
            out.extend_from_slice(b"=\r\n");
            *col = 0;
        }
        if literal {
            out.push(byte);
        } else {
            out.extend_from_slice(format!("={byte:02X}").as_bytes());
        }
        *col += width;
        i += 1;
    }
}

/// The token in a quoted-printable part: lines of at most 75 characters, each ended by a
/// soft line break.
pub fn qp_slot(token: &str, out: &mut Vec<u8>) {
    for chunk in token.as_bytes().chunks(75) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"=\r\n");
    }
}

/// Appends `encoded` (base64 text) in lines of at most 76 characters, each ended by CRLF
/// except a last partial one when `col` is tracked by the caller.
fn wrap76(encoded: &[u8], out: &mut Vec<u8>, col: &mut usize) {
    let mut rest = encoded;
    while !rest.is_empty() {
        let take = (76 - *col).min(rest.len());
        out.extend_from_slice(&rest[..take]);
        *col += take;
        rest = &rest[take..];
        if *col == 76 {
            out.extend_from_slice(b"\r\n");
            *col = 0;
        }
    }
}

/// Base64 with token places. Static 3-byte groups are encoded now; a window of groups that
/// holds a token (its carry bytes before, the token, bytes after up to the next group
/// boundary) becomes a [`Piece::Base64`] encoded per recipient on lines of its own.
fn base64(raw: Vec<Raw>, end_crlf: bool) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut out = Vec::new();
    let mut col = 0usize;
    let mut carry: Vec<u8> = Vec::new();
    let mut window: Option<(Vec<Raw>, usize)> = None; // segments, bytes still needed
    for r in raw {
        match r {
            Raw::Slot => match &mut window {
                Some((w, _)) => w.push(Raw::Slot),
                None => {
                    let need = (3 - carry.len()) % 3;
                    window = Some((vec![Raw::Bytes(std::mem::take(&mut carry)), Raw::Slot], need));
                }
            },
            Raw::Bytes(mut b) => {
                if let Some((w, need)) = &mut window {
                    let take = (*need).min(b.len());
                    w.push(Raw::Bytes(b.drain(..take).collect()));
                    *need -= take;
                    if *need > 0 {
                        continue;
                    }
                    let (w, _) = window.take().expect("open window");
                    if col > 0 {
                        out.extend_from_slice(b"\r\n");
                        col = 0;
                    }
                    pieces.push(Piece::Bytes(std::mem::take(&mut out)));
                    pieces.push(Piece::Base64 { window: w, crlf: true });
                }
                carry.extend_from_slice(&b);
                let full = carry.len() / 3 * 3;
                wrap76(STANDARD.encode(&carry[..full]).as_bytes(), &mut out, &mut col);
                carry.drain(..full);
            }
        }
    }
    if let Some((w, _)) = window {
        if col > 0 {
            out.extend_from_slice(b"\r\n");
        }
        pieces.push(Piece::Bytes(std::mem::take(&mut out)));
        pieces.push(Piece::Base64 { window: w, crlf: end_crlf });
        return pieces;
    }
    wrap76(STANDARD.encode(&carry).as_bytes(), &mut out, &mut col);
    if col > 0 && end_crlf {
        out.extend_from_slice(b"\r\n");
    } else if col == 0 && !end_crlf && out.ends_with(b"\r\n") {
        out.truncate(out.len() - 2);
    }
    if out.is_empty() {
        if let Some(Piece::Base64 { crlf, .. }) = pieces.last_mut() {
            *crlf = end_crlf;
        }
    }
    pieces.push(Piece::Bytes(out));
    pieces
}

/// Encodes a window for one recipient, on lines of its own, each ended by CRLF (the last
/// one only when `crlf`).
pub fn base64_window(window: &[Raw], token: &str, out: &mut Vec<u8>, crlf: bool) {
    let mut bytes = Vec::with_capacity(token.len() + 8);
    for r in window {
        match r {
            Raw::Bytes(b) => bytes.extend_from_slice(b),
            Raw::Slot => bytes.extend_from_slice(token.as_bytes()),
        }
    }
    let mut col = 0;
    wrap76(STANDARD.encode(&bytes).as_bytes(), out, &mut col);
    if col > 0 {
        out.extend_from_slice(b"\r\n");
    }
    if !crlf && out.ends_with(b"\r\n") {
        out.truncate(out.len() - 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills the places with `token` as the prepared message does.
    fn fill(pieces: &[Piece], token: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            match p {
                Piece::Bytes(b) => out.extend_from_slice(b),
                Piece::Slot => out.extend_from_slice(token.as_bytes()),
                Piece::QpSlot => qp_slot(token, &mut out),
                Piece::Base64 { window, crlf } => base64_window(window, token, &mut out, *crlf),
            }
        }
        out
    }

    fn segs(parts: &[&str]) -> Vec<Raw> {
        parts.iter().map(|p| if *p == "@" { Raw::Slot } else { Raw::Bytes(p.as_bytes().to_vec()) }).collect()
    }

    fn expected(parts: &[&str], token: &str) -> Vec<u8> {
        parts.iter().map(|p| if *p == "@" { token } else { p }).collect::<String>().into_bytes()
    }

    #[test]
    fn base64_windows_decode_to_the_text_with_the_token() {
        let cases: [&[&str]; 6] = [
            &["<a href=\"x/", "@", "\">hi</a>\r\n"],
            &["a", "@", "@", "b"],
            &["ab", "@", "c", "@", "defghij"],
            &["", "@"],
            &["@", ""],
            &["0123456789".repeat(30).leak(), "@", "z".repeat(200).leak()],
        ];
        for parts in cases {
            for token in ["", "abc", "abcdef", &"x".repeat(300)] {
                for end in [true, false] {
                    let text = fill(&base64(segs(parts), end), token);
                    assert!(text.split(|&b| b == b'\n').all(|l| l.len() <= 77), "{parts:?}");
                    let clean: Vec<u8> = text.iter().copied().filter(|b| !b"\r\n".contains(b)).collect();
                    assert_eq!(STANDARD.decode(&clean).unwrap(), expected(parts, token), "{parts:?} {token}");
                    assert!(text.is_empty() || text.ends_with(b"\r\n") == end, "{parts:?} {token} {end}");
                }
            }
        }
    }

    #[test]
    fn quoted_printable_round_trips() {
        let cases: [&[&str]; 4] = [
            &["caf\u{e9} = ok \r\nnext line   \r\n", "@", " after\r\n"],
            &[&"long ".repeat(40), "@", "@", "\tend"],
            &["=\r\n\r\n", "@"],
            &["x"],
        ];
        for parts in cases {
            for token in ["", "tok", &"t".repeat(200)] {
                let text = fill(&quoted_printable(&segs(parts)), token);
                for line in text.split(|&b| b == b'\n') {
                    assert!(line.len() <= 77, "line too long: {:?}", String::from_utf8_lossy(line));
                    assert!(!line.strip_suffix(b"\r").unwrap_or(line).ends_with(b" "), "trailing space");
                }
                let decoded = mail_parser::decoders::quoted_printable::quoted_printable_decode(&text).unwrap();
                assert_eq!(decoded, expected(parts, token), "{parts:?}");
            }
        }
    }

    #[test]
    fn identity_limits() {
        assert!(identity_fits(&segs(&["short line\r\n", "@", "\r\n"]), true, 500));
        assert!(!identity_fits(&segs(&[&"x".repeat(600), "@"]), false, 500));
        assert!(!identity_fits(&segs(&["caf\u{e9}"]), true, 10));
        assert!(identity_fits(&segs(&["caf\u{e9}"]), false, 10));
    }

    #[test]
    fn charsets() {
        assert_eq!(Charset::detect(None, b"plain").unwrap().0, Charset::Ascii);
        assert_eq!(Charset::detect(Some("UTF-8"), "é".as_bytes()).unwrap(), (Charset::Utf8, "é".into()));
        assert!(Charset::detect(Some("utf-8"), b"\xff").is_none(), "malformed UTF-8 is left alone");
        assert!(Charset::detect(Some("x-unknown"), b"a").is_none());
        assert!(Charset::detect(Some("utf-16"), b"a").is_none());
        let (cs, text) = Charset::detect(Some("iso-8859-1"), b"caf\xe9").unwrap();
        assert_eq!(text, "café");
        assert_eq!(cs.encode("café €", true), b"caf\xe9 \x80");
        assert_eq!(Charset::Ascii.encode("© x", true), b"&#169; x");
        let (cs, _) = Charset::detect(Some("iso-8859-2"), b"a").unwrap();
        assert_eq!(cs.encode("ä→", true), b"\xe4&#8594;");
        assert_eq!(crlf("a\nb\r\nc\rd"), "a\r\nb\r\nc\r\nd");
    }
}

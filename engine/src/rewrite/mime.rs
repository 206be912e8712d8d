//! The MIME side of rewriting: which parts of a message may be rewritten and where they lie
//! in its bytes (mail-parser gives the tree and the offsets), decoding a part's transfer
//! encoding, and splicing the rewritten parts back between the untouched bytes.
//!
//! Only leaf `text/html` and `text/plain` parts reachable through `multipart/*` from the
//! top are candidates; attachments (`Content-Disposition: attachment`) and anything inside an
//! attached message (`message/rfc822`) are never touched, and neither is the multipart
//! structure: preambles, boundaries and every other part keep their exact bytes.

use super::encode::Piece;
use mail_parser::{Encoding, MessageParser, MimeHeaders, PartType};
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Html,
    Text,
}

/// A part that may be rewritten.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: Kind,
    /// Its content (between the blank line after its header and the CRLF before the next
    /// boundary, or the end of the message).
    pub body: Range<usize>,
    /// Where a new header field of the part goes (before the blank line).
    pub header_end: usize,
    pub charset: Option<String>,
    pub encoding: Encoding,
    /// `7bit` (or no Content-Transfer-Encoding) rather than `8bit`/`binary`.
    pub seven_bit: bool,
    /// The `Content-Transfer-Encoding` field, line break included.
    pub cte_field: Option<Range<usize>>,
}

impl Target {
    /// The content with its transfer encoding undone; `None` when it is malformed.
    pub fn decoded(&self, message: &[u8]) -> Option<Vec<u8>> {
        let raw = &message[self.body.clone()];
        match self.encoding {
            Encoding::None => Some(raw.to_vec()),
            Encoding::QuotedPrintable => mail_parser::decoders::quoted_printable::quoted_printable_decode(raw),
            Encoding::Base64 => mail_parser::decoders::base64::base64_decode(raw),
        }
    }

    /// Whether the original content ended with a line break.
    pub fn ends_with_crlf(&self, message: &[u8]) -> bool {
        let raw = &message[self.body.clone()];
        raw.is_empty() || raw.ends_with(b"\n")
    }
}

/// What rewriting needs to know of a message.
#[derive(Debug, Clone)]
pub struct Layout {
    pub targets: Vec<Target>,
    /// Where new top-level header fields go (before the blank line that ends the header).
    pub header_end: usize,
    /// The URLs of the message's own `List-Unsubscribe`, if it has one.
    pub list_unsubscribe: Option<Vec<String>>,
    /// The lower-case domain of the first From address.
    pub from_domain: Option<String>,
}

/// The layout of `message`; `None` when it does not parse as MIME with CRLF line breaks.
pub fn layout(message: &[u8]) -> Option<Layout> {
    let parsed = MessageParser::new().parse(message)?;
    let root = parsed.parts.first()?;
    let header_end = (root.offset_body as usize).checked_sub(2)?;
    if message.get(header_end..header_end + 2) != Some(b"\r\n") {
        return None;
    }
    let list_unsubscribe = parsed
        .header_raw(mail_parser::HeaderName::ListUnsubscribe)
        .map(|v| super::unsubscribe::urls(v).into_iter().filter(|u| !u.starts_with("mailto:")).collect());
    let from_domain = parsed
        .from()
        .and_then(|f| f.first())
        .and_then(|a| a.address())
        .and_then(|a| a.rsplit_once('@'))
        .map(|(_, d)| d.trim().to_ascii_lowercase())
        .filter(|d| !d.is_empty());
    let mut targets = Vec::new();
    let mut stack = vec![0usize];
    while let Some(id) = stack.pop() {
        let part = parsed.parts.get(id)?;
        match &part.body {
            PartType::Multipart(children) => stack.extend(children.iter().rev().map(|&c| c as usize)),
            PartType::Html(_) | PartType::Text(_) => {
                if let Some(t) = target(part, message) {
                    targets.push(t);
                }
            }
            _ => {}
        }
    }
    targets.sort_by_key(|t| t.body.start);
    Some(Layout { targets, header_end, list_unsubscribe, from_domain })
}

fn target(part: &mail_parser::MessagePart<'_>, message: &[u8]) -> Option<Target> {
    if part.content_disposition().is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment")) {
        return None;
    }
    let ctype = part.content_type();
    let kind = match ctype.map(|c| (c.ctype().to_ascii_lowercase(), c.subtype().map(str::to_ascii_lowercase))) {
        None => Kind::Text,
        Some((t, Some(s))) if t == "text" && s == "html" => Kind::Html,
        Some((t, Some(s))) if t == "text" && s == "plain" => Kind::Text,
        _ => return None,
    };
    let (body_start, body_end) = (part.offset_body as usize, part.offset_end as usize);
    let header_end = body_start.checked_sub(2)?;
    if body_end < body_start || body_end > message.len() || message.get(header_end..body_start) != Some(b"\r\n") {
        return None;
    }
    let cte_field = part
        .headers
        .iter()
        .find(|h| matches!(h.name, mail_parser::HeaderName::ContentTransferEncoding))
        .map(|h| h.offset_field as usize..h.offset_end as usize);
    let cte = part.content_transfer_encoding().map(|v| v.trim().to_ascii_lowercase());
    let seven_bit = cte.as_deref().is_none_or(|c| c == "7bit");
    if part.encoding == Encoding::None && !matches!(cte.as_deref(), None | Some("7bit" | "8bit" | "binary")) {
        return None; // an encoding mail-parser does not decode (x-uuencode, …): leave it
    }
    Some(Target {
        kind,
        body: body_start..body_end,
        header_end,
        charset: ctype.and_then(|c| c.attribute("charset")).map(str::to_owned),
        encoding: part.encoding,
        seven_bit,
        cte_field,
    })
}

/// A change to the message: replace `range` with `pieces` (an empty range inserts).
#[derive(Debug)]
pub struct Edit {
    pub range: Range<usize>,
    pub pieces: Vec<Piece>,
}

/// The message with `edits` applied (they must not overlap), as pieces; adjacent literal
/// bytes are merged.
pub fn splice(message: &[u8], mut edits: Vec<Edit>) -> Vec<Piece> {
    edits.sort_by_key(|e| (e.range.start, e.range.end));
    let mut out: Vec<Piece> = Vec::new();
    let push = |p: Piece, out: &mut Vec<Piece>| match (out.last_mut(), p) {
        (_, Piece::Bytes(b)) if b.is_empty() => {}
        (Some(Piece::Bytes(prev)), Piece::Bytes(b)) => prev.extend_from_slice(&b),
        (_, p) => out.push(p),
    };
    let mut at = 0;
    for e in edits {
        push(Piece::Bytes(message[at..e.range.start].to_vec()), &mut out);
        for p in e.pieces {
            push(p, &mut out);
        }
        at = e.range.end;
    }
    push(Piece::Bytes(message[at..].to_vec()), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTI: &[u8] = b"From: News <news@Sender.test>\r\nList-Unsubscribe: <mailto:u@x.test>, <https://x.test/u>\r\n\
Content-Type: multipart/mixed; boundary=\"M\"\r\n\r\npreamble\r\n--M\r\nContent-Type: multipart/alternative; boundary=\"A\"\r\n\r\n\
--A\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--A\r\nContent-Type: text/html; charset=\"iso-8859-1\"\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\n<p>caf=E9</p>\r\n--A--\r\n--M\r\nContent-Type: text/plain\r\n\
Content-Disposition: attachment; filename=a.txt\r\n\r\nattached\r\n--M\r\nContent-Type: message/rfc822\r\n\r\n\
From: x@y.test\r\nContent-Type: text/html\r\n\r\n<p>inner</p>\r\n--M--\r\n";

    #[test]
    fn finds_text_parts_but_not_attachments_or_attached_messages() {
        let l = layout(MULTI).unwrap();
        assert_eq!(l.from_domain.as_deref(), Some("sender.test"));
        assert_eq!(l.list_unsubscribe, Some(vec!["https://x.test/u".to_owned()]));
        assert_eq!(&MULTI[l.header_end - 2..l.header_end + 2], b"\r\n\r\n");
        assert_eq!(l.targets.len(), 2, "{:?}", l.targets);
        let (text, html) = (&l.targets[0], &l.targets[1]);
        assert_eq!((text.kind, &MULTI[text.body.clone()]), (Kind::Text, &b"hello"[..]));
        assert_eq!(html.kind, Kind::Html);
        assert_eq!(html.charset.as_deref(), Some("iso-8859-1"));
        assert_eq!(html.decoded(MULTI).unwrap(), b"<p>caf\xe9</p>", "the CRLF before a boundary is the boundary's");
        assert_eq!(&MULTI[html.cte_field.clone().unwrap()], b"Content-Transfer-Encoding: quoted-printable\r\n");
        assert!(!html.ends_with_crlf(MULTI) && !text.ends_with_crlf(MULTI));
    }

    #[test]
    fn splice_keeps_everything_else() {
        let l = layout(MULTI).unwrap();
        let html = &l.targets[1];
        let edits = vec![
            Edit { range: html.body.clone(), pieces: vec![Piece::Bytes(b"NEW\r\n".to_vec())] },
            Edit { range: l.header_end..l.header_end, pieces: vec![Piece::Bytes(b"X-Added: 1\r\n".to_vec())] },
        ];
        let out = splice(MULTI, edits);
        assert_eq!(out.len(), 1);
        let Piece::Bytes(b) = &out[0] else { panic!() };
        let expected = String::from_utf8_lossy(MULTI).replace("<p>caf=E9</p>\r\n--A--", "NEW\r\n\r\n--A--").replacen(
            "boundary=\"M\"\r\n",
            "boundary=\"M\"\r\nX-Added: 1\r\n",
            1,
        );
        assert_eq!(String::from_utf8_lossy(b), expected);
    }

    #[test]
    fn single_part_and_refusals() {
        let m = b"From: a@b.test\r\n\r\nplain body\r\n";
        let l = layout(m).unwrap();
        assert_eq!(l.targets.len(), 1);
        assert_eq!(&m[l.targets[0].body.clone()], b"plain body\r\n");
        assert!(l.list_unsubscribe.is_none());
        let uu =
            b"From: a@b.test\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n";
        assert!(layout(uu).unwrap().targets.is_empty());
    }
}

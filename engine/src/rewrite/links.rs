//! Finding the links to track: `href` of `<a>` and `<area>` in HTML (with lol_html), bare
//! `http(s)://` URLs in plain text. Pure functions over decoded text.
//!
//! A tracked link's URL is the attribute value after HTML character-reference decoding, by
//! the HTML5 rules for attributes (so `&amp;` is `&` but `?a=1&copy=2` stays as written),
//! with leading and trailing whitespace and any tab or line break removed, as every browser
//! does. Nothing else is changed: no URL parser touches it. Left alone: other schemes
//! (`mailto:`, `tel:`, `sms:`, `javascript:`, `data:`, `cid:`), fragments, the unsubscribe
//! URLs, URLs with other control characters, and links carrying `data-herald-notrack` (the
//! attribute is removed).

use lol_html::html_content::{ContentType, Element};
use lol_html::{element, end, RewriteStrSettings};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Most links tracked in one body; the rest are left as they are.
pub const MAX_LINKS: usize = 1000;
/// The attribute that opts a link out of tracking (removed on output).
pub const NOTRACK: &str = "data-herald-notrack";

/// A piece of rewritten HTML or text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// The tracked link with this index (into the URL list).
    Link(usize),
    /// Where the open pixel goes.
    Pixel,
}

/// What to do to an HTML part.
pub struct HtmlJob<'a> {
    pub track_links: bool,
    pub pixel: bool,
    /// URLs never tracked (the message's `List-Unsubscribe` URLs).
    pub skip: &'a [String],
}

/// The rewritten HTML as pieces, and the URLs of the tracked links in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rewritten {
    pub pieces: Vec<Piece>,
    pub urls: Vec<String>,
}

/// Rewrites links and places the pixel. `Err` when lol_html cannot process the document.
pub fn rewrite_html(html: &str, job: &HtmlJob<'_>) -> Result<Rewritten, String> {
    // Places are marked in lol_html's output with a string that cannot occur in the input.
    let nonce = marker_nonce(html);
    let urls: Rc<RefCell<Vec<String>>> = Rc::default();
    let pixel_placed = Rc::new(Cell::new(false));
    let link = |el: &mut Element| {
        if el.has_attribute(NOTRACK) {
            el.remove_attribute(NOTRACK);
            return Ok(());
        }
        if !job.track_links || urls.borrow().len() >= MAX_LINKS {
            return Ok(());
        }
        let Some(raw) = el.get_attribute("href") else { return Ok(()) };
        let Some(url) = trackable(&decode_attribute(&raw), job.skip) else { return Ok(()) };
        let mut urls = urls.borrow_mut();
        el.set_attribute("href", &format!("{nonce}L{};", urls.len()))?;
        urls.push(url);
        Ok(())
    };
    let settings = RewriteStrSettings::new()
        .with_strict(false)
        .append_element_content_handler(element!("a[href], area[href]", link))
        .append_element_content_handler(element!("a[data-herald-notrack], area[data-herald-notrack]", |el| {
            el.remove_attribute(NOTRACK);
            Ok(())
        }))
        .append_element_content_handler(element!("body", |el| {
            if !job.pixel {
                return Ok(());
            }
            let (marker, placed) = (format!("{nonce}P;"), pixel_placed.clone());
            el.on_end_tag(lol_html::end_tag!(move |end| {
                if !placed.replace(true) {
                    end.before(&marker, ContentType::Html);
                }
                Ok(())
            }))?;
            Ok(())
        }))
        .append_document_content_handler(end!(|end| {
            // No `</body>`: the pixel goes at the very end.
            if job.pixel && !pixel_placed.replace(true) {
                end.append(&format!("{nonce}P;"), ContentType::Html);
            }
            Ok(())
        }));
    let out = lol_html::rewrite_str(html, settings).map_err(|e| e.to_string())?;
    let urls = urls.take();
    Ok(Rewritten { pieces: split_markers(&out, &nonce, urls.len()), urls })
}

/// A marker prefix absent from `text`.
fn marker_nonce(text: &str) -> String {
    loop {
        let nonce = format!("\u{1}hrld{:016x}", rand::random::<u64>());
        if !text.contains(&nonce) {
            return nonce;
        }
    }
}

fn split_markers(out: &str, nonce: &str, links: usize) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut rest = out;
    while let Some(at) = rest.find(nonce) {
        if at > 0 {
            pieces.push(Piece::Text(rest[..at].to_owned()));
        }
        let after = &rest[at + nonce.len()..];
        let end = after.find(';').expect("markers end with ;");
        let piece = match &after[..end] {
            "P" => Piece::Pixel,
            l => Piece::Link(l[1..].parse::<usize>().ok().filter(|&i| i < links).expect("our own link marker")),
        };
        pieces.push(piece);
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    pieces
}

/// The URL to track, if `decoded` (an `href` after character-reference decoding) is one.
pub fn trackable(decoded: &str, skip: &[String]) -> Option<String> {
    let trimmed = decoded.trim_matches(|c: char| c.is_ascii_whitespace());
    let url: String = trimmed.chars().filter(|c| !matches!(c, '\t' | '\n' | '\r')).collect();
    let lower = url.get(..8).unwrap_or(&url).to_ascii_lowercase();
    let http = lower.starts_with("http://") || lower.starts_with("https://");
    if !http || url.len() > 8000 || url.chars().any(|c| c.is_control()) || skip.contains(&url) {
        return None;
    }
    Some(url)
}

/// Decodes character references in an attribute value (HTML5 tokenizer rules).
pub fn decode_attribute(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        match char_reference(after) {
            Some((decoded, used)) => {
                out.push_str(&decoded);
                rest = &after[used..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The reference at the start of `s` (just after `&`): its text and the bytes it used.
fn char_reference(s: &str) -> Option<(String, usize)> {
    if let Some(num) = s.strip_prefix('#') {
        let (digits, radix, skip) = match num.strip_prefix(['x', 'X']) {
            Some(hex) => (hex.bytes().take_while(u8::is_ascii_hexdigit).count(), 16, 2),
            None => (num.bytes().take_while(u8::is_ascii_digit).count(), 10, 1),
        };
        if digits == 0 {
            return None;
        }
        let text = &s[skip..skip + digits];
        let code = u32::from_str_radix(text, radix).unwrap_or(u32::MAX);
        let semicolon = s[skip + digits..].starts_with(';') as usize;
        return Some((numeric(code).to_string(), skip + digits + semicolon));
    }
    let run = s.bytes().take(32).take_while(u8::is_ascii_alphanumeric).count();
    if run == 0 {
        return None;
    }
    let entities = &markup5ever::data::NAMED_ENTITIES;
    if s[run..].starts_with(';') {
        if let Some(&(a, b)) = entities.get(&s[..run + 1]) {
            return Some((chars(a, b), run + 1));
        }
    }
    for len in (1..=run).rev() {
        if let Some(&(a, b)) = entities.get(&s[..len]) {
            // A legacy reference without `;` followed by `=` or an alphanumeric stays as
            // written in attributes (`?a=1&copy=2`).
            let next = s.as_bytes().get(len);
            if next.is_some_and(|&c| c == b'=' || c.is_ascii_alphanumeric()) {
                return None;
            }
            return Some((chars(a, b), len));
        }
    }
    None
}

fn chars(a: u32, b: u32) -> String {
    [a, b].into_iter().filter(|&c| c != 0).filter_map(char::from_u32).collect()
}

fn numeric(code: u32) -> char {
    match code {
        0 | 0xD800..=0xDFFF | 0x110000.. => '\u{FFFD}',
        0x80..=0x9F => {
            markup5ever::data::C1_REPLACEMENTS[(code - 0x80) as usize].unwrap_or(char::from_u32(code).unwrap())
        }
        c => char::from_u32(c).unwrap_or('\u{FFFD}'),
    }
}

/// Finds `http(s)://` URLs in plain text: a URL runs to whitespace or `<`, `>`, `"`, and
/// loses trailing punctuation (`.,;:!?'`) and an unbalanced `)`.
pub fn rewrite_text(text: &str, skip: &[String]) -> Rewritten {
    let mut out = Rewritten::default();
    let mut rest = text;
    let mut consumed = 0usize;
    let lower = text.to_ascii_lowercase();
    let mut search_from = 0;
    while let Some(found) = find_scheme(&lower[search_from..]) {
        let start = search_from + found;
        let len = text[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"'))
            .unwrap_or(text.len() - start);
        let mut url = &text[start..start + len];
        loop {
            let trimmed = url.trim_end_matches(['.', ',', ';', ':', '!', '?', '\'']);
            let trimmed = if trimmed.ends_with(')') && trimmed.matches('(').count() < trimmed.matches(')').count() {
                &trimmed[..trimmed.len() - 1]
            } else {
                trimmed
            };
            if trimmed.len() == url.len() {
                break;
            }
            url = trimmed;
        }
        search_from = start + url.len().max(1);
        let Some(url) = trackable(url, skip).filter(|_| out.urls.len() < MAX_LINKS) else { continue };
        let at = start - consumed;
        if at > 0 {
            out.pieces.push(Piece::Text(rest[..at].to_owned()));
        }
        out.pieces.push(Piece::Link(out.urls.len()));
        rest = &rest[at + url.len()..];
        consumed = start + url.len();
        out.urls.push(url);
    }
    if !rest.is_empty() {
        out.pieces.push(Piece::Text(rest.to_owned()));
    }
    out
}

fn find_scheme(lower: &str) -> Option<usize> {
    match (lower.find("http://"), lower.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_decoding_follows_html5() {
        assert_eq!(decode_attribute("https://x.test/?a=1&amp;b=2"), "https://x.test/?a=1&b=2");
        assert_eq!(decode_attribute("?a=1&b=2"), "?a=1&b=2");
        assert_eq!(decode_attribute("?a=1&copy=2"), "?a=1&copy=2", "legacy entity before = stays");
        assert_eq!(decode_attribute("?x&copy;y"), "?x\u{a9}y");
        assert_eq!(decode_attribute("&#38;&#x26;&#X26"), "&&&");
        assert_eq!(decode_attribute("&#0;&#x80;&#55296;"), "\u{FFFD}\u{20AC}\u{FFFD}");
        assert_eq!(decode_attribute("&notit;"), "&notit;");
        assert_eq!(decode_attribute("&not x&not"), "\u{ac} x\u{ac}");
        assert_eq!(decode_attribute("&&;&#;&#x;"), "&&;&#;&#x;");
        assert_eq!(decode_attribute("a&quot;b&lt;"), "a\"b<");
    }

    #[test]
    fn what_is_tracked() {
        let skip = ["https://u.test/unsub".to_owned()];
        assert_eq!(trackable("  https://x.test/a b\n", &skip).as_deref(), Some("https://x.test/a b"));
        assert_eq!(trackable("HTTP://X.test/\r\npath", &skip).as_deref(), Some("HTTP://X.test/path"));
        for no in
            ["mailto:a@b.test", "tel:+1", "sms:1", "#top", "javascript:x()", "data:x", "cid:a@b", "/rel", "ftp://x"]
        {
            assert_eq!(trackable(no, &skip), None, "{no}");
        }
        assert_eq!(trackable("https://u.test/unsub", &skip), None);
        assert_eq!(trackable("https://x.test/\u{7}", &skip), None);
    }

    fn job(skip: &[String]) -> HtmlJob<'_> {
        HtmlJob { track_links: true, pixel: true, skip }
    }

    #[test]
    fn html_links_and_pixel() {
        let html = "<html><body><a href=\"https://a.test/?x=1&amp;y=2#f\">A</a> <a href='mailto:x@y'>m</a>\
            <area href=\"http://b.test/\"><a data-herald-notrack href=\"https://c.test/\">C</a></body></html>";
        let r = rewrite_html(html, &job(&[])).unwrap();
        assert_eq!(r.urls, ["https://a.test/?x=1&y=2#f", "http://b.test/"]);
        let text: String = r
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Link(i) => format!("[L{i}]"),
                Piece::Pixel => "[P]".into(),
            })
            .collect();
        assert_eq!(
            text,
            "<html><body><a href=\"[L0]\">A</a> <a href='mailto:x@y'>m</a><area href=\"[L1]\">\
             <a href=\"https://c.test/\">C</a>[P]</body></html>"
        );
    }

    #[test]
    fn pixel_without_body_end_goes_last() {
        let r = rewrite_html("<p>hi <a href=\"https://a.test\">x</a>", &job(&[])).unwrap();
        assert_eq!(r.pieces.last(), Some(&Piece::Pixel));
        let r = rewrite_html("<body><p>hi", &job(&[])).unwrap();
        assert_eq!(r.pieces, [Piece::Text("<body><p>hi".into()), Piece::Pixel]);
        let none = HtmlJob { track_links: false, pixel: false, skip: &[] };
        let r = rewrite_html("<a data-herald-notrack href='https://a.test'>x</a>", &none).unwrap();
        assert_eq!(r.pieces, [Piece::Text("<a href='https://a.test'>x</a>".into())]);
    }

    #[test]
    fn text_links() {
        let r = rewrite_text("See https://a.test/x?y=1. Or (http://b.test/p_(1)), <https://c.test>\r\n", &[]);
        assert_eq!(r.urls, ["https://a.test/x?y=1", "http://b.test/p_(1)", "https://c.test"]);
        assert_eq!(
            r.pieces,
            [
                Piece::Text("See ".into()),
                Piece::Link(0),
                Piece::Text(". Or (".into()),
                Piece::Link(1),
                Piece::Text("), <".into()),
                Piece::Link(2),
                Piece::Text(">\r\n".into()),
            ]
        );
        assert_eq!(rewrite_text("no links", &[]).pieces, [Piece::Text("no links".into())]);
    }
}

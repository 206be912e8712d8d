//! Golden files of send-time rewriting: each `tests/rewrite/<case>/input.eml` is rewritten with
//! the options in `<case>/options` (a fixed key, recipient and time) and compared with
//! `<case>/output.eml`. A missing output is written only with `HERALD_BLESS=1` (the test then
//! fails, so blessing is a reviewed commit). Every case is also checked on its own terms: the
//! output parses, no line exceeds 998 octets, every tracking URL carries a token that verifies
//! and leads to a URL of the input, untouched parts keep their bytes, and a second recipient
//! reuses the prepared body and differs only by its token.

use herald_engine::rewrite::{token, Rewriter, Settings};
use herald_schemas::{AccountId, Body, MessageAccepted, MessageId, SendOptions, Timestamp};
use mail_parser::{MessageParser, MimeHeaders, PartType};
use std::path::{Path, PathBuf};

const HOST: &str = "https://t.herald.test";

fn keys() -> token::Keys {
    token::Keys::new(&[("k1".into(), vec![0x42; 32])], None).unwrap()
}

fn rewriter(rewrite_text: bool) -> Rewriter {
    Rewriter::new(
        Settings {
            tracking: true,
            scheme: "https".into(),
            default_host: "t.herald.test".into(),
            rewrite_text,
            keys: keys(),
            cache_bytes: 1 << 20,
        },
        None,
    )
}

fn message(options: SendOptions, recipient: &str, id: &str, body: &[u8]) -> MessageAccepted {
    MessageAccepted {
        account: AccountId("acme".into()),
        message_id: MessageId(id.into()),
        envelope_sender: "bounces@sender.test".into(),
        recipient: recipient.into(),
        recipient_domain: "example.org".into(),
        options,
        body: Body::Inline(body.to_vec()),
        accepted_at: Timestamp(1_800_000_000_000),
    }
}

fn options(words: &str) -> (SendOptions, bool) {
    let has = |w: &str| words.split_whitespace().any(|x| x == w);
    (
        SendOptions {
            inline_css: has("inlinizecss"),
            click_tracking: has("clicktracking"),
            opens_tracking: has("openstracking"),
            list_unsubscribe: has("listunsubscribe"),
            bounce_tracking: false,
        },
        has("rewrite_text"),
    )
}

/// Tracking URLs (`HOST/x/<token>`) in `text`.
fn tracking_urls(text: &str) -> Vec<(char, String)> {
    let mut out = vec![];
    let mut rest = text;
    while let Some(at) = rest.find(HOST) {
        let after = &rest[at + HOST.len()..];
        let kind = after.chars().nth(1).unwrap();
        let token: String = after[3..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
            .collect();
        out.push((kind, token.trim_end_matches('.').to_owned()));
        rest = &after[3..];
    }
    out
}

/// The decoded text of every text part.
fn texts(message: &[u8]) -> Vec<String> {
    let parsed = MessageParser::new().parse(message).expect("output parses");
    parsed
        .parts
        .iter()
        .filter_map(|p| match &p.body {
            PartType::Text(t) | PartType::Html(t) => Some(t.to_string()),
            _ => None,
        })
        .collect()
}

/// Checks one case; `false` when its output was missing and has just been written.
fn check_case(dir: &Path) -> bool {
    let (opts, rewrite_text) = options(&std::fs::read_to_string(dir.join("options")).unwrap());
    let input = std::fs::read(dir.join("input.eml")).unwrap();
    let r = rewriter(rewrite_text);
    let msg = message(opts, "Bob@Example.org", "0190f0c4a1b27c3d8e9f001122334455", &input);
    let out = r.rewrite_at(&msg, &input, 1_800_000_000);
    let out = out.data.into_owned();

    let golden = dir.join("output.eml");
    if !golden.exists() {
        assert!(
            std::env::var("HERALD_BLESS").is_ok_and(|v| v == "1"),
            "missing {}; run with HERALD_BLESS=1 once",
            golden.display()
        );
        std::fs::write(&golden, &out).unwrap();
        return false;
    }
    let expected = std::fs::read(&golden).unwrap();
    assert!(out == expected, "{} differs from its golden output", dir.display());

    for line in out.split(|&b| b == b'\n') {
        assert!(line.len() <= 999, "{}: a line of {} octets", dir.display(), line.len());
    }
    // Every tracking URL verifies and leads where the input did.
    let input_text = texts(&input).join("\n");
    let keys = keys();
    for text in texts(&out) {
        for (kind, tok) in tracking_urls(&text) {
            match kind {
                'c' => {
                    let (claims, _, url) =
                        token::verify_click(&keys, &tok).unwrap_or_else(|| panic!("bad click {tok}"));
                    assert_eq!((claims.recipient.as_str(), claims.issued_at), ("Bob@Example.org", 1_800_000_000));
                    let plain = url.replace('&', "&amp;");
                    assert!(input_text.contains(&url) || input_text.contains(&plain), "{url} is not in the input");
                }
                'o' | 'u' => {
                    let claims = token::verify_recipient(&keys, &tok).unwrap_or_else(|| panic!("bad token {tok}"));
                    assert_eq!(claims.message_id, "0190f0c4a1b27c3d8e9f001122334455");
                }
                other => panic!("unknown tracking path /{other}/"),
            }
        }
    }
    // A second recipient: the prepared body is reused, only the token differs.
    let second = message(opts, "carol@example.org", "0190f0c4a1b27c3d8e9f0011223344ff", &input);
    let out2 = r.rewrite_at(&second, &input, 1_800_000_000).data.into_owned();
    let first_texts = texts(&out);
    let second_texts = texts(&out2);
    assert_eq!(first_texts.len(), second_texts.len());
    for (a, b) in first_texts.iter().zip(&second_texts) {
        let strip = |t: &str| {
            let mut s = t.to_owned();
            for (_, tok) in tracking_urls(t) {
                let r = tok.split('.').next().unwrap().to_owned();
                s = s.replace(&r, "R");
            }
            s
        };
        assert_eq!(strip(a), strip(b), "{}: recipients differ beyond their token", dir.display());
    }
    true
}

fn cases() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/rewrite");
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

#[test]
fn golden_cases() {
    let cases = cases();
    assert!(cases.len() >= 8, "expected the rewrite cases, found {}", cases.len());
    let blessed: Vec<_> = cases.iter().filter(|d| !check_case(d)).collect();
    assert!(blessed.is_empty(), "wrote golden outputs {blessed:?}: review and commit them, then rerun");
}

fn rewritten(case: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/rewrite").join(case);
    (std::fs::read(dir.join("input.eml")).unwrap(), std::fs::read(dir.join("output.eml")).unwrap())
}

fn part_bytes(message: &[u8], index: usize) -> Vec<u8> {
    let parsed = MessageParser::new().parse(message).unwrap();
    let p = &parsed.parts[index];
    message[p.offset_header as usize..p.offset_end as usize].to_vec()
}

#[test]
fn alternative_text_part_untouched_and_html_rewritten() {
    let (input, output) = rewritten("alternative_qp");
    assert_eq!(part_bytes(&input, 1), part_bytes(&output, 1), "the text/plain part keeps its bytes");
    let html = &texts(&output)[1];
    let keys = keys();
    let urls: Vec<String> = tracking_urls(html)
        .into_iter()
        .filter(|(k, _)| *k == 'c')
        .map(|(_, t)| token::verify_click(&keys, &t).unwrap().2)
        .collect();
    assert_eq!(
        urls,
        [
            "https://shop.example/sale?utm_source=news&utm_medium=email&x=%2F+y#top",
            "https://shop.example/p?a=1&b=2&copy=3",
            "http://map.example/region?id=7",
        ]
    );
    for kept in ["href=\"#section\"", "mailto:help@sender.test", "tel:+15551234", "javascript:void(0)"] {
        assert!(html.contains(kept), "{kept} left alone");
    }
    assert!(html.contains("href=\"https://private.example/account\""), "opted-out link untouched");
    assert!(!html.contains("data-herald-notrack"), "the opt-out attribute is removed");
    assert!(html.contains("style=\"color: #333;"), "CSS inlined: {html}");
    assert!(html.contains("@media (max-width: 600px)"), "media query kept");
    assert!(html.contains(&format!("{HOST}/u/")), "the placeholder became the unsubscribe URL");
    let pixel = html.find(&format!("<img src=\"{HOST}/o/")).expect("pixel");
    assert!(pixel < html.find("</body>").unwrap());
    let headers =
        String::from_utf8_lossy(&output[..output.windows(4).position(|w| w == b"\r\n\r\n").unwrap()]).into_owned();
    assert!(headers.contains(&format!("List-Unsubscribe: <{HOST}/u/")), "{headers}");
    assert!(headers.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
    let parsed = MessageParser::new().parse(&output).unwrap();
    assert_eq!(parsed.parts[2].content_transfer_encoding(), Some("quoted-printable"));
}

#[test]
fn base64_stays_base64_and_no_body_end_gets_the_pixel_last() {
    let (_, output) = rewritten("base64_html");
    let parsed = MessageParser::new().parse(&output).unwrap();
    assert_eq!(parsed.parts[0].content_transfer_encoding(), Some("base64"));
    let body = &output[parsed.parts[0].offset_body as usize..];
    assert!(body.split(|&b| b == b'\n').all(|l| l.len() <= 77), "base64 lines of at most 76 characters");
    let (_, output) = rewritten("no_body_end");
    let html = &texts(&output)[0];
    assert!(html.trim_end().ends_with("/>"), "pixel at the very end: {html}");
    assert!(html.contains("a link</a>"));
}

#[test]
fn latin1_keeps_its_charset_and_long_7bit_lines_become_quoted_printable() {
    let (_, output) = rewritten("latin1_css");
    let parsed = MessageParser::new().parse(&output).unwrap();
    assert_eq!(parsed.parts[0].content_type().unwrap().attribute("charset"), Some("iso-8859-1"));
    let html = &texts(&output)[0];
    assert!(html.contains("Café") && html.contains("&#8594;"), "é kept, → as a reference: {html}");
    assert!(html.contains("<h1 style=\"color: red;\">"));
    let (_, output) = rewritten("long_line_7bit");
    let parsed = MessageParser::new().parse(&output).unwrap();
    assert_eq!(parsed.parts[0].content_transfer_encoding(), Some("quoted-printable"));
    assert_eq!(tracking_urls(&texts(&output)[0]).len(), 30);
}

#[test]
fn text_links_skip_the_authors_unsubscribe_and_keep_its_header() {
    let (_, output) = rewritten("text_links");
    let text = &texts(&output)[0];
    assert!(text.contains("Unsubscribe: https://lists.sender.test/u?id=42"), "{text}");
    let clicks = tracking_urls(text).into_iter().filter(|(k, _)| *k == 'c').count();
    assert_eq!(clicks, 2);
    let headers =
        String::from_utf8_lossy(&output[..output.windows(4).position(|w| w == b"\r\n\r\n").unwrap()]).into_owned();
    assert_eq!(headers.matches("List-Unsubscribe:").count(), 1, "the author's header only: {headers}");
    assert!(!headers.contains("List-Unsubscribe-Post"));
    let (input, output) = rewritten("unsubscribe_only");
    let split = |m: &[u8]| m.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert_eq!(&input[split(&input)..], &output[split(&output)..], "the body is untouched");
}

#[test]
fn attachments_and_attached_messages_are_untouched() {
    let (input, output) = rewritten("mixed_attachments");
    let parsed_in = MessageParser::new().parse(&input).unwrap();
    for (i, p) in parsed_in.parts.iter().enumerate().skip(2) {
        if p.is_text_html() || p.is_message() {
            assert_eq!(part_bytes(&input, i), part_bytes(&output, i), "part {i}");
        }
    }
    let out = String::from_utf8_lossy(&output);
    assert!(out.contains("This is a preamble.") && out.ends_with("--m--\r\nepilogue\r\n"));
    assert!(out.contains("https://attached.example/") && out.contains("https://forwarded.example/"));
}

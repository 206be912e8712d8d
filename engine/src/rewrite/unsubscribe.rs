//! One-click unsubscribe: the `List-Unsubscribe` and `List-Unsubscribe-Post` header fields
//! (RFC 2369, RFC 8058) pointing at `/u/<token>`, and the `%unsubscribe_url%` placeholder an
//! author may put in the body (a footer link) which becomes the same URL.
//!
//! A message that already has its own `List-Unsubscribe` keeps it and gets none from Herald
//! (RFC 8058 allows one HTTPS URI, and the author's list is theirs to run); its URLs are never
//! click-tracked.

use super::encode::Seg;

/// Replaced by the recipient's unsubscribe URL in HTML and text parts.
pub const PLACEHOLDER: &str = "%unsubscribe_url%";

/// The header fields to add, around the recipient token.
pub fn header(base: &str) -> Vec<Seg> {
    vec![
        Seg::Text(format!("List-Unsubscribe: <{base}/u/")),
        Seg::Slot,
        Seg::Text(">\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n".into()),
    ]
}

/// The URLs of an existing `List-Unsubscribe` value (`<uri>, <uri>`).
pub fn urls(value: &str) -> Vec<String> {
    value
        .split('<')
        .skip(1)
        .filter_map(|s| s.split_once('>').map(|(u, _)| u.chars().filter(|c| !c.is_ascii_whitespace()).collect()))
        .collect()
}

/// Splits `text` at each placeholder, which becomes the unsubscribe URL.
pub fn expand(text: &str, base: &str, out: &mut Vec<Seg>) {
    let mut rest = text;
    while let Some(at) = rest.find(PLACEHOLDER) {
        out.push(Seg::Text(format!("{}{base}/u/", &rest[..at])));
        out.push(Seg::Slot);
        rest = &rest[at + PLACEHOLDER.len()..];
    }
    if !rest.is_empty() {
        out.push(Seg::Text(rest.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_urls_and_placeholder() {
        assert_eq!(
            urls("<mailto:u@x.test?subject=unsub>,\r\n <https://x.test/u?id=1>"),
            ["mailto:u@x.test?subject=unsub", "https://x.test/u?id=1"]
        );
        let mut out = vec![];
        expand("a %unsubscribe_url% b", "https://t.test", &mut out);
        assert_eq!(out, [Seg::Text("a https://t.test/u/".into()), Seg::Slot, Seg::Text(" b".into())]);
    }
}

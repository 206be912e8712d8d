//! CSS inlining with css-inline: the rules of `<style>` blocks move into `style` attributes so
//! that webmail that strips `<head>` still shows them. Offline only (css-inline is built
//! without its HTTP and file features, and remote stylesheets are not loaded); `@media` and
//! other at-rules stay in a `<style>` block, where clients that honour them find them.
//! css-inline re-serializes the whole document, so it runs once per distinct body.

/// The inliner Herald uses.
pub fn inliner() -> css_inline::CSSInliner<'static> {
    css_inline::CSSInliner::options().load_remote_stylesheets(false).keep_at_rules(true).build()
}

/// Whether `html` has anything to inline (a `<style>` block or a stylesheet link).
pub fn has_styles(html: &str) -> bool {
    let bytes = html.as_bytes();
    bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"<style"))
        || bytes.windows(5).any(|w| w.eq_ignore_ascii_case(b"<link"))
}

/// Inlines the document's styles; `Err` says why it could not (the caller keeps the HTML).
pub fn inline(inliner: &css_inline::CSSInliner<'_>, html: &str) -> Result<String, String> {
    inliner.inline(html).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inlines_and_keeps_media_queries() {
        let html = "<html><head><style>p { color: red } @media (max-width: 600px) { p { color: blue } }</style>\
                    <link rel=\"stylesheet\" href=\"https://cdn.example/x.css\"></head><body><p>Hi</p></body></html>";
        assert!(has_styles(html));
        let out = inline(&inliner(), html).unwrap();
        assert!(out.contains("<p style=\"color: red;\">Hi</p>"), "{out}");
        assert!(out.contains("@media (max-width: 600px)"), "{out}");
        assert!(!has_styles("<p>plain</p>"));
    }
}

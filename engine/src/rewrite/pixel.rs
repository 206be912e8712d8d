//! The open pixel: a 1×1 transparent GIF fetched from `/o/<token>`, placed just before
//! `</body>` (or at the very end of an HTML part that has none) by the same lol_html pass
//! that rewrites links ([`super::links::rewrite_html`]).

/// The GIF the tracking server answers `/o/<token>` with (GIF89a, 1×1, transparent).
pub const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
    0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// The `<img>` element around the token: the text before it and after it.
pub fn html(base: &str) -> (String, &'static str) {
    (
        format!("<img src=\"{base}/o/"),
        "\" width=\"1\" height=\"1\" alt=\"\" border=\"0\" style=\"height:1px !important;width:1px !important;\
         border-width:0 !important;margin:0 !important;padding:0 !important\" />",
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_gif_is_one_transparent_pixel() {
        assert_eq!(super::GIF.len(), 43);
        assert_eq!(&super::GIF[..6], b"GIF89a");
        assert_eq!(super::GIF[6..10], [1, 0, 1, 0]);
        assert_eq!(super::GIF.last(), Some(&0x3b));
    }
}

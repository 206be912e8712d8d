//! The web dashboard at `/ui` (`docs/dashboard.md`, ADR 0015): static HTML, CSS and
//! JavaScript modules embedded in the binary, served with a strict Content-Security-Policy.
//! The pages call the public JSON API with the key the user typed; this module adds no
//! route that reads data and no second way to authenticate.

use axum::extract::Path;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// One embedded file: its path under `/ui/`, media type, bytes and validator.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
    etag: [u8; 18],
}

macro_rules! asset {
    ($path:literal, $media:expr) => {
        Asset {
            path: $path,
            media_type: $media,
            bytes: include_bytes!(concat!("../../ui/", $path)),
            etag: const_etag(include_bytes!(concat!("../../ui/", $path))),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// The page; its files' URLs carry `{{release}}`.
static INDEX: &Asset = &ASSETS[0];

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("chart.js", JS),
    asset!("pages/domains.js", JS),
    asset!("pages/stats.js", JS),
    asset!("pages/messages.js", JS),
    asset!("pages/suppressions.js", JS),
    asset!("pages/webhooks.js", JS),
    asset!("pages/operator.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

/// The policy of every `/ui` reply: only this origin's scripts, styles, images and API;
/// no inline script or style, no framing, no plugins, no `<base>` tricks.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A strong validator computed at compile time: FNV-1a 64 of the bytes, as 16 hex digits
/// between quotes.
const fn const_etag(bytes: &[u8]) -> [u8; 18] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = DIGITS[((h >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

impl Asset {
    fn etag(&self) -> &str {
        std::str::from_utf8(&self.etag).unwrap_or("\"0\"")
    }
}

/// `/ui` (redirects to `/ui/`), `/ui/` (the page) and `/ui/<release>/{file}` (its files).
pub fn router() -> axum::Router {
    axum::Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|headers: HeaderMap| async move { page(&headers) }))
        .route("/ui/{*path}", get(|Path(path): Path<String>, headers: HeaderMap| async move { file(&path, &headers) }))
}

/// This build's release of the files: a hash of every file's tag. The page links its files
/// under `/ui/<release>/`, so they can be cached for good and an upgrade changes every URL.
pub fn release() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ASSETS.iter().flat_map(|a| a.etag.iter()) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().trim_start_matches("W/") == etag)))
}

/// The page, with its files' URLs under this release; revalidated on each visit (`no-cache`,
/// a 304 when unchanged).
fn page(headers: &HeaderMap) -> Response {
    let release = release();
    let etag = format!("\"{release}\"");
    let mut response = if not_modified(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let html = String::from_utf8_lossy(INDEX.bytes).replace("{{release}}", &release);
        ([(header::CONTENT_TYPE, INDEX.media_type)], html).into_response()
    };
    let h = response.headers_mut();
    if let Ok(tag) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, tag);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    with_policy(response)
}

/// A file of this release (cached for a year, `immutable`); a file of another release
/// (a page loaded before an upgrade) is redirected to this release's; anything else is 404.
fn file(path: &str, headers: &HeaderMap) -> Response {
    let (release, name) = path.split_once('/').unwrap_or(("", path));
    let asset = ASSETS.iter().find(|a| a.path == name && a.path != INDEX.path);
    let current = self::release();
    let response = match asset {
        Some(asset) if release == current => {
            let mut response = if not_modified(headers, asset.etag()) {
                StatusCode::NOT_MODIFIED.into_response()
            } else {
                asset.bytes.into_response()
            };
            let h = response.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.media_type));
            if let Ok(tag) = HeaderValue::from_str(asset.etag()) {
                h.insert(header::ETAG, tag);
            }
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
            response
        }
        Some(asset) if release.len() == 16 && release.bytes().all(|b| b.is_ascii_hexdigit()) => {
            let mut response = Redirect::temporary(&format!("/ui/{current}/{}", asset.path)).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        _ => (StatusCode::NOT_FOUND, "no such file in the dashboard\n").into_response(),
    };
    with_policy(response)
}

fn with_policy(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_quoted_etag_and_the_page_loads_only_embedded_files() {
        for a in ASSETS {
            assert!(a.etag().starts_with('"') && a.etag().ends_with('"') && a.etag().len() == 18, "{}", a.path);
        }
        let mut tags: Vec<&str> = ASSETS.iter().map(|a| a.etag()).collect();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
        // Every module the code imports is embedded (a missing one would 404 in the browser).
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(a.bytes).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let spec = line.rsplit(['"', '\'']).nth(1).unwrap();
                let base = a.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                let resolved = resolve(base, spec);
                assert!(
                    ASSETS.iter().any(|x| x.path == resolved),
                    "{} imports {spec} ({resolved}), not embedded",
                    a.path
                );
            }
        }
    }

    fn resolve(base: &str, spec: &str) -> String {
        let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
        for piece in spec.split('/') {
            match piece {
                "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        parts.join("/")
    }
}

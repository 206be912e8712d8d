//! The dashboard: static files (HTML, CSS, JavaScript modules) compiled into the binary
//! from `ingest/ui/`, served at `/ui` with a strict Content-Security-Policy. The pages call
//! the public JSON API with the key the person signed in with, so the dashboard can do
//! nothing the API does not allow and the OpenAPI contract covers all it uses. No build
//! step, no CDN. See `docs/adr/0015-dashboard-stack.md` and `docs/dashboard.md`.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// `(name, content type, bytes)` of every file under `/ui/`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../ui/index.html")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../ui/app.css")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../ui/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_bytes!("../ui/api.js")),
    ("chart.js", "text/javascript; charset=utf-8", include_bytes!("../ui/chart.js")),
    ("customer.js", "text/javascript; charset=utf-8", include_bytes!("../ui/customer.js")),
    ("domains.js", "text/javascript; charset=utf-8", include_bytes!("../ui/domains.js")),
    ("operator.js", "text/javascript; charset=utf-8", include_bytes!("../ui/operator.js")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../ui/favicon.svg")),
];

/// Scripts and styles only from Herald itself, no inline code, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(name: &str) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let mut r = (StatusCode::OK, *bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The files change with the binary; revalidation is cheap on loopback and a LAN.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `/ui` and its files.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route("/ui/{file}", get(|Path(file): Path<String>| async move { asset(&file) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_is_a_listed_asset() {
        // Each `import … from "./x.js"` and `<script src>`/`<link href>` names a served file.
        for (name, _, bytes) in ASSETS {
            let text = String::from_utf8_lossy(bytes);
            for part in text.split(['"', '\'']) {
                if let Some(file) = part.strip_prefix("./").or_else(|| part.strip_prefix("/ui/")) {
                    if file.ends_with(".js") || file.ends_with(".css") || file.ends_with(".svg") {
                        assert!(
                            ASSETS.iter().any(|(n, _, _)| *n == file),
                            "{name} refers to {file}, which is not served"
                        );
                    }
                }
            }
            assert!(
                !text.contains("http://") && !text.contains("https://") || *name == "favicon.svg",
                "{name} must not load anything from elsewhere"
            );
        }
    }
}

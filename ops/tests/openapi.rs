//! The OpenAPI contract: `/v1/openapi.json` is OpenAPI 3.1, generated from the handlers'
//! annotations, lists exactly the routes `docs/api.md` lists, and every customer or operator
//! route says how it authenticates and documents its 401.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use support::herald::{config, start, Backends};

/// Paths named in the route table at the top of `docs/api.md`.
fn documented_paths() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md")).unwrap();
    let table = doc.split("## Authentication").next().unwrap();
    let mut paths = BTreeSet::new();
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = line.split(" | ").next().unwrap();
        for piece in first_cell.split('`') {
            if let Some(i) = piece.find('/') {
                let path = piece[i..].split(['?', '[', ' ']).next().unwrap();
                paths.insert(path.to_owned());
            }
        }
    }
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_covers_every_route_and_agrees_with_api_md() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(&dir.path().join("data"), support::free_port(), support::free_port(), Backends::Embedded, vec![]);
    let h = start(c).await;
    let r = h.http.get(format!("{}/v1/openapi.json", h.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0", "OpenAPI 3.1");

    let paths = doc["paths"].as_object().unwrap();
    let in_doc: BTreeSet<String> = paths.keys().cloned().collect();
    let mut in_md = documented_paths();
    assert!(in_md.remove("/v1/openapi.json"), "api.md lists the document itself");
    let missing: Vec<_> = in_md.difference(&in_doc).collect();
    let undocumented: Vec<_> = in_doc.difference(&in_md).collect();
    assert!(missing.is_empty(), "in docs/api.md but not in the OpenAPI document: {missing:?}");
    assert!(undocumented.is_empty(), "in the OpenAPI document but not in docs/api.md's table: {undocumented:?}");

    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}: responses"));
            assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path}: a success reply");
            if ["/metrics", "/healthz", "/readyz"].contains(&path.as_str()) {
                continue;
            }
            let security = op["security"].as_array().map(|s| s.len()).unwrap_or(0);
            assert!(security > 0, "{method} {path}: no security requirement");
            assert!(responses.contains_key("401"), "{method} {path}: 401 not documented");
            for (status, resp) in responses.iter().filter(|(s, _)| s.starts_with('4') || s.starts_with('5')) {
                let schema = &resp["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status}: the error body");
            }
        }
    }
    h.stop().await;
}

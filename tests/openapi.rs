//! `/openapi.json` stays in step with the router: every documented operation answers on a live
//! gateway, and every route string in `src/api` is documented.

mod common;

use common::gateway::{http, Gateway};
use serde_json::Value;

fn normalise(p: &str) -> String {
    let p = p.trim_end_matches('/');
    if p.is_empty() {
        "/".into()
    } else {
        p.to_string()
    }
}

#[test]
fn every_documented_operation_exists() {
    let gw = Gateway::start("");
    let doc: Value = http()
        .get(gw.url("/openapi.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let tok = gw.token("globalpci relay admin");
    let mut count = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let url = gw.url(
                &path
                    .replace("{id}", "no-such-id")
                    .replace("{token}", "no-such-token"),
            );
            let req = match method.as_str() {
                "get" => http().get(&url),
                "post" => http()
                    .post(&url)
                    .header("content-type", "application/json")
                    .body("{}"),
                "delete" => http().delete(&url),
                m => panic!("unexpected method {m}"),
            };
            let r = req.bearer_auth(&tok).send().unwrap();
            let status = r.status().as_u16();
            let body = r.text().unwrap_or_default();
            assert_ne!(status, 405, "{method} {path}: method not routed");
            assert!(
                !(status == 404 && body.contains("no such route")),
                "{method} {path}: documented but not routed"
            );
            count += 1;
        }
    }
    assert!(count >= 16, "{count} operations");
}

#[test]
fn every_route_is_documented() {
    let doc = tonegate::api::openapi_document();
    let documented: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(|p| normalise(p))
        .collect();
    let dir = common::root().join("src/api");
    let mut found = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let src = std::fs::read_to_string(entry.path()).unwrap();
        // Route registrations: `.route("…"` literals, and `("/…",` tuples a loop registers.
        let mut literals = Vec::new();
        for pat in [".route(\"", "(\"/"] {
            for (i, _) in src.match_indices(pat) {
                let rest = &src[i + pat.len()..];
                let lit = &rest[..rest.find('"').unwrap()];
                let lit = if pat.ends_with('/') {
                    format!("/{lit}")
                } else {
                    lit.to_string()
                };
                literals.push(lit);
            }
        }
        for lit in literals {
            if !lit.starts_with('/') {
                continue;
            }
            found += 1;
            let n = normalise(&lit);
            assert!(
                documented.contains(&n),
                "route {lit} in {} is not in /openapi.json",
                entry.path().display()
            );
        }
    }
    assert!(found >= 15, "found only {found} route literals");
}

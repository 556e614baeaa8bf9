//! `/openapi.json` stays in step with the router: every documented operation answers on a live
//! gateway, and every route string in `src/api` is documented.

use crate::common;

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
    // Route files: src/api and its sub-modules (e.g. src/api/pages/).
    let mut files = Vec::new();
    let mut dirs = vec![dir];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            if entry.path().is_dir() {
                dirs.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    assert!(
        files.iter().any(|f| f.ends_with("pages/agent.rs")),
        "{files:?}"
    );
    for file in files {
        let src = std::fs::read_to_string(&file).unwrap();
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
            // Mounted only on a development gateway started with `server.adjustable_clock`
            // (`tests/sessions/globalpci.rs` checks every other gateway answers 404 there).
            if !lit.starts_with('/') || lit == "/admin/v1/clock" {
                continue;
            }
            found += 1;
            let n = normalise(&lit);
            assert!(
                documented.contains(&n),
                "route {lit} in {} is not in /openapi.json",
                file.display()
            );
        }
    }
    assert!(found >= 15, "found only {found} route literals");
}

/// The values the document lists where a schema could not be derived from the type the
/// handler uses are the ones that type reads and writes.
#[test]
fn stated_values_match_the_types() {
    use tonegate::capture::Field;
    use tonegate::session::model::{SessionKind, SessionState};

    let doc = tonegate::api::openapi_document();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("not a list: {v}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    // `ResetBody.field` is tonegate-card's `Field`, which has no schema of its own.
    let reset = &doc["paths"]["/pay/agent/{id}/reset"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    let fields = strings(&reset["properties"]["field"]["enum"]);
    assert_eq!(fields.len(), 4);
    for f in &fields {
        let field: Field = serde_json::from_value(Value::from(f.as_str()))
            .unwrap_or_else(|e| panic!("{f:?} is not a capture field: {e}"));
        assert_eq!(field.as_str(), f);
    }
    // The session's enums are derived from their serde names; `session_json` writes `as_str`.
    let schemas = &doc["components"]["schemas"];
    let states: Vec<String> = SessionState::ALL
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    assert_eq!(strings(&schemas["SessionState"]["enum"]), states);
    let kinds: Vec<String> = [
        SessionKind::SelfService,
        SessionKind::Digital,
        SessionKind::Agent,
    ]
    .iter()
    .map(|k| k.as_str().to_string())
    .collect();
    assert_eq!(strings(&schemas["SessionKind"]["enum"]), kinds);
    // "Not blank" is one pattern, stated on each field that must not be blank.
    let body = |path: &str| {
        doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
            ["properties"]
            .clone()
    };
    let not_blank =
        body("/globalpci/v1/agentsession/")["AccountConfigurationId"]["pattern"].clone();
    assert!(not_blank.is_string());
    assert_eq!(
        body("/globalpci/v1/selfservicesession/")["CallGuid"]["pattern"],
        not_blank
    );
    assert_eq!(body("/relay/v1/calls")["call_guid"]["pattern"], not_blank);
    // utoipa's headers have no `required`: `document` sets it.
    let token = &doc["paths"]["/auth/connect/token"]["post"]["responses"];
    assert_eq!(token["200"]["headers"]["Cache-Control"]["required"], true);
    assert_eq!(token["429"]["headers"]["Retry-After"]["required"], true);
    assert_eq!(token["503"]["headers"]["Retry-After"]["required"], true);
}

/// Every operation has its own `operationId` and a described tag (what generated clients
/// name and group their functions by); the result webhook is in `webhooks`; every error
/// answer is problem details.
#[test]
fn operations_are_named_and_tagged_and_webhooks_described() {
    let doc = tonegate::api::openapi_document();
    let tags: Vec<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_string()), "{id} twice");
            let tag = op["tags"][0].as_str().unwrap();
            assert!(
                tags.contains(&tag),
                "{method} {path}: tag {tag} not described"
            );
            for (status, r) in op["responses"].as_object().unwrap() {
                let r = match r["$ref"].as_str() {
                    Some(name) => &doc["components"]["responses"][name.rsplit('/').next().unwrap()],
                    None => r,
                };
                let Some(content) = r["content"].as_object() else {
                    continue;
                };
                // OAuth2's errors are RFC 6749's; /healthz's 503 is its status document
                // (`draining`), which load balancers read.
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        !content.contains_key("application/json")
                            || path == "/auth/connect/token"
                            || path == "/healthz",
                        "{method} {path} {status}: errors are application/problem+json"
                    );
                }
            }
        }
    }
    assert!(ids.contains("createAgentSession") && ids.contains("listSessions"));
    let hook = &doc["webhooks"]["sessionEnded"]["post"];
    let headers: Vec<&str> = hook["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        headers,
        [
            "X-Tonegate-Signature",
            "X-Tonegate-Timestamp",
            "X-Tonegate-Event-Id"
        ]
    );
    let required = &hook["requestBody"]["content"]["application/json"]["schema"]["required"];
    assert!(required
        .as_array()
        .unwrap()
        .contains(&Value::from("eventId")));
}

/// A Python client generated from `/openapi.json` by openapi-python-client (PyPI, in the test
/// venv) builds, and its named functions create, read and list a session on a live gateway.
#[test]
fn a_generated_python_client_makes_real_calls() {
    let bin = std::env::var_os("TONEGATE_OPENAPI_PYTHON_CLIENT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| common::root().join(".venv/bin/openapi-python-client"));
    if !bin.is_file() {
        common::skip(
            "generated client",
            &format!(
                "openapi-python-client is not at {} (scripts/test installs it)",
                bin.display()
            ),
        );
        return;
    }
    let python = bin.with_file_name("python");
    let gw = Gateway::start("");
    let work = tempfile::tempdir().unwrap();
    let doc = http()
        .get(gw.url("/openapi.json"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    std::fs::write(work.path().join("openapi.json"), doc).unwrap();
    let out = std::process::Command::new(&bin)
        .args(["generate", "--path", "openapi.json", "--meta", "none"])
        .current_dir(work.path())
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    let script = r#"
import json, os, sys, typing
from tonegate_client import AuthenticatedClient
from tonegate_client.api.sessions import create_agent_session, get_session, list_sessions
c = AuthenticatedClient(base_url=os.environ["BASE"], token=os.environ["TOKEN"])
Body = typing.get_type_hints(create_agent_session.sync_detailed)["body"]
body = Body.from_dict(json.loads(os.environ["BODY"]))
made = create_agent_session.sync_detailed(client=c, body=body, idempotency_key="gen-1")
again = create_agent_session.sync_detailed(client=c, body=body, idempotency_key="gen-1")
sid = made.parsed.session_id
got = get_session.sync(client=c, id=sid)
page = list_sessions.sync(client=c, call_guid="gen-call")
print(json.dumps({
    "status": made.status_code, "again": again.parsed.session_id, "id": sid,
    "state": str(got.session_state.value), "listed": [s.session_id for s in page.sessions],
}))
"#;
    let body = std::fs::read_to_string(common::fixture("globalpci/agentsession.json"))
        .unwrap()
        .replace("CALL-GUID-PLACEHOLDER", "gen-call");
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .current_dir(work.path())
        .env("BASE", gw.url(""))
        .env("TOKEN", gw.token("globalpci"))
        .env("BODY", body)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{log}\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["again"], v["id"], "{v}");
    assert_eq!(v["state"], "Created", "{v}");
    assert_eq!(v["listed"], serde_json::json!([v["id"]]), "{v}");
}

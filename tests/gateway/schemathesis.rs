//! schemathesis (PyPI) against a live gateway's `/openapi.json`: every operation is fuzzed with
//! valid and invalid inputs under a token holding every scope, and every check must pass — no
//! 5xx, and every status code, content type, header and input constraint the gateway enforces
//! is in the document.
//!
//! schemathesis is found at `TONEGATE_SCHEMATHESIS` (which `scripts/test` exports) or in the
//! repository's `.venv`. Missing: with `TONEGATE_REQUIRE_TOOLS=1` the test fails; otherwise it
//! says loudly that it is skipped. `TONEGATE_SCHEMATHESIS_SEED` runs another seed and
//! `TONEGATE_SCHEMATHESIS_EXAMPLES` more (or fewer) cases, for a longer soak by hand.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::gateway::Gateway;

/// Generated cases per operation and phase: enough to reach every documented answer, small
/// enough that the run stays well under a minute on two cores.
const MAX_EXAMPLES: &str = "20";
/// A fixed seed, so a run is reproducible (and a failure replays).
const SEED: &str = "20240613";
/// Cases per operation and phase for the runs with a single-scope token.
const SINGLE_SCOPE_EXAMPLES: &str = "5";

/// Settings the command line cannot give (`schemathesis.toml`).
///
/// Every check runs on every operation with its default expectations but one:
/// `positive_data_acceptance` on `POST /relay/v1/calls` also accepts 422. A generated
/// `Idempotency-Key` that recurs with another body is refused 422 `idempotency_key_reused`, as
/// the document says (and as the IETF draft on the header asks): whether a key was used before
/// is the server's state, not a property of one request that a schema could state. (Relay
/// calls are the create that succeeds often enough under fuzzing for a key to be kept and
/// reused.) A schema-valid body is never a 400 any more: the schema of a leg's `remote` states
/// every rule the handler checks (see `relay_remote_schema_matches_what_the_gateway_accepts`).
const CONFIG: &str = r#"
[[operations]]
include-name = ["POST /relay/v1/calls"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"#;

fn schemathesis() -> Option<PathBuf> {
    let bin = std::env::var_os("TONEGATE_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::root().join(".venv/bin/schemathesis"));
    if bin.is_file() {
        return Some(bin);
    }
    assert!(
        std::env::var_os("TONEGATE_REQUIRE_TOOLS").is_none(),
        "schemathesis is not installed at {} (scripts/test installs it)",
        bin.display()
    );
    eprintln!(
        "SKIPPED: schemathesis not installed at {}; run scripts/test to install it",
        bin.display()
    );
    None
}

/// Runs schemathesis against `gw` with `token`: whether it passed, and what it printed.
fn run(st: &Path, gw: &Gateway, token: &str, examples: &str, seed: &str) -> (bool, String) {
    // Its working directory is a temporary one: nothing (reports, example databases) lands
    // in the checkout.
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let args = [
        "--config-file".to_string(),
        config.display().to_string(),
        "run".to_string(),
        gw.url("/openapi.json"),
        "--checks".into(),
        "all".into(),
        "--header".into(),
        format!("Authorization: Bearer {token}"),
        "--max-examples".into(),
        examples.into(),
        "--seed".into(),
        seed.into(),
        // One worker: with more, hypothesis parses its lambdas' source on several threads at
        // once, which CPython 3.11's `ast` does not survive ("AST constructor recursion depth
        // mismatch", a schemathesis error rather than a finding).
        "--workers".into(),
        "1".into(),
        "--generation-database".into(),
        "none".into(),
        "--request-timeout".into(),
        "10".into(),
        "--no-color".into(),
    ];
    let started = Instant::now();
    let out = Command::new(st)
        .args(&args)
        .current_dir(work.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("running schemathesis");
    let text = format!(
        "$ {} {}\n(exit {}, {:.1} s)\n{}{}",
        st.display(),
        args.join(" ").replace(token, "<token>"),
        out.status,
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    (out.status.success(), text)
}

#[test]
fn schemathesis_finds_no_failure() {
    let Some(st) = schemathesis() else {
        return;
    };
    let gw = Gateway::start("");
    let seed = std::env::var("TONEGATE_SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.into());
    let examples =
        std::env::var("TONEGATE_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| MAX_EXAMPLES.into());
    // The development client may hold every scope at once (config/tonegate.toml): with that
    // token every operation is reached. Then a token of each single scope, with fewer cases,
    // so that the other scopes' routes answer 403 and those answers are checked too.
    // (`ignored_auth` sends each request without a token as well.)
    let runs = [
        ("globalpci relay admin", examples.as_str()),
        ("globalpci", SINGLE_SCOPE_EXAMPLES),
        ("relay", SINGLE_SCOPE_EXAMPLES),
        ("admin", SINGLE_SCOPE_EXAMPLES),
    ];
    // Every token first: the runs fuzz the token endpoint with wrong secrets from this address,
    // and its throttle then (rightly) answers 429 for a while.
    let tokens: Vec<String> = runs.iter().map(|(scope, _)| gw.token(scope)).collect();
    let mut failed = Vec::new();
    for ((scope, n), token) in runs.into_iter().zip(tokens) {
        let (ok, text) = run(&st, &gw, &token, n, &seed);
        eprintln!("==> schemathesis, token with scope {scope:?}:\n{text}");
        if !ok {
            failed.push(scope);
        }
    }
    assert!(
        failed.is_empty(),
        "schemathesis reported failures with the token(s) of scope {failed:?}: see its output above"
    );
}

/// The schema of a relay leg's `remote` states what the handler checks (so schemathesis needs
/// no narrowing for `POST /relay/v1/calls`): for remotes on both sides of every rule (unicast
/// or not, in each IPv6 spelling, IPv4-mapped, port 0, a range either way round), the
/// document's pattern, read by Python's `re` as schemathesis reads it, matches exactly those
/// the live gateway accepts (201); the others get 400.
#[test]
fn relay_remote_schema_matches_what_the_gateway_accepts() {
    let Some(st) = schemathesis() else {
        return;
    };
    let doc = tonegate::api::openapi_document();
    let pattern = doc["components"]["schemas"]["LegRequest"]["properties"]["remote"]["anyOf"][0]
        ["pattern"]
        .as_str()
        .expect("LegRequest.remote has a pattern")
        .to_string();
    let remotes = [
        // Refused by the handler.
        "224.0.0.1:5004",
        "239.1.2.3",
        "255.255.255.255:5004",
        "0.0.0.0",
        "0.1.2.3:5004",
        "127.0.0.1:0",
        "[::]:5004",
        "[0:0:0:0:0:0:0:0]",
        "[ff02::1]:5004",
        "FF05::2",
        "[::ffff:e000:1]:5004",
        "0:0:0:0:0:ffff:e000:1",
        "[::ffff:0:0]",
        "[0:0:0:0:0:ffff::5]:9",
        "[::ffff:ffff:ffff]",
        "::0:ffff:ef00:1",
        "224.0.0.1:1000-2000",
        "10.0.0.1:0-2000",
        // Accepted.
        "127.0.0.1:40300",
        "10.0.0.1",
        "[::1]:5004",
        "[::ffff:a00:1]:5004",
        "[ff::1]",
        "240.0.0.1",
        "255.255.255.254:9",
        "[fe80::1]",
        "1::ffff:e000:1",
        "::e000:1",
        "10.0.0.1:2000-1000",
        "[::1]:1000-1000",
    ];
    // The venv's Python, beside schemathesis: the same `re` that checks its cases.
    let python = st.with_file_name("python3");
    let script = "import json, re, sys\n\
                  p, rs = json.load(sys.stdin)\n\
                  print(json.dumps([re.search(p, r) is not None for r in rs]))";
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    serde_json::to_writer(
        child.stdin.take().unwrap(),
        &serde_json::json!([pattern, remotes]),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let valid: Vec<bool> = serde_json::from_slice(&out.stdout).unwrap();

    let gw = Gateway::start("");
    let tok = gw.token("relay");
    let mut accepted = 0;
    for (i, (remote, valid)) in remotes.iter().zip(valid).enumerate() {
        let body = serde_json::json!({"call_guid": format!("remote-{i}"), "codec": "PCMU",
                                      "caller": {"remote": remote}, "agent": {"remote": null}});
        let (s, v) = common::gateway::post(&gw, &tok, "/relay/v1/calls", &body);
        assert_eq!(
            s,
            if valid { 201 } else { 400 },
            "{remote}: the schema says {}, the gateway answered {s} {v}",
            if valid { "valid" } else { "invalid" }
        );
        if s == 201 {
            accepted += 1;
            let id = v["id"].as_str().unwrap();
            let r = gw
                .client
                .delete(gw.url(&format!("/relay/v1/calls/{id}")))
                .bearer_auth(&tok)
                .send()
                .unwrap();
            assert_eq!(r.status(), 204);
        }
    }
    // Both verdicts were reached (a pattern that matched nothing would fail above, too).
    assert_eq!(accepted, 12);
}

/// JSON Schema reads `101.0` as an integer, so a schema-valid `telephone_event_pt` written that
/// way sets up the call (schemathesis found it refused 400); a fraction is still refused.
#[test]
fn a_whole_number_written_with_a_fraction_is_an_integer() {
    let gw = Gateway::start("");
    let tok = gw.token("relay");
    let body = |guid: &str, pt: serde_json::Value| {
        serde_json::json!({"call_guid": guid, "codec": "PCMU", "telephone_event_pt": pt,
                           "caller": {"remote": null}, "agent": {"remote": null}})
    };
    let (s, v) = common::gateway::post(&gw, &tok, "/relay/v1/calls", &body("whole", 101.0.into()));
    assert_eq!(s, 201, "{v}");
    let (s, v) = common::gateway::post(&gw, &tok, "/relay/v1/calls", &body("half", 101.5.into()));
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["field"], "telephone_event_pt", "{v}");
}

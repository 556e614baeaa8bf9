//! axe-core (Deque's accessibility rules engine, from the npm registry; `scripts/test` installs
//! it under `.venv/axe`) run inside the page under test in headless Chromium.
//!
//! The engine is injected over WebDriver's execute-script, which runs outside the page's CSP,
//! so the pages keep their strict policy (no script but their own nonce'd one).
#![allow(dead_code)]

use std::path::PathBuf;

use super::webdriver::Browser;

/// The WCAG 2.0/2.1 A and AA rules, and axe's best practices.
const TAGS: &str = "['wcag2a','wcag2aa','wcag21a','wcag21aa','best-practice']";

/// Where `scripts/test` puts axe-core (`TONEGATE_AXE` overrides).
fn axe_path() -> PathBuf {
    std::env::var_os("TONEGATE_AXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::root().join(".venv/axe/node_modules/axe-core/axe.min.js"))
}

/// axe-core's source, or `None` (said loudly; a failure under `TONEGATE_REQUIRE_TOOLS`).
pub fn source() -> Option<String> {
    match std::fs::read_to_string(axe_path()) {
        Ok(s) => Some(s),
        Err(e) => {
            super::skip(
                "axe-core accessibility checks",
                &format!("{}: {e}; scripts/test installs it", axe_path().display()),
            );
            None
        }
    }
}

/// Runs axe on the page `b` shows now and panics, naming each rule and element, if it finds
/// any violation. `what` names the page and state in the message. Does nothing without axe
/// (see [`source`]).
pub fn assert_clean(b: &Browser, axe: Option<&str>, what: &str) {
    let Some(axe) = axe else {
        return;
    };
    // Each navigation loses it: inject it again where the page has none.
    if b.script("return typeof window.axe") != "object" {
        b.script(&format!("{axe}\n;return true;"));
    }
    let found = b.script_async(&format!(
        "const done = arguments[arguments.length - 1];
         axe.run(document, {{ runOnly: {{ type: 'tag', values: {TAGS} }} }})
           .then(r => done({{ passes: r.passes.length, violations: r.violations.map(v => v.id + ' (' + v.impact + '): ' +
                 v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).join(', ')) }}))
           .catch(e => done({{ passes: 0, violations: ['axe failed: ' + e] }}));"
    ));
    // Rules that passed prove axe looked at the page (an empty list alone could mean it ran
    // nothing).
    assert!(
        found["passes"].as_u64().unwrap_or(0) > 0,
        "axe checked nothing on {what}: {found}"
    );
    let list: Vec<String> =
        serde_json::from_value(found["violations"].clone()).expect("axe answers a list");
    assert!(
        list.is_empty(),
        "axe found accessibility violations on {what}:\n{}",
        list.join("\n")
    );
}

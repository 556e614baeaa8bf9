//! The two web faces: the agent's masked payment UI (`/pay/agent/{id}`) and the customer's
//! hosted payment page (`/pay/link/{token}`).
//!
//! Same origin, no third-party resources, a per-response CSP nonce for the inline script and
//! style, `frame-ancestors` per account for the agent UI (it is meant for an iframe), and
//! `Cache-Control: no-store` everywhere. Nothing on these pages or in their event stream ever
//! holds a keyed digit: lengths, statuses, brand and last four at most.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::AppState;
use crate::session::model::Session;

mod agent;
mod link;
mod sandbox;

use agent::{agent_events, agent_page, agent_reset, agent_submit};
pub(super) use agent::{CodeQuery, ResetBody};
use link::{link_page, link_pay, link_return, link_wallet, link_wallet_cancel, link_wallet_done};
pub(super) use link::{CardForm, ReturnQuery};
pub(super) use sandbox::{ChallengeAnswer, CheckoutAnswer};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/pay/agent/{id}", get(agent_page))
        .route("/pay/agent/{id}/events", get(agent_events))
        .route("/pay/agent/{id}/reset", post(agent_reset))
        .route("/pay/agent/{id}/submit", post(agent_submit))
        .route("/pay/link/{token}", get(link_page).post(link_pay))
        .route("/pay/link/{token}/return", get(link_return))
        .route("/pay/link/{token}/wallet", post(link_wallet))
        .route("/pay/link/{token}/wallet/done", get(link_wallet_done))
        .route("/pay/link/{token}/wallet/cancel", get(link_wallet_cancel))
        .route(
            "/sandbox/3ds/{id}",
            get(sandbox::challenge_page).post(sandbox::challenge_answer),
        )
        .route(
            "/sandbox/checkout/{id}",
            get(sandbox::checkout_page).post(sandbox::checkout_answer),
        )
}

/// Payment-UI tokens handed to agent pages: token hash → (session id, expiry).
#[derive(Clone, Default)]
pub struct UiTokens(Arc<Mutex<HashMap<String, (String, u64)>>>);

impl UiTokens {
    fn issue(&self, session: &Session, now: u64) -> String {
        let token = crate::auth::random_token();
        let mut m = self.0.lock().expect("ui tokens lock");
        m.retain(|_, (_, exp)| *exp > now);
        m.insert(
            crate::session::token_hash(&token),
            (session.id.clone(), session.expires_at),
        );
        token
    }

    fn check(&self, token: &str, session_id: &str, now: u64) -> bool {
        let m = self.0.lock().expect("ui tokens lock");
        matches!(m.get(&crate::session::token_hash(token)), Some((id, exp)) if id == session_id && *exp > now)
    }
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const STYLE: &str = "
*{box-sizing:border-box}body{margin:0;font:16px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#f4f5f7;color:#1d2330}
main{max-width:30rem;margin:0 auto;padding:1.25rem}h1{font-size:1.3rem;margin:.2rem 0 1rem}
.card{background:#fff;border-radius:.75rem;padding:1.1rem;box-shadow:0 1px 3px rgba(0,0,0,.12);margin-bottom:1rem}
.summary dt{color:#5b6475;font-size:.85rem}.summary dd{margin:0 0 .6rem;font-weight:600}
label{display:block;font-weight:600;margin:.8rem 0 .3rem}input{width:100%;font-size:1.15rem;padding:.7rem;border:1px solid #b9c0cc;border-radius:.5rem}
input:focus{outline:3px solid #9ec5ff;border-color:#2b6cd4}.hint{color:#5b6475;font-size:.85rem;min-height:1.2em}
.row{display:flex;gap:.75rem}.row>div{flex:1}
button{width:100%;font-size:1.1rem;padding:.85rem;border:0;border-radius:.5rem;background:#2b6cd4;color:#fff;font-weight:700;margin-top:1rem;cursor:pointer}
button:disabled{background:#9aa3b2;cursor:not-allowed}button.small{width:auto;font-size:.85rem;padding:.35rem .7rem;margin:0;background:#5b6475}button.small:disabled{background:#d3d7de;color:#6b7280}
.err{color:#b3261e;font-weight:600}.ok{color:#1b7f3b;font-weight:700}
.field{display:flex;align-items:center;justify-content:space-between;gap:.5rem;padding:.6rem 0;border-bottom:1px solid #eceef2}
.field:last-child{border-bottom:0}.mask{font-family:ui-monospace,monospace;letter-spacing:.15em;font-size:1.1rem;min-height:1.4em}
.status{font-size:.8rem;padding:.15rem .5rem;border-radius:1rem;background:#eceef2}.status.valid{background:#d5f2de}.status.invalid{background:#fbd9d7}.status.entering{background:#dbe8fd}.status.submitted{background:#d5f2de}
";

fn page(nonce: &str, title: &str, body: &str, script: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style nonce=\"{nonce}\">{STYLE}</style></head><body><main>{body}</main>{}</body></html>",
        esc(title),
        if script.is_empty() { String::new() } else { format!("<script nonce=\"{nonce}\">{script}</script>") }
    )
}

fn secure_headers(resp: &mut Response, nonce: &str, frame_ancestors: &str) {
    let h = resp.headers_mut();
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; form-action 'self'; img-src 'self'; base-uri 'none'; frame-ancestors {frame_ancestors}"
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static("default-src 'none'")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn html(status: StatusCode, nonce: &str, frame_ancestors: &str, doc: String) -> Response {
    let mut r = (status, Html(doc)).into_response();
    secure_headers(&mut r, nonce, frame_ancestors);
    r
}

fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    let nonce = crate::auth::random_token();
    let body = format!(
        "<div class=\"card\"><h1>{}</h1><p>{}</p></div>",
        esc(title),
        esc(text)
    );
    html(status, &nonce, "'none'", page(&nonce, title, &body, ""))
}

fn amount_text(s: &Session) -> String {
    s.amount()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "-".into())
}

fn data(s: &Session, key: &str) -> String {
    s.payment_data
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or("-")
        .to_string()
}

fn summary(s: &Session) -> String {
    format!(
        "<dl class=\"summary\"><dt>Amount</dt><dd id=\"amount\">{}</dd><dt>Reference</dt><dd id=\"reference\">{}</dd><dt>Cardholder</dt><dd id=\"cardholder\">{}</dd></dl>",
        esc(&amount_text(s)),
        esc(s.merchant_txn_ref.as_deref().unwrap_or("-")),
        esc(&data(s, "cardholderName"))
    )
}

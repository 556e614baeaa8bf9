//! The two web faces: the agent's masked payment UI (`/pay/agent/{id}`) and the customer's
//! hosted payment page (`/pay/link/{token}`).
//!
//! Same origin, no third-party resources, a per-response CSP nonce for the inline script and
//! style, `frame-ancestors` per account for the agent UI (it is meant for an iframe), and
//! `Cache-Control: no-store` everywhere. Nothing on these pages or in their event stream ever
//! holds a keyed digit: lengths, statuses, brand and last four at most.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::AppState;
use crate::card::money::Locale;
use crate::config::AccountConfig;
use crate::session::model::Session;

mod agent;
mod link;
mod sandbox;
mod text;

use agent::{agent_cancel, agent_events, agent_page, agent_recapture, agent_reset, agent_submit};
pub(super) use agent::{AgentAnswer, CodeQuery, Reset, ResetBody};
use link::{link_page, link_pay, link_return, link_wallet, link_wallet_cancel, link_wallet_done};
pub(super) use link::{CardForm, ReturnQuery};
pub(super) use sandbox::{ChallengeAnswer, CheckoutAnswer};
use text::Texts;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/pay/agent/{id}", get(agent_page))
        .route("/pay/agent/{id}/events", get(agent_events))
        .route("/pay/agent/{id}/reset", post(agent_reset))
        .route("/pay/agent/{id}/submit", post(agent_submit))
        .route("/pay/agent/{id}/cancel", post(agent_cancel))
        .route("/pay/agent/{id}/recapture", post(agent_recapture))
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

/// Payment-UI tokens handed to agent pages: `base64url(expiry ‖ HMAC-SHA256(key, session id ‖
/// expiry))`. Nothing is kept: every node whose `auth.signing_key` is the same accepts the
/// token another node issued, so the agent's screen, its event stream and its buttons work on
/// whichever node the load balancer picks (issue 25). A token names one session and ends with it.
#[derive(Clone)]
pub struct UiTokens {
    key: [u8; 32],
}

impl UiTokens {
    /// Tokens signed with `key` (derived from the signing key for this purpose alone).
    pub fn new(key: [u8; 32]) -> UiTokens {
        UiTokens { key }
    }

    fn mac(&self, session_id: &str, exp: u64) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(session_id.as_bytes());
        mac.update(&[0]);
        mac.update(&exp.to_be_bytes());
        mac
    }

    /// A token for the agent's screen of session `session_id`, valid until `exp` (the
    /// session's expiry).
    fn issue(&self, session_id: &str, exp: u64) -> String {
        use base64::Engine;
        use hmac::Mac;
        let mut raw = exp.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.mac(session_id, exp).finalize().into_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// Whether `token` opens session `session_id` at `now`.
    fn check(&self, token: &str, session_id: &str, now: u64) -> bool {
        use base64::Engine;
        use hmac::Mac;
        // 8 bytes of expiry and 32 of MAC: 54 characters; anything longer is not ours.
        if token.len() > 64 {
            return false;
        }
        let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        if raw.len() != 40 {
            return false;
        }
        let exp = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        exp > now && self.mac(session_id, exp).verify_slice(&raw[8..]).is_ok()
    }
}

#[cfg(test)]
mod ui_token_tests {
    use super::UiTokens;

    #[test]
    fn a_token_opens_its_own_session_until_it_expires_on_any_node_with_the_key() {
        let issuer = UiTokens::new([7; 32]);
        let other_node = UiTokens::new([7; 32]);
        let t = issuer.issue("s-1", 1_000);
        assert!(other_node.check(&t, "s-1", 999));
        assert!(!other_node.check(&t, "s-1", 1_000), "expired");
        assert!(!other_node.check(&t, "s-2", 10), "another session");
        assert!(!UiTokens::new([8; 32]).check(&t, "s-1", 10), "another key");
        let mut forged = t.clone().into_bytes();
        forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
        assert!(!issuer.check(std::str::from_utf8(&forged).unwrap(), "s-1", 10));
        assert!(!issuer.check("", "s-1", 10));
        assert!(!issuer.check(&"A".repeat(10_000), "s-1", 10));
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

// Colours meet WCAG AA contrast (axe checks the pages in tests/web.rs); layouts wrap rather than
// scroll from 320 px up (a CRM side panel, a phone).
const STYLE: &str = "
*{box-sizing:border-box}body{margin:0;font:16px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#f4f5f7;color:#1d2330}
main{max-width:30rem;margin:0 auto;padding:1.25rem}h1{font-size:1.3rem;margin:.2rem 0 1rem}
@media (max-width:400px){main{padding:.75rem}.card{padding:.8rem}.mask{letter-spacing:0}}
.merchant{display:flex;align-items:center;gap:.6rem;font-weight:700;color:#3d4555;margin-bottom:.6rem;overflow-wrap:anywhere}.merchant img{max-height:2.5rem;max-width:8rem}
.card{background:#fff;border-radius:.75rem;padding:1.1rem;box-shadow:0 1px 3px rgba(0,0,0,.12);margin-bottom:1rem;overflow-wrap:anywhere}
.summary{margin:0}.summary dt{color:#4f5768;font-size:.85rem}.summary dd{margin:0 0 .6rem;font-weight:600}
label{display:block;font-weight:600;margin:.8rem 0 .3rem}input{width:100%;font-size:1.15rem;padding:.7rem;border:1px solid #8a93a3;border-radius:.5rem}
input:focus{outline:3px solid #9ec5ff;border-color:#2b6cd4}input[aria-invalid=true]{border:2px solid #b3261e}.hint{color:#4f5768;font-size:.85rem;min-height:1.2em;margin:.3rem 0}
.row{display:flex;flex-wrap:wrap;gap:0 .75rem}.row>div{flex:1 1 8rem;min-width:0}
button{width:100%;font-size:1.1rem;padding:.85rem;border:0;border-radius:.5rem;background:#2b6cd4;color:#fff;font-weight:700;margin-top:1rem;cursor:pointer}
button:disabled{background:#9aa3b2;color:#1d2330;cursor:not-allowed}button.secondary{background:#fff;color:#1d2330;border:1px solid #4f5768}
button.small{width:auto;font-size:.85rem;padding:.35rem .7rem;margin:0;background:#4f5768}button.small:disabled{background:#d3d7de;color:#3d4555}
.err{color:#b3261e;font-weight:600}.ok{color:#1b7f3b;font-weight:700}.warn{color:#7a4b00;font-weight:600}
.field{display:flex;flex-wrap:wrap;align-items:center;gap:.4rem .5rem;padding:.6rem 0;border-bottom:1px solid #eceef2}
.field>.what{flex:1 1 9rem;min-width:0}.field:last-of-type{border-bottom:0}.field .ferr{flex-basis:100%;margin:0;font-size:.85rem}
.mask{font-family:ui-monospace,monospace;letter-spacing:.1em;font-size:1.05rem;min-height:1.4em;overflow-wrap:anywhere}
.status{font-size:.8rem;padding:.15rem .5rem;border-radius:1rem;background:#eceef2;white-space:nowrap}.status.valid,.status.paid{background:#d5f2de}.status.invalid,.status.declined{background:#fbd9d7}.status.entering{background:#dbe8fd}
.outcome{border-radius:.5rem;padding:.6rem .8rem;margin:1rem 0 0}.outcome.ok{background:#e5f6ea}.outcome.err{background:#fde8e7}.outcome.warn{background:#fff3d6}.outcome:empty{display:none}
.actions{display:flex;flex-wrap:wrap;gap:0 .75rem}.actions>button{flex:1 1 12rem}[hidden]{display:none!important}
.vh{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
";

/// Who a page speaks for, and in what language: the account's merchant name and logo on every
/// page, its language for the words and the amounts.
#[derive(Clone, Copy)]
pub(super) struct Shell<'a> {
    account: Option<&'a AccountConfig>,
    locale: Locale,
}

impl<'a> Shell<'a> {
    /// The caller's pages of `account` (in its language).
    fn customer(account: Option<&'a AccountConfig>) -> Self {
        let locale = account
            .and_then(|a| a.language.as_deref().or(Some(a.prompts.as_str())))
            .and_then(Locale::from_tag)
            .unwrap_or_default();
        Shell { account, locale }
    }

    /// The agent's screen of `account` (in English: the agent desktop's language).
    fn agent(account: Option<&'a AccountConfig>) -> Self {
        Shell {
            account,
            locale: Locale::En,
        }
    }

    fn texts(&self) -> &'static Texts {
        text::for_locale(self.locale)
    }

    /// The session's amount as this page's readers write it.
    fn amount(&self, s: &Session) -> String {
        s.amount()
            .map(|a| a.localized(self.locale).to_string())
            .unwrap_or_else(|| "-".into())
    }

    /// The merchant's name and logo, if the account has them.
    fn header(&self) -> String {
        let Some(a) = self.account else {
            return String::new();
        };
        let name = crate::card::redact::redact_card_numbers(&a.name);
        let logo = a
            .logo_url
            .as_deref()
            .map(|u| format!("<img src=\"{}\" alt=\"\">", esc(u)))
            .unwrap_or_default();
        if name.is_empty() && logo.is_empty() {
            return String::new();
        }
        format!(
            "<div class=\"merchant\">{logo}<span id=\"merchant\">{}</span></div>",
            esc(&name)
        )
    }

    fn page(&self, nonce: &str, title: &str, body: &str, script: &str) -> String {
        format!(
            "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
             <title>{}</title><style nonce=\"{nonce}\">{STYLE}</style></head><body><main>{}{body}</main>{}</body></html>",
            self.locale.tag(),
            esc(title),
            self.header(),
            if script.is_empty() { String::new() } else { format!("<script nonce=\"{nonce}\">{script}</script>") }
        )
    }

    fn respond(
        &self,
        status: StatusCode,
        nonce: &str,
        frame_ancestors: &str,
        doc: String,
    ) -> Response {
        let mut r = (status, Html(doc)).into_response();
        let logo = self.account.and_then(|a| a.logo_url.as_deref());
        secure_headers(&mut r, nonce, frame_ancestors, logo);
        r
    }

    /// A page with a title and a sentence (results, problems).
    fn message(&self, status: StatusCode, title: &str, text: &str) -> Response {
        let nonce = crate::auth::random_token();
        let body = format!(
            "<div class=\"card\"><h1>{}</h1><p id=\"message\">{}</p></div>",
            esc(title),
            esc(text)
        );
        let doc = self.page(&nonce, title, &body, "");
        self.respond(status, &nonce, "'none'", doc)
    }

    /// Amount, reference and cardholder.
    fn summary(&self, s: &Session) -> String {
        let t = self.texts();
        format!(
            "<dl class=\"summary\"><dt>{}</dt><dd id=\"amount\">{}</dd><dt>{}</dt><dd id=\"reference\">{}</dd><dt>{}</dt><dd id=\"cardholder\">{}</dd></dl>",
            t.amount,
            esc(&self.amount(s)),
            t.reference,
            esc(s.merchant_txn_ref.as_deref().unwrap_or("-")),
            t.cardholder,
            esc(&data(s, "cardholderName"))
        )
    }
}

/// A page in the neutral shell (no account, English): the sandbox PSP's own pages.
fn page(nonce: &str, title: &str, body: &str, script: &str) -> String {
    Shell::customer(None).page(nonce, title, body, script)
}

/// Sends a page of the neutral shell with the pages' security headers.
fn html(status: StatusCode, nonce: &str, frame_ancestors: &str, doc: String) -> Response {
    Shell::customer(None).respond(status, nonce, frame_ancestors, doc)
}

/// A title and a sentence in the neutral shell.
fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    Shell::customer(None).message(status, title, text)
}

fn secure_headers(resp: &mut Response, nonce: &str, frame_ancestors: &str, logo: Option<&str>) {
    let h = resp.headers_mut();
    // A merchant's logo elsewhere is allowed by its exact URL (the config checks it is a plain
    // https URL); no other outside resource loads.
    let img = match logo {
        Some(u) if u.starts_with("https://") => format!("'self' {u}"),
        _ => "'self'".to_string(),
    };
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; form-action 'self'; img-src {img}; base-uri 'none'; frame-ancestors {frame_ancestors}"
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

fn data(s: &Session, key: &str) -> String {
    s.payment_data
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or("-")
        .to_string()
}

//! The two web faces: the agent's masked payment UI (`/pay/agent/{id}`) and the customer's
//! hosted payment page (`/pay/link/{token}`).
//!
//! Same origin, no third-party resources, a per-response CSP nonce for the inline script and
//! style, `frame-ancestors` per account for the agent UI (it is meant for an iframe), and
//! `Cache-Control: no-store` everywhere. Nothing on these pages or in their event stream ever
//! holds a keyed digit: lengths, statuses, brand and last four at most.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState};
use crate::capture::Field;
use crate::card::{Card, CardError, Cvv, Digits, Expiry, Pan};
use crate::session::model::{Session, SessionState};
use crate::session::{today_utc, LinkProblem};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/pay/agent/{id}", get(agent_page))
        .route("/pay/agent/{id}/events", get(agent_events))
        .route("/pay/agent/{id}/reset", post(agent_reset))
        .route("/pay/agent/{id}/submit", post(agent_submit))
        .route("/pay/link/{token}", get(link_page).post(link_pay))
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

// ---------------------------------------------------------------- agent payment UI

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct CodeQuery {
    /// The one-time access code (`paymentUiCredentials.accessCode`)
    code: Option<String>,
}

const AGENT_JS: &str = r#"
const id = document.body.dataset.session, token = document.body.dataset.token;
const submit = document.getElementById('submit'), result = document.getElementById('result'), state = document.getElementById('state');
function render(ev) {
  state.textContent = ev.sessionState;
  const c = ev.capture;
  if (c) {
    for (const f of c.fields) {
      const row = document.getElementById('f-' + f.field);
      if (!row) continue;
      const shown = f.field === 'cvv' ? (f.length ? '•••' : '') : '•'.repeat(f.length);
      row.querySelector('.mask').textContent = (f.field === 'pan' && (f.status === 'valid' || f.status === 'submitted') && c.last4) ? ('•'.repeat(Math.max(f.length - 4, 0)) + c.last4) : shown;
      const st = row.querySelector('.status');
      st.textContent = f.status; st.className = 'status ' + f.status;
    }
    const names = { visa: 'Visa', mastercard: 'Mastercard', amex: 'American Express', discover: 'Discover', diners: 'Diners Club', jcb: 'JCB', unionpay: 'UnionPay', maestro: 'Maestro' };
    document.getElementById('brand').textContent = c.brand ? ((names[c.brand] || c.brand) + ' ending ' + c.last4) : '';
  }
  if (ev.captureEvent && ev.captureEvent.event === 'card_expired') { result.className = 'err'; result.textContent = 'The card was not submitted in time and has been wiped: ask the caller to key it again.'; }
  else if (ev.captureEvent && ev.captureEvent.event === 'key_masked') { result.className = ''; result.textContent = ''; }
  submit.disabled = ev.sessionState !== 'ReadyToSubmit';
  const open = ev.sessionState === 'Capturing' || ev.sessionState === 'ReadyToSubmit';
  for (const b of document.querySelectorAll('button[data-reset]')) b.disabled = !open;
  if (ev.result || ['Completed', 'Declined', 'Failed', 'Expired', 'Cancelled'].includes(ev.sessionState)) {
    const r = ev.result || {};
    if (ev.sessionState === 'Completed') { result.className = 'ok'; result.textContent = 'Approved — PSP reference ' + (r.pspTransactionId || ''); }
    else { result.className = 'err'; result.textContent = ev.sessionState + (r.failureReason ? ' — ' + r.failureReason : ''); }
  }
}
const es = new EventSource('/pay/agent/' + id + '/events?token=' + encodeURIComponent(token));
es.onmessage = (m) => render(JSON.parse(m.data));
async function post(path, body) {
  const r = await fetch('/pay/agent/' + id + path, { method: 'POST', headers: { 'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json' }, body: JSON.stringify(body || {}) });
  return r.json();
}
for (const b of document.querySelectorAll('button[data-reset]')) b.addEventListener('click', () => post('/reset', { field: b.dataset.reset }));
submit.addEventListener('click', async () => { submit.disabled = true; result.className = ''; result.textContent = 'Submitting…'; const r = await post('/submit'); if (r.sessionState) render({ sessionState: r.sessionState, result: r }); });
"#;

async fn agent_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<CodeQuery>,
) -> Response {
    let invalid = || {
        message_page(StatusCode::FORBIDDEN, "Payment screen unavailable", "This payment screen link is not valid or has already been used. Start the payment again from your desktop.")
    };
    let Ok(s) = state.sessions.get_any(&id) else {
        return invalid();
    };
    let (Some(code), Some(hash)) = (q.code, s.ui_secret_hash.clone()) else {
        return invalid();
    };
    let ok = if hash.starts_with("$argon2") {
        // Sessions created before codes were stored as SHA-256 (they expire within the TTL).
        let secret = crate::auth::Secret::Argon2(hash);
        tokio::task::spawn_blocking(move || crate::auth::check_secret(&secret, &code))
            .await
            .unwrap_or(false)
    } else {
        subtle::ConstantTimeEq::ct_eq(
            crate::session::token_hash(&code).as_bytes(),
            hash.as_bytes(),
        )
        .into()
    };
    if !ok || s.state.is_terminal() || !state.sessions.store().take_ui_secret(&id).unwrap_or(false)
    {
        return invalid();
    }
    let token = state.ui_tokens.issue(&s, state.clock.unix_now());
    let account = state.config.account(&s.account_id);
    let fields = account.map(|a| a.fields.clone()).unwrap_or_default();
    let rows: String = fields
        .iter()
        .map(|f| {
            let label = match f {
                Field::Pan => "Card number",
                Field::Expiry => "Expiry (MMYY)",
                Field::Cvv => "Security code",
                Field::Postcode => "Postcode digits",
            };
            format!(
                "<div class=\"field\" id=\"f-{0}\"><div><div>{label}</div><div class=\"mask\" aria-live=\"polite\"></div></div><span class=\"status\">empty</span>\
                 <button class=\"small\" data-reset=\"{0}\">Reset field</button></div>",
                f.as_str()
            )
        })
        .collect();
    let body = format!(
        "<h1>Card payment</h1><div class=\"card\">{}</div><div class=\"card\"><p>Session: <span id=\"state\">{}</span></p>{rows}<p id=\"brand\"></p>\
         <button id=\"submit\" disabled>Submit payment</button><p id=\"result\" role=\"status\"></p></div>",
        summary(&s),
        esc(s.state.as_str())
    );
    let nonce = crate::auth::random_token();
    let doc = page(&nonce, "Card payment", &body, AGENT_JS).replacen(
        "<body>",
        &format!(
            "<body data-session=\"{}\" data-token=\"{}\">",
            esc(&s.id),
            esc(&token)
        ),
        1,
    );
    let ancestors = account
        .map(|a| a.frame_ancestors.join(" "))
        .unwrap_or_else(|| "'self'".into());
    tracing::info!(session = %s.id, "agent payment UI opened");
    html(StatusCode::OK, &nonce, &ancestors, doc)
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

fn ui_denied() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "payment UI credentials are invalid or expired",
    )
}

async fn agent_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
) -> Result<Response, ApiError> {
    if !q
        .token
        .as_deref()
        .is_some_and(|t| state.ui_tokens.check(t, &id, state.clock.unix_now()))
    {
        return Err(ui_denied());
    }
    let sessions = state.sessions.clone();
    // Each connection starts with the current state (a reconnect resumes), then live updates;
    // before capture starts (no call yet), the stored state is re-sent every second.
    enum Phase {
        Waiting,
        Live(tokio::sync::broadcast::Receiver<crate::session::LiveEvent>),
        Done,
    }
    let stream = futures_util::stream::unfold(Phase::Waiting, move |phase| {
        let sessions = sessions.clone();
        let id = id.clone();
        async move {
            let event = |v: serde_json::Value| {
                Ok::<Event, Infallible>(Event::default().data(v.to_string()))
            };
            match phase {
                Phase::Done => None,
                Phase::Waiting => {
                    if let Some((snapshot, rx)) = sessions.subscribe(&id) {
                        return Some((
                            event(serde_json::to_value(&snapshot).unwrap_or_default()),
                            Phase::Live(rx),
                        ));
                    }
                    let s = sessions.get_any(&id).ok()?;
                    let v = json!({ "sessionState": s.state.as_str(), "result": s.result });
                    let next = if s.state.is_terminal() {
                        Phase::Done
                    } else {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        Phase::Waiting
                    };
                    Some((event(v), next))
                }
                Phase::Live(mut rx) => loop {
                    match rx.recv().await {
                        Ok(ev) => {
                            let done = ev.session_state.is_terminal();
                            return Some((
                                event(serde_json::to_value(&ev).unwrap_or_default()),
                                if done { Phase::Done } else { Phase::Live(rx) },
                            ));
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        // Capture ended: show the stored outcome.
                        Err(_) => {
                            let s = sessions.get_any(&id).ok()?;
                            return Some((
                                event(
                                    json!({ "sessionState": s.state.as_str(), "result": s.result }),
                                ),
                                Phase::Waiting,
                            ));
                        }
                    }
                },
            }
        }
    });
    // The stream ends when the gateway shuts down, so the drain does not wait on it.
    let mut stopping = state.shutdown.subscribe();
    let stream = futures_util::StreamExt::take_until(stream, async move {
        let _ = stopping.wait_for(|s| *s).await;
    });
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[derive(Deserialize, ToSchema)]
pub(super) struct ResetBody {
    // `Field` is tonegate-card's: its schema is stated in `openapi.rs`.
    #[schema(schema_with = super::field_schema::capture_field)]
    field: Field,
}

async fn agent_reset(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(b): Json<ResetBody>,
) -> Result<impl IntoResponse, ApiError> {
    if !bearer(&headers).is_some_and(|t| state.ui_tokens.check(&t, &id, state.clock.unix_now())) {
        return Err(ui_denied());
    }
    let ok = state.sessions.reset_field(&id, b.field).await?;
    Ok(Json(json!({ "reset": ok, "field": b.field.as_str() })))
}

async fn agent_submit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if !bearer(&headers).is_some_and(|t| state.ui_tokens.check(&t, &id, state.clock.unix_now())) {
        return Err(ui_denied());
    }
    let s = state.sessions.submit(&id, "agent-ui").await?;
    Ok(Json(super::globalpci::session_json(&s)))
}

// ---------------------------------------------------------------- hosted payment page

const CARD_JS: &str = r#"
const num = document.getElementById('number'), hint = document.getElementById('number-hint');
function digits(s) { return s.replace(/\D/g, ''); }
function luhn(d) { let s = 0; for (let i = 0; i < d.length; i++) { let x = +d[d.length - 1 - i]; if (i % 2) { x *= 2; if (x > 9) x -= 9; } s += x; } return d.length > 11 && s % 10 === 0; }
function brand(d) {
  if (/^3[47]/.test(d)) return 'American Express'; if (/^4/.test(d)) return 'Visa';
  if (/^(5[1-5]|2(2[2-9]|[3-6]|7[01]|720))/.test(d)) return 'Mastercard'; if (/^(6011|65|64[4-9])/.test(d)) return 'Discover';
  if (/^35(2[89]|[3-8])/.test(d)) return 'JCB'; if (/^3(0[0-5]|[689])/.test(d)) return 'Diners Club'; if (/^62/.test(d)) return 'UnionPay'; return '';
}
num.addEventListener('input', () => {
  const d = digits(num.value).slice(0, 19);
  num.value = d.replace(/(\d{4})(?=\d)/g, '$1 ');
  const b = brand(d);
  hint.textContent = d.length >= 12 ? (b + (luhn(d) ? '' : ' — check the number')) : b;
  document.getElementById('cvc').maxLength = b === 'American Express' ? 4 : 3;
});
const exp = document.getElementById('expiry');
exp.addEventListener('input', () => { const d = digits(exp.value).slice(0, 4); exp.value = d.length > 2 ? d.slice(0, 2) + '/' + d.slice(2) : d; });
"#;

fn card_form(s: &Session, token: &str, errors: &[(&str, String)], postcode: bool) -> String {
    let err = |k: &str| {
        errors
            .iter()
            .find(|(f, _)| *f == k)
            .map(|(_, m)| format!("<p class=\"err\" id=\"{k}-error\">{}</p>", esc(m)))
            .unwrap_or_default()
    };
    let postcode_input = if postcode {
        format!(
            "<label for=\"postcode\">Postcode</label><input id=\"postcode\" name=\"postcode\" autocomplete=\"postal-code\" inputmode=\"text\" maxlength=\"10\" required>{}",
            err("postcode")
        )
    } else {
        String::new()
    };
    format!(
        "<h1>Pay securely</h1><div class=\"card\">{}</div><form class=\"card\" method=\"post\" action=\"/pay/link/{}\" autocomplete=\"on\" novalidate>{}\
         <label for=\"number\">Card number</label><input id=\"number\" name=\"number\" autocomplete=\"cc-number\" inputmode=\"numeric\" maxlength=\"23\" required aria-describedby=\"number-hint\"><p class=\"hint\" id=\"number-hint\"></p>{}\
         <div class=\"row\"><div><label for=\"expiry\">Expiry (MM/YY)</label><input id=\"expiry\" name=\"expiry\" autocomplete=\"cc-exp\" inputmode=\"numeric\" placeholder=\"MM/YY\" maxlength=\"5\" required>{}</div>\
         <div><label for=\"cvc\">Security code</label><input id=\"cvc\" name=\"cvc\" autocomplete=\"cc-csc\" inputmode=\"numeric\" maxlength=\"4\" required>{}</div></div>{postcode_input}\
         <button type=\"submit\" id=\"pay\">Pay {}</button></form>",
        summary(s),
        esc(token),
        err("form"),
        err("number"),
        err("expiry"),
        err("cvc"),
        esc(&amount_text(s))
    )
}

fn link_problem(p: LinkProblem) -> Response {
    match p {
        LinkProblem::Unknown => message_page(
            StatusCode::NOT_FOUND,
            "Link not found",
            "This payment link does not exist. Check the message you received.",
        ),
        LinkProblem::Expired => message_page(
            StatusCode::GONE,
            "Link expired",
            "This payment link has expired. Ask for a new link to pay.",
        ),
        LinkProblem::Used => message_page(
            StatusCode::GONE,
            "Link already used",
            "This payment link has already been used. Each link works once.",
        ),
        LinkProblem::Replaced => message_page(
            StatusCode::GONE,
            "Link replaced",
            "A newer payment link was sent to you. Please use that one.",
        ),
        LinkProblem::Finished(st) => message_page(
            StatusCode::GONE,
            "Payment closed",
            &format!(
                "This payment is {}; the link no longer works.",
                st.as_str().to_lowercase()
            ),
        ),
    }
}

fn wants_postcode(state: &AppState, s: &Session) -> bool {
    state
        .config
        .account(&s.account_id)
        .is_some_and(|a| a.fields.contains(&Field::Postcode))
}

async fn link_page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    match state.sessions.open_link(&token) {
        Err(p) => link_problem(p),
        Ok(s) => {
            let nonce = crate::auth::random_token();
            let postcode = wants_postcode(&state, &s);
            html(
                StatusCode::OK,
                &nonce,
                "'none'",
                page(
                    &nonce,
                    "Pay securely",
                    &card_form(&s, &token, &[], postcode),
                    CARD_JS,
                ),
            )
        }
    }
}

// The hosted page's form (`application/x-www-form-urlencoded`); every field may be left out.
#[derive(Deserialize, ToSchema)]
pub(super) struct CardForm {
    #[serde(default)]
    number: String,
    #[serde(default)]
    expiry: String,
    #[serde(default)]
    cvc: String,
    #[serde(default)]
    postcode: String,
}

impl Drop for CardForm {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.number.zeroize();
        self.expiry.zeroize();
        self.cvc.zeroize();
    }
}

fn card_error_text(e: CardError) -> String {
    e.to_string()
}

/// Validates the posted form (server side is authoritative); errors per field, no values echoed.
fn card_from_form(
    f: &CardForm,
    postcode: bool,
    today: (u16, u8),
) -> Result<Card, Vec<(&'static str, String)>> {
    let mut errors = Vec::new();
    let pan = Digits::parse(&f.number)
        .ok_or(CardError::Length)
        .and_then(Pan::new);
    let pan = match pan {
        Ok(p) => Some(p),
        Err(e) => {
            errors.push(("number", card_error_text(e)));
            None
        }
    };
    let exp_digits: String = f.expiry.chars().filter(char::is_ascii_digit).collect();
    let expiry = match Digits::parse(&exp_digits)
        .ok_or(CardError::ExpiryFormat)
        .and_then(|d| Expiry::new(d, today))
    {
        Ok(e) => Some(e),
        Err(e) => {
            errors.push(("expiry", card_error_text(e)));
            None
        }
    };
    let brand = pan
        .as_ref()
        .map(Pan::brand)
        .unwrap_or(crate::card::Brand::Visa);
    let cvv = match Digits::parse(f.cvc.trim())
        .ok_or(CardError::CvvLength)
        .and_then(|d| Cvv::new(d, brand))
    {
        Ok(c) => Some(c),
        Err(e) => {
            errors.push(("cvc", card_error_text(e)));
            None
        }
    };
    let pc_digits: String = f.postcode.chars().filter(char::is_ascii_digit).collect();
    let postcode_value = if postcode {
        if f.postcode.trim().is_empty() {
            errors.push(("postcode", "enter your postcode".into()));
            None
        } else {
            Digits::parse(&pc_digits)
        }
    } else {
        None
    };
    match (pan, expiry, cvv) {
        (Some(pan), Some(expiry), Some(cvv)) if errors.is_empty() => Ok(Card {
            pan,
            expiry,
            cvv,
            postcode: postcode_value,
        }),
        _ => Err(errors),
    }
}

async fn link_pay(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Form(form): Form<CardForm>,
) -> Response {
    let s = match state.sessions.open_link(&token) {
        Ok(s) => s,
        Err(p) => return link_problem(p),
    };
    let postcode = wants_postcode(&state, &s);
    let card = match card_from_form(&form, postcode, today_utc(state.clock.unix_now())) {
        Ok(c) => c,
        Err(errors) => {
            let nonce = crate::auth::random_token();
            let doc = page(
                &nonce,
                "Pay securely",
                &card_form(&s, &token, &errors, postcode),
                CARD_JS,
            );
            return html(StatusCode::UNPROCESSABLE_ENTITY, &nonce, "'none'", doc);
        }
    };
    drop(form);
    if !state.sessions.use_link(&token).unwrap_or(false) {
        return link_problem(LinkProblem::Used);
    }
    let result = state.sessions.pay_with_card(&s.id, card, "customer").await;
    let after = state.sessions.get_any(&s.id).ok();
    match (result, after) {
        (Ok(_), Some(done)) if done.state == SessionState::Completed => message_page(
            StatusCode::OK,
            "Payment approved",
            &format!(
                "Thank you. {} was paid with the card ending {}. Reference: {}.",
                amount_text(&done),
                done.result.masked_pan.as_deref().map(|m| &m[m.len().saturating_sub(4)..]).unwrap_or("????"),
                done.result.psp_transaction_id.as_deref().unwrap_or("-")
            ),
        ),
        (_, Some(done)) if done.state == SessionState::Declined => message_page(
            StatusCode::OK,
            "Payment declined",
            &format!("Your card was declined ({}). No money was taken. Ask for a new link to try another card.", done.result.failure_reason.as_deref().unwrap_or("declined")),
        ),
        _ => message_page(StatusCode::OK, "Payment failed", "We could not complete the payment. No money was taken. Please try again later."),
    }
}

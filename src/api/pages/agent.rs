//! The agent's masked payment UI (`/pay/agent/{id}`): the page, its event stream, reset and submit.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::{esc, html, message_page, page, summary};
use crate::api::{ApiError, AppState};
use crate::capture::Field;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(in crate::api) struct CodeQuery {
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

pub(super) async fn agent_page(
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
pub(super) struct TokenQuery {
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

pub(super) async fn agent_events(
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
pub(in crate::api) struct ResetBody {
    // `Field` is tonegate-card's: its schema is stated in `openapi.rs`.
    #[schema(schema_with = crate::api::field_schema::capture_field)]
    field: Field,
}

pub(super) async fn agent_reset(
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

pub(super) async fn agent_submit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if !bearer(&headers).is_some_and(|t| state.ui_tokens.check(&t, &id, state.clock.unix_now())) {
        return Err(ui_denied());
    }
    let s = state.sessions.submit(&id, "agent-ui").await?;
    Ok(Json(crate::api::globalpci::session_json(&s)))
}

//! The agent's masked payment UI (`/pay/agent/{id}`): the page, its event stream, reset and submit.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{esc, Shell};
use crate::api::globalpci::SessionAnswer;
use crate::api::{ApiError, AppState};
use crate::capture::Field;
use crate::session::model::{PaymentResult, Session, SessionState};
use tonegate_session::view::SessionView;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(in crate::api) struct CodeQuery {
    /// The one-time access code (`paymentUiCredentials.accessCode`)
    code: Option<String>,
}

const AGENT_JS: &str = r#"
const id = document.body.dataset.session, token = document.body.dataset.token;
const $ = (x) => document.getElementById(x);
const submit = $('submit'), again = $('recapture'), cancel = $('cancel'), result = $('result'), state = $('state');
const STATES = { Created: 'Waiting for the call to connect.', Capturing: 'The caller is keying the card.', ReadyToSubmit: 'Card complete: submit the payment when the caller is ready.', Submitting: 'Sending the payment to the bank…' };
const FIELD_ERRORS = { luhn: 'Not a valid card number: ask the caller to key it again.', unknown_brand: 'This card type is not accepted: ask for another card.', length: 'Wrong number of digits: ask the caller to key it again.', expiry_format: 'Not a date as MMYY: ask the caller to key it again.', expired: 'The card has expired: ask for another card.', expiry_too_far: 'Date too far ahead: ask the caller to key it again.', cvv_length: 'Wrong number of digits: ask the caller to key it again.', postcode_length: 'Wrong number of digits: ask the caller to key it again.', too_short: 'Too few digits: ask the caller to key it again.', timeout: 'The caller paused too long: ask them to key it again.', no_input: 'Nothing was keyed: ask the caller to key it.' };
const NAMES = { visa: 'Visa', mastercard: 'Mastercard', amex: 'American Express', discover: 'Discover', diners: 'Diners Club', jcb: 'JCB', unionpay: 'UnionPay', maestro: 'Maestro' };
let current = document.body.dataset.state, busy = false;
function badge(f, st) {
  if (f.status === 'submitted' || (f.status === 'valid' && ['Completed', 'Declined', 'Failed'].includes(st))) {
    return { Completed: ['Paid', 'paid'], Declined: ['Declined', 'declined'], Failed: ['Not paid', 'declined'] }[st] || ['Sent', 'entering'];
  }
  return { empty: ['Waiting', ''], entering: ['Keying', 'entering'], valid: ['Complete', 'valid'], invalid: ['Re-key', 'invalid'] }[f.status] || [f.status, ''];
}
function buttons() {
  const open = current === 'Capturing' || current === 'ReadyToSubmit';
  submit.disabled = busy || current !== 'ReadyToSubmit';
  for (const b of document.querySelectorAll('button[data-reset]')) b.disabled = busy || !open;
  cancel.hidden = !(open || current === 'Created');
  cancel.disabled = busy;
  again.disabled = busy;
}
function show(o) {
  if (!o) return;
  result.className = 'outcome ' + o.tone;
  result.textContent = o.text + (o.code ? ' (bank code: ' + o.code + ')' : '');
  again.hidden = !o.canRetry;
}
function clearFields() {
  for (const row of document.querySelectorAll('.field')) {
    row.querySelector('.mask').textContent = ''; row.querySelector('.ferr').textContent = '';
    const st = row.querySelector('.status'); st.textContent = 'Waiting'; st.className = 'status';
  }
  $('brand').textContent = '';
}
function render(ev) {
  if (ev.sessionState) {
    // A new capture after an outcome starts from empty fields.
    if ((current === 'Declined' || current === 'Failed') && (ev.sessionState === 'Created' || ev.sessionState === 'Capturing')) clearFields();
    current = ev.sessionState; state.dataset.state = current;
  }
  if (STATES[current]) state.textContent = STATES[current];
  else if (ev.outcome) state.textContent = ev.outcome.title;
  const c = ev.capture;
  if (c) {
    for (const f of c.fields) {
      const row = $('f-' + f.field);
      if (!row) continue;
      const shown = f.field === 'cvv' ? (f.length ? '•••' : '') : '•'.repeat(f.length);
      row.querySelector('.mask').textContent = (f.field === 'pan' && c.last4 && f.status !== 'empty' && f.status !== 'entering') ? ('•'.repeat(Math.max(f.length - 4, 0)) + c.last4) : shown;
      const [word, cls] = badge(f, current);
      const st = row.querySelector('.status');
      st.textContent = word; st.className = 'status ' + cls;
      const why = (f.status === 'invalid' && f.error) ? (FIELD_ERRORS[(f.error.detail || f.error.kind)] || 'Not accepted: ask the caller to key it again.') : '';
      row.querySelector('.ferr').textContent = why;
    }
    $('brand').textContent = c.brand ? ((NAMES[c.brand] || c.brand) + ' ending ' + c.last4) : '';
  }
  if (ev.captureEvent && ev.captureEvent.event === 'card_expired') { show({ tone: 'warn', text: 'The card was not submitted in time and has been wiped: ask the caller to key it again.' }); }
  else if (ev.captureEvent && ev.captureEvent.event === 'key_masked') { result.className = 'outcome'; result.textContent = ''; }
  if (ev.outcome) show(ev.outcome);
  else if (STATES[current]) { again.hidden = true; }
  buttons();
}
const es = new EventSource('/pay/agent/' + id + '/events?token=' + encodeURIComponent(token));
es.onmessage = (m) => render(JSON.parse(m.data));
async function post(path, body) {
  busy = true; buttons();
  try {
    const r = await fetch('/pay/agent/' + id + path, { method: 'POST', headers: { 'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json' }, body: JSON.stringify(body || {}) });
    const v = await r.json().catch(() => ({}));
    if (!r.ok) show({ tone: 'err', text: v.message || v.detail || 'That did not work: reload the payment screen.', canRetry: !again.hidden });
    return r.ok ? v : null;
  } finally { busy = false; buttons(); }
}
for (const b of document.querySelectorAll('button[data-reset]')) b.addEventListener('click', () => post('/reset', { field: b.dataset.reset }));
submit.addEventListener('click', async () => { show({ tone: '', text: 'Submitting…' }); const r = await post('/submit'); if (r && r.sessionState) render(r); });
again.addEventListener('click', async () => { const r = await post('/recapture'); if (r && r.sessionState) { result.className = 'outcome'; result.textContent = ''; render(r); } });
cancel.addEventListener('click', async () => { const r = await post('/cancel'); if (r && r.sessionState) render(r); });
buttons();
"#;

/// What the agent is told about a state: a headline and, for outcomes, what to do next.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// `ok`, `err`, `warn`: the colour of the message.
    tone: &'static str,
    title: &'static str,
    text: &'static str,
}

/// The words for a finished session's state and failure code (never the code alone: the
/// page shows it beside the words, for the support desk).
fn outcome(state: SessionState, reason: Option<&str>) -> Option<Outcome> {
    let o = |tone, title, text| Some(Outcome { tone, title, text });
    let reason = reason.unwrap_or_default();
    match state {
        SessionState::Completed => o("ok", "Payment approved.", "Payment approved."),
        SessionState::Cancelled => o(
            "warn",
            "Payment cancelled.",
            "The payment was cancelled. No money was taken.",
        ),
        SessionState::Expired => o(
            "warn",
            "Payment timed out.",
            "The payment timed out. No money was taken. Start a new payment from your desktop.",
        ),
        SessionState::Declined => {
            let text = match reason {
                "insufficient_funds" => "The bank declined the card: not enough funds. Ask the caller for another card.",
                "expired_card" => "The bank says the card has expired. Ask the caller for another card.",
                "incorrect_cvc" | "invalid_cvc" => "The bank did not accept the security code. Ask the caller to key the card again.",
                "incorrect_number" | "invalid_number" => "The bank did not accept the card number. Ask the caller to key the card again.",
                "authentication_required" => "The bank wants the cardholder to authenticate, which cannot be done on a call. Ask the caller for another card, or send a payment link.",
                _ => "The bank declined the card. Ask the caller for another card.",
            };
            o("err", "The bank declined the card.", text)
        }
        SessionState::Failed if reason.starts_with("too many invalid attempts") => o(
            "err",
            "The card could not be captured.",
            "The caller keyed a field wrongly too many times. Ask for the card again, or end the payment.",
        ),
        SessionState::Failed if reason.starts_with("interrupted while submitting") => o(
            "err",
            "The payment could not be confirmed.",
            "The payment was interrupted and the bank's answer is not known. Check the merchant account before taking the card again.",
        ),
        SessionState::Failed => o(
            "err",
            "The payment did not go through.",
            "The payment could not be sent to the bank (a technical problem). No money was taken. Ask for the card again to retry.",
        ),
        _ => None,
    }
}

/// What the agent's screen shows of a finished session: the outcome in words, the failure
/// code beside it, and whether the card can be asked for again.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(in crate::api) struct AgentOutcome {
    /// `ok`, `err` or `warn`: the colour of the message.
    tone: &'static str,
    /// The headline.
    title: &'static str,
    /// What happened and what to do next.
    text: String,
    /// The PSP's short decline code (never free text, which might repeat what it was sent)
    #[schema(required)]
    code: Option<String>,
    /// Whether the agent may ask for the card again.
    can_retry: bool,
    /// Card attempts left for this payment.
    attempts_left: u32,
}

/// The outcome of session `id` in `st` with `result`, as the agent's screen shows it (none
/// while it is live).
fn agent_outcome(
    state: &AppState,
    id: &str,
    st: SessionState,
    result: &PaymentResult,
) -> Option<AgentOutcome> {
    let reason = result.failure_reason.as_deref();
    let o = outcome(st, reason)?;
    let left = if st.may_recapture() {
        state
            .sessions
            .get_any(id)
            .and_then(|s| state.sessions.attempts_left(&s))
            .unwrap_or(0)
    } else {
        0
    };
    let text = match (st.may_recapture(), left) {
        (false, _) if st == SessionState::Completed => match &result.psp_transaction_id {
            Some(t) => format!("{} PSP reference {t}.", o.text),
            None => o.text.to_string(),
        },
        (false, _) => o.text.to_string(),
        (true, 0) => format!(
            "{} All card attempts for this payment are used: start a new payment from your desktop.",
            o.text
        ),
        (true, n) => format!(
            "{} {n} more card attempt{} allowed.",
            o.text,
            if n == 1 { " is" } else { "s are" }
        ),
    };
    let code = reason.filter(|r| {
        st == SessionState::Declined
            && r.len() <= 40
            && r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    });
    Some(AgentOutcome {
        tone: o.tone,
        title: o.title,
        text,
        code: code.map(str::to_string),
        can_retry: left > 0,
        attempts_left: left,
    })
}

/// The answer of the agent's own actions (submit, cancel, ask again): the session as the API
/// answers it, and its outcome in words once it has one.
#[derive(Serialize, ToSchema)]
pub(in crate::api) struct AgentAnswer {
    #[serde(flatten)]
    session: SessionAnswer,
    /// The outcome in words (finished sessions)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(inline)]
    outcome: Option<AgentOutcome>,
}

impl AgentAnswer {
    fn of(state: &AppState, s: Session) -> AgentAnswer {
        let outcome = agent_outcome(state, &s.id, s.state, &s.result);
        AgentAnswer {
            session: SessionAnswer::from(s),
            outcome,
        }
    }
}

/// One event of the agent's stream: an entry of the session's log, with the outcome in words.
/// A state change is sent as the [`SessionView`] at that point of the log (what the API
/// answer and the webhook show); a capture update as it was logged (masked lengths, statuses,
/// brand and last four).
#[derive(Serialize)]
struct StreamEvent {
    #[serde(flatten)]
    shown: Shown,
    /// The logged result, as the stream has always carried it.
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<PaymentResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<AgentOutcome>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Shown {
    State(SessionView),
    Update {
        #[serde(rename = "sessionState")]
        state: SessionState,
        #[serde(flatten)]
        rest: serde_json::Map<String, serde_json::Value>,
    },
}

/// An entry of the session's event log, as the store and the capture write it.
#[derive(Deserialize)]
struct Logged {
    #[serde(rename = "sessionState")]
    state: SessionState,
    #[serde(default)]
    result: Option<PaymentResult>,
    /// A capture update's `capture` and `captureEvent`; nothing for a state change.
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl StreamEvent {
    /// The logged `body` of session `id` as the agent's stream sends it (a body it cannot
    /// read, as it is).
    fn of(state: &AppState, id: &str, body: String) -> String {
        let Ok(logged) = serde_json::from_str::<Logged>(&body) else {
            return body;
        };
        let no_result = PaymentResult::default();
        let result = logged.result.as_ref().unwrap_or(&no_result);
        let outcome = agent_outcome(state, id, logged.state, result);
        // Only a state change is shown as the session (one read; not one per key).
        let session = logged
            .rest
            .is_empty()
            .then(|| state.sessions.get_any(id).ok())
            .flatten();
        serde_json::to_string(&StreamEvent::logged(session.as_ref(), logged, outcome))
            .unwrap_or(body)
    }

    /// A log entry, shown as the view of `session` when it is a state change.
    fn logged(
        session: Option<&Session>,
        Logged {
            state,
            result,
            rest,
        }: Logged,
        outcome: Option<AgentOutcome>,
    ) -> StreamEvent {
        let shown = match session {
            Some(s) if rest.is_empty() => Shown::State(SessionView::at(
                s,
                state,
                result.clone().unwrap_or_default(),
            )),
            _ => Shown::Update { state, rest },
        };
        StreamEvent {
            shown,
            result,
            outcome,
        }
    }
}

pub(super) async fn agent_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<CodeQuery>,
) -> Response {
    let invalid = || {
        Shell::agent(None).message(StatusCode::FORBIDDEN, "Payment screen unavailable", "This payment screen link is not valid or has already been used. Start the payment again from your desktop.")
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
    let token = state.ui_tokens.issue(&s.id, s.expires_at);
    let account = state.config.account(&s.account_id);
    let shell = Shell::agent(account);
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
                "<div class=\"field\" id=\"f-{0}\"><div class=\"what\"><div>{label}</div><div class=\"mask\" aria-live=\"polite\"></div></div><span class=\"status\">Waiting</span>\
                 <button class=\"small\" data-reset=\"{0}\" disabled>Reset<span class=\"vh\"> {label}</span></button><p class=\"ferr err\"></p></div>",
                f.as_str()
            )
        })
        .collect();
    let body = format!(
        "<h1>Card payment</h1><div class=\"card\">{}</div><div class=\"card\"><p><strong id=\"state\" role=\"status\" data-state=\"{1}\">{1}</strong></p>{rows}<p id=\"brand\"></p>\
         <div class=\"actions\"><button id=\"submit\" disabled>Submit payment</button><button id=\"recapture\" class=\"secondary\" hidden>Ask for the card again</button>\
         <button id=\"cancel\" class=\"secondary\">Cancel payment</button></div><p id=\"result\" class=\"outcome\" role=\"alert\"></p></div>",
        shell.summary(&s),
        esc(s.state.as_str())
    );
    let nonce = crate::auth::random_token();
    let doc = shell
        .page(&nonce, "Card payment", &body, AGENT_JS)
        .replacen(
            "<body>",
            &format!(
                "<body data-session=\"{}\" data-token=\"{}\" data-state=\"{}\">",
                esc(&s.id),
                esc(&token),
                esc(s.state.as_str())
            ),
            1,
        );
    let ancestors = account
        .map(|a| a.frame_ancestors.join(" "))
        .unwrap_or_else(|| "'self'".into());
    tracing::info!(session = %s.id, "agent payment UI opened");
    shell.respond(StatusCode::OK, &nonce, &ancestors, doc)
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

/// Most events one store read returns (a resumed stream reads on in pages).
const EVENTS_PAGE: usize = 200;
/// How long the stream waits for a bell before it reads the store anyway (a bell can be
/// lost; the log cannot).
const EVENTS_POLL: Duration = Duration::from_secs(1);

pub(super) async fn agent_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !q
        .token
        .as_deref()
        .is_some_and(|t| state.ui_tokens.check(t, &id, state.clock.unix_now()))
    {
        return Err(ui_denied());
    }
    // The session's event log, from the store, on whichever node the agent reached: each
    // event carries `id:` = its number in the session's log, so a reconnecting browser's
    // `Last-Event-ID` resumes right after the last one it got (none lost, none repeated).
    // A first connection gets the log from the start, which leaves the screen as it stands.
    // Woken by the store's doorbell (LISTEN/NOTIFY across nodes), read anyway every second.
    // The stream ends once the session can change no more and its last events are out.
    let after: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n >= 0)
        .unwrap_or(0);
    // A browser resuming a finished session's stream with nothing left to send is told to
    // stop (204: EventSource then does not reconnect again and again).
    if after > 0 {
        let s = state.sessions.get_any(&id)?;
        let finished = s.state.is_terminal()
            && (!s.state.may_recapture() || s.expires_at <= state.clock.unix_now());
        let store = state.sessions.store();
        if finished
            && store
                .events_after(&id, after, 1)
                .map_err(crate::session::SessionError::from)?
                .is_empty()
        {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
    struct Tail {
        after: i64,
        pending: std::collections::VecDeque<(i64, String)>,
        bells: tokio::sync::broadcast::Receiver<crate::session::store::Bell>,
        waited_after_over: bool,
    }
    let tail = Tail {
        after,
        pending: Default::default(),
        // Subscribed before the first read: a bell rung between a read and the wait after it
        // is still heard.
        bells: state.sessions.store().doorbell(),
        waited_after_over: false,
    };
    let app = state.clone();
    let stream = futures_util::stream::unfold(tail, move |mut t| {
        let app = app.clone();
        let id = id.clone();
        async move {
            use crate::session::store::Bell;
            use tokio::sync::broadcast::error::{RecvError, TryRecvError};
            // Finished for good: nothing can move it again (a declined session past its
            // expiry cannot be captured again either).
            let over = |s: &crate::session::model::Session| {
                s.state.is_terminal()
                    && (!s.state.may_recapture() || s.expires_at <= app.clock.unix_now())
            };
            let store = app.sessions.store();
            loop {
                if let Some((seq, body)) = t.pending.pop_front() {
                    t.after = seq;
                    let ev = Event::default()
                        .id(seq.to_string())
                        .data(StreamEvent::of(&app, &id, body));
                    return Some((Ok::<Event, Infallible>(ev), t));
                }
                // Bells rung before this read are answered by it: only later ones should end
                // the wait below early.
                while !matches!(
                    t.bells.try_recv(),
                    Err(TryRecvError::Empty | TryRecvError::Closed)
                ) {}
                let s = app.sessions.get_any(&id).ok()?;
                let over_now = over(&s);
                t.pending
                    .extend(store.events_after(&id, t.after, EVENTS_PAGE).ok()?);
                if !t.pending.is_empty() {
                    continue;
                }
                // Over, and nothing new after one more wait: the capture's last update (it
                // publishes right after the final state is stored) has had its moment. A
                // browser that reconnects later still resumes where it stopped.
                if over_now && t.waited_after_over {
                    return None;
                }
                t.waited_after_over = over_now;
                let woken = tokio::time::timeout(EVENTS_POLL, async {
                    loop {
                        match t.bells.recv().await {
                            Ok(Bell::Event { session, .. }) if session == id => return,
                            Ok(Bell::Resync) | Err(RecvError::Lagged(_)) => return,
                            // No bells any more: the timeout alone paces the reads.
                            Err(RecvError::Closed) => std::future::pending::<()>().await,
                            Ok(_) => {}
                        }
                    }
                });
                let _ = woken.await;
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
) -> Result<Json<Reset>, ApiError> {
    if !bearer(&headers).is_some_and(|t| state.ui_tokens.check(&t, &id, state.clock.unix_now())) {
        return Err(ui_denied());
    }
    let ok = state.sessions.reset_field(&id, b.field).await?;
    Ok(Json(Reset {
        reset: ok,
        field: b.field.as_str(),
    }))
}

/// `agent_reset`'s answer.
#[derive(Serialize, ToSchema)]
pub(in crate::api) struct Reset {
    /// Whether the field was cleared (false: nothing to clear, or the capture is not live).
    reset: bool,
    #[schema(schema_with = crate::api::field_schema::capture_field)]
    field: &'static str,
}

pub(super) async fn agent_submit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<AgentAnswer>, ApiError> {
    if !bearer(&headers).is_some_and(|t| state.ui_tokens.check(&t, &id, state.clock.unix_now())) {
        return Err(ui_denied());
    }
    let s = state.sessions.submit(&id, "agent-ui").await?;
    Ok(Json(AgentAnswer::of(&state, s)))
}

/// The session behind a UI token, for the agent's own actions on it.
fn ui_session(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
) -> Result<crate::session::model::Session, ApiError> {
    if !bearer(headers).is_some_and(|t| state.ui_tokens.check(&t, id, state.clock.unix_now())) {
        return Err(ui_denied());
    }
    Ok(state.sessions.get_any(id)?)
}

/// The agent's "Cancel payment": as the API's cancel, for the session's own client.
pub(super) async fn agent_cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<AgentAnswer>, ApiError> {
    let s = ui_session(&state, &id, &headers)?;
    let s = state.sessions.cancel(&s.client_id, &id).await?;
    Ok(Json(AgentAnswer::of(&state, s)))
}

/// The agent's "Ask for the card again" after a decline or a failure (`Sessions::recapture`).
pub(super) async fn agent_recapture(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<AgentAnswer>, ApiError> {
    let s = ui_session(&state, &id, &headers)?;
    let s = state
        .sessions
        .recapture(&s.client_id, &id, "agent-ui")
        .await?;
    Ok(Json(AgentAnswer::of(&state, s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One session, three ways out: the API answer, the result webhook and the agent stream's
    /// state event show the same view (same fields, same amount text).
    #[test]
    fn the_api_the_webhook_and_the_stream_show_one_view() {
        for (currency, minor, text) in [("JPY", 1000, "1000"), ("USD", 1234, "12.34")] {
            let s = Session {
                id: "s-1".into(),
                kind: crate::session::model::SessionKind::Agent,
                client_id: "c".into(),
                account_id: "acct".into(),
                call_guid: Some("call-1".into()),
                dtmf_link_id: None,
                state: SessionState::Completed,
                amount_minor: Some(minor),
                currency: currency.into(),
                merchant_txn_ref: Some("order-9".into()),
                payment_data: Default::default(),
                created_at: 100,
                updated_at: 150,
                expires_at: 1000,
                result: PaymentResult {
                    masked_pan: Some("************4242".into()),
                    card_brand: Some("visa".into()),
                    psp_transaction_id: Some("pi_1".into()),
                    ..Default::default()
                },
                ui_secret_hash: None,
            };
            let api = serde_json::to_value(SessionAnswer::from(s.clone())).unwrap();
            let hook: serde_json::Value =
                serde_json::from_str(&s.webhook_event("ev-1", 500)).unwrap();
            // The state event as the store logs it when the payment completes.
            let logged = format!(
                "{{\"sessionState\":\"Completed\",\"result\":{}}}",
                serde_json::to_string(&s.result).unwrap()
            );
            let logged: Logged = serde_json::from_str(&logged).unwrap();
            let stream = serde_json::to_value(StreamEvent::logged(Some(&s), logged, None)).unwrap();
            let view = serde_json::to_value(SessionView::of(&s)).unwrap();
            let fields = view.as_object().unwrap();
            assert!(fields.len() >= 9, "{view}");
            for (k, v) in fields {
                assert_eq!(&api[k], v, "API answer: {k}");
                assert_eq!(&hook[k], v, "webhook: {k}");
                assert_eq!(&stream[k], v, "stream: {k}");
            }
            for shown in [&api, &hook, &stream] {
                assert_eq!(shown["amount"], text, "{shown}");
                assert_eq!(shown["pspTransactionId"], "pi_1", "{shown}");
            }
            // What each adds stays its own: the API's account and times, the webhook's event
            // time, the stream's logged result.
            assert_eq!(
                (&api["createdAt"], &api["CallGuid"]),
                (&100.into(), &"call-1".into())
            );
            assert_eq!(hook["createdAt"], 500);
            assert_eq!(stream["result"]["maskedPan"], "************4242");
        }
    }

    #[test]
    fn every_finished_state_is_told_in_words_with_what_to_do() {
        use SessionState::*;
        for st in SessionState::ALL {
            let o = outcome(st, Some("card_declined"));
            assert_eq!(o.is_some(), st.is_terminal(), "{st:?}");
            if let Some(o) = o {
                assert!(!o.text.contains('_'), "{st:?}: {}", o.text);
                assert!(o.text.ends_with('.'), "{st:?}");
            }
        }
        let said = |st, code| outcome(st, Some(code)).unwrap().text;
        assert_eq!(
            said(Declined, "card_declined"),
            "The bank declined the card. Ask the caller for another card."
        );
        assert!(said(Declined, "insufficient_funds").contains("not enough funds"));
        assert!(said(Declined, "something_new").contains("another card"));
        assert!(said(Failed, "too many invalid attempts at pan").contains("too many times"));
        assert!(said(Failed, "PSP unavailable: timeout").contains("technical problem"));
        assert_eq!(outcome(Completed, None).unwrap().tone, "ok");
        assert_eq!(outcome(Declined, None).unwrap().tone, "err");
    }
}

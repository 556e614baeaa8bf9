//! The customer's hosted payment page (`/pay/link/{token}`): the card form and its submission.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{amount_text, esc, html, message_page, page, summary};
use crate::api::AppState;
use crate::capture::Field;
use crate::card::{Card, CardError, Cvv, Digits, Expiry, Pan};
use crate::session::model::{Session, SessionState};
use crate::session::{today_utc, LinkProblem, LinkUrls, PayStep, SessionError};

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

/// Shows the wallet button only where the browser can pay with a wallet (the Payment Request
/// API, or Safari's Apple Pay); elsewhere the card form is all there is.
const WALLET_JS: &str = r#"
if (window.PaymentRequest || window.ApplePaySession) document.getElementById('wallets').hidden = false;
"#;

/// The wallet button (hidden until the script finds the browser can use a wallet).
fn wallet_block(state: &AppState, s: &Session, token: &str) -> String {
    let wallets = state
        .config
        .account(&s.account_id)
        .map(|a| a.wallets.clone())
        .unwrap_or_default();
    if wallets.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = wallets.iter().map(|w| w.label()).collect();
    format!(
        "<div class=\"card\" id=\"wallets\" hidden><form method=\"post\" action=\"/pay/link/{}/wallet\"><button type=\"submit\" id=\"wallet\">Pay with {}</button></form><p class=\"hint\">Or pay by card below.</p></div>",
        esc(token),
        esc(&names.join(" or "))
    )
}

/// The hosted page's form, with `errors` (by field; `form` for the whole form) shown.
pub(super) fn form_page(
    state: &AppState,
    s: &Session,
    token: &str,
    errors: &[(&str, String)],
    status: StatusCode,
) -> Response {
    let nonce = crate::auth::random_token();
    let postcode = wants_postcode(state, s);
    let wallets = wallet_block(state, s, token);
    let script = if wallets.is_empty() {
        CARD_JS.to_string()
    } else {
        format!("{CARD_JS}{WALLET_JS}")
    };
    let body = card_form(s, token, errors, postcode).replacen(
        "<form class=\"card\"",
        &format!("{wallets}<form class=\"card\""),
        1,
    );
    html(
        status,
        &nonce,
        "'none'",
        page(&nonce, "Pay securely", &body, &script),
    )
}

/// Where the PSP sends the customer back for link `token`.
pub(super) fn link_urls(state: &AppState, token: &str) -> LinkUrls {
    let base = format!("{}/pay/link/{token}", state.config.public_url());
    LinkUrls {
        challenge_return: format!("{base}/return"),
        checkout_success: format!("{base}/wallet/done"),
        checkout_cancel: format!("{base}/wallet/cancel"),
    }
}

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

pub(super) fn link_problem(p: LinkProblem) -> Response {
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

pub(super) async fn link_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Response {
    match state.sessions.open_link(&token) {
        Err(p) => link_problem(p),
        Ok(s) => form_page(&state, &s, &token, &[], StatusCode::OK),
    }
}

// The hosted page's form (`application/x-www-form-urlencoded`); every field may be left out.
#[derive(Deserialize, ToSchema)]
pub(in crate::api) struct CardForm {
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

pub(super) async fn link_pay(
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
            return form_page(
                &state,
                &s,
                &token,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    };
    drop(form);
    let step = state
        .sessions
        .pay_on_link(&s, card, &link_urls(&state, &token))
        .await;
    step_page(&state, &token, &s.id, step)
}

/// What the customer sees after an attempt moved: the result, the challenge to go to, a wait,
/// or the form again with why the attempt did not go through.
pub(super) fn step_page(
    state: &AppState,
    token: &str,
    id: &str,
    step: Result<PayStep, SessionError>,
) -> Response {
    let after = state.sessions.get_any(id).ok();
    match (step, after) {
        (Ok(PayStep::Challenge(url)), _) => go_to_psp(
            "Confirm it is you",
            "Your bank wants to confirm this payment. Continue to your bank's page; you will come back here.",
            "Continue to your bank",
            &url,
        ),
        (Ok(PayStep::Waiting), _) => message_page(
            StatusCode::OK,
            "Confirming your payment",
            "Your payment is being confirmed. Reload this page in a moment to see the result.",
        ),
        (Ok(PayStep::TryAgain { reason, attempts_left }), Some(s)) => {
            let text = format!(
                "{} No money was taken. You can try again or use another card ({attempts_left} {} left).",
                why(&reason),
                if attempts_left == 1 { "attempt" } else { "attempts" }
            );
            form_page(state, &s, token, &[("form", text)], StatusCode::OK)
        }
        (_, Some(done)) if done.state == SessionState::Completed => {
            // Paid: the link is spent.
            let _ = state.sessions.use_link(token);
            message_page(
                StatusCode::OK,
                "Payment approved",
                &format!(
                    "Thank you. {} was paid{}. Reference: {}.",
                    amount_text(&done),
                    done.result
                        .masked_pan
                        .as_deref()
                        .map(|m| format!(" with the card ending {}", &m[m.len().saturating_sub(4)..]))
                        .unwrap_or_default(),
                    done.result.psp_transaction_id.as_deref().unwrap_or("-")
                ),
            )
        }
        (_, Some(done)) if done.state == SessionState::Declined => message_page(
            StatusCode::OK,
            "Payment declined",
            &format!(
                "{} ({}). No money was taken, and this link has no attempts left. Ask for a new link to try again.",
                why(done.result.failure_reason.as_deref().unwrap_or("declined")),
                done.result.failure_reason.as_deref().unwrap_or("declined")
            ),
        ),
        (Err(SessionError::Conflict(m)), Some(s)) if matches!(s.state, SessionState::Capturing | SessionState::Created) => {
            form_page(state, &s, token, &[("form", m)], StatusCode::OK)
        }
        _ => message_page(StatusCode::OK, "Payment failed", "We could not complete the payment. No money was taken. Please try again later."),
    }
}

/// Why an attempt did not go through, for the customer.
fn why(reason: &str) -> &'static str {
    match reason {
        "payment_intent_authentication_failure" | "authentication_required" => {
            "Your bank could not confirm it was you."
        }
        "expired" | "canceled" => "The payment was not completed.",
        "wallets_unavailable" => "Wallet payments are not available just now.",
        "expired_card" => "Your card has expired.",
        "incorrect_cvc" => "The security code was not right.",
        "insufficient_funds" => "Your card was declined for insufficient funds.",
        _ => "Your card was declined.",
    }
}

/// A page that sends the browser on to the PSP's page (a bank's challenge, a hosted
/// checkout): a link, followed at once by the script. A redirect from the form's POST would
/// break the page's CSP (`form-action 'self'` covers redirects too).
fn go_to_psp(title: &str, text: &str, button: &str, url: &str) -> Response {
    let nonce = crate::auth::random_token();
    let body = format!(
        "<div class=\"card\"><h1>{}</h1><p>{}</p><p><a id=\"continue\" href=\"{}\">{}</a></p></div>",
        esc(title),
        esc(text),
        esc(url),
        esc(button)
    );
    let script = "const a = document.getElementById('continue'); location.assign(a.href);";
    html(
        StatusCode::OK,
        &nonce,
        "'none'",
        page(&nonce, title, &body, script),
    )
}

/// `POST /pay/link/{token}/wallet`: opens the PSP's hosted checkout with the account's
/// wallets and sends the browser there.
pub(super) async fn link_wallet(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Response {
    let s = match state.sessions.open_link(&token) {
        Ok(s) => s,
        Err(p) => return link_problem(p),
    };
    let wallets = state
        .config
        .account(&s.account_id)
        .is_some_and(|a| !a.wallets.is_empty());
    if !wallets {
        return message_page(
            StatusCode::NOT_FOUND,
            "No wallets here",
            "This payment link takes cards only.",
        );
    }
    let expires = state
        .sessions
        .link_expires_at(&token)
        .unwrap_or(s.expires_at);
    match state
        .sessions
        .start_checkout(&s, expires, &link_urls(&state, &token))
        .await
    {
        Ok(url) => go_to_psp(
            "Pay with your wallet",
            "Continue to the secure payment page to pay with your wallet.",
            "Continue",
            &url,
        ),
        Err(e) => step_page(&state, &token, &s.id, Err(e)),
    }
}

/// The query the PSP adds to the return URL after a challenge (others, such as Stripe's
/// `redirect_status`, are ignored: the PSP is asked how the payment stands).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(in crate::api) struct ReturnQuery {
    /// The payment (PaymentIntent) the challenge was for
    #[serde(default)]
    payment_intent: String,
}

/// `GET /pay/link/{token}/return`: back from a 3-D Secure challenge.
pub(super) async fn link_return(
    State(state): State<AppState>,
    Path(token): Path<String>,
    axum::extract::Query(q): axum::extract::Query<ReturnQuery>,
) -> Response {
    let s = match state.sessions.link_session(&token) {
        Ok(s) => s,
        Err(p) => return link_problem(p),
    };
    let step = state
        .sessions
        .challenge_returned(&s, &q.payment_intent)
        .await;
    step_page(&state, &token, &s.id, step)
}

/// `GET /pay/link/{token}/wallet/done` and `/wallet/cancel`: back from the hosted checkout.
async fn wallet_back(state: AppState, token: String, cancelled: bool) -> Response {
    let s = match state.sessions.link_session(&token) {
        Ok(s) => s,
        Err(p) => return link_problem(p),
    };
    let step = state.sessions.checkout_returned(&s, cancelled).await;
    step_page(&state, &token, &s.id, step)
}

pub(super) async fn link_wallet_done(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Response {
    wallet_back(state, token, false).await
}

pub(super) async fn link_wallet_cancel(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Response {
    wallet_back(state, token, true).await
}

//! The customer's hosted payment page (`/pay/link/{token}`): the card form and its submission.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use utoipa::ToSchema;

use super::text::Texts;
use super::{esc, Shell};
use crate::api::AppState;
use crate::capture::Field;
use crate::card::{Card, CardError, Cvv, Digits, Expiry, Pan};
use crate::session::model::{Session, SessionState};
use crate::session::{today_utc, LinkProblem, LinkUrls, PayStep, SessionError};

const CARD_JS: &str = r#"
const num = document.getElementById('number'), hint = document.getElementById('number-hint'), check = document.body.dataset.check;
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
  hint.textContent = d.length >= 12 ? (b + (luhn(d) ? '' : ' — ' + check)) : b;
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

/// Where the PSP sends the customer back for link `token`.
pub(super) fn link_urls(state: &AppState, token: &str) -> LinkUrls {
    let base = format!("{}/pay/link/{token}", state.config.public_url());
    LinkUrls {
        challenge_return: format!("{base}/return"),
        checkout_success: format!("{base}/wallet/done"),
        checkout_cancel: format!("{base}/wallet/cancel"),
    }
}

/// A refused field: its name (`number`, `expiry`, `cvc`, `postcode`) and what to tell the caller.
type FieldErrors = Vec<(&'static str, &'static str)>;

fn card_form(
    shell: &Shell,
    s: &Session,
    token: &str,
    errors: &[(&str, &str)],
    form_error: Option<&str>,
    postcode: Option<&str>,
) -> String {
    let t = shell.texts();
    // Each input names its hint and, when refused, its error (aria-describedby), and says it
    // was refused (aria-invalid), so a screen reader reads the reason with the field.
    let input = |id: &str, label: &str, attrs: &str, value: &str| {
        let err = errors.iter().find(|(f, _)| *f == id).map(|(_, m)| *m);
        let (invalid, described, err_p) = match err {
            Some(m) => (
                " aria-invalid=\"true\"",
                format!("{id}-hint {id}-error"),
                format!("<p class=\"err\" id=\"{id}-error\">{}</p>", esc(m)),
            ),
            None => ("", format!("{id}-hint"), String::new()),
        };
        format!(
            "<label for=\"{id}\">{}</label><input id=\"{id}\" name=\"{id}\" {attrs} value=\"{}\" required{invalid} aria-describedby=\"{described}\"><p class=\"hint\" id=\"{id}-hint\"></p>{err_p}",
            esc(label),
            esc(value)
        )
    };
    let postcode_input = postcode
        .map(|v| {
            input(
                "postcode",
                t.postcode,
                "autocomplete=\"postal-code\" inputmode=\"text\" maxlength=\"10\"",
                v,
            )
        })
        .unwrap_or_default();
    let alert = match (form_error, errors.is_empty()) {
        (Some(text), _) => format!(
            "<p class=\"err\" id=\"form-error\" role=\"alert\">{}</p>",
            esc(text)
        ),
        (None, false) => format!(
            "<p class=\"err\" id=\"form-error\" role=\"alert\">{}</p>",
            esc(t.check_fields)
        ),
        (None, true) => String::new(),
    };
    // Card data is never written back into the page: those fields come back empty.
    format!(
        "<h1>{}</h1><div class=\"card\">{}</div><form class=\"card\" method=\"post\" action=\"/pay/link/{}\" autocomplete=\"on\" novalidate>{alert}{}\
         <div class=\"row\"><div>{}</div><div>{}</div></div>{postcode_input}\
         <button type=\"submit\" id=\"pay\">{}</button></form>",
        esc(t.pay_securely),
        shell.summary(s),
        esc(token),
        input("number", t.card_number, "autocomplete=\"cc-number\" inputmode=\"numeric\" maxlength=\"23\"", ""),
        input(
            "expiry",
            t.expiry,
            &format!("autocomplete=\"cc-exp\" inputmode=\"numeric\" placeholder=\"{}\" maxlength=\"5\"", esc(t.expiry_placeholder)),
            ""
        ),
        input("cvc", t.cvc, "autocomplete=\"cc-csc\" inputmode=\"numeric\" maxlength=\"4\"", ""),
        esc(&t.pay_amount.replace("{amount}", &shell.amount(s)))
    )
}

/// What the hosted page's form shows besides the fields.
struct FormState<'a> {
    /// Refused fields and why.
    errors: &'a [(&'a str, &'a str)],
    /// Why the last attempt did not go through, if it did not.
    form_error: Option<&'a str>,
    /// The postcode to keep (not card data), where the account asks for it.
    postcode: Option<&'a str>,
}

/// The hosted page: the wallet button where the account has wallets, the form, with `errors`
/// against their fields and the postcode kept.
fn form_page(
    state: &AppState,
    shell: &Shell,
    status: StatusCode,
    s: &Session,
    token: &str,
    f: FormState,
) -> Response {
    let nonce = crate::auth::random_token();
    let t = shell.texts();
    let wallets = wallet_block(state, s, token);
    let script = if wallets.is_empty() {
        CARD_JS.to_string()
    } else {
        format!("{CARD_JS}{WALLET_JS}")
    };
    let body = card_form(shell, s, token, f.errors, f.form_error, f.postcode).replacen(
        "<form class=\"card\"",
        &format!("{wallets}<form class=\"card\""),
        1,
    );
    let doc = shell.page(&nonce, t.pay_securely, &body, &script).replacen(
        "<body>",
        &format!("<body data-check=\"{}\">", esc(t.check_number)),
        1,
    );
    shell.respond(status, &nonce, "'none'", doc)
}

/// The page shell for the account behind link `token`, whatever state the link is in.
fn shell_for<'a>(state: &'a AppState, token: &str) -> Shell<'a> {
    let owner = state.sessions.link_session(token).ok();
    Shell::customer(owner.and_then(|s| state.config.account(&s.account_id)))
}

fn link_problem(shell: &Shell, p: LinkProblem) -> Response {
    let t = shell.texts();
    let (status, (title, text)) = match p {
        LinkProblem::Unknown => (StatusCode::NOT_FOUND, t.not_found),
        LinkProblem::Expired => (StatusCode::GONE, t.link_expired),
        LinkProblem::Used => (StatusCode::GONE, t.link_used),
        LinkProblem::Replaced => (StatusCode::GONE, t.link_replaced),
        LinkProblem::Finished(_) => (StatusCode::GONE, t.closed),
    };
    shell.message(status, title, text)
}

/// Whether the account asks for the postcode.
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
        Err(p) => link_problem(&shell_for(&state, &token), p),
        Ok(s) => {
            let shell = Shell::customer(state.config.account(&s.account_id));
            let postcode = wants_postcode(&state, &s).then_some("");
            let f = FormState {
                errors: &[],
                form_error: None,
                postcode,
            };
            form_page(&state, &shell, StatusCode::OK, &s, &token, f)
        }
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

/// Validates the posted form (server side is authoritative); errors per field in the page's
/// language, no values echoed.
fn card_from_form(
    f: &CardForm,
    postcode: bool,
    today: (u16, u8),
    t: &Texts,
) -> Result<Card, FieldErrors> {
    let mut errors: FieldErrors = Vec::new();
    let pan = match Digits::parse(&f.number)
        .ok_or(CardError::Length)
        .and_then(Pan::new)
    {
        Ok(p) => Some(p),
        Err(_) if f.number.trim().is_empty() => {
            errors.push(("number", t.enter_number));
            None
        }
        Err(e) => {
            errors.push(("number", t.card_error(e)));
            None
        }
    };
    let exp_digits: String = f.expiry.chars().filter(char::is_ascii_digit).collect();
    let expiry = match Digits::parse(&exp_digits)
        .ok_or(CardError::ExpiryFormat)
        .and_then(|d| Expiry::new(d, today))
    {
        Ok(e) => Some(e),
        Err(_) if f.expiry.trim().is_empty() => {
            errors.push(("expiry", t.enter_expiry));
            None
        }
        Err(e) => {
            errors.push(("expiry", t.card_error(e)));
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
        Err(_) if f.cvc.trim().is_empty() => {
            errors.push(("cvc", t.enter_cvc));
            None
        }
        Err(e) => {
            errors.push(("cvc", t.card_error(e)));
            None
        }
    };
    let pc_digits: String = f.postcode.chars().filter(char::is_ascii_digit).collect();
    let postcode_value = if postcode {
        if f.postcode.trim().is_empty() {
            errors.push(("postcode", t.enter_postcode));
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
        Err(p) => return link_problem(&shell_for(&state, &token), p),
    };
    let shell = Shell::customer(state.config.account(&s.account_id));
    let t = shell.texts();
    let postcode = wants_postcode(&state, &s);
    let card = match card_from_form(&form, postcode, today_utc(state.clock.unix_now()), t) {
        Ok(c) => c,
        Err(errors) => {
            // The postcode (not card data) is kept for the caller to correct; the card fields
            // come back empty.
            let kept: String = form.postcode.chars().take(10).collect();
            let kept = postcode.then_some(kept.as_str());
            let f = FormState {
                errors: &errors,
                form_error: None,
                postcode: kept,
            };
            return form_page(
                &state,
                &shell,
                StatusCode::UNPROCESSABLE_ENTITY,
                &s,
                &token,
                f,
            );
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
    let shell = Shell::customer(
        after
            .as_ref()
            .and_then(|s| state.config.account(&s.account_id)),
    );
    let t = shell.texts();
    let again = |s: &Session, text: &str| {
        let f = FormState {
            errors: &[],
            form_error: Some(text),
            postcode: wants_postcode(state, s).then_some(""),
        };
        form_page(state, &shell, StatusCode::OK, s, token, f)
    };
    match (step, after) {
        (Ok(PayStep::Challenge(url)), _) => go_to_psp(
            &shell,
            "Confirm it is you",
            "Your bank wants to confirm this payment. Continue to your bank's page; you will come back here.",
            "Continue to your bank",
            &url,
        ),
        (Ok(PayStep::Waiting), _) => shell.message(
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
            again(&s, &text)
        }
        (_, Some(done)) if done.state == SessionState::Completed => {
            // Paid: the link is spent.
            let _ = state.sessions.use_link(token);
            let reference = done.result.psp_transaction_id.as_deref().unwrap_or("-");
            let text = match done.result.masked_pan.as_deref() {
                Some(m) => t
                    .approved_text
                    .replace("{last4}", &m[m.len().saturating_sub(4)..]),
                // A wallet payment: the PSP never showed us the card.
                None => t.approved_wallet_text.to_string(),
            }
            .replace("{amount}", &shell.amount(&done))
            .replace("{reference}", reference);
            shell.message(StatusCode::OK, t.approved, &text)
        }
        (_, Some(done)) if done.state == SessionState::Declined => {
            shell.message(StatusCode::OK, t.declined.0, t.declined.1)
        }
        (Err(SessionError::Conflict(m)), Some(s))
            if matches!(s.state, SessionState::Capturing | SessionState::Created) =>
        {
            again(&s, &m)
        }
        _ => shell.message(StatusCode::OK, t.failed.0, t.failed.1),
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
fn go_to_psp(shell: &Shell, title: &str, text: &str, button: &str, url: &str) -> Response {
    let nonce = crate::auth::random_token();
    let body = format!(
        "<div class=\"card\"><h1>{}</h1><p>{}</p><p><a id=\"continue\" href=\"{}\">{}</a></p></div>",
        esc(title),
        esc(text),
        esc(url),
        esc(button)
    );
    let script = "const a = document.getElementById('continue'); location.assign(a.href);";
    let doc = shell.page(&nonce, title, &body, script);
    shell.respond(StatusCode::OK, &nonce, "'none'", doc)
}

/// `POST /pay/link/{token}/wallet`: opens the PSP's hosted checkout with the account's
/// wallets and sends the browser there.
pub(super) async fn link_wallet(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Response {
    let s = match state.sessions.open_link(&token) {
        Ok(s) => s,
        Err(p) => return link_problem(&shell_for(&state, &token), p),
    };
    let wallets = state
        .config
        .account(&s.account_id)
        .is_some_and(|a| !a.wallets.is_empty());
    if !wallets {
        return shell_for(&state, &token).message(
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
            &shell_for(&state, &token),
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
        Err(p) => return link_problem(&shell_for(&state, &token), p),
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
        Err(p) => return link_problem(&shell_for(&state, &token), p),
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

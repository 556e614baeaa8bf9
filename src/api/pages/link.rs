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
use crate::session::{today_utc, LinkProblem};

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

pub(super) async fn link_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Response {
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

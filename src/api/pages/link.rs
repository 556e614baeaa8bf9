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
use crate::session::{today_utc, LinkProblem};

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

/// A refused field: its name (`number`, `expiry`, `cvc`, `postcode`) and what to tell the caller.
type FieldErrors = Vec<(&'static str, &'static str)>;

fn card_form(
    shell: &Shell,
    s: &Session,
    token: &str,
    errors: &[(&str, &str)],
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
    let alert = if errors.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"err\" id=\"form-error\" role=\"alert\">{}</p>",
            esc(t.check_fields)
        )
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

/// The hosted page: the form, with `errors` against their fields and the postcode kept.
fn form_page(
    shell: &Shell,
    status: StatusCode,
    s: &Session,
    token: &str,
    errors: &[(&str, &str)],
    postcode: Option<&str>,
) -> Response {
    let nonce = crate::auth::random_token();
    let t = shell.texts();
    let doc = shell
        .page(
            &nonce,
            t.pay_securely,
            &card_form(shell, s, token, errors, postcode),
            CARD_JS,
        )
        .replacen(
            "<body>",
            &format!("<body data-check=\"{}\">", esc(t.check_number)),
            1,
        );
    shell.respond(status, &nonce, "'none'", doc)
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
        Err(p) => {
            let owner = state.sessions.link_session(&token);
            let account = owner.and_then(|s| state.config.account(&s.account_id));
            link_problem(&Shell::customer(account), p)
        }
        Ok(s) => {
            let shell = Shell::customer(state.config.account(&s.account_id));
            let postcode = wants_postcode(&state, &s).then_some("");
            form_page(&shell, StatusCode::OK, &s, &token, &[], postcode)
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
        Err(p) => {
            let owner = state.sessions.link_session(&token);
            let account = owner.and_then(|s| state.config.account(&s.account_id));
            return link_problem(&Shell::customer(account), p);
        }
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
            return form_page(
                &shell,
                StatusCode::UNPROCESSABLE_ENTITY,
                &s,
                &token,
                &errors,
                kept,
            );
        }
    };
    drop(form);
    if !state.sessions.use_link(&token).unwrap_or(false) {
        return link_problem(&shell, LinkProblem::Used);
    }
    let result = state.sessions.pay_with_card(&s.id, card, "customer").await;
    let after = state.sessions.get_any(&s.id).ok();
    match (result, after) {
        (Ok(_), Some(done)) if done.state == SessionState::Completed => {
            let last4 = done
                .result
                .masked_pan
                .as_deref()
                .map(|m| &m[m.len().saturating_sub(4)..])
                .unwrap_or("????");
            let text = t
                .approved_text
                .replace("{amount}", &shell.amount(&done))
                .replace("{last4}", last4)
                .replace(
                    "{reference}",
                    done.result.psp_transaction_id.as_deref().unwrap_or("-"),
                );
            shell.message(StatusCode::OK, t.approved, &text)
        }
        (_, Some(done)) if done.state == SessionState::Declined => {
            shell.message(StatusCode::OK, t.declined.0, t.declined.1)
        }
        _ => shell.message(StatusCode::OK, t.failed.0, t.failed.1),
    }
}

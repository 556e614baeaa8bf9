//! The sandbox PSP's own pages, standing in for a bank's 3-D Secure challenge
//! (`/sandbox/3ds/{id}`) and the PSP's hosted wallet checkout (`/sandbox/checkout/{id}`).
//! They answer only for challenges and checkouts the sandbox made (404 otherwise), so a
//! gateway without sandbox accounts serves nothing here.
//!
//! Paying the simulated checkout posts Stripe's signed `checkout.session.completed` webhook
//! to the gateway's own endpoint over HTTP, as Stripe would, before sending the browser to the
//! success URL.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{esc, html, message_page, page};
use crate::api::AppState;
use crate::card::money::{Currency, Money};

fn amount(minor: i64, currency: &str) -> String {
    Currency::from_code(currency)
        .map(|c| Money::from_minor(minor, c).to_string())
        .unwrap_or_else(|_| "-".into())
}

fn gone() -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "Nothing to confirm",
        "This sandbox page is not waiting for anything.",
    )
}

fn see_other(url: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, url.to_string())]).into_response()
}

/// A form of buttons, each posting `name=value` to `action`.
fn buttons(action: &str, name: &str, choices: &[(&str, &str)]) -> String {
    choices
        .iter()
        .map(|(value, label)| {
            format!(
                "<form method=\"post\" action=\"{}\"><button type=\"submit\" name=\"{name}\" value=\"{value}\" id=\"{value}\">{}</button></form>",
                esc(action),
                esc(label)
            )
        })
        .collect()
}

/// `GET /sandbox/3ds/{id}`: the simulated bank's challenge.
pub(super) async fn challenge_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Response {
    let Some(c) = state.sandbox.challenge(&id) else {
        return gone();
    };
    let nonce = crate::auth::random_token();
    let action = format!("/sandbox/3ds/{id}");
    let body = format!(
        "<div class=\"card\"><h1>Sandbox bank: confirm this payment</h1><p>Approve the payment of <strong id=\"challenge-amount\">{}</strong>?</p>{}</div>",
        esc(&amount(c.amount_minor, &c.currency)),
        buttons(
            &action,
            "outcome",
            &[("approve", "Approve"), ("fail", "Fail authentication")]
        )
    );
    html(
        StatusCode::OK,
        &nonce,
        "'none'",
        page(&nonce, "Sandbox bank", &body, ""),
    )
}

/// The challenge page's answer.
#[derive(Deserialize, ToSchema)]
pub(in crate::api) struct ChallengeAnswer {
    /// How the customer answered the challenge.
    #[schema(inline)]
    outcome: ChallengeOutcome,
}

/// The two buttons of the sandbox's challenge page.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(in crate::api) enum ChallengeOutcome {
    Approve,
    Fail,
}

/// `POST /sandbox/3ds/{id}`: passes or fails the challenge, back to the return URL.
pub(super) async fn challenge_answer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(a): Form<ChallengeAnswer>,
) -> Response {
    let approve = matches!(a.outcome, ChallengeOutcome::Approve);
    match state.sandbox.answer_challenge(&id, approve) {
        Some(url) => see_other(&url),
        None => gone(),
    }
}

/// `GET /sandbox/checkout/{id}`: the simulated hosted checkout with the account's wallets.
pub(super) async fn checkout_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Response {
    let Some(c) = state.sandbox.checkout(&id, state.clock.unix_now()) else {
        return gone();
    };
    let wallets = state
        .sessions
        .get_any(&c.session_id)
        .ok()
        .and_then(|s| {
            state
                .config
                .account(&s.account_id)
                .map(|a| a.wallets.clone())
        })
        .unwrap_or_default();
    let mut choices: Vec<(&str, String)> = wallets
        .iter()
        .map(|w| {
            let value = match w {
                crate::config::Wallet::ApplePay => "apple_pay",
                crate::config::Wallet::GooglePay => "google_pay",
            };
            (value, format!("Pay with {}", w.label()))
        })
        .collect();
    choices.push(("cancel", "Cancel and go back".into()));
    let choices: Vec<(&str, &str)> = choices.iter().map(|(v, l)| (*v, l.as_str())).collect();
    let nonce = crate::auth::random_token();
    let body = format!(
        "<div class=\"card\"><h1>Sandbox checkout</h1><p>{}: <strong id=\"checkout-amount\">{}</strong></p>{}</div>",
        esc(&c.description),
        esc(&amount(c.amount_minor, &c.currency)),
        buttons(&format!("/sandbox/checkout/{id}"), "action", &choices)
    );
    html(
        StatusCode::OK,
        &nonce,
        "'none'",
        page(&nonce, "Sandbox checkout", &body, ""),
    )
}

/// The checkout page's answer.
#[derive(Deserialize, ToSchema)]
pub(in crate::api) struct CheckoutAnswer {
    /// The wallet the customer paid with, or `cancel`.
    #[schema(inline)]
    action: CheckoutAction,
}

/// The buttons of the sandbox's checkout page.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(in crate::api) enum CheckoutAction {
    ApplePay,
    GooglePay,
    Cancel,
}

/// `POST /sandbox/checkout/{id}`: pays with the chosen wallet (then the signed webhook goes
/// to the gateway and the browser to the success URL), or cancels (to the cancel URL).
pub(super) async fn checkout_answer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(a): Form<CheckoutAnswer>,
) -> Response {
    match a.action {
        CheckoutAction::Cancel => match state.sandbox.cancel_url(&id) {
            Some(url) => see_other(&url),
            None => gone(),
        },
        CheckoutAction::ApplePay | CheckoutAction::GooglePay => {
            let now = state.clock.unix_now();
            let Some(view) = state.sandbox.checkout(&id, now) else {
                return gone();
            };
            let account = state
                .sessions
                .get_any(&view.session_id)
                .ok()
                .and_then(|s| state.config.account(&s.account_id).cloned());
            let Some(account) = account else {
                return gone();
            };
            let Some((success, event)) = state.sandbox.pay_checkout(&id, now) else {
                return gone();
            };
            let secret = account.psp_webhook_secret.clone().unwrap_or_default();
            let signature = crate::psp::webhook::sign(&secret, now, event.as_bytes());
            state
                .sandbox
                .record_webhook(&account.id, &event, &signature);
            let url = format!(
                "{}/psp/v1/webhook/{}",
                state.config.public_url(),
                account.id
            );
            deliver(&url, event, signature).await;
            see_other(&success)
        }
    }
}

/// Posts the webhook like the PSP would; a failure is logged (the customer's return polls
/// the PSP, so the payment is still found).
async fn deliver(url: &str, event: String, signature: String) {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build();
    let Ok(client) = client else {
        return;
    };
    let r = client
        .post(url)
        .header("content-type", "application/json; charset=utf-8")
        .header("stripe-signature", signature)
        .body(event)
        .send()
        .await;
    match r {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(status = r.status().as_u16(), "sandbox webhook refused"),
        Err(e) => tracing::warn!(error = %e, "sandbox webhook not delivered"),
    }
}

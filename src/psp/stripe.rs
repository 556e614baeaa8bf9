//! A Stripe-compatible PSP over HTTPS (reqwest, rustls).
//!
//! Tokenize: `POST /v1/payment_methods` (`type=card`), then `POST /v1/customers` and
//! `POST /v1/payment_methods/{id}/attach` — attaching runs the issuer's check, so a card that
//! will never work is refused here, before any charge. Charge: `POST /v1/payment_intents` with
//! the customer and payment method and metadata (sessionId, merchantTxnRef, channel), whose id
//! the gateway stores, then `POST /v1/payment_intents/{id}/confirm`, each with an
//! `Idempotency-Key`. A lost answer is settled by reading that intent; a wallet payment made
//! straight to the PSP is found with `GET /v1/payment_intents/search` by its sessionId
//! metadata. Refund: `POST /v1/refunds`.
//!
//! 3-D Secure: a confirm that answers `requires_action` without a redirect is confirmed again
//! with the hosted page's `return_url`, which makes Stripe answer `next_action.type =
//! "redirect_to_url"`; the customer's browser goes to `redirect_to_url.url` and comes back to
//! the return URL, and the gateway reads the intent (`GET /v1/payment_intents/{id}`). A PSP
//! that refuses the second confirm (localstripe, whose challenge exists only inside its own
//! Stripe.js stand-in) leaves the payment `authentication_required`. A challenge the customer
//! walks away from is cancelled (`POST /v1/payment_intents/{id}/cancel`).
//!
//! Wallets: `POST /v1/checkout/sessions` (`mode=payment`, one line item priced in Stripe's
//! units, `payment_method_types[]=card` — Checkout offers Apple Pay and Google Pay on card
//! where the browser and the account's wallet settings allow; they are not payment method
//! types of their own there — `expires_at`, `metadata[sessionId]` on the checkout and its
//! PaymentIntent). Its status is `GET /v1/checkout/sessions/{id}`; an abandoned one is closed
//! with `POST /v1/checkout/sessions/{id}/expire`.
//!
//! The form body holding the PAN (`card::egress::CardBody`) is the one buffer the raw number is
//! ever written into; it wipes itself when reqwest lets go of it. The secret key is never logged.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::{
    stripe_amount, BoxFuture, ChargeOutcome, ChargeRequest, Checkout, CheckoutRequest,
    PaymentStatus, Psp, PspError, TokenizedCard,
};
use crate::card::egress::CardForm;
use crate::card::Card;

/// Stripe's names for the card's fields in `POST /v1/payment_methods`.
const CARD_FORM: CardForm = CardForm {
    prefix: "type=card",
    number: "card%5Bnumber%5D",
    exp_month: "card%5Bexp_month%5D",
    exp_year: "card%5Bexp_year%5D",
    cvc: "card%5Bcvc%5D",
    postcode: "billing_details%5Baddress%5D%5Bpostal_code%5D",
};

/// A Stripe-compatible PSP.
pub struct StripePsp {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl core::fmt::Debug for StripePsp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StripePsp")
            .field("base", &self.base)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl StripePsp {
    /// A client for the API at `base` (e.g. `https://api.stripe.com`) with secret key `key`.
    pub fn new(base: &str, key: &str) -> Result<Self, reqwest::Error> {
        Ok(StripePsp {
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .connect_timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        })
    }

    async fn post(
        &self,
        path: &str,
        body: Bytes,
        idempotency_key: Option<&str>,
    ) -> Result<Value, PspError> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .basic_auth(&self.key, Some(""))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| PspError::Unreachable(without_url(&e)))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        if status.is_server_error() {
            return Err(PspError::Server(status.as_u16()));
        }
        let code = v["error"]["code"]
            .as_str()
            .or(v["error"]["decline_code"].as_str())
            .unwrap_or("")
            .to_string();
        if is_decline(&code) || status.as_u16() == 402 {
            return Err(PspError::Declined {
                code: if code.is_empty() {
                    "card_declined".into()
                } else {
                    code
                },
            });
        }
        Err(PspError::Rejected(format!(
            "HTTP {}: {}",
            status.as_u16(),
            v["error"]["message"].as_str().unwrap_or("no message")
        )))
    }
}

/// Stripe's `next_action.redirect_to_url.url`, if the intent has one.
fn redirect_of(pi: &Value) -> Option<String> {
    (pi["next_action"]["type"] == "redirect_to_url")
        .then(|| pi["next_action"]["redirect_to_url"]["url"].as_str())
        .flatten()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .map(str::to_string)
}

/// A PaymentIntent or Checkout Session as a [`PaymentStatus`].
fn status_of(v: &Value) -> PaymentStatus {
    let amount = |amount: &Value| {
        let currency = v["currency"].as_str().unwrap_or("");
        amount
            .as_i64()
            .and_then(|a| stripe_amount::from_stripe(a, currency))
            .unwrap_or(0)
    };
    let currency = v["currency"].as_str().unwrap_or("").to_ascii_uppercase();
    if v["object"] == "checkout.session" {
        return match (v["payment_status"].as_str(), v["status"].as_str()) {
            (Some("paid"), _) => PaymentStatus::Succeeded {
                transaction_id: v["payment_intent"].as_str().unwrap_or("").to_string(),
                amount_minor: amount(&v["amount_total"]),
                currency,
            },
            (_, Some("expired")) => PaymentStatus::Failed {
                code: "expired".into(),
            },
            _ => PaymentStatus::Pending,
        };
    }
    match v["status"].as_str() {
        Some("succeeded") => PaymentStatus::Succeeded {
            transaction_id: v["id"].as_str().unwrap_or("").to_string(),
            amount_minor: amount(&v["amount"]),
            currency,
        },
        Some("canceled") => PaymentStatus::Failed {
            code: "canceled".into(),
        },
        Some("requires_payment_method") => PaymentStatus::Failed {
            code: v["last_payment_error"]["code"]
                .as_str()
                .unwrap_or("payment_failed")
                .to_string(),
        },
        _ => PaymentStatus::Pending,
    }
}

/// The Stripe object behind a payment id: a Checkout Session (`cs_…`) or a PaymentIntent.
fn object_path(id: &str) -> String {
    if id.starts_with("cs_") {
        format!("/v1/checkout/sessions/{}", urlencoding_path(id))
    } else {
        format!("/v1/payment_intents/{}", urlencoding_path(id))
    }
}

impl StripePsp {
    /// The challenge for an intent that requires action: its redirect, or (when the hosted
    /// page gave a return URL) the redirect a second confirm with `return_url` gets.
    async fn challenge_url(&self, pi: &Value, id: &str, req: &ChargeRequest<'_>) -> Option<String> {
        if let Some(u) = redirect_of(pi) {
            return Some(u);
        }
        let return_url = req.return_url?;
        let again = self
            .post(
                &format!("/v1/payment_intents/{}/confirm", urlencoding_path(id)),
                form(&[("return_url", return_url)]),
                Some(&format!("{}-3ds", req.idempotency_key)),
            )
            .await;
        match again {
            Ok(v) => redirect_of(&v),
            Err(e) => {
                tracing::info!(error = %e, "the PSP offers no 3-D Secure redirect");
                None
            }
        }
    }

    /// `GET path?query`: the object, or `None` if the PSP has no such thing (404).
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Option<Value>, PspError> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .basic_auth(&self.key, Some(""))
            .send()
            .await
            .map_err(|e| PspError::Unreachable(without_url(&e)))?;
        let status = resp.status();
        if status.is_server_error() {
            return Err(PspError::Server(status.as_u16()));
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(PspError::Rejected(format!("HTTP {}", status.as_u16())));
        }
        resp.json()
            .await
            .map(Some)
            .map_err(|_| PspError::Rejected("unreadable answer".into()))
    }
}

/// A PSP's id as one URL path segment (ids are `[A-Za-z0-9_]`; anything else is escaped).
fn urlencoding_path(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn is_decline(code: &str) -> bool {
    matches!(
        code,
        "card_declined"
            | "expired_card"
            | "incorrect_cvc"
            | "processing_error"
            | "authentication_required"
            | "incorrect_number"
            | "insufficient_funds"
    )
}

/// A reqwest error without the URL (which could carry query strings) for logs.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    kind.to_string()
}

fn form(pairs: &[(&str, &str)]) -> Bytes {
    Bytes::from(serde_urlencoded::to_string(pairs).expect("form pairs encode"))
}

/// The PaymentIntent for `req`: the amount in Stripe's units, the token, the metadata that
/// finds it again; `confirm` charges it in the same request.
fn intent_form(req: &ChargeRequest<'_>, confirm: bool) -> Result<Bytes, PspError> {
    let amount = stripe_amount::to_stripe(req.amount_minor, req.currency)?.to_string();
    let currency = req.currency.to_ascii_lowercase();
    let mut pairs = vec![
        ("amount", amount.as_str()),
        ("currency", currency.as_str()),
        ("payment_method", req.token.token_ref.as_str()),
        ("payment_method_types[]", "card"),
        ("metadata[sessionId]", req.session_id),
        ("metadata[channel]", req.channel),
    ];
    if confirm {
        pairs.push(("confirm", "true"));
    }
    if let Some(c) = &req.token.customer_ref {
        pairs.push(("customer", c));
    }
    if let Some(r) = req.merchant_txn_ref {
        pairs.push(("metadata[merchantTxnRef]", r));
    }
    Ok(form(&pairs))
}

impl Psp for StripePsp {
    fn tokenize<'a>(
        &'a self,
        card: &'a Card,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<TokenizedCard, PspError>> {
        Box::pin(async move {
            // The card's digits leave the card types here, and only here (`card::egress`).
            let body = CARD_FORM.body(card);
            let pm = self
                .post(
                    "/v1/payment_methods",
                    Bytes::from_owner(body),
                    Some(&format!("{idempotency_key}-pm")),
                )
                .await?;
            let pm_id = pm["id"]
                .as_str()
                .ok_or_else(|| PspError::Rejected("payment method without id".into()))?
                .to_string();
            let cus = self
                .post(
                    "/v1/customers",
                    form(&[("description", "tonegate card holder")]),
                    Some(&format!("{idempotency_key}-cus")),
                )
                .await?;
            let cus_id = cus["id"]
                .as_str()
                .ok_or_else(|| PspError::Rejected("customer without id".into()))?
                .to_string();
            self.post(
                &format!("/v1/payment_methods/{pm_id}/attach"),
                form(&[("customer", &cus_id)]),
                Some(&format!("{idempotency_key}-attach")),
            )
            .await?;
            Ok(TokenizedCard {
                token_ref: pm_id,
                customer_ref: Some(cus_id),
                brand: pm["card"]["brand"].as_str().unwrap_or("").to_string(),
                last4: pm["card"]["last4"].as_str().unwrap_or("").to_string(),
                fingerprint: pm["card"]["fingerprint"].as_str().map(str::to_string),
            })
        })
    }

    fn create_payment<'a>(
        &'a self,
        req: ChargeRequest<'a>,
    ) -> BoxFuture<'a, Result<Option<String>, PspError>> {
        Box::pin(async move {
            let pi = self
                .post(
                    "/v1/payment_intents",
                    intent_form(&req, false)?,
                    Some(&format!("{}-create", req.idempotency_key)),
                )
                .await?;
            match pi["id"].as_str() {
                Some(id) if !id.is_empty() => Ok(Some(id.to_string())),
                _ => Err(PspError::Rejected("payment intent without id".into())),
            }
        })
    }

    fn charge<'a>(
        &'a self,
        req: ChargeRequest<'a>,
    ) -> BoxFuture<'a, Result<ChargeOutcome, PspError>> {
        Box::pin(async move {
            let answer = match req.payment_id {
                // The intent exists (its id is stored): confirming it is the charge.
                Some(pi) => {
                    self.post(
                        &format!("/v1/payment_intents/{pi}/confirm"),
                        form(&[]),
                        Some(req.idempotency_key),
                    )
                    .await
                }
                None => {
                    self.post(
                        "/v1/payment_intents",
                        intent_form(&req, true)?,
                        Some(req.idempotency_key),
                    )
                    .await
                }
            };
            let pi = match answer {
                Ok(v) => v,
                Err(PspError::Declined { code }) => {
                    return Ok(ChargeOutcome::Declined {
                        transaction_id: req.payment_id.map(str::to_string),
                        code,
                    })
                }
                Err(e) => return Err(e),
            };
            let id = pi["id"].as_str().unwrap_or("").to_string();
            Ok(match pi["status"].as_str() {
                Some("succeeded") | Some("processing") | Some("requires_capture") => {
                    ChargeOutcome::Approved { transaction_id: id }
                }
                Some("requires_action") => ChargeOutcome::RequiresAction {
                    redirect_url: self.challenge_url(&pi, &id, &req).await,
                    transaction_id: id,
                },
                _ => ChargeOutcome::Declined {
                    transaction_id: Some(id),
                    code: pi["last_payment_error"]["code"]
                        .as_str()
                        .unwrap_or("card_declined")
                        .to_string(),
                },
            })
        })
    }

    fn find_payment<'a>(
        &'a self,
        session_id: &'a str,
        payment_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<(String, i64)>, PspError>> {
        Box::pin(async move {
            let succeeded = |pi: &Value| {
                (pi["metadata"]["sessionId"] == session_id && pi["status"] == "succeeded").then(
                    || {
                        (
                            pi["id"].as_str().unwrap_or("").to_string(),
                            // Stripe's units back to ISO minor units; unreadable: 0, which
                            // matches no session's amount.
                            pi["amount"]
                                .as_i64()
                                .and_then(|a| {
                                    stripe_amount::from_stripe(a, pi["currency"].as_str()?)
                                })
                                .unwrap_or(0),
                        )
                    },
                )
            };
            match payment_id {
                Some(pi) => {
                    let path = format!("/v1/payment_intents/{}", urlencoding_path(pi));
                    Ok(self.get(&path, &[]).await?.as_ref().and_then(succeeded))
                }
                None => {
                    // Stripe's search, by the metadata every charge carries. Session ids are
                    // ours (letters, digits, '-', '_'); quotes are escaped all the same.
                    let query = format!(
                        "metadata['sessionId']:'{}'",
                        session_id.replace('\\', "\\\\").replace('\'', "\\'")
                    );
                    let v = self
                        .get("/v1/payment_intents/search", &[("query", &query)])
                        .await?
                        .ok_or_else(|| {
                            PspError::Rejected("the PSP cannot search payments".into())
                        })?;
                    Ok(v["data"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find_map(succeeded))
                }
            }
        })
    }

    fn payment_status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<PaymentStatus, PspError>> {
        Box::pin(async move {
            let v = self
                .get(&object_path(id), &[])
                .await?
                .ok_or_else(|| PspError::Rejected("no such payment".into()))?;
            Ok(status_of(&v))
        })
    }

    fn abandon<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<PaymentStatus, PspError>> {
        Box::pin(async move {
            let stop = if id.starts_with("cs_") {
                format!("{}/expire", object_path(id))
            } else {
                format!("{}/cancel", object_path(id))
            };
            // Refused when it is already final (paid, failed): what it is now decides.
            match self.post(&stop, form(&[]), None).await {
                Ok(_) | Err(PspError::Rejected(_)) | Err(PspError::Declined { .. }) => {}
                Err(e) => return Err(e),
            }
            match self.payment_status(id).await? {
                PaymentStatus::Pending => Err(PspError::Rejected(
                    "the payment could not be stopped".into(),
                )),
                st => Ok(st),
            }
        })
    }

    fn create_checkout<'a>(
        &'a self,
        req: CheckoutRequest<'a>,
    ) -> BoxFuture<'a, Result<Checkout, PspError>> {
        Box::pin(async move {
            let amount = stripe_amount::to_stripe(req.amount_minor, req.currency)?.to_string();
            let currency = req.currency.to_ascii_lowercase();
            // Stripe takes 30 minutes to 24 hours; the gateway expires it sooner itself when
            // the session stops waiting for it. Stripe's clock is the system's, never the
            // gateway's adjustable one.
            let now = crate::clock::Clock::system().unix_now();
            let expires = req.expires_at.max(now + 1800).to_string();
            let mut pairs = vec![
                ("mode", "payment"),
                ("line_items[0][quantity]", "1"),
                ("line_items[0][price_data][currency]", currency.as_str()),
                ("line_items[0][price_data][unit_amount]", amount.as_str()),
                (
                    "line_items[0][price_data][product_data][name]",
                    req.description,
                ),
                ("payment_method_types[0]", "card"),
                ("success_url", req.success_url),
                ("cancel_url", req.cancel_url),
                ("expires_at", expires.as_str()),
                ("client_reference_id", req.session_id),
                ("metadata[sessionId]", req.session_id),
                ("payment_intent_data[metadata][sessionId]", req.session_id),
                ("payment_intent_data[metadata][channel]", "digital"),
            ];
            if let Some(r) = req.merchant_txn_ref {
                pairs.push(("metadata[merchantTxnRef]", r));
                pairs.push(("payment_intent_data[metadata][merchantTxnRef]", r));
            }
            let v = self
                .post(
                    "/v1/checkout/sessions",
                    form(&pairs),
                    Some(req.idempotency_key),
                )
                .await?;
            match (v["id"].as_str(), v["url"].as_str()) {
                (Some(id), Some(url))
                    if url.starts_with("https://") || url.starts_with("http://") =>
                {
                    Ok(Checkout {
                        id: id.to_string(),
                        url: url.to_string(),
                    })
                }
                _ => Err(PspError::Rejected(
                    "checkout session without id or url".into(),
                )),
            }
        })
    }

    fn refund<'a>(
        &'a self,
        transaction_id: &'a str,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<String, PspError>> {
        Box::pin(async move {
            let v = self
                .post(
                    "/v1/refunds",
                    form(&[("payment_intent", transaction_id)]),
                    Some(idempotency_key),
                )
                .await?;
            Ok(v["id"].as_str().unwrap_or("").to_string())
        })
    }
}

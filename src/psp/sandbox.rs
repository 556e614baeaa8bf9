//! The built-in sandbox PSP: Stripe's test-card behaviour, in process, no setup.
//!
//! - `4000000000000002`: declined when tokenized (`card_declined`);
//! - `4000000000000341`: tokenizes, declined when charged (`card_declined`);
//! - `4000002500003155`: charge requires authentication (3-D Secure): with a return URL (the
//!   hosted page) the answer names a challenge page tonegate serves at `/sandbox/3ds/{id}`
//!   (approve / fail, as a bank's would), which sends the browser back to the return URL with
//!   Stripe's `payment_intent` and `redirect_status` query parameters;
//! - any other valid card: approved.
//!
//! Wallets: [`Psp::create_checkout`] makes a simulated hosted checkout at
//! `/sandbox/checkout/{id}` (Apple Pay / Google Pay buttons and cancel). Paying it records the
//! payment and produces Stripe's `checkout.session.completed` event (the `event` and
//! `checkout.session` shapes of Stripe's published OpenAPI document), which the page handler
//! signs and posts to the gateway's webhook endpoint like Stripe would.
//!
//! It keeps tokens and charges in memory (never a card number: only the behaviour), answers
//! repeated idempotency keys with the first answer, and can be told to fail the next calls for
//! failure tests.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{
    stripe_amount, BoxFuture, ChargeOutcome, ChargeRequest, Checkout, CheckoutRequest,
    PaymentStatus, Psp, PspError, TokenizedCard,
};
use crate::card::Card;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Approve,
    DeclineAtCharge,
    RequireAction,
}

/// An injected failure for the next calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectedFailure {
    /// As if the PSP could not be reached.
    Unreachable,
    /// As if the PSP answered with this 5xx status.
    Server(u16),
}

/// Where a simulated challenge or checkout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Open,
    Paid,
    /// Authentication failed, or the checkout was cancelled or expired.
    Closed,
}

/// A 3-D Secure challenge waiting for the customer.
struct Challenge {
    session_id: String,
    amount_minor: i64,
    currency: String,
    return_url: String,
    stage: Stage,
}

/// A simulated hosted checkout.
struct SandboxCheckout {
    session_id: String,
    merchant_txn_ref: Option<String>,
    amount_minor: i64,
    currency: String,
    description: String,
    expires_at: u64,
    success_url: String,
    cancel_url: String,
    created: u64,
    payment_intent: Option<String>,
    stage: Stage,
}

/// What the challenge page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeView {
    /// Minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
}

/// What the simulated checkout page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutView {
    /// Minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// What it pays for.
    pub description: String,
    /// The gateway session it pays (whose account's webhook secret signs the event).
    pub session_id: String,
    /// Unix seconds.
    pub expires_at: u64,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, Behaviour>,
    challenges: HashMap<String, Challenge>,
    checkouts: HashMap<String, SandboxCheckout>,
    checkout_keys: HashMap<String, Checkout>,
    charges: HashMap<String, ChargeOutcome>,
    tokenized: HashMap<String, TokenizedCard>,
    /// Successful charges made (not idempotent replays).
    charges_made: Vec<(String, i64, String)>,
    /// Webhooks the simulated checkout sent: (account, body, `Stripe-Signature`).
    webhooks_sent: Vec<(String, String, String)>,
    /// Currency of each successful charge, by payment id.
    charge_currency: HashMap<String, String>,
    fail_next: Vec<InjectedFailure>,
}

/// The sandbox PSP. See the module documentation.
#[derive(Default)]
pub struct SandboxPsp {
    state: Mutex<State>,
}

/// Stripe's `event` for a paid `checkout.session` (fields as in Stripe's OpenAPI document).
fn checkout_completed_event(id: &str, c: &SandboxCheckout, now: u64) -> serde_json::Value {
    let amount = stripe_amount::to_stripe(c.amount_minor, &c.currency).unwrap_or(0);
    let mut metadata = serde_json::json!({ "sessionId": c.session_id });
    if let Some(r) = &c.merchant_txn_ref {
        metadata["merchantTxnRef"] = r.as_str().into();
    }
    serde_json::json!({
        "id": self::id("evt"),
        "object": "event",
        "api_version": "2024-06-20",
        "created": now,
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": "checkout.session.completed",
        "data": { "object": {
            "id": id,
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "cancel_url": c.cancel_url,
            "client_reference_id": c.session_id,
            "created": c.created,
            "currency": c.currency.to_ascii_lowercase(),
            "expires_at": c.expires_at,
            "livemode": false,
            "metadata": metadata,
            "mode": "payment",
            "payment_intent": c.payment_intent,
            "payment_method_types": ["card"],
            "payment_status": "paid",
            "status": "complete",
            "success_url": c.success_url,
            "url": null,
            "wallet_options": {},
            "customer_details": { "email": null, "name": null, "phone": null, "tax_exempt": "none", "tax_ids": [] },
            "custom_fields": [],
            "payment_method_options": { "card": { "request_three_d_secure": "automatic" } },
            "ui_mode": "hosted",
        }}
    })
}

fn id(prefix: &str) -> String {
    let t = crate::auth::random_token();
    let alnum: String = t
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(14)
        .collect();
    format!("{prefix}_{alnum}")
}

impl SandboxPsp {
    /// An empty sandbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `n` calls (any kind) fail with `failure`.
    pub fn fail_next(&self, n: usize, failure: InjectedFailure) {
        let mut s = self.state.lock().expect("sandbox lock");
        for _ in 0..n {
            s.fail_next.push(failure.clone());
        }
    }

    /// Records a payment made outside the gateway (a wallet paying the PSP directly).
    pub fn record_external_payment(&self, session_id: &str, amount_minor: i64) -> String {
        let pi = id("pi");
        self.state.lock().expect("sandbox lock").charges_made.push((
            pi.clone(),
            amount_minor,
            session_id.to_string(),
        ));
        pi
    }

    /// Charges made: (payment id, amount in minor units, session id).
    pub fn charges_made(&self) -> Vec<(String, i64, String)> {
        self.state
            .lock()
            .expect("sandbox lock")
            .charges_made
            .clone()
    }

    /// The challenge `id` while it waits for the customer.
    pub fn challenge(&self, id: &str) -> Option<ChallengeView> {
        let s = self.state.lock().expect("sandbox lock");
        s.challenges
            .get(id)
            .filter(|c| c.stage == Stage::Open)
            .map(|c| ChallengeView {
                amount_minor: c.amount_minor,
                currency: c.currency.clone(),
            })
    }

    /// The customer passes (`approve`) or fails the challenge `id`: where the browser goes
    /// next (the return URL with Stripe's query parameters), or `None` if it is not waiting.
    pub fn answer_challenge(&self, id: &str, approve: bool) -> Option<String> {
        let mut s = self.state.lock().expect("sandbox lock");
        let c = s
            .challenges
            .get_mut(id)
            .filter(|c| c.stage == Stage::Open)?;
        c.stage = if approve { Stage::Paid } else { Stage::Closed };
        let (session, amount) = (c.session_id.clone(), c.amount_minor);
        let sep = if c.return_url.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{sep}payment_intent={id}&redirect_status={}",
            c.return_url,
            if approve { "succeeded" } else { "failed" }
        );
        if approve {
            let currency = c.currency.clone();
            s.charge_currency.insert(id.to_string(), currency);
            s.charges_made.push((id.to_string(), amount, session));
        }
        Some(url)
    }

    /// The checkout `id` while it can be paid at `now`.
    pub fn checkout(&self, id: &str, now: u64) -> Option<CheckoutView> {
        let s = self.state.lock().expect("sandbox lock");
        s.checkouts
            .get(id)
            .filter(|c| c.stage == Stage::Open && now < c.expires_at)
            .map(|c| CheckoutView {
                amount_minor: c.amount_minor,
                currency: c.currency.clone(),
                description: c.description.clone(),
                session_id: c.session_id.clone(),
                expires_at: c.expires_at,
            })
    }

    /// The customer pays the checkout `id` (with a wallet) at `now`: the success URL and the
    /// `checkout.session.completed` event (JSON) to post to the gateway, or `None` if it
    /// cannot be paid (closed, expired, unknown).
    pub fn pay_checkout(&self, id: &str, now: u64) -> Option<(String, String)> {
        let mut s = self.state.lock().expect("sandbox lock");
        let pi = self::id("pi");
        let c = s
            .checkouts
            .get_mut(id)
            .filter(|c| c.stage == Stage::Open && now < c.expires_at)?;
        c.stage = Stage::Paid;
        c.payment_intent = Some(pi.clone());
        let event = checkout_completed_event(id, c, now);
        let (session, amount, currency) =
            (c.session_id.clone(), c.amount_minor, c.currency.clone());
        let success = c.success_url.clone();
        s.charge_currency.insert(pi.clone(), currency);
        s.charges_made.push((pi, amount, session));
        Some((success, event.to_string()))
    }

    /// Keeps a webhook the simulated checkout sent (tests replay it).
    pub fn record_webhook(&self, account: &str, body: &str, signature: &str) {
        self.state
            .lock()
            .expect("sandbox lock")
            .webhooks_sent
            .push((account.to_string(), body.to_string(), signature.to_string()));
    }

    /// Webhooks the simulated checkout sent: (account, body, `Stripe-Signature`).
    pub fn webhooks_sent(&self) -> Vec<(String, String, String)> {
        self.state
            .lock()
            .expect("sandbox lock")
            .webhooks_sent
            .clone()
    }

    /// The customer backs out of the checkout `id`: the cancel URL (the checkout stays
    /// payable until the gateway expires it, as at Stripe).
    pub fn cancel_url(&self, id: &str) -> Option<String> {
        let s = self.state.lock().expect("sandbox lock");
        s.checkouts.get(id).map(|c| c.cancel_url.clone())
    }

    fn status_of(s: &State, id: &str) -> Option<PaymentStatus> {
        if let Some(c) = s.checkouts.get(id) {
            return Some(match (c.stage, &c.payment_intent) {
                (Stage::Paid, Some(pi)) => PaymentStatus::Succeeded {
                    transaction_id: pi.clone(),
                    amount_minor: c.amount_minor,
                    currency: c.currency.clone(),
                },
                (Stage::Closed, _) => PaymentStatus::Failed {
                    code: "expired".into(),
                },
                _ => PaymentStatus::Pending,
            });
        }
        if let Some(c) = s.challenges.get(id) {
            return Some(match c.stage {
                Stage::Paid => PaymentStatus::Succeeded {
                    transaction_id: id.to_string(),
                    amount_minor: c.amount_minor,
                    currency: c.currency.clone(),
                },
                Stage::Closed => PaymentStatus::Failed {
                    code: "payment_intent_authentication_failure".into(),
                },
                Stage::Open => PaymentStatus::Pending,
            });
        }
        None
    }

    fn injected(&self) -> Result<(), PspError> {
        let mut s = self.state.lock().expect("sandbox lock");
        if s.fail_next.is_empty() {
            return Ok(());
        }
        Err(match s.fail_next.remove(0) {
            InjectedFailure::Unreachable => {
                PspError::Unreachable("sandbox: injected connection failure".into())
            }
            InjectedFailure::Server(code) => PspError::Server(code),
        })
    }
}

impl Psp for SandboxPsp {
    fn tokenize<'a>(
        &'a self,
        card: &'a Card,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<TokenizedCard, PspError>> {
        Box::pin(async move {
            self.injected()?;
            let mut s = self.state.lock().expect("sandbox lock");
            if let Some(t) = s.tokenized.get(idempotency_key) {
                return Ok(t.clone());
            }
            let is = |number| crate::card::egress::pan_is(&card.pan, number);
            let behaviour = if is("4000000000000002") {
                return Err(PspError::Declined {
                    code: "card_declined".into(),
                });
            } else if is("4000000000000341") {
                Behaviour::DeclineAtCharge
            } else if is("4000002500003155") {
                Behaviour::RequireAction
            } else {
                Behaviour::Approve
            };
            let t = TokenizedCard {
                token_ref: id("pm"),
                customer_ref: None,
                brand: card.pan.brand().name().to_lowercase(),
                last4: card.pan.last4(),
                fingerprint: None,
            };
            s.tokens.insert(t.token_ref.clone(), behaviour);
            s.tokenized.insert(idempotency_key.to_string(), t.clone());
            Ok(t)
        })
    }

    fn charge<'a>(
        &'a self,
        req: ChargeRequest<'a>,
    ) -> BoxFuture<'a, Result<ChargeOutcome, PspError>> {
        Box::pin(async move {
            self.injected()?;
            let mut s = self.state.lock().expect("sandbox lock");
            if let Some(o) = s.charges.get(req.idempotency_key) {
                return Ok(o.clone());
            }
            let behaviour = *s
                .tokens
                .get(&req.token.token_ref)
                .ok_or_else(|| PspError::Rejected("no such payment method".into()))?;
            let pi = id("pi");
            let outcome = match behaviour {
                Behaviour::Approve => {
                    s.charges_made
                        .push((pi.clone(), req.amount_minor, req.session_id.to_string()));
                    s.charge_currency
                        .insert(pi.clone(), req.currency.to_ascii_uppercase());
                    ChargeOutcome::Approved { transaction_id: pi }
                }
                Behaviour::DeclineAtCharge => ChargeOutcome::Declined {
                    transaction_id: Some(pi),
                    code: "card_declined".into(),
                },
                Behaviour::RequireAction => {
                    let redirect_url = req.return_url.map(|r| {
                        s.challenges.insert(
                            pi.clone(),
                            Challenge {
                                session_id: req.session_id.to_string(),
                                amount_minor: req.amount_minor,
                                currency: req.currency.to_ascii_uppercase(),
                                return_url: r.to_string(),
                                stage: Stage::Open,
                            },
                        );
                        format!("/sandbox/3ds/{pi}")
                    });
                    ChargeOutcome::RequiresAction {
                        transaction_id: pi,
                        redirect_url,
                    }
                }
            };
            s.charges
                .insert(req.idempotency_key.to_string(), outcome.clone());
            Ok(outcome)
        })
    }

    fn find_payment<'a>(
        &'a self,
        session_id: &'a str,
        _payment_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<(String, i64)>, PspError>> {
        Box::pin(async move {
            self.injected()?;
            let s = self.state.lock().expect("sandbox lock");
            Ok(s.charges_made
                .iter()
                .find(|c| c.2 == session_id)
                .map(|c| (c.0.clone(), c.1)))
        })
    }

    fn payment_status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<PaymentStatus, PspError>> {
        Box::pin(async move {
            self.injected()?;
            let s = self.state.lock().expect("sandbox lock");
            if let Some(st) = Self::status_of(&s, id) {
                return Ok(st);
            }
            if let Some((pi, amount, _)) = s.charges_made.iter().find(|c| c.0 == id) {
                let currency = s.charge_currency.get(pi).cloned().unwrap_or_default();
                return Ok(PaymentStatus::Succeeded {
                    transaction_id: pi.clone(),
                    amount_minor: *amount,
                    currency,
                });
            }
            let declined = s.charges.values().find_map(|o| match o {
                ChargeOutcome::Declined {
                    transaction_id: Some(t),
                    code,
                } if t == id => Some(code.clone()),
                _ => None,
            });
            match declined {
                Some(code) => Ok(PaymentStatus::Failed { code }),
                None => Err(PspError::Rejected("no such payment".into())),
            }
        })
    }

    fn abandon<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<PaymentStatus, PspError>> {
        Box::pin(async move {
            self.injected()?;
            {
                let mut s = self.state.lock().expect("sandbox lock");
                if let Some(c) = s.checkouts.get_mut(id) {
                    if c.stage == Stage::Open {
                        c.stage = Stage::Closed;
                    }
                }
                if let Some(c) = s.challenges.get_mut(id) {
                    if c.stage == Stage::Open {
                        c.stage = Stage::Closed;
                    }
                }
            }
            self.payment_status(id).await
        })
    }

    fn create_checkout<'a>(
        &'a self,
        req: CheckoutRequest<'a>,
    ) -> BoxFuture<'a, Result<Checkout, PspError>> {
        Box::pin(async move {
            self.injected()?;
            stripe_amount::to_stripe(req.amount_minor, req.currency)?;
            let mut s = self.state.lock().expect("sandbox lock");
            if let Some(c) = s.checkout_keys.get(req.idempotency_key) {
                return Ok(c.clone());
            }
            let cs = id("cs_test");
            let checkout = Checkout {
                id: cs.clone(),
                url: format!("/sandbox/checkout/{cs}"),
            };
            s.checkouts.insert(
                cs,
                SandboxCheckout {
                    session_id: req.session_id.to_string(),
                    merchant_txn_ref: req.merchant_txn_ref.map(str::to_string),
                    amount_minor: req.amount_minor,
                    currency: req.currency.to_ascii_uppercase(),
                    description: req.description.to_string(),
                    expires_at: req.expires_at,
                    success_url: req.success_url.to_string(),
                    cancel_url: req.cancel_url.to_string(),
                    created: crate::clock::Clock::system().unix_now(),
                    payment_intent: None,
                    stage: Stage::Open,
                },
            );
            s.checkout_keys
                .insert(req.idempotency_key.to_string(), checkout.clone());
            Ok(checkout)
        })
    }

    fn refund<'a>(
        &'a self,
        transaction_id: &'a str,
        _idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<String, PspError>> {
        Box::pin(async move {
            self.injected()?;
            let s = self.state.lock().expect("sandbox lock");
            if s.charges_made.iter().any(|(pi, _, _)| pi == transaction_id) {
                Ok(id("re"))
            } else {
                Err(PspError::Rejected("no such charge".into()))
            }
        })
    }
}

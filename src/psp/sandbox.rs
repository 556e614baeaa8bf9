//! The built-in sandbox PSP: Stripe's test-card behaviour, in process, no setup.
//!
//! - `4000000000000002`: declined when tokenized (`card_declined`);
//! - `4000000000000341`: tokenizes, declined when charged (`card_declined`);
//! - `4000002500003155`: charge requires authentication (3-D Secure);
//! - any other valid card: approved.
//!
//! It keeps tokens and charges in memory (never a card number: only the behaviour), answers
//! repeated idempotency keys with the first answer, and can be told to fail the next calls for
//! failure tests.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{BoxFuture, ChargeOutcome, ChargeRequest, Psp, PspError, TokenizedCard};
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

#[derive(Default)]
struct State {
    tokens: HashMap<String, Behaviour>,
    charges: HashMap<String, ChargeOutcome>,
    tokenized: HashMap<String, TokenizedCard>,
    /// Successful charges made (not idempotent replays).
    charges_made: Vec<(String, i64, String)>,
    fail_next: Vec<InjectedFailure>,
}

/// The sandbox PSP. See the module documentation.
#[derive(Default)]
pub struct SandboxPsp {
    state: Mutex<State>,
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
                    ChargeOutcome::Approved { transaction_id: pi }
                }
                Behaviour::DeclineAtCharge => ChargeOutcome::Declined {
                    transaction_id: Some(pi),
                    code: "card_declined".into(),
                },
                Behaviour::RequireAction => ChargeOutcome::RequiresAction { transaction_id: pi },
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

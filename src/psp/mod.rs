//! Payment service providers: the card goes to the PSP once, to be tokenized; the charge and
//! everything after it carry only the token.
//!
//! [`Psp`] is the interface; [`sandbox::SandboxPsp`] (in process, Stripe's test-card behaviour)
//! is the embedded default and [`stripe::StripePsp`] talks to a Stripe-compatible API.
//! [`with_retries`] retries network failures and 5xx with backoff (callers reuse one
//! idempotency key across tries); 4xx are final.

pub mod sandbox;
pub mod stripe;
mod stripe_amount;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use thiserror::Error;

use crate::card::Card;

/// A boxed future, for the object-safe [`Psp`] trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A card tokenized at the PSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedCard {
    /// The PSP's reference for the stored card (e.g. `pm_…`).
    pub token_ref: String,
    /// The PSP's customer the card is attached to, if it uses one.
    pub customer_ref: Option<String>,
    /// Brand as the PSP names it.
    pub brand: String,
    /// Last four digits.
    pub last4: String,
    /// The PSP's fingerprint of the card number, if it gives one.
    pub fingerprint: Option<String>,
}

/// A charge against a tokenized card.
#[derive(Debug, Clone)]
pub struct ChargeRequest<'a> {
    /// From [`TokenizedCard`].
    pub token: &'a TokenizedCard,
    /// Amount in the currency's ISO 4217 minor units (each adapter converts to its PSP's unit).
    pub amount_minor: i64,
    /// ISO 4217 currency.
    pub currency: &'a str,
    /// The merchant's reference.
    pub merchant_txn_ref: Option<&'a str>,
    /// Our session id (metadata).
    pub session_id: &'a str,
    /// `voice` or `digital` (metadata).
    pub channel: &'a str,
    /// The same across retries of this charge, so it is never made twice.
    pub idempotency_key: &'a str,
    /// The payment [`Psp::create_payment`] made for this charge, if it made one: the charge
    /// confirms it.
    pub payment_id: Option<&'a str>,
    /// Where the customer's browser comes back after a 3-D Secure challenge (hosted page
    /// only); without one a challenge cannot be run and ends as `authentication_required`.
    pub return_url: Option<&'a str>,
}

/// What a charge came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Paid.
    Approved {
        /// The PSP's payment id (e.g. `pi_…`).
        transaction_id: String,
    },
    /// The issuer or PSP said no.
    Declined {
        /// The payment id, if one was made.
        transaction_id: Option<String>,
        /// Machine-readable reason (`card_declined`, `expired_card`, `incorrect_cvc`, …).
        code: String,
    },
    /// 3-D Secure (or similar) is needed before it can be paid.
    RequiresAction {
        /// The payment id.
        transaction_id: String,
        /// The challenge the customer's browser is sent to (Stripe's `next_action.
        /// redirect_to_url.url`); `None` when the PSP offered no redirect.
        redirect_url: Option<String>,
    },
}

/// Where a payment (a PaymentIntent, or a hosted checkout) stands at the PSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Paid.
    Succeeded {
        /// The payment's id (a checkout's PaymentIntent).
        transaction_id: String,
        /// Amount in ISO 4217 minor units.
        amount_minor: i64,
        /// ISO 4217 currency, upper case.
        currency: String,
    },
    /// Still waiting for the customer (a challenge, an open checkout) or the bank.
    Pending,
    /// It will not be paid (authentication failed, declined, cancelled, expired).
    Failed {
        /// Machine-readable reason.
        code: String,
    },
}

/// A hosted checkout (wallets) to create at the PSP.
#[derive(Debug, Clone)]
pub struct CheckoutRequest<'a> {
    /// Our session id (metadata, and the PaymentIntent's metadata).
    pub session_id: &'a str,
    /// Amount in ISO 4217 minor units.
    pub amount_minor: i64,
    /// ISO 4217 currency.
    pub currency: &'a str,
    /// What the customer sees the payment is for.
    pub description: &'a str,
    /// The merchant's reference (metadata).
    pub merchant_txn_ref: Option<&'a str>,
    /// Unix seconds after which the checkout cannot be paid.
    pub expires_at: u64,
    /// Where the browser goes once paid.
    pub success_url: &'a str,
    /// Where the browser goes if the customer backs out.
    pub cancel_url: &'a str,
    /// The same across retries of this request.
    pub idempotency_key: &'a str,
}

/// A hosted checkout the PSP made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// Its id (Stripe: `cs_…`).
    pub id: String,
    /// The page the customer pays on.
    pub url: String,
}

/// A PSP failure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PspError {
    /// The card was refused (at tokenization: the PSP's zero-amount check).
    #[error("card declined ({code})")]
    Declined {
        /// Machine-readable reason.
        code: String,
    },
    /// Could not reach the PSP (connection refused, timeout, TLS).
    #[error("PSP unreachable: {0}")]
    Unreachable(String),
    /// The PSP failed (5xx).
    #[error("PSP error, HTTP {0}")]
    Server(u16),
    /// The PSP refused the request itself (4xx other than a decline).
    #[error("PSP rejected the request: {0}")]
    Rejected(String),
}

impl PspError {
    /// Worth trying again (with the same idempotency key).
    pub fn retryable(&self) -> bool {
        matches!(self, PspError::Unreachable(_) | PspError::Server(_))
    }
}

/// A payment service provider.
pub trait Psp: Send + Sync {
    /// Sends the card, once, and returns a token for it. `idempotency_key` is stable per
    /// session.
    fn tokenize<'a>(
        &'a self,
        card: &'a Card,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<TokenizedCard, PspError>>;
    /// Creates the payment without charging it, where the PSP can: its id, which the caller
    /// stores before [`charge`](Psp::charge) confirms it, so a charge whose answer is lost is
    /// found again by that id ([`find_payment`](Psp::find_payment)). `None`: the PSP makes
    /// the payment in `charge` alone.
    fn create_payment<'a>(
        &'a self,
        _req: ChargeRequest<'a>,
    ) -> BoxFuture<'a, Result<Option<String>, PspError>> {
        Box::pin(async { Ok(None) })
    }
    /// Charges a tokenized card.
    fn charge<'a>(
        &'a self,
        req: ChargeRequest<'a>,
    ) -> BoxFuture<'a, Result<ChargeOutcome, PspError>>;
    /// Where the payment (or hosted checkout) `id` stands now.
    fn payment_status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<PaymentStatus, PspError>>;
    /// Stops a payment that is not finished (a challenge or checkout the customer walked away
    /// from) so it can never be paid later; answers where it ended (a payment that was paid
    /// meanwhile stays paid: `Succeeded`).
    fn abandon<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<PaymentStatus, PspError>>;
    /// Creates a hosted checkout offering the card and the wallets the browser can use.
    fn create_checkout<'a>(
        &'a self,
        _req: CheckoutRequest<'a>,
    ) -> BoxFuture<'a, Result<Checkout, PspError>> {
        Box::pin(async { Err(PspError::Rejected("this PSP has no hosted checkout".into())) })
    }
    /// Refunds a charge in full; returns the refund's id.
    fn refund<'a>(
        &'a self,
        transaction_id: &'a str,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<String, PspError>>;
    /// A successful payment the PSP holds for `session_id`: its transaction id and amount in
    /// minor units. `payment_id` is the payment stored for the session, if any (then that one
    /// is looked up); without it (a wallet paid the PSP directly) the PSP is asked for the
    /// session's payments by their metadata — never by reading a page of recent payments,
    /// which misses older ones on a busy account.
    fn find_payment<'a>(
        &'a self,
        session_id: &'a str,
        payment_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<(String, i64)>, PspError>>;
}

/// Delays between tries: three retries after the first attempt.
pub const RETRY_BACKOFF: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_millis(800),
    Duration::from_millis(2000),
];

/// Runs `op` until it succeeds, fails for good, or the retries in [`RETRY_BACKOFF`] are spent.
pub async fn with_retries<T, F, Fut>(mut op: F) -> Result<T, PspError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PspError>>,
{
    let mut last = None;
    for delay in std::iter::once(Duration::ZERO).chain(RETRY_BACKOFF) {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.retryable() => {
                tracing::warn!(error = %e, "PSP call failed; retrying");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one try"))
}

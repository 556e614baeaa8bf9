//! Paying on a payment link: attempts, 3-D Secure challenges and wallet checkouts.
//!
//! A link allows `link_attempts` payments (an attempt: each time the session enters
//! Submitting, counted from its audit trail). A decline or a failed challenge with attempts
//! left puts the session back to Capturing, so the customer can try again or use another card
//! on the same link; only success, or running out of attempts or time, closes it.
//!
//! While a challenge or a wallet checkout is open the session waits in Submitting holding the
//! PSP's payment id (a PaymentIntent, or a checkout `cs_…`): no other attempt can start, and
//! an attempt only ends once the PSP says that payment will not be paid (or, for one left
//! pending, after the gateway has closed it with [`Psp::abandon`](crate::psp::Psp::abandon)).
//! So one session never makes two charges, whatever mix of cards, challenges, wallets,
//! expired and re-issued links the customer goes through.

use super::model::{PaymentResult, Session, SessionState};
use super::payment::{pay_to_the_end, psp_call};
use super::store::{self, SessionStore};
use super::{LinkProblem, SessionError, SessionShared, Sessions};
use crate::card::Card;
use crate::psp::webhook::CheckoutPaid;
use crate::psp::{CheckoutRequest, PaymentStatus, PspError};

/// How an attempt on a payment link stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayStep {
    /// The session reached its final state (Completed, Declined or Failed).
    Settled,
    /// The bank asks for a challenge: the customer's browser goes here; the session waits.
    Challenge(String),
    /// The PSP has not answered yet (a wallet payment being confirmed); the session waits.
    Waiting,
    /// It did not go through and attempts remain: the session is back to Capturing.
    TryAgain {
        /// Why (`card_declined`, `payment_intent_authentication_failure`, …).
        reason: String,
        /// Attempts still allowed on the link.
        attempts_left: u32,
    },
}

/// A payment made through a link: where a challenge returns, and the link's attempt limit.
#[derive(Debug, Clone)]
pub(super) struct LinkTry {
    pub(super) return_url: String,
    pub(super) max_attempts: u32,
}

/// Where the hosted page wants the PSP to send the customer back.
#[derive(Debug, Clone)]
pub struct LinkUrls {
    /// After a 3-D Secure challenge.
    pub challenge_return: String,
    /// After a paid wallet checkout.
    pub checkout_success: String,
    /// When the customer backs out of a wallet checkout.
    pub checkout_cancel: String,
}

/// Payments attempted on session `id` so far (entries into Submitting).
pub(super) fn attempts_made(st: &dyn SessionStore, id: &str) -> Result<u32, SessionError> {
    let n = st
        .audit(id)?
        .iter()
        .filter(|e| e.to == SessionState::Submitting.as_str())
        .count();
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Puts a session whose attempt did not go through back to Capturing, keeping why.
/// Ends a payment attempt in `to`: a decline while the link has `attempts_left` goes back to
/// Capturing ([`back_to_capturing`]); anything else settles the session.
pub(super) fn finish_attempt(
    inner: &SessionShared,
    id: &str,
    to: SessionState,
    result: &PaymentResult,
    attempts_left: u32,
) -> Result<PayStep, SessionError> {
    if to == SessionState::Declined && attempts_left > 0 {
        return back_to_capturing(inner, id, result, attempts_left);
    }
    inner.settle(id, SessionState::Submitting.to(to)?, "psp", Some(result))?;
    tracing::info!(session = %id, state = to.as_str(), "payment finished");
    Ok(PayStep::Settled)
}

pub(super) fn back_to_capturing(
    inner: &SessionShared,
    id: &str,
    result: &PaymentResult,
    attempts_left: u32,
) -> Result<PayStep, SessionError> {
    let now = inner.clock.unix_now();
    inner.store.set_result(id, result, now)?;
    if !inner.store.transition(
        id,
        SessionState::Submitting.to(SessionState::Capturing)?,
        "psp",
        now,
    )? {
        return Err(SessionError::WrongState {
            from: "not Submitting",
            action: "try again",
        });
    }
    let reason = result
        .failure_reason
        .clone()
        .unwrap_or_else(|| "declined".into());
    tracing::info!(session = %id, reason = %reason, attempts_left, "payment attempt did not go through; the link stays open");
    Ok(PayStep::TryAgain {
        reason,
        attempts_left,
    })
}

impl Sessions {
    fn link_attempts(&self, s: &Session) -> u32 {
        self.inner
            .config
            .account(&s.account_id)
            .map_or(1, |a| a.link_attempts)
    }

    /// The session behind a link token in any state, for the pages the PSP sends the
    /// customer back to (a challenge finished after the link's time is still honoured).
    pub fn link_session(&self, token: &str) -> Result<Session, LinkProblem> {
        let rec = self
            .inner
            .store
            .link(&super::token_hash(token))
            .map_err(|_| LinkProblem::Unknown)?
            .ok_or(LinkProblem::Unknown)?;
        if rec.revoked {
            return Err(LinkProblem::Replaced);
        }
        self.get_any(&rec.session_id)
            .map_err(|_| LinkProblem::Unknown)
    }

    /// When link `token` stops working (Unix seconds), if it exists.
    pub fn link_expires_at(&self, token: &str) -> Option<u64> {
        let rec = self.inner.store.link(&super::token_hash(token)).ok()??;
        Some(rec.expires_at)
    }

    /// Moves a live link session on to ReadyToSubmit for an attempt.
    fn begin_attempt(&self, s: &Session, actor: &str) -> Result<(), SessionError> {
        let st = &self.inner.store;
        let now = self.inner.clock.unix_now();
        if s.state == SessionState::Created {
            st.transition(
                &s.id,
                SessionState::Created.to(SessionState::Capturing)?,
                actor,
                now,
            )?;
        }
        let moved = st.transition(
            &s.id,
            SessionState::Capturing.to(SessionState::ReadyToSubmit)?,
            actor,
            now,
        )?;
        if !moved {
            let s = store::must_get(&**st, &s.id)?;
            return Err(SessionError::WrongState {
                from: s.state.as_str(),
                action: "take a payment",
            });
        }
        Ok(())
    }

    /// Pays a link's session with a card from the hosted page. A challenge, a decline with
    /// attempts left, or the end: see [`PayStep`].
    pub async fn pay_on_link(
        &self,
        s: &Session,
        card: Card,
        urls: &LinkUrls,
    ) -> Result<PayStep, SessionError> {
        if self.inner.payments.closed() {
            return Err(SessionError::ShuttingDown);
        }
        self.begin_attempt(s, "customer")?;
        let link = LinkTry {
            return_url: urls.challenge_return.clone(),
            max_attempts: self.link_attempts(s),
        };
        pay_to_the_end(&self.inner, s, card, "customer", "digital", Some(link)).await
    }

    /// Settles a waiting link session from where its PSP payment stands.
    async fn resolve(&self, s: &Session, status: PaymentStatus) -> Result<PayStep, SessionError> {
        let inner = &self.inner;
        match status {
            PaymentStatus::Pending => Ok(PayStep::Waiting),
            PaymentStatus::Succeeded {
                transaction_id,
                amount_minor,
                currency,
            } => {
                let matches = Some(amount_minor) == s.amount_minor
                    && currency.eq_ignore_ascii_case(&s.currency);
                let (to, failure_reason) = if matches {
                    (SessionState::Completed, None)
                } else {
                    tracing::error!(session = %s.id, payment = %transaction_id, "the PSP's payment does not match the session's amount");
                    (
                        SessionState::Failed,
                        Some("the PSP's payment amount does not match the session".to_string()),
                    )
                };
                let result = PaymentResult {
                    psp_transaction_id: Some(transaction_id),
                    failure_reason,
                    ..s.result.clone()
                };
                finish_attempt(inner, &s.id, to, &result, 0)
            }
            PaymentStatus::Failed { code } => {
                let result = PaymentResult {
                    failure_reason: Some(crate::card::redact::redact_card_numbers(&code)),
                    ..s.result.clone()
                };
                let left = self
                    .link_attempts(s)
                    .saturating_sub(attempts_made(&*inner.store, &s.id)?);
                finish_attempt(inner, &s.id, SessionState::Declined, &result, left)
            }
        }
    }

    /// The PSP payment a waiting session holds, and its PSP; `None` if it waits for nothing.
    fn waiting_on(
        &self,
        s: &Session,
        id: Option<&str>,
    ) -> Option<(String, std::sync::Arc<dyn crate::psp::Psp>)> {
        let held = s.result.psp_transaction_id.as_deref()?;
        if s.state != SessionState::Submitting || id.is_some_and(|i| i != held) {
            return None;
        }
        let psp = self.inner.psps.get(&s.account_id)?.clone();
        Some((held.to_string(), psp))
    }

    /// The customer's browser is back from a 3-D Secure challenge for payment `payment_id`:
    /// the payment is read at the PSP (a challenge left unfinished is cancelled) and the
    /// session settled or opened for another try.
    pub async fn challenge_returned(
        &self,
        s: &Session,
        payment_id: &str,
    ) -> Result<PayStep, SessionError> {
        let Some((pi, psp)) = self.waiting_on(s, Some(payment_id)) else {
            return Ok(PayStep::Settled);
        };
        let lat = &self.inner.latency;
        let mut status = psp_call(lat, "payment_status", || psp.payment_status(&pi)).await;
        if matches!(status, Ok(PaymentStatus::Pending)) {
            status = psp_call(lat, "abandon", || psp.abandon(&pi)).await;
        }
        self.resolve(s, status.map_err(psp_failed)?).await
    }

    /// Starts a wallet payment: the PSP's hosted checkout for the session, whose URL the
    /// customer's browser goes to. The session waits in Submitting until the PSP's webhook
    /// (or the customer's return) says how it ended.
    pub async fn start_checkout(
        &self,
        s: &Session,
        link_expires_at: u64,
        urls: &LinkUrls,
    ) -> Result<String, SessionError> {
        if self.inner.payments.closed() {
            return Err(SessionError::ShuttingDown);
        }
        let account = self.account(&s.account_id)?.clone();
        let psp = self
            .inner
            .psps
            .get(&s.account_id)
            .cloned()
            .ok_or(SessionError::NotFound)?;
        self.begin_attempt(s, "customer")?;
        let st = &self.inner.store;
        let now = self.inner.clock.unix_now();
        if !st.transition(
            &s.id,
            SessionState::ReadyToSubmit.to(SessionState::Submitting)?,
            "customer",
            now,
        )? {
            return Err(SessionError::WrongState {
                from: "not ReadyToSubmit",
                action: "start a wallet payment",
            });
        }
        let attempt = attempts_made(&**st, &s.id)?;
        let key = format!("checkout-{}-{attempt}", s.id);
        let description = if account.name.is_empty() {
            "Payment".to_string()
        } else {
            crate::card::redact::redact_card_numbers(&account.name)
        };
        let req = CheckoutRequest {
            session_id: &s.id,
            amount_minor: s.amount_minor.unwrap_or(0),
            currency: &s.currency,
            description: &description,
            merchant_txn_ref: s.merchant_txn_ref.as_deref(),
            expires_at: link_expires_at.min(s.expires_at),
            success_url: &urls.checkout_success,
            cancel_url: &urls.checkout_cancel,
            idempotency_key: &key,
        };
        let made = psp_call(&self.inner.latency, "create_checkout", || {
            psp.create_checkout(req.clone())
        })
        .await;
        match made {
            Ok(c) => {
                let result = PaymentResult {
                    psp_transaction_id: Some(c.id),
                    ..Default::default()
                };
                st.set_result(&s.id, &result, self.inner.clock.unix_now())?;
                tracing::info!(session = %s.id, "wallet checkout opened");
                Ok(c.url)
            }
            Err(e) => {
                // Nothing was made at the PSP: the card form is still there.
                let result = PaymentResult {
                    failure_reason: Some("wallets_unavailable".into()),
                    ..Default::default()
                };
                tracing::warn!(session = %s.id, error = %e, "wallet checkout could not be opened");
                let left = self.link_attempts(s).saturating_sub(attempt).max(1);
                back_to_capturing(&self.inner, &s.id, &result, left)?;
                Err(SessionError::Conflict(
                    "wallet payments are not available just now; pay by card".into(),
                ))
            }
        }
    }

    /// The customer's browser is back from the hosted checkout: paid (`cancelled` false) or
    /// backed out. Paid is read at the PSP (the status poll that backs up its webhook); a
    /// checkout backed out of is expired at the PSP before the card form opens again.
    pub async fn checkout_returned(
        &self,
        s: &Session,
        cancelled: bool,
    ) -> Result<PayStep, SessionError> {
        let Some((cs, psp)) = self.waiting_on(s, None) else {
            return Ok(PayStep::Settled);
        };
        if !cs.starts_with("cs_") {
            return Ok(PayStep::Waiting);
        }
        let lat = &self.inner.latency;
        let status = if cancelled {
            psp_call(lat, "abandon", || psp.abandon(&cs)).await
        } else {
            psp_call(lat, "payment_status", || psp.payment_status(&cs)).await
        };
        self.resolve(s, status.map_err(psp_failed)?).await
    }

    /// A verified `checkout.session.completed` webhook for `account`: completes the session
    /// that waits for that checkout. True if it changed the session; a repeated event, or one
    /// for a session that is not waiting for it, changes nothing.
    pub async fn checkout_paid(
        &self,
        account: &str,
        ev: &CheckoutPaid,
    ) -> Result<bool, SessionError> {
        let s = self.get_any(&ev.session_id)?;
        if s.account_id != account {
            return Err(SessionError::NotFound);
        }
        if s.state != SessionState::Submitting
            || s.result.psp_transaction_id.as_deref() != Some(ev.checkout_id.as_str())
        {
            if s.result.psp_transaction_id.as_deref() != Some(ev.payment_intent.as_str()) {
                tracing::error!(session = %s.id, event = %ev.event_id, state = s.state.as_str(), "a paid checkout for a session that was not waiting for it");
            }
            return Ok(false);
        }
        let step = self
            .resolve(
                &s,
                PaymentStatus::Succeeded {
                    transaction_id: ev.payment_intent.clone(),
                    amount_minor: ev.amount_minor,
                    currency: ev.currency.clone(),
                },
            )
            .await?;
        Ok(step == PayStep::Settled)
    }
}

fn psp_failed(e: PspError) -> SessionError {
    SessionError::Conflict(format!(
        "the PSP could not be asked how the payment stands ({e}); try again shortly"
    ))
}

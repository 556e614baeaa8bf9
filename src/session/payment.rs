//! Payment: one PSP attempt at a time (tokenize once, charge, settle), card payments from the link
//! and external confirmations, and reconciling a payment that was cut off.

use super::*;

impl Sessions {
    /// Pays a digital session with a card from the hosted payment page: tokenize, charge,
    /// record. Returns the session afterwards.
    pub async fn pay_with_card(
        &self,
        id: &str,
        card: Card,
        actor: &str,
    ) -> Result<Session, SessionError> {
        if self.inner.payments.closed() {
            return Err(SessionError::ShuttingDown);
        }
        let s = self.get_any(id)?;
        let st = &self.inner.store;
        let now = self.inner.clock.unix_now();
        if s.state == SessionState::Created {
            st.transition(
                id,
                SessionState::Created.to(SessionState::Capturing)?,
                actor,
                now,
            )?;
        }
        let s = store::must_get(&**st, id)?;
        if s.state != SessionState::Capturing {
            return Err(SessionError::WrongState {
                from: s.state.as_str(),
                action: "take a card",
            });
        }
        st.transition(
            id,
            SessionState::Capturing.to(SessionState::ReadyToSubmit)?,
            actor,
            now,
        )?;
        pay_to_the_end(&self.inner, &s, card, actor, "digital", None).await?;
        store::must_get(&**st, id).map_err(Into::into)
    }

    /// A wallet paid the PSP directly (Apple Pay in Messages): completes the session if, and
    /// only if, the PSP confirms a successful payment for it of the right amount.
    pub async fn confirm_external_payment(
        &self,
        id: &str,
        actor: &str,
    ) -> Result<Session, SessionError> {
        let s = self.get_any(id)?;
        if !matches!(s.state, SessionState::Created | SessionState::Capturing) {
            return Err(SessionError::WrongState {
                from: s.state.as_str(),
                action: "take a wallet payment",
            });
        }
        let psp = self
            .inner
            .psps
            .get(&s.account_id)
            .cloned()
            .ok_or(SessionError::NotFound)?;
        let found = psp_call(&self.inner.latency, "find_payment", || {
            psp.find_payment(&s.id, None)
        })
        .await
        .map_err(|e| {
            SessionError::InvalidField("requestIdentifier".into(), format!("PSP check failed: {e}"))
        })?;
        let Some((txn, amount)) = found else {
            return Err(SessionError::InvalidField(
                "requestIdentifier".into(),
                "the PSP holds no successful payment for this session".into(),
            ));
        };
        if Some(amount) != s.amount_minor {
            return Err(SessionError::InvalidField(
                "requestIdentifier".into(),
                "the PSP's payment amount does not match the session".into(),
            ));
        }
        let st = &self.inner.store;
        let now = self.inner.clock.unix_now();
        let mut state = s.state;
        for to in [
            SessionState::Capturing,
            SessionState::ReadyToSubmit,
            SessionState::Submitting,
        ] {
            if let Ok(t) = state.to(to) {
                if st.transition(id, t, actor, now)? {
                    state = to;
                }
            }
        }
        let result = PaymentResult {
            psp_transaction_id: Some(txn),
            ..Default::default()
        };
        self.inner.settle(
            id,
            SessionState::Submitting.to(SessionState::Completed)?,
            "psp",
            Some(&result),
        )?;
        store::must_get(&**st, id).map_err(Into::into)
    }

    /// Settles a session whose payment's outcome was lost (a restart or a failed write
    /// mid-payment) from what the PSP holds for it: `Completed` with its transaction if the PSP
    /// has a successful payment for the session, else `Failed`; the result webhook follows.
    /// Left in `Submitting`, to be tried again by the sweep, when the PSP cannot be asked.
    pub(super) async fn reconcile(&self, s: &Session, actor: &str) {
        let found = match self.inner.psps.get(&s.account_id) {
            Some(psp) => {
                // A challenge or hosted checkout still open is closed first, so that nothing
                // can be paid once the session has ended; one paid meanwhile is the answer.
                let mut settled = None;
                if let Some(id) = s.result.psp_transaction_id.as_deref() {
                    match psp_call(&self.inner.latency, "abandon", || psp.abandon(id)).await {
                        Ok(crate::psp::PaymentStatus::Succeeded {
                            transaction_id,
                            amount_minor,
                            ..
                        }) => settled = Some(Ok(Some((transaction_id, amount_minor)))),
                        Ok(_) => {}
                        // A checkout that cannot be closed might still be paid: wait.
                        Err(e) if id.starts_with("cs_") => settled = Some(Err(e)),
                        Err(_) => {}
                    }
                }
                match settled {
                    Some(r) => r,
                    None => {
                        psp_call(&self.inner.latency, "find_payment", || {
                            psp.find_payment(&s.id, s.result.psp_transaction_id.as_deref())
                        })
                        .await
                    }
                }
            }
            None => Ok(None),
        };
        let (to, result) = match found {
            Ok(Some((txn, amount))) if Some(amount) == s.amount_minor => (
                SessionState::Completed,
                PaymentResult {
                    psp_transaction_id: Some(txn),
                    failure_reason: None,
                    ..s.result.clone()
                },
            ),
            Ok(Some((txn, _))) => (
                SessionState::Failed,
                PaymentResult {
                    psp_transaction_id: Some(txn),
                    failure_reason: Some(
                        "interrupted while submitting; the PSP's payment amount does not match the session"
                            .into(),
                    ),
                    ..s.result.clone()
                },
            ),
            Ok(None) => (
                SessionState::Failed,
                PaymentResult {
                    failure_reason: Some(
                        "interrupted while submitting; the PSP holds no payment for this session"
                            .into(),
                    ),
                    ..s.result.clone()
                },
            ),
            Err(e) => {
                tracing::warn!(session = %s.id, error = %e, "cannot reconcile an interrupted payment yet; the sweep tries again");
                return;
            }
        };
        let settled = match SessionState::Submitting.to(to) {
            Ok(t) => self
                .inner
                .settle(&s.id, t, actor, Some(&result))
                .map_err(SessionError::from),
            Err(e) => Err(e.into()),
        };
        match settled {
            Ok(true) => {
                tracing::info!(session = %s.id, state = to.as_str(), "interrupted payment reconciled with the PSP");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(session = %s.id, error = %e, "reconciling an interrupted payment failed")
            }
        }
    }
}

impl SessionShared {
    /// Ends a session and queues its result webhook in the same transaction (see
    /// [`SessionStore::settle`]), then wakes the webhook worker.
    pub(super) fn settle(
        &self,
        id: &str,
        t: Transition,
        actor: &str,
        result: Option<&PaymentResult>,
    ) -> Result<bool, StoreError> {
        let ended = self
            .store
            .settle(id, t, actor, self.clock.unix_now(), result, &|s| {
                self.webhook_for(s)
            })?;
        if ended {
            self.webhook_due.notify_one();
            self.outcomes.ended(t);
        }
        Ok(ended)
    }
}

/// Holds a place among the running payments until dropped (a panic included).
pub(super) struct PaymentTicket(Arc<SessionShared>);

impl PaymentTicket {
    /// A place, unless shutdown has begun. Counted first and checked second, so shutdown,
    /// which closes first and counts second, never misses a payment that got in.
    fn take(inner: &Arc<SessionShared>) -> Option<PaymentTicket> {
        use std::sync::atomic::Ordering::SeqCst;
        inner.payments.running.fetch_add(1, SeqCst);
        let ticket = PaymentTicket(inner.clone());
        (!inner.payments.closed()).then_some(ticket)
    }
}

impl Drop for PaymentTicket {
    fn drop(&mut self) {
        self.0
            .payments
            .running
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A PSP call with its retries, timed into the `psp_call_duration_seconds` histogram.
pub(super) async fn psp_call<T, F, Fut>(
    latency: &crate::latency::Latency,
    operation: &'static str,
    op: F,
) -> Result<T, PspError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PspError>>,
{
    let started = std::time::Instant::now();
    let r = with_retries(op).await;
    latency.observe_psp(
        operation,
        crate::latency::psp_outcome(&r),
        started.elapsed(),
    );
    r
}

/// [`pay`] on a task of its own, counted among the running payments: a caller that goes away
/// (a closed browser tab, a cut connection) cannot stop a payment half-way, and shutdown waits
/// for it. Refused once shutdown has begun.
pub(super) async fn pay_to_the_end(
    inner: &Arc<SessionShared>,
    s: &Session,
    card: Card,
    actor: &str,
    channel: &'static str,
    link: Option<link_pay::LinkTry>,
) -> Result<PayStep, SessionError> {
    let Some(ticket) = PaymentTicket::take(inner) else {
        return Err(SessionError::ShuttingDown);
    };
    let (s, actor) = (s.clone(), actor.to_string());
    tokio::spawn(async move {
        let r = pay(&ticket.0, &s, card, &actor, channel, link.as_ref()).await;
        drop(ticket);
        r
    })
    .await
    .unwrap_or_else(|e| {
        tracing::error!(error = %e, "payment task failed");
        Err(SessionError::Conflict(
            "the payment failed unexpectedly; check the session".into(),
        ))
    })
}

/// Tokenize (once), wipe the card, charge with the token (retried under one idempotency key),
/// store the result and the final state. The session must be ReadyToSubmit.
///
/// On a payment link (`link`), a challenge the bank asks for leaves the session in
/// Submitting for the customer's browser to complete ([`PayStep::Challenge`]), and a decline
/// that leaves attempts puts it back to Capturing ([`PayStep::TryAgain`]). Each attempt has its
/// own idempotency keys, so a new card is a new request; only one is ever in flight, as only
/// one can hold Submitting.
pub(super) async fn pay(
    inner: &SessionShared,
    s: &Session,
    card: Card,
    actor: &str,
    channel: &str,
    link: Option<&link_pay::LinkTry>,
) -> Result<PayStep, SessionError> {
    let st = &inner.store;
    if !st.transition(
        &s.id,
        SessionState::ReadyToSubmit.to(SessionState::Submitting)?,
        actor,
        inner.clock.unix_now(),
    )? {
        return Err(SessionError::WrongState {
            from: "not ReadyToSubmit",
            action: "submit",
        });
    }
    let attempt = link_pay::attempts_made(&**st, &s.id)?;
    // The first attempt keeps the keys it always had (payments in flight across an upgrade).
    let suffix = if attempt <= 1 {
        String::new()
    } else {
        format!("-{attempt}")
    };
    let psp = inner.psps.get(&s.account_id).cloned();
    let mut result = PaymentResult {
        masked_pan: Some(card.pan.masked()),
        card_brand: Some(card.pan.brand().name().to_string()),
        ..Default::default()
    };
    let outcome: Result<ChargeOutcome, PspError> = match &psp {
        None => Err(PspError::Rejected(
            "no PSP configured for this account".into(),
        )),
        Some(psp) => {
            let tok_key = format!("tok-{}{suffix}", s.id);
            let token =
                psp_call(&inner.latency, "tokenize", || psp.tokenize(&card, &tok_key)).await;
            // The token exists (or never will): the card goes now.
            drop(card);
            match token {
                Err(e) => Err(e),
                Ok(token) => {
                    result.psp_token_reference = Some(token.token_ref.clone());
                    let pay_key = format!("pay-{}{suffix}", s.id);
                    let req = ChargeRequest {
                        token: &token,
                        amount_minor: s.amount_minor.unwrap_or(0),
                        currency: &s.currency,
                        merchant_txn_ref: s.merchant_txn_ref.as_deref(),
                        session_id: &s.id,
                        channel,
                        idempotency_key: &pay_key,
                        payment_id: None,
                        return_url: link.map(|l| l.return_url.as_str()),
                    };
                    // The payment's id is stored before it is charged: if the charge's answer
                    // is lost, reconciliation reads that payment, not a list of recent ones.
                    let created = psp_call(&inner.latency, "create_payment", || {
                        psp.create_payment(req.clone())
                    })
                    .await;
                    match created {
                        Err(e) => Err(e),
                        Ok(payment_id) => {
                            if let Some(id) = &payment_id {
                                result.psp_transaction_id = Some(id.clone());
                                st.set_result(&s.id, &result, inner.clock.unix_now())?;
                            }
                            let req = ChargeRequest {
                                payment_id: payment_id.as_deref(),
                                ..req
                            };
                            psp_call(&inner.latency, "charge", || psp.charge(req.clone())).await
                        }
                    }
                }
            }
        }
    };
    let to = match outcome {
        Ok(ChargeOutcome::Approved { transaction_id }) => {
            result.psp_transaction_id = Some(transaction_id);
            SessionState::Completed
        }
        Ok(ChargeOutcome::Declined {
            transaction_id,
            code,
        }) => {
            result.psp_transaction_id = transaction_id;
            result.failure_reason = Some(crate::card::redact::redact_card_numbers(&code));
            SessionState::Declined
        }
        Ok(ChargeOutcome::RequiresAction {
            transaction_id,
            redirect_url,
        }) => {
            result.psp_transaction_id = Some(transaction_id);
            if let (Some(url), Some(_)) = (redirect_url, link) {
                // The session waits in Submitting, holding the payment's id, for the browser
                // to come back from the challenge.
                st.set_result(&s.id, &result, inner.clock.unix_now())?;
                tracing::info!(session = %s.id, "payment waits for 3-D Secure");
                return Ok(PayStep::Challenge(url));
            }
            // No challenge can run: the payment is cancelled at the PSP (best effort; it can
            // only be paid through a challenge nobody has) before the session moves on.
            if let (Some(psp), Some(pi)) = (&psp, &result.psp_transaction_id) {
                if let Err(e) = psp.abandon(pi).await {
                    tracing::info!(session = %s.id, error = %e, "an unauthenticated payment could not be cancelled");
                }
            }
            result.failure_reason = Some("authentication_required".into());
            SessionState::Declined
        }
        Err(PspError::Declined { code }) => {
            result.failure_reason = Some(crate::card::redact::redact_card_numbers(&code));
            SessionState::Declined
        }
        Err(e) => {
            // A PSP's message may echo what it was sent: stored and forwarded masked.
            result.failure_reason = Some(crate::card::redact::redact_card_numbers(&e.to_string()));
            SessionState::Failed
        }
    };
    let left = link.map_or(0, |l| l.max_attempts.saturating_sub(attempt));
    link_pay::finish_attempt(inner, &s.id, to, &result, left)
}

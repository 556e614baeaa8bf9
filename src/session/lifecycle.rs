//! Lifecycle: expiry sweeps, personal-data retention, ending sessions, and shutdown.

use super::*;

impl Sessions {
    /// Shutdown: refuses new payments, ends every capture (what was keyed is wiped and the
    /// session goes back to Created, as a restart would leave it) and waits up to `wait` for
    /// payments already at the PSP to finish, so none is cut in half while there is time.
    pub async fn shut_down(&self, wait: Duration) -> ShutdownReport {
        use std::sync::atomic::Ordering::SeqCst;
        let payments = &self.inner.payments;
        payments.closed.store(true, SeqCst);
        let mut report = ShutdownReport {
            payments_running: payments.running.load(SeqCst),
            ..Default::default()
        };
        let captures: Vec<mpsc::Sender<CaptureCommand>> = self
            .inner
            .live
            .lock()
            .expect("live lock")
            .values()
            .map(|l| l.commands.clone())
            .collect();
        for c in &captures {
            // A full queue means a capture busy paying: it ends when the payment does.
            let _ = c.try_send(CaptureCommand::Shutdown);
        }
        report.captures_stopped = captures.len();
        let deadline = tokio::time::Instant::now() + wait;
        // Polled, not notified: this runs once, at exit.
        while tokio::time::Instant::now() < deadline
            && (payments.running.load(SeqCst) > 0
                || !self.inner.live.lock().expect("live lock").is_empty())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        report.payments_unfinished = payments.running.load(SeqCst);
        // The captures' last updates reach the store before the process goes.
        let _ = tokio::time::timeout_at(deadline, self.inner.events.flush()).await;
        payments.stopped.store(true, SeqCst);
        report
    }

    pub(super) async fn sweep(&self, now: u64) -> Result<(), SessionError> {
        use std::sync::atomic::Ordering;
        let ran = self.inner.retention_ran_at.load(Ordering::Relaxed);
        if now >= ran + RETENTION_EVERY_S {
            self.inner.retention_ran_at.store(now, Ordering::Relaxed);
            if let Err(e) = self.forget_personal_data(now) {
                tracing::error!(error = %e, "deleting personal data past its retention failed; the next hour tries again");
            }
        }
        for s in self.inner.store.expired(now)? {
            if self.inner.payments.stopped() {
                return Ok(());
            }
            self.end(&s, SessionState::Expired, "gateway:expiry", None)
                .await?;
            tracing::info!(session = %s.id, "session expired");
        }
        // A payment is never in Submitting this long (PSP calls time out and retry within a
        // minute or two): one that is, lost its outcome (a database error after the charge).
        for s in self.inner.store.in_states(&[SessionState::Submitting])? {
            if self.inner.payments.stopped() {
                return Ok(());
            }
            if s.updated_at + STUCK_SUBMITTING_S <= now {
                self.reconcile(&s, "gateway:reconcile").await;
            }
        }
        Ok(())
    }

    /// Deletes the personal data of sessions closed `store.personal_data_days` before `now`
    /// (the sweep runs this hourly).
    pub fn forget_personal_data(&self, now: u64) -> Result<store::Forgotten, SessionError> {
        let days = self.inner.config.store.personal_data_days;
        let before = now.saturating_sub(days.saturating_mul(86_400));
        let gone = self.inner.store.forget_personal_data(before)?;
        if gone != store::Forgotten::default() {
            tracing::info!(
                sessions = gone.sessions,
                messages = gone.messages,
                links = gone.links,
                webhooks = gone.webhooks,
                events = gone.events,
                days,
                "personal data past its retention deleted"
            );
        }
        Ok(gone)
    }

    /// Moves a live session to a terminal state and stops its capture.
    pub(super) async fn end(
        &self,
        s: &Session,
        to: SessionState,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<(), SessionError> {
        let t = s.state.to(to).map_err(|_| SessionError::WrongState {
            from: s.state.as_str(),
            action: if to == SessionState::Cancelled {
                "cancel"
            } else {
                "end"
            },
        })?;
        let result = reason.map(|r| PaymentResult {
            failure_reason: Some(r.to_string()),
            ..s.result.clone()
        });
        if !self.inner.settle(&s.id, t, actor, result.as_ref())? {
            return Err(SessionError::WrongState {
                from: s.state.as_str(),
                action: "change state (it changed meanwhile)",
            });
        }
        let live = self.inner.live.lock().expect("live lock").remove(&s.id);
        if let Some(l) = live {
            let (ack, stopped) = oneshot::channel();
            if l.commands.send(CaptureCommand::Stop(ack)).await.is_ok() {
                // Bounded: a capture task stuck elsewhere must not hold the cancel up.
                let _ = tokio::time::timeout(CAPTURE_STOP_WAIT, stopped).await;
            }
        }
        Ok(())
    }
}

/// How long ending a session waits for its capture task to stop and park its lease.
pub(super) const CAPTURE_STOP_WAIT: Duration = Duration::from_secs(5);

/// How often the sweep deletes personal data past its retention, seconds.
pub(super) const RETENTION_EVERY_S: u64 = 3600;

/// Seconds in `Submitting` after which the sweep asks the PSP how the payment ended.
pub(super) const STUCK_SUBMITTING_S: u64 = 600;

//! Result webhooks: which events go out, queueing them with the state change, and the worker that
//! delivers them.

use super::*;

impl SessionShared {
    /// The result webhook for an ended session, if its account has one.
    pub(super) fn webhook_for(&self, s: &Session) -> Option<store::WebhookDelivery> {
        let account = self.config.account(&s.account_id)?;
        let (Some(url), Some(_)) = (&account.webhook_url, &account.webhook_secret) else {
            return None;
        };
        let now = self.clock.unix_now();
        let event_id = crate::notify::new_event_id();
        Some(store::WebhookDelivery {
            body: s.webhook_event(&event_id, now).to_string(),
            event_id,
            session_id: s.id.clone(),
            account_id: s.account_id.clone(),
            url: url.clone(),
            created_at: now,
            attempts: 0,
            next_at: now,
            state: store::WebhookState::Pending,
            last_error: None,
        })
    }

    /// Queues the webhook of a session that ended without one (a crash before this change
    /// made the two one transaction).
    pub(super) fn queue_webhook(&self, s: &Session) {
        let Some(w) = self.webhook_for(s) else {
            return;
        };
        match self.store.webhook_add(&w) {
            Ok(()) => self.webhook_due.notify_one(),
            Err(e) => {
                tracing::error!(session = %s.id, error = %e, "could not queue the result webhook")
            }
        }
    }

    /// Delivers the webhooks that are due, a batch at a time; reschedules or gives up on
    /// those that fail.
    pub(super) async fn deliver_webhooks(self: &Arc<Self>) {
        let retry_for = self.config.store.webhook_retry_s;
        loop {
            let now = self.clock.unix_now();
            // Claimed, not just read: another worker (another node on a shared store) does not
            // try the same ones while these are under way.
            let due = match self
                .store
                .webhooks_claim(now, now + WEBHOOK_HOLD_S, WEBHOOK_BATCH)
            {
                Ok(d) if !d.is_empty() => d,
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(error = %e, "reading the webhook queue failed");
                    return;
                }
            };
            let batch = due.len();
            let mut tries = tokio::task::JoinSet::new();
            for w in due {
                let me = self.clone();
                tries.spawn(async move {
                    let secret = me
                        .config
                        .account(&w.account_id)
                        .and_then(|a| a.webhook_secret.clone());
                    let r = match secret {
                        Some(secret) => {
                            me.webhooks
                                .deliver(&w.url, &secret, &w.event_id, &w.body, me.clock.unix_now())
                                .await
                        }
                        None => Err("the account has no webhook secret now".into()),
                    };
                    let now = me.clock.unix_now();
                    let (state, next_at, err) = match r {
                        Ok(()) => {
                            me.outcomes.webhooks_delivered.fetch_add(1, Relaxed);
                            tracing::info!(session = %w.session_id, event = %w.event_id, attempt = w.attempts + 1, "webhook delivered");
                            (store::WebhookState::Delivered, now, None)
                        }
                        Err(e) if now.saturating_sub(w.created_at) >= retry_for => {
                            me.outcomes.webhooks_given_up.fetch_add(1, Relaxed);
                            tracing::error!(session = %w.session_id, event = %w.event_id, error = %e, "webhook given up after the retry period");
                            (store::WebhookState::Failed, now, Some(e))
                        }
                        Err(e) => {
                            let next = now + crate::notify::retry_delay(w.attempts).as_secs();
                            tracing::warn!(session = %w.session_id, event = %w.event_id, error = %e, attempt = w.attempts + 1, "webhook not delivered; will retry");
                            (store::WebhookState::Pending, next, Some(e))
                        }
                    };
                    if let Err(e) = me.store.webhook_tried(&w.event_id, state, next_at, err.as_deref()) {
                        tracing::error!(event = %w.event_id, error = %e, "recording a webhook try failed");
                    }
                });
            }
            while tries.join_next().await.is_some() {}
            // A short batch was all that was due: the next wake-up takes what comes after
            // (and a try whose outcome could not be recorded is not retried in a tight loop).
            if batch < WEBHOOK_BATCH {
                return;
            }
        }
    }
}

/// Webhooks tried at once.
pub(super) const WEBHOOK_BATCH: usize = 32;

/// How long a claimed webhook is held by its worker: well over one try (10 s timeout), after
/// which a worker that died mid-try leaves it to another.
const WEBHOOK_HOLD_S: u64 = 120;

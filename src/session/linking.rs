//! Linking: a call and its voice session, by CallGuid or by the link id the caller keys.

use super::*;

impl Sessions {
    pub(super) fn new_link_id(&self, client_id: &str) -> Result<String, SessionError> {
        let digits = self.inner.config.link.digits;
        for _ in 0..100 {
            let id = link_id::generate(digits, &mut rand::thread_rng());
            if self.inner.store.live_by_link_id(client_id, &id)?.is_none() {
                return Ok(id);
            }
        }
        Err(SessionError::InvalidField(
            "dtmfLinkId".into(),
            "no free link id".into(),
        ))
    }

    /// Notices of calls whose self-service part is over, from now on (none is dropped while
    /// the receiver lives).
    pub fn watch_flows(&self) -> mpsc::UnboundedReceiver<CallFlowOver> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner
            .flow_watchers
            .lock()
            .expect("watchers lock")
            .push(tx);
        rx
    }

    /// The call `owner` is about to create with `call_guid` carries a session's `dtmfLinkId`
    /// (the SIP INVITE named it): it links by that id, within the same limits as a keyed one,
    /// instead of listening for keys. [`Sessions::forget_link_id`] undoes it if the call is
    /// never created.
    pub fn expect_link_id(&self, owner: &str, call_guid: &str, link_id: &str) {
        self.inner
            .expected_links
            .lock()
            .expect("links lock")
            .insert((owner.into(), call_guid.into()), link_id.into());
    }

    /// Forgets a link id expected for a call that was not created.
    pub fn forget_link_id(&self, owner: &str, call_guid: &str) {
        self.inner
            .expected_links
            .lock()
            .expect("links lock")
            .remove(&(owner.into(), call_guid.into()));
    }

    /// Tells the watchers that call `call_id`'s self-service part is over.
    pub(super) fn flow_over(&self, call_id: &str) {
        let n = CallFlowOver {
            call_id: call_id.to_string(),
        };
        self.inner
            .flow_watchers
            .lock()
            .expect("watchers lock")
            .retain(|tx| tx.send(n.clone()).is_ok());
    }

    /// `owner` created relay call `call_id` with `call_guid`: start capture for `owner`'s live
    /// voice session on it, if there is one (another client's sessions never link to it).
    pub async fn link_call(&self, owner: &str, call_guid: &str, call_id: &str) {
        let expected = self
            .inner
            .expected_links
            .lock()
            .expect("links lock")
            .remove(&(owner.to_string(), call_guid.to_string()));
        if let Some(s) = expected.and_then(|id| self.try_link_id(owner, &id)) {
            tracing::info!(session = %s.id, call = %call_id, "call linked by the dtmfLinkId it was set up with");
            if let Err(e) = self.start_capture(&s, call_id).await {
                tracing::warn!(session = %s.id, error = %e, "could not start capture");
                self.flow_over(call_id);
            }
            return;
        }
        let Ok(Some(s)) = self.inner.store.live_by_call_guid(owner, call_guid) else {
            // No session names this call: listen for a session's dtmfLinkId keyed on it.
            self.listen_for_link_id(owner, call_id).await;
            return;
        };
        if let Err(e) = self.start_capture(&s, call_id).await {
            tracing::warn!(session = %s.id, error = %e, "could not start capture");
        }
    }

    /// Collects keys on an unlinked call; an id that is one of the call owner's waiting
    /// self-service sessions' `dtmfLinkId` starts that session's capture on this call. Wrong
    /// ids, within the limits of [`link_id`], get "invalid entry"; the call stops listening
    /// after `link.tries_per_call` of them or two minutes. (Under policy `call` the keys are
    /// masked from the agent all along; under `session` a link id is not card data.)
    pub(super) async fn listen_for_link_id(&self, owner: &str, call_id: &str) {
        // Only while some self-service session of the call's owner is still waiting for its call.
        let waiting = self
            .inner
            .store
            .any_in_state(owner, SessionKind::SelfService, SessionState::Created)
            .unwrap_or(false);
        if !waiting {
            self.flow_over(call_id);
            return;
        }
        let relay = self.inner.relay.clone();
        let Ok(mut keys) = relay.key_stream(call_id).await else {
            return;
        };
        if relay.listen(call_id, true).await.is_err() {
            return;
        }
        let me = self.clone();
        let call_id = call_id.to_string();
        let owner = owner.to_string();
        let digits_wanted = self.inner.config.link.digits;
        // The prompt set of the call's account, as the rest of its flow uses ("en" where no
        // account owns the call).
        let prompt_set = relay
            .get(&call_id, crate::relay::Access::Owner(&owner))
            .and_then(|c| c.account)
            .and_then(|a| self.inner.config.account(&a).map(|a| a.prompts.clone()))
            .unwrap_or_else(|| "en".to_string());
        tokio::spawn(async move {
            let mut digits = String::new();
            let mut wrong = 0;
            let tries = me
                .inner
                .link_guard
                .lock()
                .expect("link lock")
                .tries_per_call();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while !me.inner.payments.stopped() {
                let Ok(Some(k)) = tokio::time::timeout_at(deadline, keys.recv()).await else {
                    break;
                };
                match k.key().digit() {
                    Some(d) => digits.push((b'0' + d) as char),
                    None => {
                        digits.clear();
                        continue;
                    }
                }
                if digits.len() < digits_wanted {
                    continue;
                }
                let keyed = std::mem::take(&mut digits);
                match me.try_link_id(&owner, &keyed) {
                    Some(s) => {
                        tracing::info!(session = %s.id, call = %call_id, "call linked by dtmfLinkId");
                        // The capture becomes the call's one key subscriber.
                        drop(keys);
                        if let Err(e) = me.start_capture(&s, &call_id).await {
                            tracing::warn!(session = %s.id, error = %e, "could not start capture");
                            me.flow_over(&call_id);
                        }
                        return;
                    }
                    None => {
                        wrong += 1;
                        if let Some(c) = me.inner.prompts.get(&prompt_set, "invalid_entry") {
                            let _ = relay.play(&call_id, vec![c]).await;
                        }
                        if wrong >= tries {
                            me.inner
                                .link_counters
                                .call_limit
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
            let _ = relay.listen(&call_id, false).await;
            me.flow_over(&call_id);
        });
    }

    /// The waiting self-service session of `owner` whose link id is `id`, if the limits let
    /// the try through and the session is not locked; counts the outcome.
    pub(super) fn try_link_id(&self, owner: &str, id: &str) -> Option<Session> {
        use link_id::Admission;
        let counters = &self.inner.link_counters;
        let now = self.inner.clock.unix_now();
        let admitted = self
            .inner
            .link_guard
            .lock()
            .expect("link lock")
            .admit(owner, id, now, counters);
        if admitted != Admission::Lookup {
            return None;
        }
        let found = self
            .inner
            .store
            .live_by_link_id(owner, id)
            .ok()
            .flatten()
            .filter(|s| s.kind == SessionKind::SelfService && s.state == SessionState::Created);
        let mut guard = self.inner.link_guard.lock().expect("link lock");
        match found {
            Some(s) if !guard.locked(&s.id) => {
                guard.forget(&s.id);
                counters
                    .linked
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some(s)
            }
            _ => {
                let waiting: Vec<String> = self
                    .inner
                    .store
                    .in_states(&[SessionState::Created])
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|s| s.kind == SessionKind::SelfService && s.client_id == owner)
                    .map(|s| s.id)
                    .collect();
                for id in guard.failed(owner, waiting.iter().map(String::as_str), now, counters) {
                    tracing::warn!(session = %id, "session locked for linking by dtmfLinkId after too many failed tries");
                }
                None
            }
        }
    }
}

//! Capture: a voice session's keys on its call, the agent's commands (submit, reset, try again),
//! and the task that runs each capture.

use super::agent_button::{Ask, SubmitAction};
use super::payment::pay_to_the_end;
use super::*;

impl Sessions {
    pub async fn submit(&self, id: &str, actor: &str) -> Result<Session, SessionError> {
        let s = self.get_any(id)?;
        if s.state != SessionState::ReadyToSubmit {
            return Err(SubmitAction::NotComplete.refused(s.state));
        }
        let Some(commands) = self.live_commands(id) else {
            if let Some(node) = self.capture_elsewhere(id)? {
                self.ask_node(&node, id, Ask::Submit(actor)).await?;
                return store::must_get(&*self.inner.store, id).map_err(Into::into);
            }
            return Err(SubmitAction::NoCapture.refused(s.state));
        };
        let (tx, rx) = oneshot::channel();
        commands
            .send(CaptureCommand::Submit(actor.to_string(), tx))
            .await
            .map_err(|_| SessionError::NotFound)?;
        rx.await.map_err(|_| SessionError::NotFound)?
    }

    /// The agent asks for the card again after a decline or a failure, on the same call: the
    /// session goes back to Created with its result cleared, and a new capture starts at once
    /// if its call is still on the relay (secure mode was never let go), else when the call
    /// comes back. Refused for other kinds and states, past the session's expiry, while
    /// another session is live for the call, and once the account's `payment_attempts`
    /// captures have been used.
    pub async fn recapture(
        &self,
        client_id: &str,
        id: &str,
        actor: &str,
    ) -> Result<Session, SessionError> {
        let s = self.get(client_id, id)?;
        if s.kind != SessionKind::Agent || !s.state.may_recapture() {
            return Err(SessionError::WrongState {
                from: s.state.as_str(),
                action: "ask for the card again (only a declined or failed agent session can)",
            });
        }
        let limit = self.account(&s.account_id)?.payment_attempts;
        let st = &self.inner.store;
        let used = self.attempts_used(id)?;
        if used >= limit as usize {
            return Err(SessionError::AttemptsExhausted { limit });
        }
        let now = self.inner.clock.unix_now();
        if s.expires_at <= now {
            return Err(SessionError::WrongState {
                from: s.state.as_str(),
                action: "ask for the card again (the session has expired; start a new one)",
            });
        }
        if let Some(guid) = &s.call_guid {
            if let Some(other) = st.live_by_call_guid(client_id, guid)? {
                return Err(SessionError::Conflict(format!(
                    "session {} is live for this CallGuid",
                    other.id
                )));
            }
        }
        if !st.transition(id, s.state.to(SessionState::Created)?, actor, now)? {
            return Err(SessionError::WrongState {
                from: s.state.as_str(),
                action: "ask for the card again (it changed meanwhile)",
            });
        }
        // The last outcome went out in its webhook; the new attempt starts with none.
        st.set_result(id, &PaymentResult::default(), now)?;
        tracing::info!(session = %id, attempt = used + 1, limit, "card asked for again");
        let fresh = store::must_get(&**st, id)?;
        if let Some(call) = fresh
            .call_guid
            .as_deref()
            .and_then(|g| self.inner.relay.find_by_call_guid(client_id, g))
        {
            self.start_capture(&fresh, &call).await?;
        }
        store::must_get(&**st, id).map_err(Into::into)
    }

    /// The agent's "Reset field".
    pub async fn reset_field(&self, id: &str, field: Field) -> Result<bool, SessionError> {
        let Some(commands) = self.live_commands(id) else {
            let node = self.capture_elsewhere(id)?.ok_or(SessionError::NotFound)?;
            let v = self.ask_node(&node, id, Ask::Reset(field)).await?;
            return Ok(v.as_bool().unwrap_or(false));
        };
        let (tx, rx) = oneshot::channel();
        commands
            .send(CaptureCommand::ResetField(field, tx))
            .await
            .map_err(|_| SessionError::NotFound)?;
        rx.await.map_err(|_| SessionError::NotFound)
    }

    pub(super) fn live_commands(&self, id: &str) -> Option<mpsc::Sender<CaptureCommand>> {
        self.inner
            .live
            .lock()
            .expect("live lock")
            .get(id)
            .map(|l| l.commands.clone())
    }

    /// Starts capture for voice session `s` on relay call `call_id`.
    pub async fn start_capture(&self, s: &Session, call_id: &str) -> Result<(), SessionError> {
        if s.kind == SessionKind::Digital || s.state != SessionState::Created {
            return Ok(());
        }
        if self
            .inner
            .live
            .lock()
            .expect("live lock")
            .contains_key(&s.id)
        {
            return Ok(());
        }
        let account = self.account(&s.account_id)?.clone();
        let relay = &self.inner.relay;
        let Ok(keys) = relay.key_stream(call_id).await else {
            return Ok(());
        };
        // Recorded before the capture starts, so a Capturing session always names the node
        // that holds its card: other nodes send it the agent's buttons, and end its sessions
        // if it dies.
        self.inner.store.set_capture_node(&s.id, &self.inner.node)?;
        // Secure mode held before the session captures, let alone prompts: from here no key
        // reaches the agent until the session is released or the call ends. Where it cannot
        // be held, the capture does not start (fail closed). A session capturing again on the
        // call (after a decline) takes back the lease its last capture kept.
        let _ = relay.listen(call_id, false).await;
        let lease = match self.inner.unpark(&s.id, call_id) {
            Some(lease) => {
                lease.capture_resumed();
                lease
            }
            None => relay.lease_secure(call_id, &s.id).await.map_err(|e| {
                SessionError::Conflict(format!("secure mode could not be held on the call: {e}"))
            })?,
        };
        let moved = self.inner.store.transition(
            &s.id,
            SessionState::Created.to(SessionState::Capturing)?,
            "gateway",
            self.inner.clock.unix_now(),
        );
        if !matches!(moved, Ok(true)) {
            // The session changed meanwhile (cancelled, expired): it captures nothing, so its
            // lease is given up at once where the hold-off lets it, else kept for its release.
            lease.capture_ended();
            if let Err((lease, _)) = lease.release().await {
                self.inner.park(lease);
            }
            return moved.map(|_| ()).map_err(Into::into);
        }
        let call = CallHandle::new(lease, keys).map_err(|(lease, e)| {
            self.inner.park(lease);
            SessionError::Conflict(e.to_string())
        })?;
        let (commands, commands_rx) = mpsc::channel(16);
        let commands_for_shutdown = commands.clone();
        self.inner
            .live
            .lock()
            .expect("live lock")
            .insert(s.id.clone(), Live { commands });
        let task = CaptureTask {
            inner: self.inner.clone(),
            session: store::must_get(&*self.inner.store, &s.id)?,
            account,
            call,
            commands: commands_rx,
        };
        events::EventWriter::start(&self.inner);
        tracing::info!(session = %s.id, call = %call_id, "capture started");
        tokio::spawn(task.run());
        // A shutdown that began after the check above took its list of live captures before
        // this one joined: told here, it ends like the others (the store says so) instead of
        // staying Capturing. Told twice (both saw it) is harmless: the first ends it.
        if self.inner.payments.closed() {
            let _ = commands_for_shutdown.try_send(CaptureCommand::Shutdown);
        }
        Ok(())
    }
}

impl SessionShared {
    /// Keeps a lease whose capture has ended until its session is released; forgets those
    /// whose call has ended (they hold nothing any more).
    pub(super) fn park(&self, lease: SecureLease) {
        let mut held = self.held.lock().expect("held lock");
        held.retain(|_, leases| {
            leases.retain(|l| self.relay.has_call(l.call()));
            !leases.is_empty()
        });
        held.entry(lease.session().to_string())
            .or_default()
            .push(lease);
    }

    /// The parked lease session `session` holds on call `call`, taken back for a new capture.
    pub(super) fn unpark(&self, session: &str, call: &str) -> Option<SecureLease> {
        let mut held = self.held.lock().expect("held lock");
        let leases = held.get_mut(session)?;
        let i = leases.iter().position(|l| l.call() == call)?;
        let lease = leases.swap_remove(i);
        if leases.is_empty() {
            held.remove(session);
        }
        Some(lease)
    }
}

/// The thin async driver of one linked voice session's [`VoiceSession`], which owns the
/// capture (and so the card) until it is paid, failed or stopped.
pub(super) struct CaptureTask {
    inner: Arc<SessionShared>,
    session: Session,
    account: AccountConfig,
    /// The call: its keys, secure mode held on it for as long as the session may hear keys,
    /// its prompts.
    call: CallHandle,
    commands: mpsc::Receiver<CaptureCommand>,
}

impl CaptureTask {
    /// Drives the [`VoiceSession`]: keys, commands and its deadlines in; its outputs carried
    /// out against the relay, the store and the live subscribers.
    async fn run(mut self) {
        let start = tokio::time::Instant::now();
        let ms = move || start.elapsed().as_millis() as u64;
        let rules = CaptureRules {
            fields: self.account.fields.clone(),
            max_attempts: self.account.max_attempts,
            inter_digit_timeout_ms: self.account.inter_digit_timeout_s * 1000,
            first_key_timeout_ms: self.account.first_key_timeout_s * 1000,
            ready_hold_ms: self.account.card_hold_s * 1000,
            today: today_utc(self.inner.clock.unix_now()),
        };
        let mut voice = VoiceSession::new(self.session.kind, rules, ms());
        // Who ends a capture that is not over: the call, or the gateway stopping.
        let mut ended_by = "gateway:call-ended";
        let mut stopped = None;
        loop {
            self.carry_out(&mut voice).await;
            if voice.is_over() {
                break;
            }
            if self.inner.payments.stopped() {
                ended_by = "gateway:shutdown";
                break;
            }
            let deadline = voice
                .poll_timeout()
                .map(|d| start + Duration::from_millis(d));
            tokio::select! {
                k = self.call.next_key() => match k {
                    Some(k) => voice.key(k.key(), ms()),
                    // The call ended: the session stays, waiting for a new call.
                    None => break,
                },
                c = self.commands.recv() => match c {
                    Some(CaptureCommand::ResetField(f, ack)) => {
                        let _ = ack.send(voice.reset_field(f, ms()));
                    }
                    Some(CaptureCommand::Submit(actor, ack)) => {
                        let r = self.submit(&mut voice, &actor).await;
                        let _ = ack.send(r);
                        if voice.is_over() {
                            break;
                        }
                    }
                    Some(CaptureCommand::Shutdown) => {
                        ended_by = "gateway:shutdown";
                        break;
                    }
                    Some(CaptureCommand::Stop(ack)) => {
                        stopped = Some(ack);
                        break;
                    }
                    None => break,
                },
                _ = sleep_until_opt(deadline) => voice.handle_timeout(ms()),
            }
        }
        let state = voice.state();
        // The card keyed so far goes with `voice`, before the session is put back.
        drop(voice);
        self.finish(state, ended_by).await;
        if let Some(ack) = stopped {
            let _ = ack.send(());
        }
    }

    /// An agent's (or the API's) submit, answered with the stored session once paid.
    async fn submit(
        &mut self,
        voice: &mut VoiceSession,
        actor: &str,
    ) -> Result<Session, SessionError> {
        if self.inner.payments.closed() {
            return Err(SessionError::ShuttingDown);
        }
        if let Err(e) = voice.submit(actor) {
            let action = match e {
                SubmitRefused::NotComplete => SubmitAction::NotComplete,
                SubmitRefused::Paying => SubmitAction::Paying,
            };
            return Err(action.refused(voice.state()));
        }
        // The card comes out as `Pay` in this very drain; should it ever not, say so rather
        // than take down the task that holds the capture.
        let paid = self.carry_out(voice).await.unwrap_or_else(|| {
            Err(SessionError::Conflict(
                "the payment did not start; check the session".into(),
            ))
        });
        // Answered once the screen's last update is stored, as the outcome is.
        self.inner.events.flush().await;
        paid
    }

    /// Does what `voice` asks until it has nothing more; the payment's answer, if one ran.
    async fn carry_out(
        &mut self,
        voice: &mut VoiceSession,
    ) -> Option<Result<Session, SessionError>> {
        let mut paid = None;
        while let Some(out) = voice.poll_output() {
            match out {
                VoiceOutput::StopPrompt => {
                    let _ = self.call.stop_prompt().await;
                }
                VoiceOutput::Say(names) => self.say(names).await,
                VoiceOutput::Transition { transition, actor } => {
                    // The updates before it go first, so the log keeps the capture's order.
                    self.inner.events.flush().await;
                    let moved = self.inner.store.transition(
                        &self.session.id,
                        transition,
                        actor,
                        self.inner.clock.unix_now(),
                    );
                    voice.transitioned(matches!(moved, Ok(true)));
                }
                VoiceOutput::Failed(reason) => {
                    self.inner.events.flush().await;
                    let result = PaymentResult {
                        failure_reason: Some(reason),
                        ..Default::default()
                    };
                    let _ = self.inner.store.set_result(
                        &self.session.id,
                        &result,
                        self.inner.clock.unix_now(),
                    );
                }
                VoiceOutput::Publish(e) => self.publish(e),
                VoiceOutput::Pay { card, actor } => {
                    self.inner.events.flush().await;
                    let r = pay_to_the_end(&self.inner, &self.session, card, &actor, "voice", None)
                        .await;
                    if let Err(SessionError::ShuttingDown) = r {
                        // Refused before it began (the card went with it): nothing to announce.
                        voice.abandon();
                        return Some(Err(SessionError::ShuttingDown));
                    }
                    match store::must_get(&*self.inner.store, &self.session.id) {
                        Ok(s) => {
                            voice.paid(s.state, s.result.clone());
                            paid = Some(r.map(|_| s));
                        }
                        Err(e) => {
                            // How the payment ended is unknown here: the sweep reconciles it.
                            tracing::error!(session = %self.session.id, error = %e, "session unreadable after payment");
                            voice.abandon();
                            return Some(Err(e.into()));
                        }
                    }
                }
                VoiceOutput::Over => break,
            }
        }
        paid
    }

    /// Plays prompts to the caller.
    async fn say(&self, names: &[&str]) {
        let clips: Vec<_> = names
            .iter()
            .filter_map(|n| self.inner.prompts.get(&self.account.prompts, n))
            .collect();
        if !clips.is_empty() {
            let _ = self.call.play(clips).await;
        }
    }

    /// Hands the update to the node's event writer, which appends it to the session's event
    /// log that every node's agent-UI stream reads; the capture never waits on the database
    /// for it (see `events.rs`). The event is masked (lengths, statuses, brand and last four
    /// once valid), never a key.
    fn publish(&self, e: LiveEvent) {
        self.inner.events.publish(store::PendingEvent {
            session_id: self.session.id.clone(),
            body: serde_json::to_string(&e).expect("live events serialise"),
            at: self.inner.clock.unix_now(),
        });
    }

    async fn finish(self, state: SessionState, ended_by: &str) {
        // Secure mode stays on: the next thing a caller does after a decline is key another
        // card. Only an explicit release (or the call's end) lets keys through again.
        let lease = self.call.into_lease();
        let call_id = lease.call().to_string();
        self.inner.park(lease);
        // The call went away (or the gateway is stopping) mid-capture: back to Created, to
        // start over on a new call. An outcome stays as it is: only the agent's recapture
        // starts a declined or failed session again.
        self.inner.events.flush().await;
        let mid_capture = matches!(state, SessionState::Capturing | SessionState::ReadyToSubmit);
        if let Some(t) = state.to(SessionState::Created).ok().filter(|_| mid_capture) {
            let _ = self.inner.store.transition(
                &self.session.id,
                t,
                ended_by,
                self.inner.clock.unix_now(),
            );
        }
        // Last: shutdown waits for `live` to empty, so the state above is stored by then.
        self.inner
            .live
            .lock()
            .expect("live lock")
            .remove(&self.session.id);
        tracing::info!(session = %self.session.id, state = state.as_str(), "capture ended");
        Sessions {
            inner: self.inner.clone(),
        }
        .flow_over(&call_id);
    }
}

pub(super) async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

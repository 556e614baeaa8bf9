//! Several nodes on one shared store: the doorbell's work (commands for this node's captures,
//! sessions created elsewhere for calls held here, captures ended elsewhere), the agent's
//! buttons pressed on a node that does not hold the capture, heartbeats, and the sweep that
//! ends a dead node's captures.
//!
//! Nothing here carries card data: a command is a verb and a field name, an answer is a state
//! or an error. The card stays in the memory of the node that holds the call's audio.

use super::agent_button::{Ask, SubmitAction};
use super::*;
use store::{Bell, NodeCommand};

/// How long a button pressed on one node waits for the node holding the capture.
const COMMAND_WAIT: Duration = Duration::from_secs(10);

impl Sessions {
    /// Starts the cluster's background work: the doorbell's handler always (on SQLite it only
    /// sees this process's bells), and on a shared store the heartbeat, the dead-node sweep
    /// and the command queue's fallback poll (a bell may be lost).
    pub(super) fn start_cluster(&self) {
        let me = self.clone();
        let mut bells = self.inner.store.doorbell();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            while !me.inner.payments.stopped() {
                match bells.recv().await {
                    Ok(bell) => me.on_bell(bell),
                    Err(RecvError::Lagged(_)) => me.on_bell(Bell::Resync),
                    Err(RecvError::Closed) => break,
                }
            }
        });
        if !self.inner.store.shared() {
            return;
        }
        let me = self.clone();
        let every = Duration::from_secs(self.inner.config.cluster.heartbeat_s.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            while !me.inner.payments.stopped() {
                tick.tick().await;
                me.cluster_tick().await;
            }
        });
    }

    fn on_bell(&self, bell: Bell) {
        let me = self.clone();
        match bell {
            Bell::Command(node) if node == self.inner.node => {
                tokio::spawn(async move { me.run_commands().await });
            }
            Bell::Session {
                session,
                local: false,
            } => {
                tokio::spawn(async move { me.late_link(&session).await });
            }
            Bell::Event {
                session,
                local: false,
            } if self.is_live_here(&session) => {
                tokio::spawn(async move { me.check_live(&session).await });
            }
            Bell::Resync => {
                tokio::spawn(async move {
                    me.run_commands().await;
                    me.check_all_live().await;
                });
            }
            _ => {}
        }
    }

    fn is_live_here(&self, id: &str) -> bool {
        self.inner.live.lock().expect("live lock").contains_key(id)
    }

    /// Once per heartbeat: the beat, the dead nodes' captures, and what bells missed.
    async fn cluster_tick(&self) {
        let now = self.inner.clock.unix_now();
        let st = &self.inner.store;
        if let Err(e) = st.heartbeat(&self.inner.node, now) {
            tracing::warn!(error = %e, "heartbeat not written");
        }
        let cutoff = now.saturating_sub(self.inner.config.cluster.dead_after_s);
        match st.stale_nodes(&self.inner.node, cutoff) {
            Ok(dead) => {
                for node in dead {
                    self.end_dead_node(&node, cutoff).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the nodes' heartbeats failed"),
        }
        self.run_commands().await;
        self.check_all_live().await;
    }

    /// A node stopped beating: its captures died with it (the keyed digits were in its memory
    /// only). Each of its Capturing or ReadyToSubmit sessions is ended Failed, "capture node
    /// lost", audited and reported as any failure is (status poll, agent screen, webhook).
    /// A complete card is first marked wiped (ReadyToSubmit → Capturing, as the card hold
    /// does), since Failed is reached from Capturing. Every live node may race to do this;
    /// the conditional state change lets one win. Payments it had at the PSP (Submitting) are
    /// left to the reconciling sweep, which asks the PSP.
    async fn end_dead_node(&self, node: &str, cutoff: u64) {
        let st = &self.inner.store;
        let actor = format!("gateway:node-lost:{node}");
        let sessions = match st.in_states_on(
            &[SessionState::Capturing, SessionState::ReadyToSubmit],
            node,
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, node, "reading a dead node's sessions failed");
                return;
            }
        };
        for s in sessions {
            let now = self.inner.clock.unix_now();
            if s.state == SessionState::ReadyToSubmit {
                let wiped = SessionState::ReadyToSubmit.to(SessionState::Capturing);
                if let Ok(t) = wiped {
                    let _ = st.transition(&s.id, t, &actor, now);
                }
            }
            let result = PaymentResult {
                failure_reason: Some(format!(
                    "capture node lost: {node} stopped during the capture; the card was not kept"
                )),
                ..s.result.clone()
            };
            let Ok(t) = SessionState::Capturing.to(SessionState::Failed) else {
                continue;
            };
            match self.inner.settle(&s.id, t, &actor, Some(&result)) {
                Ok(true) => {
                    tracing::warn!(session = %s.id, node, "capture node lost: session failed")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(session = %s.id, error = %e, "ending a dead node's session failed")
                }
            }
        }
        if let Err(e) = st.forget_node(node, cutoff) {
            tracing::warn!(error = %e, node, "forgetting a dead node failed");
        }
    }

    /// A session created on another node: if this node holds its call, the capture starts
    /// here.
    async fn late_link(&self, id: &str) {
        let Ok(Some(s)) = self.inner.store.get(id) else {
            return;
        };
        if s.state != SessionState::Created || s.kind == SessionKind::Digital {
            return;
        }
        let Some(guid) = s.call_guid.clone() else {
            return;
        };
        if let Some(call) = self.inner.relay.find_by_call_guid(&s.client_id, &guid) {
            tracing::info!(session = %id, call = %call, "session created on another node; its call is here");
            self.link_call(&s.client_id, &guid, &call).await;
        }
    }

    /// Another node moved a session this node captures (cancel, expiry): a capture whose
    /// session is no longer capturing stops, wiping what was keyed.
    async fn check_live(&self, id: &str) {
        let Ok(Some(s)) = self.inner.store.get(id) else {
            return;
        };
        if matches!(
            s.state,
            SessionState::Capturing | SessionState::ReadyToSubmit | SessionState::Submitting
        ) {
            return;
        }
        let live = self.inner.live.lock().expect("live lock").remove(id);
        if let Some(l) = live {
            tracing::info!(session = %id, state = s.state.as_str(), "session ended on another node; capture stopped");
            let (ack, stopped) = oneshot::channel();
            if l.commands.send(CaptureCommand::Stop(ack)).await.is_ok() {
                let _ = tokio::time::timeout(lifecycle::CAPTURE_STOP_WAIT, stopped).await;
            }
        }
    }

    async fn check_all_live(&self) {
        let ids: Vec<String> = self
            .inner
            .live
            .lock()
            .expect("live lock")
            .keys()
            .cloned()
            .collect();
        for id in ids {
            self.check_live(&id).await;
        }
    }

    /// Carries out the commands other nodes queued for this node's captures.
    async fn run_commands(&self) {
        let since = self
            .inner
            .clock
            .unix_now()
            .saturating_sub(COMMAND_WAIT.as_secs());
        let taken = match self.inner.store.commands_take(&self.inner.node, since) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "reading commands failed");
                return;
            }
        };
        for c in taken {
            let me = self.clone();
            tokio::spawn(async move { me.run_command(c).await });
        }
    }

    async fn run_command(&self, c: NodeCommand) {
        let answer = match Ask::parse(&c.command) {
            Some(Ask::Submit(actor)) => {
                encode(self.submit(&c.session_id, actor).await.map(|_| json_ok()))
            }
            Some(Ask::Reset(f)) => encode(
                self.reset_field(&c.session_id, f)
                    .await
                    .map(serde_json::Value::Bool),
            ),
            None => encode(Err(SessionError::NotFound)),
        };
        if let Err(e) = self.inner.store.command_done(c.id, &answer) {
            tracing::warn!(error = %e, "a command's answer was not written");
        }
    }

    /// Whether session `id`'s capture runs on another node: that node's name.
    pub(super) fn capture_elsewhere(&self, id: &str) -> Result<Option<String>, SessionError> {
        if !self.inner.store.shared() {
            return Ok(None);
        }
        Ok(self
            .inner
            .store
            .capture_node(id)?
            .filter(|n| *n != self.inner.node))
    }

    /// Asks `node` to carry out `ask` on session `id`'s capture and waits (bounded) for its
    /// answer: the value the node's own call returned, or its error.
    pub(super) async fn ask_node(
        &self,
        node: &str,
        id: &str,
        ask: Ask<'_>,
    ) -> Result<serde_json::Value, SessionError> {
        let st = &self.inner.store;
        let mut bells = st.doorbell();
        let cid = st.command_add(node, id, &ask.command(), self.inner.clock.unix_now())?;
        let deadline = tokio::time::Instant::now() + COMMAND_WAIT;
        loop {
            if let Some(a) = st.command_answer(cid)? {
                let _ = st.command_drop(cid);
                return decode(&a);
            }
            if tokio::time::Instant::now() >= deadline {
                // Not taken by now, never taken (too old); taken, its outcome shows in the
                // session's events.
                let _ = st.command_drop(cid);
                return Err(SessionError::NodeUnavailable(node.to_string()));
            }
            // Woken by the answer's bell; polled too, since a bell may be lost.
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(250)),
                async {
                    while let Ok(b) = bells.recv().await {
                        if b == Bell::Answer(cid) || b == Bell::Resync {
                            return;
                        }
                    }
                },
            )
            .await;
        }
    }
}

fn json_ok() -> serde_json::Value {
    serde_json::Value::Bool(true)
}

/// A command's answer as stored: `{"ok": value}` or `{"err": kind, …}`. Errors keep what the
/// asking node needs to answer as the local path would (same status, same words).
fn encode(r: Result<serde_json::Value, SessionError>) -> String {
    use serde_json::json;
    match r {
        Ok(v) => json!({ "ok": v }),
        Err(SessionError::WrongState { from, action }) => {
            json!({"err": "wrong_state", "from": from, "action": action})
        }
        Err(SessionError::Conflict(m)) => json!({"err": "conflict", "message": m}),
        Err(SessionError::ShuttingDown) => json!({"err": "shutting_down"}),
        Err(SessionError::NotFound) => json!({"err": "not_found"}),
        Err(e) => {
            tracing::warn!(error = %e, "a command failed");
            json!({"err": "unavailable"})
        }
    }
    .to_string()
}

fn decode(answer: &str) -> Result<serde_json::Value, SessionError> {
    let v: serde_json::Value = serde_json::from_str(answer)
        .map_err(|e| StoreError::Corrupt(format!("command answer: {e}")))?;
    if let Some(ok) = v.get("ok") {
        return Ok(ok.clone());
    }
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    Err(match v["err"].as_str().unwrap_or_default() {
        "wrong_state" => SessionError::WrongState {
            from: SessionState::parse(&text("from")).map_or("unknown", |s| s.as_str()),
            // The same `&'static str` the local path gives.
            action: SubmitAction::parse(&text("action")).map_or("submit", SubmitAction::as_str),
        },
        "conflict" => SessionError::Conflict(text("message")),
        "shutting_down" => SessionError::ShuttingDown,
        "not_found" => SessionError::NotFound,
        _ => SessionError::NodeUnavailable("the capture's node".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_carry_the_refusal_the_local_path_gives() {
        for a in SubmitAction::ALL {
            let back = decode(&encode(Err(a.refused(SessionState::Capturing))));
            assert!(
                matches!(
                    back,
                    Err(SessionError::WrongState { from: "Capturing", action }) if action == a.as_str()
                ),
                "{a:?}"
            );
        }
        assert!(matches!(
            decode(&encode(Err(SessionError::ShuttingDown))),
            Err(SessionError::ShuttingDown)
        ));
        assert_eq!(
            decode(&encode(Ok(serde_json::Value::Bool(false)))).unwrap(),
            serde_json::Value::Bool(false)
        );
    }

    #[test]
    fn asks_read_back_as_written() {
        for ask in [Ask::Submit("agent-ui"), Ask::Reset(Field::Cvv)] {
            assert_eq!(Ask::parse(&ask.command()), Some(ask));
        }
        assert_eq!(Ask::parse("reset:nonsense"), None);
        assert_eq!(Ask::parse("launch:now"), None);
    }

    #[test]
    fn bells_parse_and_know_their_own() {
        assert_eq!(
            Bell::parse("e:me:s1", "me"),
            Some(Bell::Event {
                session: "s1".into(),
                local: true
            })
        );
        assert_eq!(
            Bell::parse("s:other:s2", "me"),
            Some(Bell::Session {
                session: "s2".into(),
                local: false
            })
        );
        assert_eq!(
            Bell::parse("c:node-b", "me"),
            Some(Bell::Command("node-b".into()))
        );
        assert_eq!(Bell::parse("a:42", "me"), Some(Bell::Answer(42)));
        assert_eq!(Bell::parse("x", "me"), None);
    }
}

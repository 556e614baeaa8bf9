//! A voice session's policy, sans-IO: what happens when the caller keys, the agent resets or
//! submits, time passes or the PSP answers. [`VoiceSession`] owns the [`Capture`] (and so the
//! card) and answers with [`VoiceOutput`]s — prompts to play or stop, state transitions to
//! store, events to publish, a card to pay — which the capture task in `session/mod.rs` carries
//! out. No socket, task, store or clock in here: time comes in as milliseconds since the capture
//! began, so barge-in, prompt choice, re-prompts, the card hold and self-service auto-submit are
//! unit-tested without UDP or real-time prompts.

use std::collections::VecDeque;
use std::fmt;

use serde::Serialize;

use tonegate_card::capture::{Capture, CaptureEvent, CaptureRules, CaptureView, Field, FieldError};
use tonegate_card::Card;
use tonegate_dsp::DtmfKey;

use crate::model::{PaymentResult, SessionKind, SessionState, Transition};

/// What the agent UI and hosted page are told, live. Lengths, statuses, references only.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveEvent {
    /// The session's state.
    pub session_state: SessionState,
    /// The capture event that caused this update, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_event: Option<CaptureEvent>,
    /// The capture's state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureView>,
    /// The payment outcome, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<PaymentResult>,
}

/// What a [`VoiceSession`] asks its driver to do, in order.
pub enum VoiceOutput {
    /// Stop the prompt playing to the caller: they are keying (barge-in).
    StopPrompt,
    /// Play these prompts to the caller, in order (self-service sessions only: on an agent
    /// session the agent does the talking).
    Say(&'static [&'static str]),
    /// Store this move by `actor`, and answer with [`VoiceSession::transitioned`]: nothing
    /// more comes out until then.
    Transition {
        /// The move (checked against the state machine when it was made).
        transition: Transition,
        /// Who moved it, for the audit trail.
        actor: &'static str,
    },
    /// Store this failure as the session's result (the capture failed for good).
    Failed(String),
    /// Tell the agent UI or hosted page.
    Publish(LiveEvent),
    /// Tokenize and charge this card for `actor`, then answer with [`VoiceSession::paid`].
    Pay {
        /// The card: it leaves the session here, and must go nowhere but the PSP.
        card: Card,
        /// Who submitted it.
        actor: String,
    },
    /// The capture is over: stop driving it.
    Over,
}

impl fmt::Debug for VoiceOutput {
    // By hand, so a card never reaches a log line through `{:?}` (`Card`'s own is redacted
    // too; this keeps the output short).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VoiceOutput::StopPrompt => f.write_str("StopPrompt"),
            VoiceOutput::Say(names) => f.debug_tuple("Say").field(names).finish(),
            VoiceOutput::Transition { transition, actor } => f
                .debug_struct("Transition")
                .field("from", &transition.from())
                .field("to", &transition.to())
                .field("actor", actor)
                .finish(),
            VoiceOutput::Failed(reason) => f.debug_tuple("Failed").field(reason).finish(),
            VoiceOutput::Publish(e) => f.debug_tuple("Publish").field(e).finish(),
            VoiceOutput::Pay { actor, .. } => f
                .debug_struct("Pay")
                .field("card", &"<card>")
                .field("actor", actor)
                .finish(),
            VoiceOutput::Over => f.write_str("Over"),
        }
    }
}

/// Why a submit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitRefused {
    /// Not every field is valid yet.
    #[error("capture is not complete")]
    NotComplete,
    /// A payment for this session is already under way.
    #[error("a payment is already under way")]
    Paying,
}

/// One linked voice session's capture and self-service policy (see the module docs).
pub struct VoiceSession {
    kind: SessionKind,
    capture: Capture,
    state: SessionState,
    out: VecDeque<VoiceOutput>,
    /// A transition given out and not yet answered, and the capture event to publish after it.
    awaiting: Option<(SessionState, CaptureEvent)>,
    /// A capture event whose transition has been answered: its publication comes next.
    answered: Option<CaptureEvent>,
    paying: bool,
    over: bool,
}

impl VoiceSession {
    /// A session of `kind` whose capture starts at `now` (ms), in `Capturing`.
    pub fn new(kind: SessionKind, rules: CaptureRules, now: u64) -> VoiceSession {
        VoiceSession {
            kind,
            capture: Capture::new(rules, now),
            state: SessionState::Capturing,
            out: VecDeque::new(),
            awaiting: None,
            answered: None,
            paying: false,
            over: false,
        }
    }

    /// The state as this session knows it (after the transitions the store accepted).
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// Whether the capture is over (nothing more will come out).
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// The driver cannot go on (the gateway is stopping, the store is unreadable): the
    /// session is over where it stands, with nothing more to say.
    pub fn abandon(&mut self) {
        self.over = true;
        self.out.clear();
    }

    /// The capture, for display.
    pub fn view(&self) -> CaptureView {
        self.capture.view()
    }

    /// The caller keyed `key` at `now`.
    pub fn key(&mut self, key: DtmfKey, now: u64) {
        if !self.over {
            self.capture.key(key, now);
        }
    }

    /// The agent asked to clear `field`; false when it cannot be (not started, or done).
    pub fn reset_field(&mut self, field: Field, now: u64) -> bool {
        !self.over && self.capture.reset_field(field, now)
    }

    /// Time passed: inter-digit and first-key timeouts, the card hold.
    pub fn handle_timeout(&mut self, now: u64) {
        if !self.over {
            self.capture.tick(now);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due, if ever.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.over {
            None
        } else {
            self.capture.next_deadline()
        }
    }

    /// Someone (`actor`) pressed "Submit": the card comes out as [`VoiceOutput::Pay`].
    pub fn submit(&mut self, actor: &str) -> Result<(), SubmitRefused> {
        if self.paying {
            return Err(SubmitRefused::Paying);
        }
        let card = self.capture.take_card().ok_or(SubmitRefused::NotComplete)?;
        self.paying = true;
        self.say(&["processing"]);
        self.out.push_back(VoiceOutput::Pay {
            card,
            actor: actor.to_string(),
        });
        Ok(())
    }

    /// The store's answer to the last [`VoiceOutput::Transition`]: `true` if it moved.
    pub fn transitioned(&mut self, moved: bool) {
        if let Some((to, ev)) = self.awaiting.take() {
            if moved {
                self.state = to;
            }
            self.answered = Some(ev);
        }
    }

    /// The payment ended: the session is now in `state` with `result` (as stored).
    pub fn paid(&mut self, state: SessionState, result: PaymentResult) {
        self.paying = false;
        self.state = state;
        self.say(if state == SessionState::Completed {
            &["approved", "goodbye"]
        } else {
            &["declined", "goodbye"]
        });
        self.out.push_back(VoiceOutput::Publish(LiveEvent {
            session_state: state,
            capture_event: None,
            capture: Some(self.capture.view()),
            result: Some(result),
        }));
        // A self-service caller has no one to press "Submit" again; an agent may retry a card
        // that is not final.
        if self.kind == SessionKind::SelfService || state.is_terminal() {
            self.end();
        }
    }

    /// The next thing to do, one capture event at a time; `None` when there is nothing until
    /// the next input (or a transition awaits its answer).
    pub fn poll_output(&mut self) -> Option<VoiceOutput> {
        loop {
            if let Some(o) = self.out.pop_front() {
                return Some(o);
            }
            if self.awaiting.is_some() {
                return None;
            }
            if let Some(ev) = self.answered.take() {
                self.after_transition(ev);
                continue;
            }
            if self.over || self.paying {
                return None;
            }
            if let Some(ev) = self.capture.poll_event() {
                self.on_capture_event(ev);
                continue;
            }
            if self.kind == SessionKind::SelfService && self.state == SessionState::ReadyToSubmit {
                // Self-service: nobody presses "Submit"; the complete card goes to the PSP.
                if self.submit("caller").is_err() {
                    self.end();
                }
                continue;
            }
            return None;
        }
    }

    fn on_capture_event(&mut self, ev: CaptureEvent) {
        // Barge-in: a key the capture took stops the prompt (a stray # does not).
        if matches!(
            ev,
            CaptureEvent::KeyMasked { .. } | CaptureEvent::FieldCleared { .. }
        ) && self.kind == SessionKind::SelfService
        {
            self.out.push_back(VoiceOutput::StopPrompt);
        }
        self.say(prompts_for(&ev));
        let move_to = match &ev {
            CaptureEvent::AllComplete => Some((SessionState::ReadyToSubmit, "caller")),
            CaptureEvent::FieldCleared { .. } if self.state == SessionState::ReadyToSubmit => {
                Some((SessionState::Capturing, "agent"))
            }
            CaptureEvent::CardExpired => Some((SessionState::Capturing, "gateway:card-hold")),
            CaptureEvent::AttemptsExhausted { .. } => Some((SessionState::Failed, "caller")),
            _ => None,
        };
        match move_to.and_then(|(to, actor)| Some((self.state.to(to).ok()?, actor))) {
            Some((transition, actor)) => {
                self.out
                    .push_back(VoiceOutput::Transition { transition, actor });
                self.awaiting = Some((transition.to(), ev));
            }
            None => self.after_transition(ev),
        }
    }

    fn after_transition(&mut self, ev: CaptureEvent) {
        let exhausted = match &ev {
            CaptureEvent::AttemptsExhausted { field } => Some(*field),
            _ => None,
        };
        if let Some(field) = exhausted {
            self.out.push_back(VoiceOutput::Failed(format!(
                "too many invalid attempts at {}",
                field.as_str()
            )));
        }
        self.out.push_back(VoiceOutput::Publish(LiveEvent {
            session_state: self.state,
            capture_event: Some(ev),
            capture: Some(self.capture.view()),
            result: None,
        }));
        if exhausted.is_some() {
            self.end();
        }
    }

    fn say(&mut self, names: &'static [&'static str]) {
        if self.kind == SessionKind::SelfService && !names.is_empty() {
            self.out.push_back(VoiceOutput::Say(names));
        }
    }

    fn end(&mut self) {
        self.over = true;
        self.out.push_back(VoiceOutput::Over);
    }
}

/// The prompts a capture event calls for.
fn prompts_for(ev: &CaptureEvent) -> &'static [&'static str] {
    match ev {
        CaptureEvent::Prompt { field, .. } => match field {
            Field::Pan => &["enter_card_number"],
            Field::Expiry => &["enter_expiry"],
            Field::Cvv => &["enter_security_code"],
            Field::Postcode => &["enter_postcode"],
        },
        CaptureEvent::FieldInvalid {
            field,
            reason,
            attempts_left,
        } if *attempts_left > 0 => match (field, reason) {
            (Field::Pan, FieldError::Invalid(_)) => &["invalid_card"],
            (Field::Expiry, FieldError::Invalid(_)) => &["expired_card"],
            _ => &["invalid_entry"],
        },
        CaptureEvent::AttemptsExhausted { .. } => &["too_many_attempts", "goodbye"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests;

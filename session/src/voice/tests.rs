//! The voice policy, driven by hand: keys and time in, outputs checked in order.

use super::*;
use tonegate_card::capture::Field;

fn rules() -> CaptureRules {
    CaptureRules {
        fields: vec![Field::Pan, Field::Expiry, Field::Cvv],
        max_attempts: 3,
        inter_digit_timeout_ms: 5_000,
        first_key_timeout_ms: 15_000,
        today: (2026, 11),
        ready_hold_ms: 120_000,
    }
}

/// An output, reduced to what a test compares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Stop,
    Say(Vec<&'static str>),
    Move(SessionState, &'static str),
    Failed(String),
    /// The published state and the capture event's name (`-` for none).
    Publish(SessionState, String),
    Pay(String, String),
    Over,
}

fn reduce(o: VoiceOutput) -> Out {
    match o {
        VoiceOutput::StopPrompt => Out::Stop,
        VoiceOutput::Say(n) => Out::Say(n.to_vec()),
        VoiceOutput::Transition { transition, actor } => Out::Move(transition.to(), actor),
        VoiceOutput::Failed(r) => Out::Failed(r),
        VoiceOutput::Publish(e) => Out::Publish(
            e.session_state,
            e.capture_event.map_or("-".into(), |ev| {
                serde_json::to_value(ev).unwrap()["event"]
                    .as_str()
                    .unwrap()
                    .to_string()
            }),
        ),
        VoiceOutput::Pay { card, actor } => Out::Pay(actor, card.pan.masked()),
        VoiceOutput::Over => Out::Over,
    }
}

/// Everything that comes out now, the store answering every transition with `moved`.
fn drain(v: &mut VoiceSession, moved: bool) -> Vec<Out> {
    let mut outs = Vec::new();
    for _ in 0..10_000 {
        let Some(o) = v.poll_output() else {
            return outs;
        };
        if matches!(o, VoiceOutput::Transition { .. }) {
            v.transitioned(moved);
        }
        outs.push(reduce(o));
    }
    panic!("outputs never end: {outs:?}");
}

/// Keys `s` 300 ms apart from `t`; returns the time after.
fn keys(v: &mut VoiceSession, s: &str, mut t: u64) -> u64 {
    for ch in s.chars() {
        v.key(DtmfKey::from_char(ch).unwrap(), t);
        t += 300;
    }
    t
}

fn says(outs: &[Out]) -> Vec<Vec<&'static str>> {
    outs.iter()
        .filter_map(|o| match o {
            Out::Say(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn self_service() -> VoiceSession {
    VoiceSession::new(SessionKind::SelfService, rules(), 0)
}

const CARD: &str = "4242424242424242#1230#737";

#[test]
fn self_service_asks_for_each_field_in_turn() {
    let mut v = self_service();
    assert_eq!(
        drain(&mut v, true),
        vec![
            Out::Say(vec!["enter_card_number"]),
            Out::Publish(SessionState::Capturing, "prompt".into())
        ]
    );
    let t = keys(&mut v, "4242424242424242#", 0);
    assert_eq!(says(&drain(&mut v, true)), vec![vec!["enter_expiry"]]);
    keys(&mut v, "1230#", t);
    assert_eq!(
        says(&drain(&mut v, true)),
        vec![vec!["enter_security_code"]]
    );
}

#[test]
fn a_key_the_capture_takes_stops_the_prompt_and_a_stray_hash_does_not() {
    let mut v = self_service();
    drain(&mut v, true);
    v.key(DtmfKey::from_char('#').unwrap(), 100);
    assert!(!drain(&mut v, true).contains(&Out::Stop));
    v.key(DtmfKey::from_char('4').unwrap(), 400);
    let outs = drain(&mut v, true);
    // The prompt stops before the agent UI hears of the key.
    assert_eq!(
        outs[..2],
        [
            Out::Stop,
            Out::Publish(SessionState::Capturing, "key_masked".into())
        ]
    );
    // Clearing the field with * is a key the capture took, too.
    v.key(DtmfKey::from_char('*').unwrap(), 700);
    assert_eq!(drain(&mut v, true)[0], Out::Stop);
}

#[test]
fn an_invalid_number_is_asked_for_again_then_the_capture_fails() {
    let mut v = self_service();
    drain(&mut v, true);
    let mut t = 0;
    for attempt in 1..=3 {
        t = keys(&mut v, "4242424242424241#", t);
        let outs = drain(&mut v, true);
        if attempt < 3 {
            assert_eq!(
                says(&outs),
                vec![vec!["invalid_card"], vec!["enter_card_number"]],
                "attempt {attempt}"
            );
            assert!(!outs.contains(&Out::Over));
        } else {
            let tail = &outs[outs.len() - 5..];
            assert_eq!(
                tail,
                [
                    Out::Say(vec!["too_many_attempts", "goodbye"]),
                    Out::Move(SessionState::Failed, "caller"),
                    Out::Failed("too many invalid attempts at pan".into()),
                    Out::Publish(SessionState::Failed, "attempts_exhausted".into()),
                    Out::Over,
                ],
                "{outs:?}"
            );
        }
    }
    // Over: keys and time change nothing.
    keys(&mut v, "4242424242424242#", t);
    v.handle_timeout(t + 60_000);
    assert_eq!(drain(&mut v, true), vec![]);
    assert_eq!(v.poll_timeout(), None);
}

#[test]
fn silence_re_prompts_when_the_time_given_passes_the_deadline() {
    let mut v = self_service();
    drain(&mut v, true);
    let due = v.poll_timeout().expect("a first-key deadline");
    assert_eq!(due, 15_000);
    v.handle_timeout(due - 1);
    assert_eq!(drain(&mut v, true), vec![]);
    v.handle_timeout(due);
    let outs = drain(&mut v, true);
    assert!(
        says(&outs).contains(&vec!["enter_card_number"]),
        "a re-prompt after the first-key timeout: {outs:?}"
    );
}

#[test]
fn self_service_submits_the_complete_card_by_itself() {
    let mut v = self_service();
    drain(&mut v, true);
    let t = keys(&mut v, CARD, 0);
    let outs = drain(&mut v, true);
    // Nothing more after the card until the PSP answers.
    assert_eq!(
        outs[outs.len() - 4..],
        [
            Out::Move(SessionState::ReadyToSubmit, "caller"),
            Out::Publish(SessionState::ReadyToSubmit, "all_complete".into()),
            Out::Say(vec!["processing"]),
            Out::Pay("caller".into(), "************4242".into()),
        ],
        "{outs:?}"
    );
    // Keys while paying change nothing; the card has gone.
    keys(&mut v, "1", t);
    assert_eq!(drain(&mut v, true), vec![]);
    assert_eq!(v.submit("caller"), Err(SubmitRefused::Paying));
    v.paid(SessionState::Completed, PaymentResult::default());
    assert_eq!(
        drain(&mut v, true),
        vec![
            Out::Say(vec!["approved", "goodbye"]),
            Out::Publish(SessionState::Completed, "-".into()),
            Out::Over
        ]
    );
}

#[test]
fn a_declined_self_service_card_says_so_and_ends() {
    let mut v = self_service();
    keys(&mut v, CARD, 0);
    drain(&mut v, true);
    v.paid(SessionState::Declined, PaymentResult::default());
    let outs = drain(&mut v, true);
    assert_eq!(says(&outs), vec![vec!["declined", "goodbye"]]);
    assert_eq!(outs.last(), Some(&Out::Over));
}

#[test]
fn nothing_comes_out_until_the_store_answers_a_transition() {
    let mut v = self_service();
    keys(&mut v, CARD, 0);
    let mut last = None;
    while let Some(o) = v.poll_output() {
        if matches!(o, VoiceOutput::Transition { .. }) {
            last = Some(reduce(o));
            break;
        }
    }
    assert_eq!(last, Some(Out::Move(SessionState::ReadyToSubmit, "caller")));
    assert!(v.poll_output().is_none());
    assert!(v.poll_output().is_none());
    v.transitioned(true);
    assert_eq!(
        v.poll_output().map(reduce),
        Some(Out::Publish(
            SessionState::ReadyToSubmit,
            "all_complete".into()
        ))
    );
}

#[test]
fn a_transition_the_store_refuses_leaves_the_state_and_pays_nothing() {
    // The session changed meanwhile (an API cancel, say): the store refuses.
    let mut v = self_service();
    keys(&mut v, CARD, 0);
    let outs = drain(&mut v, false);
    assert_eq!(v.state(), SessionState::Capturing);
    assert!(outs.contains(&Out::Publish(
        SessionState::Capturing,
        "all_complete".into()
    )));
    assert!(!outs.iter().any(|o| matches!(o, Out::Pay(..))), "{outs:?}");
}

#[test]
fn an_agent_session_is_silent_and_waits_for_submit() {
    let mut v = VoiceSession::new(SessionKind::Agent, rules(), 0);
    assert_eq!(v.submit("agent"), Err(SubmitRefused::NotComplete));
    keys(&mut v, CARD, 0);
    let outs = drain(&mut v, true);
    assert!(
        !outs.iter().any(|o| matches!(o, Out::Say(_) | Out::Stop)),
        "no prompts on an agent call: {outs:?}"
    );
    assert_eq!(
        outs.last(),
        Some(&Out::Publish(
            SessionState::ReadyToSubmit,
            "all_complete".into()
        ))
    );
    assert_eq!(v.submit("agent-7"), Ok(()));
    assert_eq!(
        drain(&mut v, true),
        vec![Out::Pay("agent-7".into(), "************4242".into())]
    );
    assert_eq!(v.submit("agent-7"), Err(SubmitRefused::Paying));
    v.paid(SessionState::Completed, PaymentResult::default());
    assert_eq!(
        drain(&mut v, true),
        vec![Out::Publish(SessionState::Completed, "-".into()), Out::Over]
    );
}

#[test]
fn an_unsubmitted_card_is_wiped_after_the_hold_and_keyed_again() {
    let mut v = VoiceSession::new(SessionKind::Agent, rules(), 0);
    let t = keys(&mut v, CARD, 0);
    drain(&mut v, true);
    let due = v.poll_timeout().expect("the card hold");
    assert!(
        due >= t + 120_000 - 300 && due <= t + 120_000,
        "{due} vs {t}"
    );
    v.handle_timeout(due);
    let outs = drain(&mut v, true);
    assert!(outs.contains(&Out::Move(SessionState::Capturing, "gateway:card-hold")));
    assert!(outs.contains(&Out::Publish(
        SessionState::Capturing,
        "card_expired".into()
    )));
    assert_eq!(v.state(), SessionState::Capturing);
    assert_eq!(v.submit("agent"), Err(SubmitRefused::NotComplete));
}

#[test]
fn the_agent_clearing_a_field_of_a_complete_card_goes_back_to_capturing() {
    let mut v = VoiceSession::new(SessionKind::Agent, rules(), 0);
    let t = keys(&mut v, CARD, 0);
    drain(&mut v, true);
    assert!(v.reset_field(Field::Cvv, t));
    let outs = drain(&mut v, true);
    assert_eq!(outs[0], Out::Move(SessionState::Capturing, "agent"));
    assert_eq!(v.state(), SessionState::Capturing);
    assert_eq!(v.submit("agent"), Err(SubmitRefused::NotComplete));
}

#[test]
fn debug_output_never_shows_the_card() {
    let mut v = VoiceSession::new(SessionKind::Agent, rules(), 0);
    keys(&mut v, CARD, 0);
    drain(&mut v, true);
    v.submit("agent").unwrap();
    let pay = v.poll_output().unwrap();
    let shown = format!("{pay:?}");
    assert!(!shown.contains("4242") && !shown.contains("737"), "{shown}");
}

#[test]
fn an_abandoned_session_is_over_and_says_nothing_more() {
    let mut v = self_service();
    keys(&mut v, CARD, 0);
    let outs = drain(&mut v, true);
    assert!(matches!(outs.last(), Some(Out::Pay(..))), "{outs:?}");
    assert!(!v.is_over());
    v.abandon();
    assert!(v.is_over());
    assert_eq!(drain(&mut v, true), vec![]);
    assert_eq!(v.poll_timeout(), None);
}

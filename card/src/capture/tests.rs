use super::*;

fn rules(fields: &[Field]) -> CaptureRules {
    CaptureRules {
        fields: fields.to_vec(),
        max_attempts: 3,
        inter_digit_timeout_ms: 5_000,
        first_key_timeout_ms: 15_000,
        today: (2026, 11),
        ready_hold_ms: 120_000,
    }
}

fn standard() -> Capture {
    Capture::new(rules(&[Field::Pan, Field::Expiry, Field::Cvv]), 0)
}

/// Keys a string (one key per character) starting at `t`, 300 ms apart; returns the time after.
fn keys(c: &mut Capture, s: &str, mut t: u64) -> u64 {
    for ch in s.chars() {
        c.key(DtmfKey::from_char(ch).unwrap(), t);
        t += 300;
    }
    t
}

fn events(c: &mut Capture) -> Vec<CaptureEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn a_clean_entry_completes_and_yields_the_card() {
    let mut c = standard();
    assert_eq!(
        events(&mut c),
        vec![CaptureEvent::Prompt {
            field: Field::Pan,
            attempt: 1
        }]
    );
    let t = keys(&mut c, "4242424242424242#", 0);
    let ev = events(&mut c);
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, CaptureEvent::KeyMasked { .. }))
            .count(),
        16
    );
    assert!(ev.contains(&CaptureEvent::FieldValid { field: Field::Pan }));
    assert_eq!(c.view().brand, Some(Brand::Visa));
    assert_eq!(c.view().last4.as_deref(), Some("4242"));
    let t = keys(&mut c, "1230#", t);
    keys(&mut c, "737", t);
    // The CVV ends by itself at the brand's length.
    let ev = events(&mut c);
    assert!(ev.contains(&CaptureEvent::AllComplete));
    assert!(c.is_complete());
    let card = c.take_card().unwrap();
    assert_eq!(card.pan.masked(), "************4242");
    assert!(c.take_card().is_none());
    // The view still shows what was entered, marked submitted; nothing can be reset now.
    let v = c.view();
    assert!(v.fields.iter().all(|f| f.status == "submitted"));
    assert_eq!((v.fields[0].length, v.last4.as_deref()), (16, Some("4242")));
    assert!(!c.reset_field(Field::Expiry, 10_000));
}

#[test]
fn star_clears_and_restarts_the_field() {
    let mut c = standard();
    let t = keys(&mut c, "4242*", 0);
    let ev = events(&mut c);
    assert!(ev.contains(&CaptureEvent::FieldCleared { field: Field::Pan }));
    assert_eq!(c.view().fields[0].length, 0);
    keys(&mut c, "4242424242424242#", t);
    assert!(events(&mut c).contains(&CaptureEvent::FieldValid { field: Field::Pan }));
    assert_eq!(c.view().fields[0].attempts, 0, "* costs no attempt");
}

#[test]
fn bad_luhn_is_rejected_and_asked_again() {
    let mut c = standard();
    keys(&mut c, "4242424242424241#", 0);
    let ev = events(&mut c);
    assert!(ev.contains(&CaptureEvent::FieldInvalid {
        field: Field::Pan,
        reason: FieldError::Invalid(CardError::Luhn),
        attempts_left: 2
    }));
    assert!(ev.contains(&CaptureEvent::Prompt {
        field: Field::Pan,
        attempt: 2
    }));
    assert_eq!(c.view().current, Some(Field::Pan));
}

#[test]
fn attempts_run_out() {
    let mut c = standard();
    let mut t = 0;
    for _ in 0..3 {
        t = keys(&mut c, "1234#", t);
    }
    let ev = events(&mut c);
    assert!(ev.contains(&CaptureEvent::AttemptsExhausted { field: Field::Pan }));
    assert!(c.is_failed());
    // Further keys do nothing.
    keys(&mut c, "4242424242424242#", t);
    assert!(!events(&mut c)
        .iter()
        .any(|e| matches!(e, CaptureEvent::KeyMasked { .. })));
    assert!(!c.reset_field(Field::Pan, t));
}

#[test]
fn amex_needs_a_four_digit_cvv() {
    let mut c = standard();
    let t = keys(&mut c, "378282246310005#1230#", 0);
    events(&mut c);
    // Three digits and # is too short for Amex...
    let t = keys(&mut c, "123#", t);
    let ev = events(&mut c);
    assert!(ev.contains(&CaptureEvent::FieldInvalid {
        field: Field::Cvv,
        reason: FieldError::Invalid(CardError::CvvLength),
        attempts_left: 2
    }));
    // ...four digits complete by themselves.
    keys(&mut c, "1234", t);
    assert!(events(&mut c).contains(&CaptureEvent::AllComplete));
}

#[test]
fn visa_cvv_ends_at_three_and_four_is_not_possible() {
    let mut c = standard();
    let t = keys(&mut c, "4242424242424242#1230#", 0);
    events(&mut c);
    keys(&mut c, "1234", t);
    // The fourth key lands after the field completed at three: nothing more to capture.
    assert!(c.is_complete());
}

#[test]
fn expired_and_far_future_expiries() {
    let mut c = standard();
    let t = keys(&mut c, "4242424242424242#", 0);
    let t = keys(&mut c, "1026#", t);
    assert!(events(&mut c).contains(&CaptureEvent::FieldInvalid {
        field: Field::Expiry,
        reason: FieldError::Invalid(CardError::Expired),
        attempts_left: 2
    }));
    keys(&mut c, "1347", t);
    assert!(events(&mut c).iter().any(|e| matches!(
        e,
        CaptureEvent::FieldInvalid {
            field: Field::Expiry,
            ..
        }
    )));
}

#[test]
fn each_brand_length() {
    for (pan, ok) in [
        ("4222222222222", true),       // Visa 13
        ("4242424242424242", true),    // Visa 16
        ("4000000000000000006", true), // Visa 19
        ("5555555555554444", true),    // Mastercard 16
        ("555555555555444", false),    // Mastercard 15
        ("2223003122003222", true),    // Mastercard 2-series
        ("378282246310005", true),     // Amex 15
        ("3782822463100051", false),   // Amex 16
        ("6011111111111117", true),    // Discover 16
        ("30569309025904", true),      // Diners 14
        ("3566002020360505", true),    // JCB 16
        ("6200000000000005", true),    // UnionPay 16
        ("6759649826438453", true),    // Maestro 16
    ] {
        let mut c = standard();
        keys(&mut c, &format!("{pan}#"), 0);
        let valid = events(&mut c).contains(&CaptureEvent::FieldValid { field: Field::Pan });
        assert_eq!(valid, ok, "{pan}");
    }
}

#[test]
fn inter_digit_timeout_costs_an_attempt() {
    let mut c = standard();
    let t = keys(&mut c, "4242", 0);
    c.tick(t + 4_000);
    assert!(!events(&mut c)
        .iter()
        .any(|e| matches!(e, CaptureEvent::FieldInvalid { .. })));
    c.tick(t + 5_000);
    let ev = events(&mut c);
    assert!(ev.contains(&CaptureEvent::FieldInvalid {
        field: Field::Pan,
        reason: FieldError::Timeout,
        attempts_left: 2
    }));
    assert_eq!(c.view().fields[0].length, 0);
}

#[test]
fn no_input_times_out_too() {
    let mut c = standard();
    events(&mut c);
    assert_eq!(c.next_deadline(), Some(15_000));
    c.tick(15_000);
    assert!(events(&mut c).contains(&CaptureEvent::FieldInvalid {
        field: Field::Pan,
        reason: FieldError::NoInput,
        attempts_left: 2
    }));
}

#[test]
fn agent_reset_of_a_valid_field_asks_for_it_again() {
    let mut c = standard();
    let t = keys(&mut c, "4242424242424242#1230#737", 0);
    assert!(c.is_complete());
    events(&mut c);
    assert!(c.reset_field(Field::Expiry, t));
    assert!(!c.is_complete());
    assert_eq!(c.view().current, Some(Field::Expiry));
    let ev = events(&mut c);
    assert_eq!(
        ev,
        vec![
            CaptureEvent::FieldCleared {
                field: Field::Expiry
            },
            CaptureEvent::Prompt {
                field: Field::Expiry,
                attempt: 1
            }
        ]
    );
    keys(&mut c, "0131#", t);
    assert!(c.is_complete());
}

#[test]
fn postcode_digits_when_configured() {
    let mut c = Capture::new(
        rules(&[Field::Pan, Field::Expiry, Field::Cvv, Field::Postcode]),
        0,
    );
    let t = keys(&mut c, "4242424242424242#1230#737", 0);
    assert!(!c.is_complete());
    keys(&mut c, "12#", t);
    assert!(events(&mut c).iter().any(|e| matches!(
        e,
        CaptureEvent::FieldInvalid {
            field: Field::Postcode,
            reason: FieldError::TooShort,
            ..
        }
    )));
    keys(&mut c, "94107#", t + 2000);
    assert!(c.is_complete());
    assert!(c.take_card().unwrap().postcode.is_some());
}

#[test]
fn nothing_reported_carries_a_digit() {
    let mut c = standard();
    keys(&mut c, "4242424242424242#1230#737", 0);
    let all = format!(
        "{:?} {} {:?}",
        events(&mut c),
        serde_json::to_string(&c.view()).unwrap(),
        c
    );
    for secret in ["424242424242", "1230", "737"] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
    // CVV length is only "entered".
    assert_eq!(c.view().fields[2].length, 1);
}

#[test]
fn a_complete_card_not_submitted_within_the_hold_is_wiped_and_asked_for_again() {
    let mut c = standard();
    let t = keys(&mut c, "4242424242424242#1230#123#", 0);
    assert!(c.is_complete());
    let hold_ends = c.next_deadline().expect("the hold is a deadline");
    assert!(
        hold_ends >= t && hold_ends <= t + 120_000,
        "{hold_ends} {t}"
    );
    c.tick(hold_ends - 1);
    assert!(c.is_complete(), "not before the hold ends");
    let _ = events(&mut c);
    c.tick(hold_ends);
    assert!(!c.is_complete());
    assert!(c.take_card().is_none(), "the card is gone");
    let ev = events(&mut c);
    assert_eq!(ev[0], CaptureEvent::CardExpired, "{ev:?}");
    assert!(
        ev.contains(&CaptureEvent::Prompt {
            field: Field::Pan,
            attempt: 1
        }),
        "asked again from the first field, no attempt charged: {ev:?}"
    );
    assert!(c.view().fields.iter().all(|f| f.length == 0));
    // Keyed again, it completes again and can be taken.
    keys(&mut c, "4242424242424242#1230#123#", hold_ends + 1000);
    assert!(c.take_card().is_some());
}

#[test]
fn a_hold_of_zero_keeps_the_card_until_submitted() {
    let mut r = rules(&[Field::Pan, Field::Expiry, Field::Cvv]);
    r.ready_hold_ms = 0;
    let mut c = Capture::new(r, 0);
    keys(&mut c, "4242424242424242#1230#123#", 0);
    assert_eq!(c.next_deadline(), None);
    c.tick(10_000_000);
    assert!(c.take_card().is_some());
}

//! Card capture from keypad keys: a per-session state machine, sans-IO.
//!
//! Fields are collected in order (PAN, expiry MMYY, CVV, optionally postcode digits). In a field
//! `#` ends it, `*` clears it and starts it again, and reaching the field's longest length ends
//! it too. A finished field is validated (Luhn, brand and length; expiry not past and within 20
//! years; CVV length by brand); an invalid one, or one left waiting too long, costs an attempt
//! and is asked for again until the attempts run out.
//!
//! Everything it reports — [`CaptureEvent`]s and [`CaptureView`] — carries lengths, statuses and
//! at most the brand and last four of the PAN; never a key. Time is passed in (milliseconds).

use std::collections::VecDeque;

use serde::Serialize;
use tonegate_dsp::DtmfKey;

use crate::{Brand, Card, CardError, Cvv, Digits, Expiry, Pan};

/// A field of the card form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    /// Card number.
    Pan,
    /// Expiry, MMYY.
    Expiry,
    /// Security code.
    Cvv,
    /// Postcode digits (for address verification).
    Postcode,
}

impl Field {
    /// The field's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Pan => "pan",
            Field::Expiry => "expiry",
            Field::Cvv => "cvv",
            Field::Postcode => "postcode",
        }
    }

    fn min_len(self) -> usize {
        match self {
            Field::Pan => 12,
            Field::Expiry => 4,
            Field::Cvv => 3,
            Field::Postcode => 3,
        }
    }
}

/// Why a field was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum FieldError {
    /// The digits break a card rule.
    Invalid(CardError),
    /// Too few digits.
    TooShort,
    /// The caller stopped between digits for longer than the inter-digit timeout.
    Timeout,
    /// Nothing was keyed for the field in time.
    NoInput,
}

/// Capture rules of an account.
#[derive(Debug, Clone)]
pub struct CaptureRules {
    /// Fields to collect, in order.
    pub fields: Vec<Field>,
    /// Tries per field before the capture fails.
    pub max_attempts: u32,
    /// Longest pause between two keys of a field, ms.
    pub inter_digit_timeout_ms: u64,
    /// Longest wait for a field's first key, ms.
    pub first_key_timeout_ms: u64,
    /// Today's (year, month), for expiry checks.
    pub today: (u16, u8),
    /// How long a complete card may wait to be submitted, ms (0: no limit); then it is wiped
    /// and keyed again.
    pub ready_hold_ms: u64,
}

/// Something the agent UI or the IVR should know. Never carries a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum CaptureEvent {
    /// Ask the caller for this field (first time, or again).
    Prompt {
        /// The field.
        field: Field,
        /// 1 for the first try.
        attempt: u32,
    },
    /// A key was added to the field; show one more mask character.
    KeyMasked {
        /// The field.
        field: Field,
        /// Keys in the field now.
        length: usize,
    },
    /// The field was emptied (`*`, or the agent pressed "Reset field").
    FieldCleared {
        /// The field.
        field: Field,
    },
    /// The field was accepted.
    FieldValid {
        /// The field.
        field: Field,
    },
    /// The field was not accepted; it will be asked for again if attempts remain.
    FieldInvalid {
        /// The field.
        field: Field,
        /// Why.
        reason: FieldError,
        /// Tries left.
        attempts_left: u32,
    },
    /// Every field is valid: the card can be submitted.
    AllComplete,
    /// The complete card waited longer than the hold without being submitted: it is wiped and
    /// the fields are asked for again (attempts are not charged).
    CardExpired,
    /// A field failed too often: the capture is over.
    AttemptsExhausted {
        /// The field.
        field: Field,
    },
}

/// One field's state for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldView {
    /// The field.
    pub field: Field,
    /// `empty`, `entering`, `valid`, `invalid`, `submitted`.
    pub status: &'static str,
    /// Keys entered (0 once cleared); for CVV only whether any were entered shows.
    pub length: usize,
    /// Tries used.
    pub attempts: u32,
    /// Why the last try failed.
    pub error: Option<FieldError>,
}

/// The capture's state for display: no digits, PAN as brand and last four at most.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaptureView {
    /// Per field.
    pub fields: Vec<FieldView>,
    /// The field being keyed.
    pub current: Option<Field>,
    /// Brand, once the PAN is valid.
    pub brand: Option<Brand>,
    /// Last four of the PAN, once valid.
    pub last4: Option<String>,
    /// All fields valid.
    pub complete: bool,
    /// A field ran out of attempts.
    pub failed: bool,
}

/// One field's entry: its digits so far, attempts and verdict.
struct FieldEntry {
    field: Field,
    digits: Digits,
    attempts: u32,
    valid: bool,
    error: Option<FieldError>,
}

/// A capture in progress. See the module documentation.
pub struct Capture {
    rules: CaptureRules,
    slots: Vec<FieldEntry>,
    current: Option<usize>,
    prompted_at: u64,
    last_key_at: Option<u64>,
    pan: Option<Pan>,
    expiry: Option<Expiry>,
    cvv: Option<Cvv>,
    postcode: Option<Digits>,
    events: VecDeque<CaptureEvent>,
    failed: bool,
    /// The view as it was when the card was handed over (the card itself is gone).
    submitted: Option<CaptureView>,
    /// When the card became complete (ms), while it waits to be submitted.
    complete_at: Option<u64>,
}

impl core::fmt::Debug for Capture {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Capture")
            .field("view", &self.view())
            .finish()
    }
}

impl Capture {
    /// Starts a capture at time `now`; the first event prompts for the first field.
    pub fn new(rules: CaptureRules, now: u64) -> Capture {
        let slots = rules
            .fields
            .iter()
            .map(|&field| FieldEntry {
                field,
                digits: Digits::new(),
                attempts: 0,
                valid: false,
                error: None,
            })
            .collect();
        let mut c = Capture {
            rules,
            slots,
            current: None,
            prompted_at: now,
            last_key_at: None,
            pan: None,
            expiry: None,
            cvv: None,
            postcode: None,
            events: VecDeque::new(),
            failed: false,
            submitted: None,
            complete_at: None,
        };
        c.advance(now);
        c
    }

    /// A key pressed at `now`.
    pub fn key(&mut self, key: DtmfKey, now: u64) {
        let Some(i) = self.current else { return };
        match key {
            DtmfKey::Hash => {
                if !self.slots[i].digits.is_empty() {
                    self.finish_field(i, now);
                }
            }
            DtmfKey::Star => {
                self.slots[i].digits.clear();
                self.last_key_at = None;
                self.prompted_at = now;
                self.events.push_back(CaptureEvent::FieldCleared {
                    field: self.slots[i].field,
                });
            }
            k => {
                let Some(d) = k.digit() else { return };
                let slot = &mut self.slots[i];
                slot.digits.push(d);
                self.last_key_at = Some(now);
                let field = slot.field;
                let length = slot.digits.len();
                self.events
                    .push_back(CaptureEvent::KeyMasked { field, length });
                if length >= self.max_len(field) {
                    self.finish_field(i, now);
                }
            }
        }
    }

    /// Time passes: applies the inter-digit and first-key timeouts, and the hold on a
    /// complete card.
    pub fn tick(&mut self, now: u64) {
        if let Some(at) = self.complete_at {
            if self.is_complete()
                && self.rules.ready_hold_ms > 0
                && now.saturating_sub(at) >= self.rules.ready_hold_ms
            {
                self.wipe(now);
            }
            return;
        }
        let Some(i) = self.current else { return };
        let reason = match self.last_key_at {
            Some(t)
                if !self.slots[i].digits.is_empty()
                    && now.saturating_sub(t) >= self.rules.inter_digit_timeout_ms =>
            {
                Some(FieldError::Timeout)
            }
            None if now.saturating_sub(self.prompted_at) >= self.rules.first_key_timeout_ms => {
                Some(FieldError::NoInput)
            }
            _ => None,
        };
        if let Some(r) = reason {
            self.slots[i].digits.clear();
            self.reject(i, r, now);
        }
    }

    /// The agent's "Reset field": empties `field` (and the CVV with the PAN, since its length
    /// depends on the brand) and asks for it again. Attempts are not charged.
    pub fn reset_field(&mut self, field: Field, now: u64) -> bool {
        if self.failed || self.submitted.is_some() {
            return false;
        }
        let Some(i) = self.slots.iter().position(|s| s.field == field) else {
            return false;
        };
        let mut clear = vec![i];
        if field == Field::Pan {
            clear.extend(self.slots.iter().position(|s| s.field == Field::Cvv));
        }
        for j in clear {
            let s = &mut self.slots[j];
            s.digits.clear();
            s.valid = false;
            s.error = None;
            match s.field {
                Field::Pan => self.pan = None,
                Field::Expiry => self.expiry = None,
                Field::Cvv => self.cvv = None,
                Field::Postcode => self.postcode = None,
            }
            self.events
                .push_back(CaptureEvent::FieldCleared { field: s.field });
        }
        self.complete_at = None;
        self.current = None;
        self.advance(now);
        true
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<CaptureEvent> {
        self.events.pop_front()
    }

    /// Whether every field is valid (and the card not yet handed over).
    pub fn is_complete(&self) -> bool {
        !self.failed && self.submitted.is_none() && self.slots.iter().all(|s| s.valid)
    }

    /// Whether a field ran out of attempts.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// When the next timeout falls due (ms), if any.
    pub fn next_deadline(&self) -> Option<u64> {
        if let Some(at) = self.complete_at.filter(|_| self.is_complete()) {
            return (self.rules.ready_hold_ms > 0).then(|| at + self.rules.ready_hold_ms);
        }
        let i = self.current?;
        Some(match self.last_key_at {
            Some(t) if !self.slots[i].digits.is_empty() => t + self.rules.inter_digit_timeout_ms,
            _ => self.prompted_at + self.rules.first_key_timeout_ms,
        })
    }

    /// The state for display.
    pub fn view(&self) -> CaptureView {
        if let Some(v) = &self.submitted {
            return v.clone();
        }
        CaptureView {
            fields: self
                .slots
                .iter()
                .enumerate()
                .map(|(i, s)| FieldView {
                    field: s.field,
                    status: if s.valid {
                        "valid"
                    } else if Some(i) == self.current && !s.digits.is_empty() {
                        "entering"
                    } else if s.error.is_some() {
                        "invalid"
                    } else {
                        "empty"
                    },
                    length: self.entered_len(s),
                    attempts: s.attempts,
                    error: s.error,
                })
                .collect(),
            current: self.current.map(|i| self.slots[i].field),
            brand: self.pan.as_ref().map(Pan::brand),
            last4: self.pan.as_ref().map(Pan::last4),
            complete: self.is_complete(),
            failed: self.failed,
        }
    }

    /// The card, once complete (moves it out; the capture keeps nothing).
    pub fn take_card(&mut self) -> Option<Card> {
        if !self.is_complete() {
            return None;
        }
        let mut frozen = self.view();
        for f in &mut frozen.fields {
            f.status = "submitted";
        }
        frozen.current = None;
        let card = Card {
            pan: self.pan.take()?,
            expiry: self.expiry.take()?,
            cvv: self.cvv.take()?,
            postcode: self.postcode.take(),
        };
        for s in &mut self.slots {
            s.valid = false;
        }
        self.submitted = Some(frozen);
        Some(card)
    }

    /// Keys entered in a field, counting a finished field's keys; the CVV's length is never
    /// shown beyond "entered" (0 or 1).
    fn entered_len(&self, s: &FieldEntry) -> usize {
        let n = match (s.valid, s.field) {
            (true, Field::Pan) => self.pan.as_ref().map_or(0, Pan::len),
            (true, Field::Expiry) => 4,
            (true, Field::Cvv) => 1,
            (true, Field::Postcode) => self.postcode.as_ref().map_or(0, Digits::len),
            (false, _) => s.digits.len(),
        };
        if s.field == Field::Cvv {
            n.min(1)
        } else {
            n
        }
    }

    fn max_len(&self, field: Field) -> usize {
        match field {
            Field::Pan => crate::MAX_DIGITS,
            Field::Expiry => 4,
            Field::Cvv => self.pan.as_ref().map_or(4, |p| p.brand().cvv_length()),
            Field::Postcode => 10,
        }
    }

    fn finish_field(&mut self, i: usize, now: u64) {
        let field = self.slots[i].field;
        let digits = self.slots[i].digits.take();
        if digits.len() < field.min_len() {
            return self.reject(i, FieldError::TooShort, now);
        }
        let result = match field {
            Field::Pan => Pan::new(digits).map(|p| self.pan = Some(p)),
            Field::Expiry => Expiry::new(digits, self.rules.today).map(|e| self.expiry = Some(e)),
            Field::Cvv => {
                let brand = self.pan.as_ref().map_or(Brand::Visa, Pan::brand);
                Cvv::new(digits, brand).map(|c| self.cvv = Some(c))
            }
            Field::Postcode => {
                if (3..=10).contains(&digits.len()) {
                    self.postcode = Some(digits);
                    Ok(())
                } else {
                    Err(CardError::PostcodeLength)
                }
            }
        };
        match result {
            Ok(()) => {
                let s = &mut self.slots[i];
                s.valid = true;
                s.error = None;
                self.events.push_back(CaptureEvent::FieldValid { field });
                self.current = None;
                self.advance(now);
            }
            Err(e) => self.reject(i, FieldError::Invalid(e), now),
        }
    }

    fn reject(&mut self, i: usize, reason: FieldError, now: u64) {
        let s = &mut self.slots[i];
        s.attempts += 1;
        s.error = Some(reason);
        let field = s.field;
        let attempts_left = self.rules.max_attempts.saturating_sub(s.attempts);
        self.events.push_back(CaptureEvent::FieldInvalid {
            field,
            reason,
            attempts_left,
        });
        self.last_key_at = None;
        if attempts_left == 0 {
            self.failed = true;
            self.current = None;
            self.events
                .push_back(CaptureEvent::AttemptsExhausted { field });
        } else {
            self.prompted_at = now;
            self.events.push_back(CaptureEvent::Prompt {
                field,
                attempt: s.attempts + 1,
            });
        }
    }

    /// Moves to the first field not yet valid and prompts for it, or reports completion.
    fn advance(&mut self, now: u64) {
        match self.slots.iter().position(|s| !s.valid) {
            Some(i) => {
                self.current = Some(i);
                self.prompted_at = now;
                self.last_key_at = None;
                let s = &self.slots[i];
                self.events.push_back(CaptureEvent::Prompt {
                    field: s.field,
                    attempt: s.attempts + 1,
                });
            }
            None => {
                self.current = None;
                self.complete_at = Some(now);
                self.events.push_back(CaptureEvent::AllComplete);
            }
        }
    }

    /// Forgets the complete card and asks for every field again.
    fn wipe(&mut self, now: u64) {
        // The card types zeroize when dropped.
        (self.pan, self.expiry, self.cvv, self.postcode) = (None, None, None, None);
        for s in &mut self.slots {
            s.digits.clear();
            s.valid = false;
            s.error = None;
        }
        self.complete_at = None;
        self.events.push_back(CaptureEvent::CardExpired);
        self.current = None;
        self.advance(now);
    }
}

#[cfg(test)]
mod tests;

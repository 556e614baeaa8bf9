//! Masking card numbers typed into free text (chat transcripts, notes).
//!
//! A card number is a run of 13-19 digits, optionally grouped by single spaces or dashes, that
//! passes Luhn and has a known brand's prefix and length. Everything but its last four digits
//! becomes `*` (separators stay). Phone numbers (`+` in front, or too short), dates and other
//! digit runs are left alone.

use super::{luhn_valid, Brand};

/// The most digits a card number has.
const MAX_PAN: usize = 19;

/// `text` with every card number in it masked down to its last four digits.
///
/// Linear in the text: from each start the scan reads at most `MAX_PAN + 1` digits, and a
/// digit group too long to hold a card is skipped whole (a run of 64 KiB of `"1 "` once took
/// quadratic time here).
pub fn redact_card_numbers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = chars.clone();
    let mut positions = Vec::with_capacity(MAX_PAN + 1);
    let mut digits = Vec::with_capacity(MAX_PAN + 1);
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit()
            || (i > 0 && (chars[i - 1].is_ascii_digit() || chars[i - 1] == '+'))
        {
            i += 1;
            continue;
        }
        // The run from i: digits with single separators between them, as far as a card
        // number could reach (one digit more, to see whether the card ends at a group edge).
        positions.clear();
        let mut j = i;
        while j < chars.len() && positions.len() <= MAX_PAN {
            if chars[j].is_ascii_digit() {
                positions.push(j);
                j += 1;
            } else if (chars[j] == ' ' || chars[j] == '-')
                && j + 1 < chars.len()
                && chars[j + 1].is_ascii_digit()
                && j > i
            {
                j += 1;
            } else {
                break;
            }
        }
        // The longest card number at the start of the run, else move past the first digit group.
        digits.clear();
        digits.extend(positions.iter().map(|&p| chars[p] as u8 - b'0'));
        let found = (13..=MAX_PAN.min(digits.len())).rev().find(|&n| {
            // A card number must end at a group boundary (not in the middle of digits).
            let ends_clean = n == digits.len() || positions[n] != positions[n - 1] + 1;
            ends_clean && is_card_number(&digits[..n])
        });
        i = match found {
            Some(n) => {
                for &p in &positions[..n - 4] {
                    out[p] = '*';
                }
                positions[n - 1] + 1
            }
            None => match positions.windows(2).find(|w| w[1] != w[0] + 1) {
                Some(w) => w[1],
                // One group to the end of what was read: skip the rest of it too.
                None => {
                    while j < chars.len() && chars[j].is_ascii_digit() {
                        j += 1;
                    }
                    j
                }
            },
        };
    }
    out.into_iter().collect()
}

fn is_card_number(d: &[u8]) -> bool {
    luhn_valid(d) && Brand::from_prefix(d).is_some_and(|b| b.pan_lengths().contains(&d.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_card_numbers_in_several_formats() {
        assert_eq!(
            redact_card_numbers("my card is 4242424242424242 ok"),
            "my card is ************4242 ok"
        );
        assert_eq!(
            redact_card_numbers("4242 4242 4242 4242"),
            "**** **** **** 4242"
        );
        assert_eq!(
            redact_card_numbers("5555-5555-5555-4444."),
            "****-****-****-4444."
        );
        assert_eq!(
            redact_card_numbers("amex 3782 822463 10005"),
            "amex **** ****** *0005"
        );
        assert_eq!(
            redact_card_numbers("two: 4242424242424242 and 5555555555554444"),
            "two: ************4242 and ************4444"
        );
        assert_eq!(
            redact_card_numbers("4242 4242 4242 4242 5555 5555 5555 4444"),
            "**** **** **** 4242 **** **** **** 4444"
        );
    }

    #[test]
    fn leaves_other_numbers_alone() {
        for s in [
            "call me on +44 7911 123456 or +1 415 555 2671",
            "order 4242424242424241 failed",
            "born 1990-04-12, paid on 2026-11-22",
            "ref 1234567890123456",
            "tel +4242424242424242",
            "sort code 12-34-56 account 12345678",
        ] {
            assert_eq!(redact_card_numbers(s), s);
        }
    }

    /// The scan as it was before it was made linear: quadratic, but plainly right.
    fn reference(text: &str) -> String {
        let chars: Vec<char> = text.chars().collect();
        let mut out = chars.clone();
        let mut i = 0;
        while i < chars.len() {
            if !chars[i].is_ascii_digit()
                || (i > 0 && (chars[i - 1].is_ascii_digit() || chars[i - 1] == '+'))
            {
                i += 1;
                continue;
            }
            let mut positions = Vec::new();
            let mut j = i;
            while j < chars.len() {
                if chars[j].is_ascii_digit() {
                    positions.push(j);
                    j += 1;
                } else if (chars[j] == ' ' || chars[j] == '-')
                    && j + 1 < chars.len()
                    && chars[j + 1].is_ascii_digit()
                    && j > i
                {
                    j += 1;
                } else {
                    break;
                }
            }
            let digits: Vec<u8> = positions.iter().map(|&p| chars[p] as u8 - b'0').collect();
            let found = (13..=19.min(digits.len())).rev().find(|&n| {
                let ends_clean = n == digits.len() || positions[n] != positions[n - 1] + 1;
                ends_clean && is_card_number(&digits[..n])
            });
            match found {
                Some(n) => {
                    for &p in &positions[..n - 4] {
                        out[p] = '*';
                    }
                    i = positions[n - 1] + 1;
                }
                None => {
                    i = positions
                        .iter()
                        .zip(positions.iter().skip(1))
                        .find(|(a, b)| **b != **a + 1)
                        .map(|(_, b)| *b)
                        .unwrap_or(j);
                }
            }
        }
        out.into_iter().collect()
    }

    /// Text made of card numbers, digit runs, separators and words, in any order.
    fn text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just("4242424242424242".to_string()),
            Just("4242 4242 4242 4242".to_string()),
            Just("3782-822463-10005".to_string()),
            Just("5555555555554444".to_string()),
            "[0-9]{1,25}",
            "[ -]{1,2}",
            Just("+".to_string()),
            "[a-z€]{1,3}",
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    proptest::proptest! {
        #[test]
        fn the_linear_scan_masks_exactly_what_the_plain_one_does(t in text()) {
            let got = redact_card_numbers(&t);
            proptest::prop_assert_eq!(&got, &reference(&t));
            // Only digits change, and only to '*'; the length in characters stays.
            proptest::prop_assert_eq!(got.chars().count(), t.chars().count());
            for (a, b) in t.chars().zip(got.chars()) {
                proptest::prop_assert!(a == b || (a.is_ascii_digit() && b == '*'));
            }
        }
    }

    #[test]
    fn long_digit_groups_are_skipped_whole() {
        let long = format!("{} 4242424242424242", "1".repeat(5000));
        assert_eq!(
            redact_card_numbers(&long),
            format!("{} ************4242", "1".repeat(5000))
        );
        let spaced = "1 ".repeat(3000);
        assert_eq!(redact_card_numbers(&spaced), spaced);
    }
}

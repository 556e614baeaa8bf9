//! Masking card numbers typed into free text (chat transcripts, notes).
//!
//! A card number is a run of 13-19 digits, optionally grouped by single spaces or dashes, that
//! passes Luhn and has a known brand's prefix and length. Everything but its last four digits
//! becomes `*` (separators stay). Phone numbers (`+` in front, or too short), dates and other
//! digit runs are left alone.

use super::{luhn_valid, Brand};

/// `text` with every card number in it masked down to its last four digits.
pub fn redact_card_numbers(text: &str) -> String {
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
        // The run from i: digits with single separators between them.
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
        // The longest card number at the start of the run, else move past the first digit group.
        let digits: Vec<u8> = positions.iter().map(|&p| chars[p] as u8 - b'0').collect();
        let found = (13..=19.min(digits.len())).rev().find(|&n| {
            // A card number must end at a group boundary (not in the middle of digits).
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
}

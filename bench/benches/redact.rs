//! `/globalpci/v1/redact` on adversarial bodies: time per byte must not grow with the body.
//!
//!     cargo bench -p tonegate-bench --bench redact
//!
//! Each shape runs at 4 KiB and 64 KiB; criterion reports bytes per second, so linear time
//! shows as the same throughput at both sizes (the quadratic scan this replaced lost a factor
//! of ~16 going from 4 to 64 KiB on the spaced-digit shape). `old/…` is the redactor before it
//! read Unicode digits, any separators and every 13-19-digit window (for the cost of that).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tonegate_card::redact::redact_card_numbers;

/// The redactor as it was before issue 23 (ASCII digits, single spaces or dashes, cards only at
/// group edges), for comparison.
mod old {
    use tonegate_card::{luhn_valid, Brand};

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
}

/// `unit` repeated to `len` bytes.
fn body(unit: &str, len: usize) -> String {
    unit.repeat(len / unit.len())
}

fn redact(c: &mut Criterion) {
    let shapes = [
        // One digit group per start, each run as long as the body: the old worst case.
        ("spaced_digits", "1 "),
        ("dashed_digits", "7-"),
        // Near-cards: Luhn checks at every start.
        ("near_cards", "4242 4242 4242 4241 "),
        // Real cards back to back.
        ("cards", "4242424242424242 "),
        // One digit group the whole body long.
        ("one_group", "9"),
        // Ordinary chat text.
        ("prose", "the caller said their order number was 88231 and "),
        // Full-width digits and mixed separators (ASCII-only before).
        ("fullwidth", "４２４２４２４２４２４２４２４２ "),
        ("mixed_separators", "4242.4242/4242_4242 "),
    ];
    let mut g = c.benchmark_group("redact");
    for (name, unit) in shapes {
        for kib in [4usize, 64] {
            let text = body(unit, kib * 1024);
            g.throughput(Throughput::Bytes(text.len() as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("new/{name}"), format!("{kib}KiB")),
                &text,
                |b, t| b.iter(|| redact_card_numbers(black_box(t))),
            );
            g.bench_with_input(
                BenchmarkId::new(format!("old/{name}"), format!("{kib}KiB")),
                &text,
                |b, t| b.iter(|| old::redact_card_numbers(black_box(t))),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, redact);
criterion_main!(benches);

//! `/globalpci/v1/redact` on adversarial bodies: time per byte must not grow with the body.
//!
//!     cargo bench -p tonegate-card --bench redact
//!
//! Each shape runs at 4 KiB and 64 KiB; criterion reports bytes per second, so linear time
//! shows as the same throughput at both sizes (the quadratic scan this replaced lost a factor
//! of ~16 going from 4 to 64 KiB on the spaced-digit shape).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tonegate_card::redact::redact_card_numbers;

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
    ];
    let mut g = c.benchmark_group("redact");
    for (name, unit) in shapes {
        for kib in [4usize, 64] {
            let text = body(unit, kib * 1024);
            g.throughput(Throughput::Bytes(text.len() as u64));
            g.bench_with_input(
                BenchmarkId::new(name, format!("{kib}KiB")),
                &text,
                |b, t| b.iter(|| redact_card_numbers(black_box(t))),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, redact);
criterion_main!(benches);

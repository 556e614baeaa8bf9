//! Per-frame cost of the secure path's audio work (masker push and verdict, replacement fill,
//! output guard on frames let through), frame by frame: the worst frames, not only the mean,
//! because a relay serving many calls feels its slowest frame as latency.
//!
//!     cargo bench -p tonegate-bench --bench frame_cost
//!
//! Each signal is run `REPS` times with a fresh masker; each frame's cost is the minimum over
//! the repetitions (what the frame itself costs, with a shared machine's interruptions taken
//! out). Printed per signal: mean, p99 and max ns per 20 ms frame.

use std::hint::black_box;
use std::time::Instant;

use tonegate_dsp::generator::{
    add_background, add_noise, babble, human_keying_at, synthetic_music,
};
use tonegate_dsp::{Masker, MaskingMode, OutputGuard, FRAME_SAMPLES};

// Only `load` here; the payload helper is the other benches'.
#[allow(dead_code)]
mod fixtures;
use fixtures::load;

const REPS: usize = 15;

/// Each frame's cost in ns, the minimum over `REPS` runs; and the frames replaced (by the
/// masker or the guard) with a hash of which, to check that a faster path decides the same.
fn frame_costs(samples: &[i16]) -> (Vec<u64>, u64, u64) {
    let frames: Vec<&[i16]> = samples.chunks_exact(FRAME_SAMPLES).collect();
    let mut best = vec![u64::MAX; frames.len()];
    let mut out = [0i16; FRAME_SAMPLES];
    let (mut masked, mut hash) = (0u64, 0xcbf2_9ce4_8422_2325u64);
    for rep in 0..REPS {
        let mut m = Masker::new(MaskingMode::Beep, 1).unwrap();
        let mut guard = OutputGuard::new();
        for (i, f) in frames.iter().enumerate() {
            let t = Instant::now();
            m.push(black_box(f));
            while let Some(v) = m.poll_verdict() {
                let replaced = v.replace || {
                    out.copy_from_slice(frames[v.frame as usize]);
                    guard.check(&out)
                };
                if replaced {
                    m.fill_replacement(&mut out);
                    if v.replace {
                        guard.skip();
                    }
                }
                if rep == 0 && replaced {
                    masked += 1;
                    hash = (hash ^ v.frame).wrapping_mul(0x100_0000_01b3);
                }
            }
            while m.poll_key().is_some() {}
            let ns = t.elapsed().as_nanos() as u64;
            best[i] = best[i].min(ns);
        }
        // The last frames' verdicts, untimed.
        m.flush();
        while let Some(v) = m.poll_verdict() {
            if rep == 0 && v.replace {
                masked += 1;
                hash = (hash ^ v.frame).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    (best, masked, hash)
}

fn report(name: &str, samples: &[i16]) {
    let (mut c, masked, hash) = frame_costs(samples);
    let mean = c.iter().sum::<u64>() as f64 / c.len() as f64;
    c.sort_unstable();
    let p = |q: f64| c[((c.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<18} frames {:>5} masked {masked:>4} ({hash:016x})  mean {:>6.0} ns  p50 {:>6} ns  p99 {:>6} ns  max {:>6} ns",
        c.len(),
        mean,
        p(0.5),
        p(0.99),
        c[c.len() - 1]
    );
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is not supported (the run is short).
    let speech = load("speech/speech_en.wav");
    let multi = load("speech/speech_multi.wav");
    let card = load("audio/card_entry.wav");
    let n = 8000 * 20;
    let music = synthetic_music(n, -16.0, 7);
    let voices = babble(n, 4, -16.0, 11);
    // Keys (tones at -10 dBm0) 6 dB under music, and in noise as loud as they are.
    let card_keys = "4111111111111111#1228#123#";
    let mut keys_music = human_keying_at(card_keys, 3, (-10.0, -10.0)).samples;
    let music_bg = synthetic_music(keys_music.len(), -4.0, 5);
    add_background(&mut keys_music, &music_bg);
    let mut keys_noise = human_keying_at(card_keys, 4, (-10.0, -10.0)).samples;
    add_noise(&mut keys_noise, 0.0, 9);
    for (name, s) in [
        ("speech_en", &speech),
        ("speech_multi", &multi),
        ("card_entry", &card),
        ("music", &music),
        ("babble", &voices),
        ("keys_under_music", &keys_music),
        ("keys_in_noise_0db", &keys_noise),
    ] {
        report(name, s);
    }
}

use super::*;
use crate::generator::{append_key, append_silence, ToneSpec};
use crate::DtmfDetector;
use crate::DtmfKey;

/// 300 ms of a steady note at `f0` Hz: harmonics 1..=`top` at `amp(h)` times the
/// fundamental's amplitude, the fundamental at `dbm0`.
fn note(f0: f32, dbm0: f32, top: u32, amp: impl Fn(f32) -> f32) -> Vec<i16> {
    let a = crate::level::amplitude(dbm0);
    (0..2400)
        .map(|i| {
            let t = i as f32 / 8000.0;
            (1..=top)
                .map(|h| {
                    let h = h as f32;
                    a * amp(h) * (core::f32::consts::TAU * f0 * h * t).sin()
                })
                .sum::<f32>() as i16
        })
        .collect()
}

/// Runs `samples` through a detector's bank into a presence test.
fn presence_of(samples: &[i16]) -> TonePresence {
    let mut det = DtmfDetector::new();
    let mut p = TonePresence::new();
    for chunk in samples.chunks(MAX_CHUNK) {
        p.push_samples(chunk);
        det.process_observed(chunk, |t| p.push(t));
    }
    p.push_samples(&[0; SUB_BLOCK]);
    det.flush_observed(|t| p.push(t));
    p.flush();
    p
}

#[test]
fn marks_a_key_far_outside_what_capture_accepts() {
    // -50 dBm0, 5 % off, 20 dB twist: capture rejects every one of these.
    for spec in [
        ToneSpec {
            level_dbm0: -50.0,
            ..ToneSpec::default()
        },
        ToneSpec {
            freq_offset: (0.05, -0.05),
            ..ToneSpec::default()
        },
        ToneSpec {
            twist_db: -20.0,
            ..ToneSpec::default()
        },
        ToneSpec {
            level_dbm0: -28.0,
            twist_db: 20.0,
            ..ToneSpec::default()
        },
    ] {
        let mut v = Vec::new();
        append_silence(&mut v, 100);
        let r = append_key(&mut v, DtmfKey::D8, &spec);
        append_silence(&mut v, 100);
        let p = presence_of(&v);
        assert!(
            p.overlaps(r.start as u64, r.start as u64 + 1, 0),
            "{spec:?}: onset"
        );
        assert!(
            p.overlaps(r.end as u64 - 1, r.end as u64, 0),
            "{spec:?}: end"
        );
        assert!(!p.overlaps(0, 400, 0), "{spec:?}: silence before");
    }
}

#[test]
fn a_note_with_its_octave_is_not_a_key() {
    // 698.5 Hz (F5) with its second harmonic at 1397 Hz, 6 dB down: within 5 % of key 2's
    // pair, but harmonics of one pitch. Marked only when it is clean enough to read as a key.
    let v = note(698.5, -12.0, 4, |h| 1.0 / h);
    // The third and fourth harmonics hold more than the weak line: only the shaped tiers
    // could take it, and the harmonic test refuses them.
    assert_eq!(presence_of(&v).windows_marked(), 0);
}

#[test]
fn a_low_voice_is_not_a_key() {
    // A voice at 130 Hz gliding 3 % over 300 ms, formants at its 6th and 10th harmonics
    // (near key 4's pair, 6:10 is 0.3 % off its ratio): harmonics 130 Hz apart barely part
    // in 20 ms, so the run's harmonic verdict needs the 40 ms span.
    let n = 2400;
    let mut phase = 0.0f32;
    let v: Vec<i16> = (0..n)
        .map(|i| {
            let f0 = 130.3 * (1.0 + 0.03 * i as f32 / n as f32);
            phase += core::f32::consts::TAU * f0 / 8000.0;
            let a = crate::level::amplitude(-14.0);
            let formant = |h: f32| {
                let near = |c: f32, w: f32| (-((h * f0 - c) / w).powi(2)).exp();
                0.5 / h + near(782.0, 160.0) + 0.8 * near(1303.0, 200.0)
            };
            (1..=24)
                .map(|h| a * formant(h as f32) * (h as f32 * phase).sin())
                .sum::<f32>() as i16
        })
        .collect();
    assert_eq!(presence_of(&v).windows_marked(), 0);
}

#[test]
fn a_high_note_with_its_octave_is_not_a_key() {
    // F#5 (740 Hz) and its harmonics within the telephone band: its octave (1480 Hz) pairs
    // with it near key 6's frequencies, and only the 3rd and 4th harmonics are left above
    // them to show the series (a bright timbre: the pair alone is not clean enough to be
    // marked without the harmonic test). Held still for 300 ms, as a note is.
    let v = note(740.0, -12.0, 4, |h| h.powf(-0.6));
    assert_eq!(presence_of(&v).windows_marked(), 0);
}

#[test]
fn two_strongest_orders_indices() {
    assert_eq!(two_strongest(&[1.0, 4.0, 3.0, 2.0]), (1, 2));
    assert_eq!(two_strongest(&[5.0, 1.0, 0.0, 6.0]), (3, 0));
}

#[test]
fn a_key_under_a_note_with_its_octave_in_other_filters_is_marked() {
    // Key C (852 + 1633 Hz) 70 ms long, starting 60 ms into a sustained G5 (784 Hz) whose
    // fundamental, as loud as the key's row tone, sits in the 770 Hz row filter and whose
    // octave (1568 Hz) lies within the 1633 Hz column filter's reach: neither key line stands
    // above its group by a decoder's relative peak, yet multimon-ng reads the key. The note's
    // lines belong to a series of their own (784, 1568, 2352, 3136 Hz) that the key's lines
    // are not on.
    let mut v = note(784.0, -20.0, 4, |h| 1.0 / h);
    let mut key = Vec::new();
    append_silence(&mut key, 60);
    let r = append_key(
        &mut key,
        DtmfKey::C,
        &ToneSpec {
            level_dbm0: -20.0,
            duration_ms: 70,
            ..ToneSpec::default()
        },
    );
    for (s, k) in v.iter_mut().zip(&key) {
        *s = s.saturating_add(*k);
    }
    let p = presence_of(&v);
    let (start, end) = (r.start as u64, r.end as u64);
    assert!(p.overlaps(start + 80, start + 120, 0), "the key's onset");
    assert!(p.overlaps(end - 120, end - 80, 0), "the key's end");
}

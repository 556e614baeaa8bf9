//! The masker: no frame that carries any part of a key may pass, at any look-ahead from one
//! frame up; replacement audio never depends on the key.

use tonegate_dsp::generator::{add_noise, append_key, append_silence, human_keying, KeyedSignal};
use tonegate_dsp::{
    mask_signal, DtmfDetector, DtmfKey, Masker, MaskerError, MaskingMode, ToneSpec, FRAME_SAMPLES,
};

const MODES: [MaskingMode; 3] = [
    MaskingMode::Silence,
    MaskingMode::ComfortNoise { level_dbm0: -50.0 },
    MaskingMode::Beep,
];

/// Frame indices that hold at least one sample of a key's tone.
fn frames_with_tone(s: &KeyedSignal) -> Vec<usize> {
    let mut frames: Vec<usize> = s
        .keys
        .iter()
        .flat_map(|k| (k.range.start / FRAME_SAMPLES)..=((k.range.end - 1) / FRAME_SAMPLES))
        .collect();
    frames.dedup();
    frames
}

fn verdicts(samples: &[i16], lookahead: usize) -> Vec<bool> {
    verdicts_in(samples, lookahead, FRAME_SAMPLES)
}

/// Verdicts for frames of `frame` samples.
fn verdicts_in(samples: &[i16], lookahead: usize, frame: usize) -> Vec<bool> {
    let mut m = Masker::new(MaskingMode::Silence, lookahead).unwrap();
    let mut v: Vec<(u64, bool)> = Vec::new();
    for f in samples.chunks(frame) {
        m.push(f);
        v.extend(core::iter::from_fn(|| m.poll_verdict()).map(|x| (x.frame, x.replace)));
    }
    m.flush();
    v.extend(core::iter::from_fn(|| m.poll_verdict()).map(|x| (x.frame, x.replace)));
    // Verdicts come once per frame, in order.
    for (i, (f, _)) in v.iter().enumerate() {
        assert_eq!(*f, i as u64);
    }
    assert_eq!(v.len(), samples.len().div_ceil(frame));
    v.into_iter().map(|(_, r)| r).collect()
}

#[test]
fn every_frame_with_any_part_of_a_key_is_replaced_at_lookahead_one_and_up() {
    for lookahead in 1..=3 {
        let seeds = if lookahead == 1 { 1..=60 } else { 1..=12 };
        for seed in seeds {
            let s = human_keying("4929123456781234#0931#987#", seed, Some(25.0));
            let replace = verdicts(&s.samples, lookahead);
            for f in frames_with_tone(&s) {
                assert!(
                    replace[f],
                    "lookahead {lookahead} seed {seed}: frame {f} leaked"
                );
            }
        }
    }
}

#[test]
fn keys_at_the_edges_of_the_operating_range_are_covered_too() {
    // Quiet keys, strong twist, 40 ms tones, keys starting at every offset within a frame.
    for (level, twist, ms) in [
        (-26.0, 0.0, 80),
        (-6.0, -8.0, 60),
        (-12.0, 4.0, 60),
        (-10.0, 0.0, 40),
    ] {
        for offset in (0..FRAME_SAMPLES).step_by(20) {
            let mut s = KeyedSignal::default();
            s.samples.resize(1600 + offset, 0);
            for c in "159#".chars() {
                let key = DtmfKey::from_char(c).unwrap();
                let spec = ToneSpec {
                    level_dbm0: level,
                    twist_db: twist,
                    duration_ms: ms,
                    ..ToneSpec::default()
                };
                let range = append_key(&mut s.samples, key, &spec);
                s.keys
                    .push(tonegate_dsp::generator::PlacedKey { key, range });
                append_silence(&mut s.samples, 77);
            }
            let replace = verdicts(&s.samples, 1);
            for f in frames_with_tone(&s) {
                assert!(
                    replace[f],
                    "level {level} twist {twist} {ms} ms offset {offset}: frame {f}"
                );
            }
        }
    }
}

#[test]
fn masked_audio_holds_no_key_and_the_masker_still_reports_every_key() {
    for mode in MODES {
        let s = human_keying("371449635398431#0727#1234#", 5, Some(25.0));
        let (out, report) = mask_signal(&s.samples, FRAME_SAMPLES, mode, 1).unwrap();
        assert_eq!(out.len(), s.samples.len());
        let keys: String = report.keys.iter().map(|k| k.key.as_char()).collect();
        assert_eq!(keys, s.key_string());
        let mut d = DtmfDetector::new();
        d.process(&out);
        d.flush();
        assert_eq!(d.poll_key(), None, "{mode:?}");
        assert!(report.masked > 0 && report.masked < report.frames);
    }
}

#[test]
fn quiet_line_and_noise_are_left_alone() {
    let mut v = vec![0i16; 8000 * 10];
    add_noise(&mut v, 10.0, 1);
    let (out, report) = mask_signal(&v, FRAME_SAMPLES, MaskingMode::Silence, 1).unwrap();
    assert_eq!(report.masked, 0);
    assert_eq!(out, v);
}

#[test]
fn the_replacement_is_the_same_whatever_the_key() {
    // Same timing, different keys: masked outputs must be identical where masked.
    let build = |key: DtmfKey| {
        let mut v = Vec::new();
        append_silence(&mut v, 200);
        append_key(&mut v, key, &ToneSpec::default());
        append_silence(&mut v, 200);
        v
    };
    for mode in MODES {
        let a = mask_signal(&build(DtmfKey::D1), FRAME_SAMPLES, mode, 1).unwrap();
        let b = mask_signal(&build(DtmfKey::D), FRAME_SAMPLES, mode, 1).unwrap();
        assert_eq!(a.1.masked, b.1.masked);
        assert_eq!(a.0, b.0, "{mode:?}");
    }
}

#[test]
fn modes_sound_as_documented() {
    let mut m = Masker::new(MaskingMode::Silence, 1).unwrap();
    let mut f = [1i16; FRAME_SAMPLES];
    m.fill_replacement(&mut f);
    assert!(f.iter().all(|&x| x == 0));

    let mut m = Masker::new(MaskingMode::ComfortNoise { level_dbm0: -40.0 }, 1).unwrap();
    let mut buf = vec![0i16; 8000];
    m.fill_replacement(&mut buf);
    let power = buf.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / buf.len() as f64;
    let want = tonegate_dsp::level::sine_power(-40.0) as f64;
    assert!(
        (10.0 * (power / want).log10()).abs() < 1.0,
        "noise power {power} vs {want}"
    );

    let mut m = Masker::new(MaskingMode::Beep, 1).unwrap();
    m.fill_replacement(&mut buf);
    // A single 1 kHz tone: period of eight samples, never a DTMF key.
    assert!(buf.windows(9).all(|w| w[0] == w[8]));
    let mut d = DtmfDetector::new();
    d.process(&buf);
    d.flush();
    assert_eq!(d.poll_key(), None);
}

#[test]
fn lookahead_is_bounded() {
    assert_eq!(
        Masker::new(MaskingMode::Silence, 4).unwrap_err(),
        MaskerError::LookaheadTooLong(4)
    );
    assert_eq!(Masker::new(MaskingMode::Silence, 0).unwrap().lookahead(), 0);
}

#[test]
fn lookahead_zero_answers_immediately() {
    let mut m = Masker::new(MaskingMode::Silence, 0).unwrap();
    m.push(&[0; FRAME_SAMPLES]);
    assert_eq!(m.poll_verdict().map(|v| v.frame), Some(0));
    let mut m = Masker::new(MaskingMode::Silence, 2).unwrap();
    m.push(&[0; FRAME_SAMPLES]);
    assert_eq!(m.poll_verdict(), None);
    m.push(&[0; FRAME_SAMPLES]);
    assert_eq!(m.poll_verdict(), None);
    m.push(&[0; FRAME_SAMPLES]);
    assert_eq!(m.poll_verdict().map(|v| v.frame), Some(0));
    assert_eq!(m.poll_verdict(), None);
}

#[test]
fn lookahead_is_time_whatever_the_packet_size() {
    // One 20 ms unit of look-ahead: a 10 ms frame waits for two more, a 60 ms frame for one.
    let mut m = Masker::new(MaskingMode::Silence, 1).unwrap();
    m.push(&[0; 80]);
    m.push(&[0; 80]);
    assert_eq!(m.poll_verdict(), None);
    m.push(&[0; 80]);
    assert_eq!(m.poll_verdict().map(|v| v.frame), Some(0));
    assert_eq!(m.poll_verdict(), None);
    let mut m = Masker::new(MaskingMode::Silence, 1).unwrap();
    m.push(&[0; 480]);
    assert_eq!(m.poll_verdict(), None);
    m.push(&[0; 80]);
    assert_eq!(m.poll_verdict(), None);
    m.push(&[0; 80]);
    assert_eq!(m.poll_verdict().map(|v| v.frame), Some(0));
}

#[test]
fn every_frame_with_any_part_of_a_key_is_replaced_whatever_the_packet_size() {
    // 10, 20, 30 and 60 ms packets, and a mix of them.
    for frame in [80, 160, 240, 480] {
        for seed in 1..=12 {
            let s = human_keying("4929123456781234#0931#987#", seed, Some(25.0));
            let replace = verdicts_in(&s.samples, 1, frame);
            for k in &s.keys {
                let mut frames = (k.range.start / frame)..=((k.range.end - 1) / frame);
                let leaked = frames.find(|&f| !replace[f]);
                assert_eq!(
                    leaked, None,
                    "{frame}-sample frames, seed {seed}: frame leaked"
                );
            }
        }
    }
    let s = human_keying("4929123456781234#0931#987#", 7, Some(25.0));
    let mut m = Masker::new(MaskingMode::Silence, 1).unwrap();
    let sizes = [80usize, 160, 240, 480, 160, 80];
    let (mut pos, mut bounds, mut replace) = (0usize, Vec::new(), Vec::new());
    for &n in sizes.iter().cycle() {
        if pos >= s.samples.len() {
            break;
        }
        let end = (pos + n).min(s.samples.len());
        m.push(&s.samples[pos..end]);
        bounds.push(pos..end);
        pos = end;
        replace.extend(core::iter::from_fn(|| m.poll_verdict()).map(|v| v.replace));
    }
    m.flush();
    replace.extend(core::iter::from_fn(|| m.poll_verdict()).map(|v| v.replace));
    assert_eq!(replace.len(), bounds.len());
    for k in &s.keys {
        for (b, r) in bounds.iter().zip(&replace) {
            if b.start < k.range.end && k.range.start < b.end {
                assert!(
                    *r,
                    "mixed sizes: frame {b:?} holds part of a key and leaked"
                );
            }
        }
    }
}

#[test]
fn tiny_frames_beyond_the_pending_limit_are_replaced_unjudged() {
    // 1 ms frames with a 60 ms look-ahead: more are waiting than the masker keeps.
    let mut m = Masker::new(MaskingMode::Silence, 3).unwrap();
    for _ in 0..100 {
        m.push(&[0; 8]);
    }
    let v: Vec<_> = core::iter::from_fn(|| m.poll_verdict()).collect();
    assert!(!v.is_empty() && v.iter().all(|x| x.replace));
    assert_eq!(m.forced(), v.len() as u64);
    for (i, x) in v.iter().enumerate() {
        assert_eq!(x.frame, i as u64);
    }
}

#[test]
fn a_single_sustained_tone_near_a_dtmf_frequency_is_not_masked() {
    // One line is not a key, however close to a DTMF frequency and however loud: no decoder
    // reads it, and the agent should hear it.
    use tonegate_dsp::key::{COL_HZ, ROW_HZ};
    for &f in ROW_HZ.iter().chain(&COL_HZ) {
        for offset in [-0.02f32, -0.01, 0.0, 0.01, 0.02] {
            for level in [-3.0, -10.0, -30.0] {
                let a = tonegate_dsp::level::amplitude(level);
                let w = std::f32::consts::TAU * f * (1.0 + offset) / 8000.0;
                let v: Vec<i16> = (0..16000)
                    .map(|i| (a * (w * i as f32).sin()) as i16)
                    .collect();
                let (out, r) = mask_signal(&v, FRAME_SAMPLES, MaskingMode::Silence, 1).unwrap();
                assert_eq!(
                    (r.masked, out == v),
                    (0, true),
                    "{f} Hz {offset:+} at {level} dBm0"
                );
            }
        }
    }
}

//! DTMF tone generator: keys at a chosen level, twist, frequency offset and duration.
//!
//! Used by tests, fixtures, the demo's simulated caller and prompts. Not on the masking path.

use crate::key::DtmfKey;
use crate::level;
use crate::noise::NoiseSource;
use crate::SAMPLE_RATE;

/// How a key is to sound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneSpec {
    /// Level of the low-group tone, dBm0.
    pub level_dbm0: f32,
    /// High-group level minus low-group level, dB: negative is normal twist, positive reverse.
    pub twist_db: f32,
    /// Relative frequency offsets of the low and high tone (0.015 = +1.5 %).
    pub freq_offset: (f32, f32),
    /// Starting phases of the low and high tone, radians.
    pub phase: (f32, f32),
    /// Tone length in milliseconds.
    pub duration_ms: u32,
}

impl Default for ToneSpec {
    /// -10 dBm0 per tone, no twist, exact frequencies, 80 ms.
    fn default() -> Self {
        ToneSpec {
            level_dbm0: -10.0,
            twist_db: 0.0,
            freq_offset: (0.0, 0.0),
            phase: (0.0, 0.0),
            duration_ms: 80,
        }
    }
}

/// Generates one key's dual tone, in as many calls to [`fill`](Self::fill) as the caller likes.
#[derive(Debug, Clone)]
pub struct DtmfGenerator {
    step: (f64, f64),
    phase: (f64, f64),
    amp: (f64, f64),
    remaining: usize,
}

impl DtmfGenerator {
    /// A generator for `key` sounding as `spec` says.
    pub fn new(key: DtmfKey, spec: &ToneSpec) -> Self {
        let (fl, fh) = key.frequencies();
        let tau = 2.0 * core::f64::consts::PI;
        let rate = SAMPLE_RATE as f64;
        DtmfGenerator {
            step: (
                tau * fl as f64 * (1.0 + spec.freq_offset.0 as f64) / rate,
                tau * fh as f64 * (1.0 + spec.freq_offset.1 as f64) / rate,
            ),
            phase: (spec.phase.0 as f64, spec.phase.1 as f64),
            amp: (
                level::amplitude(spec.level_dbm0) as f64,
                level::amplitude(spec.level_dbm0 + spec.twist_db) as f64,
            ),
            remaining: samples_for_ms(spec.duration_ms),
        }
    }

    /// Writes the next samples into `out`; returns how many (fewer once the tone ends).
    pub fn fill(&mut self, out: &mut [i16]) -> usize {
        let n = out.len().min(self.remaining);
        for o in &mut out[..n] {
            let v = self.amp.0 * self.phase.0.sin() + self.amp.1 * self.phase.1.sin();
            *o = v.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16;
            self.phase.0 += self.step.0;
            self.phase.1 += self.step.1;
        }
        self.remaining -= n;
        n
    }

    /// Samples still to come.
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}

/// Number of samples in `ms` milliseconds at 8 kHz.
pub fn samples_for_ms(ms: u32) -> usize {
    ms as usize * SAMPLE_RATE as usize / 1000
}

/// Appends `key` sounding as `spec` says to `out`; returns the tone's sample range in `out`.
pub fn append_key(out: &mut Vec<i16>, key: DtmfKey, spec: &ToneSpec) -> core::ops::Range<usize> {
    let start = out.len();
    let mut g = DtmfGenerator::new(key, spec);
    out.resize(start + g.remaining(), 0);
    g.fill(&mut out[start..]);
    start..out.len()
}

/// Appends `ms` milliseconds of silence to `out`.
pub fn append_silence(out: &mut Vec<i16>, ms: u32) {
    out.resize(out.len() + samples_for_ms(ms), 0);
}

/// A key placed in a generated signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedKey {
    /// The key.
    pub key: DtmfKey,
    /// Sample range of its tone.
    pub range: core::ops::Range<usize>,
}

/// A generated signal and the keys in it.
#[derive(Debug, Clone, Default)]
pub struct KeyedSignal {
    /// 8 kHz samples.
    pub samples: Vec<i16>,
    /// Keys in order.
    pub keys: Vec<PlacedKey>,
}

impl KeyedSignal {
    /// The keys as a string, e.g. `"4242#"`.
    pub fn key_string(&self) -> String {
        self.keys.iter().map(|k| k.key.as_char()).collect()
    }
}

/// A caller keying `keys` (`0-9 * # A-D`; other characters are skipped) at human pace, the way
/// the battery's card-entry cases do: 500 ms lead-in; tones of 60-150 ms at -20…-4 dBm0 with
/// up to ±3 dB twist and ±1 % frequency error; 50-300 ms between keys and 0.8-2 s after `#`;
/// white noise `snr_db` below a -10 dBm0 key (`None`: a clean line). Deterministic per `seed`.
pub fn human_keying(keys: &str, seed: u32, snr_db: Option<f32>) -> KeyedSignal {
    let mut out = human_keying_at(keys, seed, (-20.0, -4.0));
    if let Some(snr) = snr_db {
        add_noise(&mut out.samples, snr, seed ^ 0xA5A5_A5A5);
    }
    out
}

/// Keys `keys` one after another, each sounding as `spec` says (phases varied by `seed`), with
/// `gap_ms` of silence before, between and after them.
pub fn key_sequence(keys: &str, spec: &ToneSpec, gap_ms: u32, seed: u32) -> KeyedSignal {
    let mut rng = NoiseSource::new(seed);
    let mut out = KeyedSignal::default();
    append_silence(&mut out.samples, gap_ms);
    for key in keys.chars().filter_map(DtmfKey::from_char) {
        let spec = ToneSpec {
            phase: (
                rng.range(0.0, core::f32::consts::TAU),
                rng.range(0.0, core::f32::consts::TAU),
            ),
            ..*spec
        };
        let range = append_key(&mut out.samples, key, &spec);
        out.keys.push(PlacedKey { key, range });
        append_silence(&mut out.samples, gap_ms);
    }
    out
}

/// A caller keying `keys` on a bad line, as the leak battery's card cases do: one base level
/// in -46…-28 dBm0 (±3 dB per key), twist -9…+5 dB, each tone up to ±3 % off, tones of
/// 45-140 ms with 45-250 ms between keys, and white noise 3-15 dB below the base level.
/// Deterministic per `seed`.
pub fn bad_line_keying(keys: &str, seed: u32) -> KeyedSignal {
    let mut rng = NoiseSource::new(seed);
    let base = rng.range(-46.0, -28.0);
    let mut out = KeyedSignal::default();
    append_silence(&mut out.samples, 300);
    for key in keys.chars().filter_map(DtmfKey::from_char) {
        let spec = ToneSpec {
            level_dbm0: base + rng.range(-3.0, 3.0),
            twist_db: rng.range(-9.0, 5.0),
            freq_offset: (rng.range(-0.03, 0.03), rng.range(-0.03, 0.03)),
            phase: (
                rng.range(0.0, core::f32::consts::TAU),
                rng.range(0.0, core::f32::consts::TAU),
            ),
            duration_ms: rng.range(45.0, 140.0) as u32,
        };
        let range = append_key(&mut out.samples, key, &spec);
        out.keys.push(PlacedKey { key, range });
        let gap = if key == DtmfKey::Hash {
            rng.range(300.0, 800.0)
        } else {
            rng.range(45.0, 250.0)
        };
        append_silence(&mut out.samples, gap as u32);
    }
    let snr = rng.range(3.0, 15.0);
    add_noise_below(&mut out.samples, base, snr, seed ^ 0x5A5A_5A5A);
    out
}

/// Adds white Gaussian noise whose total power is `snr_db` below one tone at `tone_dbm0`.
pub fn add_noise_below(samples: &mut [i16], tone_dbm0: f32, snr_db: f32, seed: u32) {
    let sigma = (level::sine_power(tone_dbm0) / 10f32.powf(snr_db / 10.0)).sqrt();
    let mut rng = NoiseSource::new(seed);
    for s in samples {
        let v = *s as f32 + sigma * rng.gaussian();
        *s = v.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16;
    }
}

/// A caller keying `keys` at human pace like [`human_keying`], but at levels drawn from
/// `level_dbm0` (low, high) and on a clean line; add noise with [`add_noise_below`].
pub fn human_keying_at(keys: &str, seed: u32, level_dbm0: (f32, f32)) -> KeyedSignal {
    let mut rng = NoiseSource::new(seed);
    let mut out = KeyedSignal::default();
    append_silence(&mut out.samples, 500);
    for c in keys.chars() {
        let Some(key) = DtmfKey::from_char(c) else {
            continue;
        };
        let spec = ToneSpec {
            level_dbm0: rng.range(level_dbm0.0, level_dbm0.1),
            twist_db: rng.range(-3.0, 3.0),
            freq_offset: (rng.range(-0.01, 0.01), rng.range(-0.01, 0.01)),
            phase: (
                rng.range(0.0, core::f32::consts::TAU),
                rng.range(0.0, core::f32::consts::TAU),
            ),
            duration_ms: rng.range(60.0, 150.0) as u32,
        };
        let range = append_key(&mut out.samples, key, &spec);
        out.keys.push(PlacedKey { key, range });
        let gap = if key == DtmfKey::Hash {
            rng.range(800.0, 2000.0)
        } else {
            rng.range(50.0, 300.0)
        };
        append_silence(&mut out.samples, gap as u32);
    }
    out
}

/// Adds white Gaussian noise `snr_db` below a -10 dBm0 key (two tones at -10 dBm0 each).
pub fn add_noise(samples: &mut [i16], snr_db: f32, seed: u32) {
    let key_power = 2.0 * level::sine_power(-10.0);
    let sigma = (key_power / 10f32.powf(snr_db / 10.0)).sqrt();
    let mut rng = NoiseSource::new(seed);
    for s in samples {
        let v = *s as f32 + sigma * rng.gaussian();
        *s = v.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16;
    }
}

/// Scales `x` so its power over the parts louder than 1 % of its peak (pauses left out, as
/// for speech levels) is that of a sine at `level_dbm0`.
pub fn scale_active_to(x: &mut [f32], level_dbm0: f32) {
    let peak = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let (mut sum, mut n) = (0.0f64, 0usize);
    for v in x.iter().filter(|v| v.abs() > 0.01 * peak) {
        sum += (*v as f64).powi(2);
        n += 1;
    }
    if n == 0 {
        return;
    }
    let gain = (level::sine_power(level_dbm0) as f64 / (sum / n as f64)).sqrt() as f32;
    for v in x.iter_mut() {
        *v *= gain;
    }
}

/// A two-pole resonator (formant) at `f` Hz with bandwidth `bw` Hz, unity gain at its peak.
#[derive(Debug, Clone, Copy, Default)]
struct Resonator {
    y1: f32,
    y2: f32,
}

impl Resonator {
    fn step(&mut self, x: f32, f: f32, bw: f32) -> f32 {
        let rate = SAMPLE_RATE as f32;
        let r = (-core::f32::consts::PI * bw / rate).exp();
        let c = 2.0 * r * (core::f32::consts::TAU * f / rate).cos();
        let y = (1.0 - r) * x + c * self.y1 - r * r * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// Vowel formants F1-F3 in Hz (adult averages, a few vowels).
const VOWELS: [[f32; 3]; 8] = [
    [730.0, 1090.0, 2440.0],
    [270.0, 2290.0, 3010.0],
    [530.0, 1840.0, 2480.0],
    [660.0, 1720.0, 2410.0],
    [570.0, 840.0, 2410.0],
    [300.0, 870.0, 2240.0],
    [440.0, 1020.0, 2240.0],
    [490.0, 1350.0, 1690.0],
];

/// Multi-voice babble: `voices` synthetic talkers, each a glottal pulse train at its own pitch
/// (85-250 Hz, with intonation glides and jitter) through three moving formants, in syllables
/// of 80-300 ms with fricatives and pauses between them; scaled so its active parts sit at
/// `level_dbm0`. Deterministic per `seed`.
pub fn babble(samples: usize, voices: usize, level_dbm0: f32, seed: u32) -> Vec<i16> {
    let mut mix = vec![0.0f32; samples];
    for v in 0..voices {
        let mut rng =
            NoiseSource::new(seed.wrapping_mul(7919).wrapping_add(v as u32 * 104_729 + 1));
        let base = rng.range(85.0, 250.0);
        let mut res = [Resonator::default(); 3];
        let (mut phase, mut i) = (0.0f32, 0usize);
        let mut to = VOWELS[(rng.next_u32() % VOWELS.len() as u32) as usize];
        let mut glottal = 0.0f32;
        while i < samples {
            // A pause, a fricative, then a voiced syllable gliding between two vowels.
            i += (rng.range(0.0, 0.35) * rng.range(0.0, 1.0) * SAMPLE_RATE as f32) as usize;
            let fric = (rng.range(0.0, 0.08) * SAMPLE_RATE as f32) as usize;
            let gain = rng.range(0.5, 1.5);
            for x in mix.iter_mut().skip(i).take(fric) {
                *x += 0.15 * gain * rng.gaussian();
            }
            i += fric;
            let len = (rng.range(0.08, 0.3) * SAMPLE_RATE as f32) as usize;
            let from = to;
            to = VOWELS[(rng.next_u32() % VOWELS.len() as u32) as usize];
            let (p0, p1) = (base * rng.range(0.85, 1.2), base * rng.range(0.8, 1.15));
            for j in 0..len.min(samples.saturating_sub(i)) {
                let t = j as f32 / len as f32;
                let f0 = (p0 + (p1 - p0) * t) * (1.0 + 0.01 * rng.gaussian());
                phase += f0 / SAMPLE_RATE as f32;
                // A pulse per period, smoothed by a one-pole glottal low-pass.
                let pulse = if phase >= 1.0 {
                    phase -= 1.0;
                    1.0
                } else {
                    0.0
                };
                glottal = 0.7 * glottal + pulse;
                let env = (core::f32::consts::PI * t).sin();
                let mut y = 0.0;
                for (k, r) in res.iter_mut().enumerate() {
                    let f = from[k] + (to[k] - from[k]) * t;
                    y += r.step(glottal, f, 60.0 + 40.0 * k as f32) / (1 + k) as f32;
                }
                mix[i + j] += gain * env * y;
            }
            i += len;
        }
    }
    to_pcm(mix, level_dbm0)
}

/// Synthetic music: a bass line, a three-note chord and a melody with vibrato, every note a
/// harmonic series (its own timbre) with attack and decay, notes of 120-700 ms from an
/// equal-tempered scale, and noise hits for percussion; scaled so its active parts sit at
/// `level_dbm0`. Deterministic per `seed`.
pub fn synthetic_music(samples: usize, level_dbm0: f32, seed: u32) -> Vec<i16> {
    let mut mix = vec![0.0f32; samples];
    let rate = SAMPLE_RATE as f32;
    // (lowest MIDI note, span, harmonics' roll-off, vibrato depth)
    let parts: [(u32, u32, f32, f32); 5] = [
        (36, 17, 1.0, 0.0),
        (55, 17, 1.5, 0.0),
        (58, 17, 1.5, 0.0),
        (62, 17, 1.5, 0.0),
        (67, 22, 1.2, 0.006),
    ];
    for (p, &(low, span, rolloff, vibrato)) in parts.iter().enumerate() {
        let mut rng = NoiseSource::new(seed.wrapping_mul(31).wrapping_add(p as u32 * 7717 + 3));
        let mut i = 0usize;
        while i < samples {
            let len = (rng.range(0.12, 0.7) * rate) as usize;
            let note = low + rng.next_u32() % span;
            let f0 = 440.0 * 2f32.powf((note as f32 - 69.0) / 12.0);
            let amp = rng.range(0.4, 1.0);
            let decay = rng.range(2.0, 8.0);
            let odd_only = rng.uniform() > 0.6;
            let phase0 = rng.range(0.0, core::f32::consts::TAU);
            for j in 0..len.min(samples - i) {
                let t = j as f32 / rate;
                let env = (t / 0.01).min(1.0) * (-decay * t).exp();
                let vib = 1.0 + vibrato * (core::f32::consts::TAU * 5.5 * t).sin();
                let mut y = 0.0;
                let mut h = 1;
                while h as f32 * f0 < 3600.0 {
                    if !odd_only || h % 2 == 1 {
                        let ph =
                            core::f32::consts::TAU * h as f32 * f0 * vib * t + phase0 * h as f32;
                        y += ph.sin() / (h as f32).powf(rolloff);
                    }
                    h += 1;
                }
                mix[i + j] += amp * env * y;
            }
            i += len;
        }
    }
    // Percussion: short noise bursts on a beat.
    let mut rng = NoiseSource::new(seed ^ 0xD5_D5);
    let beat = (rng.range(0.25, 0.5) * rate) as usize;
    for start in (0..samples).step_by(beat) {
        if rng.uniform() > 0.0 {
            for (j, x) in mix.iter_mut().skip(start).take(400).enumerate() {
                *x += 0.8 * (-(j as f32) / 80.0).exp() * rng.gaussian();
            }
        }
    }
    to_pcm(mix, level_dbm0)
}

fn to_pcm(mut x: Vec<f32>, level_dbm0: f32) -> Vec<i16> {
    scale_active_to(&mut x, level_dbm0);
    x.iter()
        .map(|v| v.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16)
        .collect()
}

/// Adds `background` under `signal` (sample by sample, saturating; the background repeats if
/// it is shorter).
pub fn add_background(signal: &mut [i16], background: &[i16]) {
    for (i, s) in signal.iter_mut().enumerate() {
        let b = background[i % background.len()];
        *s = (*s as i32 + b as i32).clamp(i16::MIN as i32, i16::MAX as i32) as i16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_and_length_are_as_asked() {
        let spec = ToneSpec {
            level_dbm0: -20.0,
            twist_db: 0.0,
            duration_ms: 100,
            ..ToneSpec::default()
        };
        let mut v = Vec::new();
        let r = append_key(&mut v, DtmfKey::D5, &spec);
        assert_eq!(r, 0..800);
        let power: f64 = v.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / v.len() as f64;
        // Two tones, each at -20 dBm0: total 3 dB above one.
        let want = 2.0 * level::sine_power(-20.0) as f64;
        assert!((power / want - 1.0).abs() < 0.02, "{power} vs {want}");
    }

    #[test]
    fn fills_across_calls() {
        let spec = ToneSpec::default();
        let mut whole = vec![0i16; 640];
        DtmfGenerator::new(DtmfKey::Hash, &spec).fill(&mut whole);
        let mut g = DtmfGenerator::new(DtmfKey::Hash, &spec);
        let mut parts = vec![0i16; 640];
        let (a, b) = parts.split_at_mut(100);
        assert_eq!(g.fill(a), 100);
        assert_eq!(g.fill(b), 540);
        assert_eq!(g.fill(&mut [0i16; 10]), 0);
        assert_eq!(whole, parts);
    }
}

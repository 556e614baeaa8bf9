//! The last line: audio about to leave for the agent leg, checked once more after masking.
//!
//! The masker ([`crate::Masker`]) judges frames with a look-ahead from the same Goertzel terms
//! as capture. The guard is deliberately independent of both: its own filter bank, on its own
//! 10 ms block grid aligned to the outgoing frames, judging each 20 ms of *output* the way
//! common decoders do — the strongest nominal filter of each group, standing
//! [`GUARD_RELATIVE_PEAK_DB`] above the rest of its group, the pair holding
//! [`GUARD_PAIR_SHARE`] of the energy, any twist up to [`GUARD_MAX_TWIST_DB`], any level above
//! [`GUARD_MIN_LEVEL_DBM0`], and not two harmonics of one pitch (the same physical test as
//! the masker's, measured its own way). It has no look-ahead, so it can only replace the frame it is shown:
//! it is there so that a tone the masker missed is cut short and counted, not to do the
//! masker's job. In normal operation it never fires.
//!
//! Sans-IO, no allocation.

use crate::detector::SAMPLE_RATE;
use crate::goertzel::{BlockTerms, GoertzelBank, BANK_SIZE};
use crate::harmonic::{HannDft, SPAN};
use crate::key::{COL_HZ, ROW_HZ};
use crate::level;

/// Samples in one guard block (10 ms).
pub const GUARD_BLOCK: usize = 80;
/// Share of a 20 ms window the pair must hold (multimon-ng reads keys at 0.4 of 40 ms).
pub const GUARD_PAIR_SHARE: f32 = 0.45;
/// Relative peak each tone needs over the rest of its group, dB (spandsp asks 8, multimon-ng 10).
pub const GUARD_RELATIVE_PEAK_DB: f32 = 8.0;
/// Largest twist either way, dB.
pub const GUARD_MAX_TWIST_DB: f32 = 20.0;
/// Lowest level per tone considered, dBm0.
pub const GUARD_MIN_LEVEL_DBM0: f32 = -60.0;

/// The output guard. See the module documentation.
#[derive(Debug, Clone)]
pub struct OutputGuard {
    bank: GoertzelBank,
    freqs: [f32; BANK_SIZE],
    /// `e^{+jωN}`: aligns the previous block's terms to the newest.
    align_re: [f32; BANK_SIZE],
    align_im: [f32; BANK_SIZE],
    /// Samples of up to two blocks being filtered (the first `staged` of a partial one).
    pair: [f32; 2 * GUARD_BLOCK],
    staged: usize,
    prev: Option<BlockTerms>,
    /// The samples of the 20 ms window the last two blocks span, oldest first.
    window: [f32; SPAN],
    dft: HannDft,
    min_tone_energy: f32,
    relative_peak: f32,
    twist: f32,
    frames: u64,
    tripped: u64,
}

impl Default for OutputGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl OutputGuard {
    /// A guard with the thresholds documented on this module's constants.
    pub fn new() -> Self {
        let mut freqs = [0.0f32; BANK_SIZE];
        freqs[..4].copy_from_slice(&ROW_HZ);
        freqs[4..].copy_from_slice(&COL_HZ);
        let mut align_re = [0.0; BANK_SIZE];
        let mut align_im = [0.0; BANK_SIZE];
        for k in 0..BANK_SIZE {
            let w = 2.0 * core::f64::consts::PI * freqs[k] as f64 / SAMPLE_RATE as f64;
            align_re[k] = (w * GUARD_BLOCK as f64).cos() as f32;
            align_im[k] = (w * GUARD_BLOCK as f64).sin() as f32;
        }
        OutputGuard {
            bank: GoertzelBank::new(freqs, SAMPLE_RATE as f32),
            freqs,
            align_re,
            align_im,
            pair: [0.0; 2 * GUARD_BLOCK],
            staged: 0,
            prev: None,
            window: [0.0; SPAN],
            dft: HannDft::new(),
            min_tone_energy: level::sine_power(GUARD_MIN_LEVEL_DBM0) * (2 * GUARD_BLOCK) as f32,
            relative_peak: 10f32.powf(GUARD_RELATIVE_PEAK_DB / 10.0),
            twist: 10f32.powf(GUARD_MAX_TWIST_DB / 10.0),
            frames: 0,
            tripped: 0,
        }
    }

    /// Looks at the next outgoing frame (any length). `true`: a 20 ms window ending inside it
    /// is DTMF-like, and the caller must replace the frame before it leaves.
    pub fn check(&mut self, frame: &[i16]) -> bool {
        self.frames += 1;
        let mut hit = false;
        let mut x = frame;
        while !x.is_empty() {
            if self.staged == 0 && x.len() >= 2 * GUARD_BLOCK {
                // Two whole blocks at once: the filter bank interleaves them (twice as fast).
                for (d, &v) in self.pair.iter_mut().zip(&x[..2 * GUARD_BLOCK]) {
                    *d = v as f32;
                }
                let mut out = [BlockTerms::default(); 2];
                self.run(&mut out);
                for (i, b) in out.iter().enumerate() {
                    self.slide(i);
                    hit |= self.push_block(b);
                }
                x = &x[2 * GUARD_BLOCK..];
                continue;
            }
            let take = (GUARD_BLOCK - self.staged).min(x.len());
            for (d, &v) in self.pair[self.staged..self.staged + take]
                .iter_mut()
                .zip(&x[..take])
            {
                *d = v as f32;
            }
            self.staged += take;
            x = &x[take..];
            if self.staged == GUARD_BLOCK {
                self.staged = 0;
                let mut out = [BlockTerms::default(); 1];
                self.run(&mut out);
                self.slide(0);
                hit |= self.push_block(&out[0]);
            }
        }
        self.tripped += hit as u64;
        hit
    }

    /// Filters the first `B` blocks of `pair`; silent blocks (all below the level floor) skip it.
    fn run<const B: usize>(&self, out: &mut [BlockTerms; B]) {
        let x = &self.pair[..B * GUARD_BLOCK];
        let mut energy = [0.0f32; B];
        for (e, block) in energy.iter_mut().zip(x.chunks_exact(GUARD_BLOCK)) {
            *e = block.iter().map(|v| v * v).sum();
        }
        if energy.iter().all(|&e| e < self.min_tone_energy * 0.25) {
            for (o, e) in out.iter_mut().zip(energy) {
                *o = BlockTerms {
                    energy: e,
                    ..BlockTerms::default()
                };
            }
        } else {
            self.bank.run::<B, GUARD_BLOCK>(x, out);
        }
    }

    /// Moves the window on by block `i` of `pair`.
    fn slide(&mut self, i: usize) {
        self.window.copy_within(GUARD_BLOCK.., 0);
        self.window[SPAN - GUARD_BLOCK..]
            .copy_from_slice(&self.pair[i * GUARD_BLOCK..(i + 1) * GUARD_BLOCK]);
    }

    /// Takes the next block's terms; whether the 20 ms window it ends is DTMF-like.
    fn push_block(&mut self, b: &BlockTerms) -> bool {
        let hit = self.prev.is_some_and(|prev| self.dtmf_like(&prev, b));
        self.prev = Some(*b);
        hit
    }

    /// Tells the guard that a frame left replaced by masking audio instead of what it was shown:
    /// the next window starts after it (a window reaching into the replacement would judge
    /// audio the agent never hears as DTMF-like or not), and nothing is filtered.
    pub fn skip(&mut self) {
        self.frames += 1;
        self.prev = None;
        self.staged = 0;
    }

    /// Frames seen.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Frames the guard asked to replace.
    pub fn tripped(&self) -> u64 {
        self.tripped
    }

    fn dtmf_like(&self, older: &BlockTerms, newer: &BlockTerms) -> bool {
        let total = older.energy + newer.energy;
        if total < 2.0 * self.min_tone_energy {
            return false;
        }
        let pow: [f32; BANK_SIZE] = core::array::from_fn(|k| {
            let (ar, ai) = (self.align_re[k], self.align_im[k]);
            let re = newer.re[k] + older.re[k] * ar - older.im[k] * ai;
            let im = newer.im[k] + older.re[k] * ai + older.im[k] * ar;
            re * re + im * im
        });
        let best = |p: &[f32]| {
            let mut b = 0;
            for k in 1..4 {
                if p[k] > p[b] {
                    b = k;
                }
            }
            let other = (0..4).filter(|&k| k != b).fold(0.0f32, |m, k| m.max(p[k]));
            (b, p[b], other)
        };
        let (r, pr, or) = best(&pow[..4]);
        let (c, pc, oc) = best(&pow[4..]);
        let c = c + 4;
        if pr < self.relative_peak * or || pc < self.relative_peak * oc {
            return false;
        }
        // |Σ|² over N samples of a sine holds 2/N of its energy.
        let scale = 2.0 / (2 * GUARD_BLOCK) as f32;
        let (er, ec) = (pr * scale, pc * scale);
        er >= self.min_tone_energy
            && ec >= self.min_tone_energy
            && er <= self.twist * ec
            && ec <= self.twist * er
            && er + ec >= GUARD_PAIR_SHARE * total
            && !self.harmonic(older, newer, r, c)
    }

    /// Whether the two lines are harmonics of one pitch (voice, note): their frequencies, from
    /// the phase advance between the two 10 ms blocks, judged by
    /// [`HannDft::harmonic_pair`] on the window's samples.
    fn harmonic(&self, older: &BlockTerms, newer: &BlockTerms, r: usize, c: usize) -> bool {
        let freq = |k: usize| {
            let (ar, ai) = (self.align_re[k], self.align_im[k]);
            let (or, oi) = (
                older.re[k] * ar - older.im[k] * ai,
                older.re[k] * ai + older.im[k] * ar,
            );
            let (pr, pi) = (
                newer.re[k] * or + newer.im[k] * oi,
                newer.im[k] * or - newer.re[k] * oi,
            );
            let per_turn = SAMPLE_RATE as f32 / (2.0 * core::f32::consts::PI * GUARD_BLOCK as f32);
            self.freqs[k] + pi.atan2(pr) * per_turn
        };
        self.dft.harmonic_pair(&self.window, freq(r), freq(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{append_key, append_silence, ToneSpec};
    use crate::DtmfKey;

    #[test]
    fn trips_on_a_key_and_not_on_silence_noise_or_the_beep() {
        let mut v = Vec::new();
        append_silence(&mut v, 100);
        append_key(&mut v, DtmfKey::D3, &ToneSpec::default());
        let mut g = OutputGuard::new();
        let trips: Vec<bool> = v.chunks(160).map(|f| g.check(f)).collect();
        assert_eq!(&trips[..5], &[false; 5], "silence");
        assert!(trips[5..].iter().all(|&t| t), "{trips:?}");
        assert_eq!(g.tripped(), 4);

        let mut g = OutputGuard::new();
        let mut noise = vec![0i16; 8000];
        crate::generator::add_noise(&mut noise, 0.0, 3);
        assert!(noise.chunks(160).all(|f| !g.check(f)));

        let mut m = crate::Masker::new(crate::MaskingMode::Beep, 1).unwrap();
        let mut beep = vec![0i16; 8000];
        m.fill_replacement(&mut beep);
        let mut g = OutputGuard::new();
        assert!(beep.chunks(160).all(|f| !g.check(f)));
    }

    #[test]
    fn skipped_frames_restart_the_window_and_do_not_count() {
        let mut v = Vec::new();
        append_key(&mut v, DtmfKey::D3, &ToneSpec::default());
        let mut g = OutputGuard::new();
        assert!(g.check(&v[..160]));
        g.skip();
        // A 10 ms frame after the skip cannot form a 20 ms window yet; the next one can.
        assert!(!g.check(&v[320..400]));
        assert!(g.check(&v[400..480]));
        assert_eq!((g.frames(), g.tripped()), (4, 2));
    }
}

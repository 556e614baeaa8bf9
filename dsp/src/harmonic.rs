//! Are two spectral lines harmonics of one pitch (a voice, a note), or two independent tones
//! (a key)? The physical test the masking presence test and the output guard share.
//!
//! Two lines in a ratio of small integers n:m are *consistent* with one fundamental f0 = fr/m,
//! but a keypad generator a little off nominal lands there too (keys 1, 5, 9 and D sit 0.9 %
//! below 7:4). A voice or a note carries the rest of its series: the harmonics next to the two
//! lines, at multiples of the same f0, standing above the spectrum between them. So the verdict
//! "harmonic" needs that evidence from the audio itself — the comb of f0's other harmonics
//! holding clearly more power than the comb halfway between them, enough of it to be part of
//! the same sound, and each line no louder than that series' envelope allows — never the ratio
//! of two lines alone.
//!
//! Measured on a span with a Hann window (sidelobes too low for the two lines to fake
//! their neighbours): 20 ms for the output guard, 40 ms ([`LONG_SPAN`]) for the presence test,
//! where low voices' harmonics part; at a handful of frequencies by Goertzel: only for pairs whose ratio is
//! near a small-integer one, so not per frame in normal audio. Sans-IO, no allocation.

use crate::detector::SAMPLE_RATE;

/// Samples in the span judged (20 ms).
pub const SPAN: usize = 160;
/// Samples the masking presence test judges a pair's harmonics over (40 ms): a voice's
/// harmonics 120-170 Hz apart barely part in a 20 ms Hann window (its main lobe is 200 Hz wide),
/// so a low voice's comb looked flat and its pair was taken for a key; in 40 ms they stand
/// clear, while a voice's pitch moves too little in that time to smear its low harmonics.
pub const LONG_SPAN: usize = 320;
/// How close (fraction) two lines' ratio must be to n:m to ask whether they are harmonics.
/// A glide moves both harmonics of a voice by the same factor, so their ratio stays n:m; what
/// remains is the error of measuring a line among its neighbours (voices measure 0.2-0.5 %).
/// With a 40 ms span a low note's comb is real, so this also keeps a key whose lines merely sit
/// near two of its harmonics (1 % or more off the ratio) from being taken for it.
pub const RATIO_TOLERANCE: f32 = 0.01;
/// Largest harmonic number of the low line: fundamentals from about 85 Hz up (a low voice;
/// where a 20 ms window cannot resolve the harmonics the comb fails and the verdict is "not
/// harmonic").
pub const MAX_HARMONIC: u32 = 8;
/// Power of the comb at f0's other harmonics over the comb halfway between them, at least.
pub const MIN_COMB_RATIO: f32 = 4.0;
/// Mean power of those harmonics over the weaker line's, at least (-15 dB).
pub const MIN_SERIES_TO_LINE: f32 = 0.03;
/// How far (dB) each line may stand above the louder of its two neighbours in the series and
/// still be one of its harmonics: a voice's or instrument's spectral envelope does not rise that
/// steeply from one harmonic to the next (speech measures up to 5 dB mostly, rarely above 9).
pub const MAX_LINE_EXCESS_DB: f32 = 9.0;
/// Fewest other harmonics that must fall in the band for a verdict "harmonic": two. A note
/// above about 700 Hz paired with its octave has only its 3rd and 4th harmonics left below the
/// band's top (its 5th is above 3.4 kHz, gone on a phone line); asking for three left every such
/// note, which is a pair at 2:1 that holds still, to be masked for its whole length.
pub const MIN_PROBES: usize = 2;
/// Band where harmonics are looked for, Hz (the telephone band).
const BAND: (f32, f32) = (250.0, 3600.0);

/// Hann-windowed spectral power at arbitrary frequencies over `N` samples ([`SPAN`] unless
/// said otherwise).
#[derive(Debug, Clone)]
pub struct HannDft<const N: usize = SPAN> {
    window: [f32; N],
    max_excess: f32,
}

impl<const N: usize> Default for HannDft<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> HannDft<N> {
    /// The window, computed once.
    pub fn new() -> Self {
        let mut window = [0.0; N];
        for (n, w) in window.iter_mut().enumerate() {
            let x = core::f64::consts::PI * (n as f64 + 0.5) / N as f64;
            *w = (x.sin() * x.sin()) as f32;
        }
        HannDft {
            window,
            max_excess: 10f32.powf(MAX_LINE_EXCESS_DB / 10.0),
        }
    }

    /// `|Σ w[n] x[n] e^{-jωn}|²` at `f` Hz (Goertzel).
    #[inline]
    pub fn power(&self, x: &[f32; N], f: f32) -> f32 {
        let mut out = [0.0];
        self.powers(x, &[f], &mut out);
        out[0]
    }

    /// [`power`](Self::power) at each of `freqs` into `out` (same length), several frequencies
    /// per pass over the span: one Goertzel recursion alone waits on its own dependency chain,
    /// [`LANES`] side by side keep the FPU busy, so a batch costs about what one did. Each lane's
    /// arithmetic is the single-frequency recursion's, so the results are the same.
    pub fn powers(&self, x: &[f32; N], freqs: &[f32], out: &mut [f32]) {
        debug_assert_eq!(freqs.len(), out.len());
        let mut freqs = freqs;
        let mut out = out;
        while !freqs.is_empty() {
            let n = match freqs.len() {
                1..=4 => self.pass::<4>(x, freqs, out),
                5..=8 => self.pass::<8>(x, freqs, out),
                9..=16 => self.pass::<16>(x, freqs, out),
                _ => self.pass::<LANES>(x, freqs, out),
            };
            freqs = &freqs[n..];
            out = &mut out[n..];
        }
    }

    /// One pass over the span for up to `L` of `freqs`; how many it did.
    #[inline]
    fn pass<const L: usize>(&self, x: &[f32; N], freqs: &[f32], out: &mut [f32]) -> usize {
        let n = freqs.len().min(L);
        let mut c = [0.0f32; L];
        for (c, &f) in c.iter_mut().zip(&freqs[..n]) {
            let w = core::f32::consts::TAU * f / SAMPLE_RATE as f32;
            *c = 2.0 * w.cos();
        }
        let (mut s1, mut s2) = ([0.0f32; L], [0.0f32; L]);
        for (v, h) in x.iter().zip(&self.window) {
            let vh = v * h;
            for l in 0..L {
                let s0 = vh + c[l] * s1[l] - s2[l];
                s2[l] = s1[l];
                s1[l] = s0;
            }
        }
        for (l, o) in out[..n].iter_mut().enumerate() {
            *o = s1[l] * s1[l] + s2[l] * s2[l] - c[l] * s1[l] * s2[l];
        }
        n
    }

    /// Whether lines at `fr` and `fc` Hz (fr < fc) in `x` are two harmonics of one pitch:
    /// for some fundamental f0 = fr/m (m ≤ [`MAX_HARMONIC`]) that puts fc within
    /// [`RATIO_TOLERANCE`] of a multiple n·f0, f0's neighbouring harmonics are present as a
    /// series (module documentation). Every such f0 is tried: lines at the 4th and 8th harmonic
    /// of a voice also fit 2:1, whose comb would miss the harmonics in between.
    ///
    /// Cost: per fundamental tried, one batch of [`HannDft::powers`] holding every frequency
    /// that fundamental's test reads (probes, the valleys between them, each shared by two
    /// probes, the lines' neighbours where they are not probes, and the lines themselves once):
    /// one or two passes; at most [`MAX_HARMONIC`] fundamentals.
    pub fn harmonic_pair(&self, x: &[f32; N], fr: f32, fc: f32) -> bool {
        let mut unbounded = u32::MAX;
        self.harmonic_pair_within(x, fr, fc, &mut unbounded)
            .unwrap_or(false)
    }

    /// [`harmonic_pair`](Self::harmonic_pair), trying at most `budget` fundamentals (each
    /// one batch), less what it tried; `None` when the budget ran out before a verdict.
    pub fn harmonic_pair_within(
        &self,
        x: &[f32; N],
        fr: f32,
        fc: f32,
        budget: &mut u32,
    ) -> Option<bool> {
        let ratio = fc / fr;
        let mut lines = None;
        for m in 1..=MAX_HARMONIC {
            let n = (ratio * m as f32).round() as u32;
            let r = n as f32 / m as f32;
            if n <= m || (ratio - r).abs() > RATIO_TOLERANCE * r {
                continue;
            }
            let f0 = 0.5 * (fr / m as f32 + fc / n as f32);
            // Harmonics lo..=hi around the lines; the probes are those in the band, the lines'
            // own harmonics aside.
            let lo = m.saturating_sub(2).max(1);
            let hi = n + 3;
            if (hi - lo) as usize >= MAX_SPREAD {
                // Lines farther apart than any DTMF-like pair: not asked.
                continue;
            }
            let is_probe = |h: u32| {
                let f = h as f32 * f0;
                h >= lo && h <= hi && h != m && h != n && (BAND.0..=BAND.1).contains(&f)
            };
            let probes = (lo..=hi).filter(|&h| is_probe(h)).count();
            if probes < MIN_PROBES {
                continue;
            }
            spend(budget)?;
            // Every frequency this fundamental's test reads, in one batch: harmonic h at
            // `peak[h - lo]`, the valley at (k + 1/2)·f0 at `valley[k + 1 - lo]`.
            let mut freq = [0.0f32; MAX_FREQS];
            let mut len = 0;
            let mut push = |f: f32| {
                freq[len] = f;
                len += 1;
                len - 1
            };
            let mut peak = [0usize; MAX_SPREAD];
            let mut valley = [0usize; MAX_SPREAD + 1];
            for h in lo..=hi {
                if is_probe(h) {
                    peak[(h - lo) as usize] = push(h as f32 * f0);
                }
            }
            for k in lo - 1..=hi {
                if is_probe(k) || is_probe(k + 1) {
                    valley[(k + 1 - lo) as usize] = push((k as f32 + 0.5) * f0);
                }
            }
            let mut neighbour = [0usize; 4];
            for (i, h) in [m - 1, m + 1, n - 1, n + 1].into_iter().enumerate() {
                neighbour[i] = if is_probe(h) {
                    peak[(h - lo) as usize]
                } else {
                    push(h as f32 * f0)
                };
            }
            let line_at = lines.is_none().then(|| (push(fr), push(fc)));
            let mut power = [0.0f32; MAX_FREQS];
            self.powers(x, &freq[..len], &mut power[..len]);
            let (pr, pc) = *lines.get_or_insert_with(|| {
                let (a, b) = line_at.expect("lines measured with the first batch");
                (power[a], power[b])
            });
            let (mut peaks, mut valleys) = (0.0f32, 0.0f32);
            for h in (lo..=hi).filter(|&h| is_probe(h)) {
                let i = (h - lo) as usize;
                peaks += power[peak[i]];
                valleys += 0.5 * (power[valley[i]] + power[valley[i + 1]]);
            }
            if peaks < MIN_COMB_RATIO * valleys
                || peaks < MIN_SERIES_TO_LINE * pr.min(pc) * probes as f32
            {
                continue;
            }
            // Each line must also sit on the series' envelope: no higher than its neighbours
            // allow. A key under a note whose series runs through it stands out of it.
            let next = neighbour.map(|i| power[i]);
            let fits = |p: f32, a: f32, b: f32| p <= self.max_excess * a.max(b);
            if fits(pr, next[0], next[1]) && fits(pc, next[2], next[3]) {
                return Some(true);
            }
        }
        Some(false)
    }

    /// The strongest point within `reach` (a fraction) of `near` Hz in `x`, in steps of a
    /// 24th of the reach: (Hz, power), or `None` when it lies at an end of the reach (a
    /// neighbour's skirt, not a line of its own there). One batch, drawn from `budget`
    /// (`None` too when it is spent).
    pub fn line_near(
        &self,
        x: &[f32; N],
        near: f32,
        reach: f32,
        budget: &mut u32,
    ) -> Option<(f32, f32)> {
        self.lines_near::<1, REFINE>(x, [near], reach, budget)[0]
    }

    /// [`line_near`](Self::line_near) for `L` lines at once, `P` points each (odd), in one
    /// batch.
    pub fn lines_near<const L: usize, const P: usize>(
        &self,
        x: &[f32; N],
        near: [f32; L],
        reach: f32,
        budget: &mut u32,
    ) -> [Option<(f32, f32)>; L] {
        if *budget == 0 {
            return [None; L];
        }
        *budget -= 1;
        let mut freq = [0.0f32; LANES];
        let step = reach / (P / 2) as f32;
        for (l, &c) in near.iter().enumerate() {
            for k in 0..P {
                freq[l * P + k] = c * (1.0 + step * (k as f32 - (P / 2) as f32));
            }
        }
        let mut power = [0.0f32; LANES];
        self.powers(x, &freq[..L * P], &mut power[..L * P]);
        core::array::from_fn(|l| {
            let p = &power[l * P..(l + 1) * P];
            let best = (0..P).fold(0, |b, k| if p[k] > p[b] { k } else { b });
            (best != 0 && best != P - 1).then_some((freq[l * P + best], p[best]))
        })
    }

    /// Whether the line at `fx` Hz holding `px` ([`line_near`](Self::line_near)) in `x`
    /// belongs to a harmonic series of its own that the lines at `pair` are not on: a note
    /// or voice beside a key, whose line in a rival filter hides the key's line from a
    /// relative-peak test though it is part of another sound.
    ///
    /// For f0 = fx/m (m ≤ [`MAX_RIVAL_HARMONIC`]) whose series misses both `pair` lines by
    /// more than [`RATIO_TOLERANCE`], the series must be in the audio as
    /// [`harmonic_pair`](Self::harmonic_pair) asks of one: its other harmonics (those clear of
    /// the pair's lines) [`MIN_RIVAL_COMB`] times above the gaps between them, strong enough
    /// to be one sound with the line, the line no louder than its neighbours allow. A line on
    /// a pair line, or on one series with both (one voice), is never another sound.
    ///
    /// Cost: each fundamental tried is one batch, drawn from `budget` (`None` when it ran out
    /// before a verdict).
    pub fn foreign_series(
        &self,
        x: &[f32; N],
        (fx, px): (f32, f32),
        pair: (f32, f32),
        budget: &mut u32,
    ) -> Option<bool> {
        // Within a Hann main lobe (±2 bins: ±50 Hz over 40 ms) of a pair line a probe or gap
        // would read the key, not the series.
        let lobe = 2.2 * SAMPLE_RATE as f32 / N as f32;
        let clear = |f: f32| (f - pair.0).abs() > lobe && (f - pair.1).abs() > lobe;
        if !clear(fx) {
            return Some(false);
        }
        let on_series = |f: f32, f0: f32| {
            let h = (f / f0).round();
            h >= 1.0 && (f - h * f0).abs() <= RATIO_TOLERANCE * f
        };
        // One voice: the rival and both lines are harmonics of one fundamental, however low.
        // Its sub-series (every 2nd, 3rd, … harmonic) would otherwise pass for another sound.
        let lowest = (fx / MIN_F0) as u32;
        if (1..=lowest)
            .any(|j| on_series(pair.0, fx / j as f32) && on_series(pair.1, fx / j as f32))
        {
            return Some(false);
        }
        for m in 1..=MAX_RIVAL_HARMONIC {
            let f0 = fx / m as f32;
            if f0 < BAND.0 / 2.0 || on_series(pair.0, f0) || on_series(pair.1, f0) {
                continue;
            }
            let lo = m.saturating_sub(2).max(1);
            let hi = m + 3;
            let is_probe = |h: u32| {
                let f = h as f32 * f0;
                h != m
                    && (BAND.0..=BAND.1).contains(&f)
                    && clear(f)
                    && (clear(f - 0.25 * f0) || clear(f + 0.25 * f0))
            };
            let probes = (lo..=hi).filter(|&h| is_probe(h)).count();
            if probes < MIN_PROBES {
                continue;
            }
            spend(budget)?;
            // Quarter steps of f0 from harmonic lo - 1 to hi + 1: harmonic h at 4(h - lo + 1),
            // the gaps on either side at the three quarter points between. A note's gaps are
            // empty; a sub-series of a lower voice or note (every 2nd, 3rd, … harmonic, which
            // a midpoint alone can miss) has lines in them.
            let mut freq = [0.0f32; RIVAL_POINTS];
            let len = 4 * (hi - lo + 2) as usize + 1;
            for (i, f) in freq[..len].iter_mut().enumerate() {
                *f = ((lo - 1) as f32 + 0.25 * i as f32) * f0;
            }
            let mut power = [0.0f32; RIVAL_POINTS];
            self.powers(x, &freq[..len], &mut power[..len]);
            let at = |h: u32| power[4 * (h + 1 - lo) as usize];
            let (mut peaks, mut valleys) = (0.0f32, 0.0f32);
            for h in (lo..=hi).filter(|&h| is_probe(h)) {
                peaks += at(h);
                let i = 4 * (h + 1 - lo) as usize;
                let (mut sum, mut count) = (0.0f32, 0u32);
                for j in (i - 3..i).chain(i + 1..i + 4) {
                    if clear(freq[j]) {
                        sum += power[j];
                        count += 1;
                    }
                }
                valleys += sum / count.max(1) as f32;
            }
            if peaks < MIN_RIVAL_COMB * valleys || peaks < MIN_SERIES_TO_LINE * px * probes as f32 {
                continue;
            }
            let at = |h: u32| if h < lo { 0.0 } else { at(h) };
            if px <= self.max_excess * at(m - 1).max(at(m + 1)) {
                return Some(true);
            }
        }
        Some(false)
    }
}

/// Largest harmonic number a rival line is tried as in [`HannDft::foreign_series`]: a note or
/// voice whose line falls in a DTMF filter from its fundamental up to its 4th harmonic (lower
/// voices' series are resolved as well, through their 4th harmonic's f0 multiples).
pub const MAX_RIVAL_HARMONIC: u32 = 4;
/// Power of a rival line's series over the gaps between its harmonics, at least (17 dB), for
/// [`HannDft::foreign_series`]: a held note's comb stands clear (100-2000 measured on the
/// extra battery's music); a voice's mostly far less (its pitch and formants move within
/// 40 ms), and at the harmonic tests' [`MIN_COMB_RATIO`] a voice's rival line was set aside
/// often enough to raise talk-off by a third.
pub const MIN_RIVAL_COMB: f32 = 50.0;
/// Lowest fundamental of a voice, Hz: a rival line and a pair both on the series of one this
/// low or higher are one voice's harmonics.
const MIN_F0: f32 = 80.0;
/// Frequencies one fundamental's rival test reads: quarter steps over harmonics m - 3 to
/// m + 4.
const RIVAL_POINTS: usize = 4 * 7 + 1;
/// Frequencies tried when finding a line's peak within its reach (one batch).
const REFINE: usize = 25;

/// Takes one batch from `budget`; `None` when it is spent.
fn spend(budget: &mut u32) -> Option<()> {
    *budget = budget.checked_sub(1)?;
    Some(())
}

/// Frequencies evaluated side by side in one pass of [`HannDft::powers`] (eight 128-bit
/// vectors: enough independent recursions to keep the FPU's pipelines full).
pub const LANES: usize = 32;
/// Most harmonics a fundamental's test spans: lo = m - 2 up to hi = n + 3, with n at most
/// [`MAX_HARMONIC`] times the largest DTMF-like ratio (1633 Hz · 1.06 over 697 Hz · 0.94 < 2.7).
const MAX_SPREAD: usize = (MAX_HARMONIC as usize * 27).div_ceil(10) + 6;
/// Most frequencies one fundamental's batch holds: the spread's probes and valleys, four
/// neighbours, two lines.
const MAX_FREQS: usize = 2 * MAX_SPREAD + 1 + 4 + 2;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{COL_HZ, ROW_HZ};

    fn span(parts: &[(f32, f32)], noise: f32, seed: u32) -> [f32; SPAN] {
        span_of(parts, noise, seed)
    }

    fn span_of<const N: usize>(parts: &[(f32, f32)], noise: f32, seed: u32) -> [f32; N] {
        let mut rng = crate::NoiseSource::new(seed);
        core::array::from_fn(|i| {
            let t = i as f32 / SAMPLE_RATE as f32;
            parts
                .iter()
                .map(|&(f, a)| a * (core::f32::consts::TAU * f * t + f).sin())
                .sum::<f32>()
                + noise * rng.gaussian()
        })
    }

    #[test]
    fn batched_powers_are_the_single_frequency_goertzel() {
        let d = HannDft::new();
        let x = span(&[(700.0, 3000.0), (1210.0, 2000.0)], 500.0, 7);
        // Every batch size and remainder: 1..=37 frequencies across the band.
        for n in 1..=37 {
            let freqs: Vec<f32> = (0..n).map(|i| 200.0 + 97.3 * i as f32).collect();
            let mut out = vec![0.0; n];
            d.powers(&x, &freqs, &mut out);
            for (&f, &p) in freqs.iter().zip(&out) {
                // The plain recursion, one frequency at a time.
                let c = 2.0 * (core::f32::consts::TAU * f / SAMPLE_RATE as f32).cos();
                let (mut s1, mut s2) = (0.0f32, 0.0f32);
                for (v, h) in x.iter().zip(&d.window) {
                    let s0 = v * h + c * s1 - s2;
                    s2 = s1;
                    s1 = s0;
                }
                assert_eq!(
                    p,
                    s1 * s1 + s2 * s2 - c * s1 * s2,
                    "{n} frequencies, {f} Hz"
                );
            }
        }
    }

    #[test]
    fn the_budget_bounds_the_fundamentals_tried() {
        // A voice at 174.5 Hz, lines at its 4th and 8th harmonics: 2:1 fits every m, and the
        // comb is found at m = 4 (f0 = fr/4), after m = 1, 2, 3 failed.
        let d = HannDft::<LONG_SPAN>::new();
        let f0 = 174.5;
        let parts: Vec<(f32, f32)> = (2..=20)
            .map(|h| (h as f32 * f0, 3000.0 / h as f32))
            .collect();
        let x: [f32; LONG_SPAN] = span_of(&parts, 30.0, 3);
        let (fr, fc) = (4.0 * f0, 8.0 * f0);
        let mut budget = 2;
        assert_eq!(d.harmonic_pair_within(&x, fr, fc, &mut budget), None);
        assert_eq!(budget, 0);
        let mut budget = 8;
        assert_eq!(d.harmonic_pair_within(&x, fr, fc, &mut budget), Some(true));
        assert!(budget < 8 && budget > 0, "{budget} left");
        assert!(d.harmonic_pair(&x, fr, fc));
    }

    #[test]
    fn a_note_beside_a_key_is_another_sound_and_a_voice_is_one() {
        let d = HannDft::<LONG_SPAN>::new();
        let long = |parts: &[(f32, f32)]| span_of::<LONG_SPAN>(parts, 0.0, 0);
        let mut budget = u32::MAX;
        // G5 (784 Hz, harmonics to 3136 Hz) beside key C (852 + 1633 Hz): its line in the
        // 770 Hz filter is one of a series the key is not on.
        let mut parts: Vec<(f32, f32)> = (1..=4)
            .map(|h| (784.0 * h as f32, 2000.0 / h as f32))
            .collect();
        parts.extend([(ROW_HZ[2], 2000.0), (COL_HZ[3], 2000.0)]);
        let x = long(&parts);
        let line = d
            .line_near(&x, ROW_HZ[1], 0.06, &mut budget)
            .expect("the note's line");
        assert!((line.0 - 784.0).abs() < 4.0, "{line:?}");
        assert_eq!(
            d.foreign_series(&x, line, (ROW_HZ[2], COL_HZ[3]), &mut budget),
            Some(true)
        );
        // A voice at 130 Hz: its 6th harmonic in the 770 Hz filter and its 7th and 13th
        // harmonics as the pair are one sound.
        let voice: Vec<(f32, f32)> = (2..=24)
            .map(|h| (130.0 * h as f32, 3000.0 / h as f32))
            .collect();
        let x = long(&voice);
        let line = d
            .line_near(&x, ROW_HZ[1], 0.06, &mut budget)
            .expect("the 6th harmonic");
        assert_eq!(
            d.foreign_series(&x, line, (910.0, 1690.0), &mut budget),
            Some(false)
        );
        // No line of its own: only the key's 852 Hz skirt across the 770 Hz filter's reach.
        let x = long(&[(ROW_HZ[2], 2000.0), (COL_HZ[3], 2000.0)]);
        assert_eq!(d.line_near(&x, ROW_HZ[1], 0.06, &mut budget), None);
    }

    #[test]
    fn a_voice_is_harmonic_and_an_off_nominal_key_is_not() {
        let d = HannDft::new();
        // A voice at 174 Hz whose 4th and 7th harmonics sit near key 1's pair, with the rest
        // of its series rolling off.
        let f0 = 174.5;
        let voice: Vec<(f32, f32)> = (2..=20)
            .map(|h| (h as f32 * f0, 3000.0 / h as f32))
            .collect();
        let x = span(&voice, 30.0, 1);
        assert!(d.harmonic_pair(&x, 4.0 * f0, 7.0 * f0));
        // Its 4th and 8th harmonics: 2:1, and the series between them.
        assert!(d.harmonic_pair(&x, 4.0 * f0, 8.0 * f0));
        // Key 1 from a generator 1 % high on its column tone: exactly in the 7:4 window, with
        // and without noise as loud as the tones.
        let (fr, fc) = (ROW_HZ[0], COL_HZ[0] * 1.01);
        for seed in 0..20 {
            let noise = if seed == 0 { 0.0 } else { 1000.0 };
            let x = span(&[(fr, 1400.0), (fc, 1400.0)], noise, seed);
            assert!(!d.harmonic_pair(&x, fr, fc), "noise {noise} seed {seed}");
        }
    }
}

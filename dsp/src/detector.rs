//! Streaming DTMF receiver for 8 kHz linear PCM.
//!
//! # How it decides
//!
//! The input is cut into 5 ms sub-blocks (40 samples). A [`GoertzelBank`] gives, per sub-block,
//! the complex term of each of the eight DTMF frequencies and the sub-block's energy; the last
//! sixteen sub-blocks are kept.
//!
//! Every 5 ms the last four sub-blocks (a 20 ms window) are judged together:
//! - the terms are summed coherently (phase-aligned), which gives a 20 ms frequency resolution,
//!   enough to tell neighbouring DTMF frequencies apart; the strongest row and column must beat
//!   the rest of their group by [`RELATIVE_PEAK_DB`];
//! - the phase advance of a frequency's term from one sub-block to the next is its offset from
//!   the nominal frequency; it must stay within [`FREQ_TOLERANCE`] (checked with products and
//!   compares only, no trigonometry on the hot path);
//! - rotating the terms by that measured advance before summing gives the tone's energy as if
//!   the filter sat exactly on it, so level ([`MIN_TONE_LEVEL_DBM0`]), twist
//!   ([`MAX_NORMAL_TWIST_DB`], [`MAX_REVERSE_TWIST_DB`]) and the tones' share of the window's
//!   energy ([`MIN_TONE_ENERGY_SHARE`]) are judged without the loss an off-frequency tone would
//!   otherwise suffer.
//!
//! A window that passes starts (or sustains) a tone. How long the tone lasts is measured per
//! sub-block: a sub-block carries the key while its two frequencies are the strongest of their
//! groups and hold at least [`MIN_PRESENCE_SHARE`] of its energy. A key is reported once the
//! tone ends, when it was present for at least [`MIN_ON_MS`] and more than one window passed;
//! a gap shorter than [`MIN_OFF_MS`] does not end it (dropouts are bridged).
//!
//! No allocation after construction; no IO; positions are in samples since the stream began.

use crate::goertzel::{BlockTerms, GoertzelBank, BANK_SIZE};
use crate::key::{DtmfKey, COL_HZ, ROW_HZ};
use crate::level;
use crate::window::{phase_advance, rotated_power, WindowAlign, WINDOW};

/// Sample rate the detector works at, in Hz.
pub const SAMPLE_RATE: u32 = 8000;
/// Analysis sub-block: 40 samples, 5 ms. Durations are measured in these steps.
pub const SUB_BLOCK: usize = 40;
/// Sub-blocks of history kept (80 ms): onset search and the masker's look-ahead of up to 3 frames.
pub const HISTORY: usize = 16;
/// Sub-blocks per millisecond denominator (5 ms each).
const SUB_BLOCK_MS: u32 = (SUB_BLOCK as u32 * 1000) / SAMPLE_RATE;

/// Lowest level per tone that operates the receiver (dBm0).
///
/// ITU-T Q.24 and spandsp's `dtmf.h` require operation down to -26 dBm0 per tone (26 dB of
/// attenuation); spandsp itself reaches about -42 dBm0. Keys at -36 dBm0 are captured with 4 dB
/// to spare for twist and a G.711 round trip; what keeps quiet speech out is the share, spread
/// and steadiness tests, not the level (no false key in the battery's talk-off audio at -42).
pub const MIN_TONE_LEVEL_DBM0: f32 = -40.0;
/// Largest normal twist (low group louder than high), dB.
///
/// Q.24 / spandsp `dtmf.h`: up to 8 dB must be accepted; 2 dB of margin above that.
pub const MAX_NORMAL_TWIST_DB: f32 = 10.0;
/// Largest reverse twist (high group louder than low), dB.
///
/// Q.24 / spandsp `dtmf.h`: up to 4 dB must be accepted; 2.5 dB of margin above that.
pub const MAX_REVERSE_TWIST_DB: f32 = 6.5;
/// How far each tone must exceed every other frequency of its group in the 20 ms window, dB.
///
/// spandsp uses 8 dB (`DTMF_RELATIVE_PEAK_ROW`/`_COL`).
pub const RELATIVE_PEAK_DB: f32 = 8.0;
/// Share of a window's energy the two tones must hold for the window to pass
/// (spandsp: `DTMF_TO_TOTAL_ENERGY`). A window three-quarters covered by a tone scores 0.75.
pub const MIN_WINDOW_ENERGY_SHARE: f32 = 0.7;
/// Share of the energy the two tones must hold averaged over the whole tone for a key.
///
/// A clean key holds nearly all of it and 15 dB S/N leaves about 0.97; formant pairs in speech
/// that pass single windows hover around 0.7.
pub const MIN_KEY_ENERGY_SHARE: f32 = 0.8;
/// Largest frequency offset of either tone in a passing window, as a fraction of nominal.
///
/// Loose on purpose: one window's estimate wobbles by up to ±0.4 % (the other group's tone leaks
/// into the 10 ms halves), and a window that passes starts masking.
pub const MAX_WINDOW_FREQ_OFFSET: f32 = 0.03;
/// Largest frequency offset of either tone, averaged over the whole tone, for a key.
///
/// Q.24 / spandsp `dtmf.h`: ±1.5 % must be detected and ±3.5 % rejected. Averaging over the
/// tone's windows cancels most of the per-window wobble.
pub const FREQ_TOLERANCE: f32 = 0.02;
/// Largest spread (standard deviation) of either tone's per-window frequency over a key, as a
/// fraction of nominal.
///
/// A key generator holds its frequencies still: measured keys spread by 0.1-0.46 % (the weak
/// tone at 8 dB twist is the worst). Voiced speech that happens to sit near a DTMF pair glides
/// and spreads by about 1 %.
pub const MAX_FREQ_SPREAD: f32 = 0.007;
/// Share of a 5 ms sub-block's energy the two tones must hold for the sub-block to count as "on".
///
/// A sub-block only partly covered by the tone scores its coverage fraction, so this also sets
/// how much of a boundary sub-block counts towards the duration.
pub const MIN_PRESENCE_SHARE: f32 = 0.5;
/// Shortest tone reported as a key, in ms.
///
/// Q.24 / spandsp `dtmf.h`: tones of 40 ms must be accepted and tones of 20 ms or less rejected.
pub const MIN_ON_MS: u32 = 30;
/// Shortest gap that ends a key, in ms: shorter dropouts are bridged.
///
/// Q.24 / spandsp `dtmf.h`: a pause of 50 ms (40 ms in some administrations) separates keys,
/// while a 10 ms interruption must not split one.
pub const MIN_OFF_MS: u32 = 25;
/// Windows that must pass for a tone to count as a key (guards against single-window talk-off).
pub const MIN_VALID_WINDOWS: u32 = 2;

/// Sub-blocks holding less than two tones at this level (dBm0) are not filtered: 6 dB below
/// the quietest line the masker's presence test considers, and below G.711's own noise.
const QUIET_DBM0: f32 = -72.0;
/// How far (power ratio, 6 dB) another filter of a group may exceed the tracked one in a
/// sub-block that still counts as carrying the tone.
const PRESENCE_GROUP_MARGIN: f32 = 4.0;
const GAP_END: u32 = MIN_OFF_MS / SUB_BLOCK_MS;
const MIN_ON_BLOCKS: u32 = MIN_ON_MS.div_ceil(SUB_BLOCK_MS);
/// Sub-blocks run through the filter bank together (see `goertzel` for why four).
const PAIR: usize = 4;
const EVENT_CAPACITY: usize = 16;
const SPAN_CAPACITY: usize = 4;

/// A key press, with its position in samples since the start of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPress {
    /// The key.
    pub key: DtmfKey,
    /// First sample of the tone.
    pub start: u64,
    /// Sample after the tone's last.
    pub end: u64,
}

#[derive(Debug, Clone, Copy)]
struct ActiveTone {
    key: DtmfKey,
    row: usize,
    col: usize,
    start_block: u64,
    last_on: u64,
    on_blocks: u32,
    valid_windows: u32,
    gap: u32,
    /// Sums over the tone's passing windows: per-sub-block phase advance of row and column
    /// (unit phasors), tone energy and total energy.
    advance_row: (f32, f32),
    advance_col: (f32, f32),
    tone_energy: f64,
    total_energy: f64,
}

/// A window that holds a valid DTMF pair, with what the key decision accumulates.
#[derive(Debug, Clone, Copy)]
struct WindowMatch {
    key: DtmfKey,
    row: usize,
    col: usize,
    advance_row: (f32, f32),
    advance_col: (f32, f32),
    tone_energy: f32,
    total_energy: f32,
}

impl ActiveTone {
    fn absorb(&mut self, w: &WindowMatch) {
        self.valid_windows += 1;
        self.advance_row.0 += w.advance_row.0;
        self.advance_row.1 += w.advance_row.1;
        self.advance_col.0 += w.advance_col.0;
        self.advance_col.1 += w.advance_col.1;
        self.tone_energy += w.tone_energy as f64;
        self.total_energy += w.total_energy as f64;
    }
}

/// Streaming DTMF receiver: feed samples with [`process`](Self::process), collect keys with
/// [`poll_key`](Self::poll_key).
#[derive(Debug, Clone)]
pub struct DtmfDetector {
    bank: GoertzelBank,
    align: WindowAlign,
    /// cos of the largest phase advance per sub-block a window accepts, per frequency.
    cos_window_tol: [f32; BANK_SIZE],
    /// cos of the largest mean phase advance per sub-block a key accepts, per frequency.
    cos_key_tol: [f32; BANK_SIZE],
    /// Smallest mean resultant length of a key's per-window phase advances, squared.
    min_coherence2: [f32; BANK_SIZE],
    min_window_tone_energy: f32,
    min_block_tone_energy: f32,
    normal_twist: f32,
    reverse_twist: f32,
    relative_peak: f32,

    /// Energy of a sub-block too quiet to need filtering (see `run_bank`).
    quiet_block: f32,
    staging: [f32; SUB_BLOCK],
    staged: usize,
    scratch: [f32; PAIR * SUB_BLOCK],
    history: [BlockTerms; HISTORY],
    blocks: u64,
    /// Sub-blocks before this one belong to an earlier tone.
    floor_block: u64,
    active: Option<ActiveTone>,

    events: [KeyPress; EVENT_CAPACITY],
    event_head: usize,
    event_len: usize,
    dropped_events: u64,
    spans: [(u64, u64); SPAN_CAPACITY],
    span_next: usize,
}

impl Default for DtmfDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl DtmfDetector {
    /// A detector with the thresholds documented on this module's constants.
    pub fn new() -> Self {
        let mut freqs = [0.0f32; BANK_SIZE];
        freqs[..4].copy_from_slice(&ROW_HZ);
        freqs[4..].copy_from_slice(&COL_HZ);
        let bank = GoertzelBank::new(freqs, SAMPLE_RATE as f32);
        let n = SUB_BLOCK as f64;
        let align = WindowAlign::new(&freqs, SUB_BLOCK, SAMPLE_RATE as f32);
        let mut cos_window_tol = [0.0; BANK_SIZE];
        let mut cos_key_tol = [0.0; BANK_SIZE];
        let mut min_coherence2 = [0.0; BANK_SIZE];
        for k in 0..BANK_SIZE {
            // Phase advance over one sub-block for a given relative offset.
            let advance = |offset: f32| {
                2.0 * core::f64::consts::PI * offset as f64 * freqs[k] as f64 * n
                    / SAMPLE_RATE as f64
            };
            debug_assert!(advance(MAX_WINDOW_FREQ_OFFSET) < core::f64::consts::FRAC_PI_2);
            cos_window_tol[k] = advance(MAX_WINDOW_FREQ_OFFSET).cos() as f32;
            cos_key_tol[k] = advance(FREQ_TOLERANCE).cos() as f32;
            // Phasors with angular spread σ have mean resultant length e^{-σ²/2}.
            let sigma = advance(MAX_FREQ_SPREAD);
            min_coherence2[k] = (-sigma * sigma).exp() as f32;
        }
        let tone_power = level::sine_power(MIN_TONE_LEVEL_DBM0);
        DtmfDetector {
            bank,
            align,
            cos_window_tol,
            cos_key_tol,
            min_coherence2,
            min_window_tone_energy: tone_power * (WINDOW * SUB_BLOCK) as f32,
            // A boundary sub-block half covered by the tone scores a quarter of its power.
            min_block_tone_energy: tone_power * SUB_BLOCK as f32 * 0.25,
            normal_twist: db_to_power(MAX_NORMAL_TWIST_DB),
            reverse_twist: db_to_power(MAX_REVERSE_TWIST_DB),
            relative_peak: db_to_power(RELATIVE_PEAK_DB),
            quiet_block: 2.0 * level::sine_power(QUIET_DBM0) * SUB_BLOCK as f32,
            staging: [0.0; SUB_BLOCK],
            staged: 0,
            scratch: [0.0; PAIR * SUB_BLOCK],
            history: [BlockTerms::default(); HISTORY],
            blocks: 0,
            floor_block: 0,
            active: None,
            events: [KeyPress {
                key: DtmfKey::D0,
                start: 0,
                end: 0,
            }; EVENT_CAPACITY],
            event_head: 0,
            event_len: 0,
            dropped_events: 0,
            spans: [(0, 0); SPAN_CAPACITY],
            span_next: 0,
        }
    }

    /// Forgets all state, as if newly constructed.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Feeds samples (any number; state carries across calls).
    pub fn process(&mut self, samples: &[i16]) {
        self.process_observed(samples, |_| {});
    }

    /// Feeds samples like [`process`](Self::process), handing each 5 ms sub-block's Goertzel
    /// terms to `observe` as well, in order: the masker's presence test runs on the same terms.
    #[inline]
    pub fn process_observed(&mut self, samples: &[i16], mut observe: impl FnMut(&BlockTerms)) {
        let mut x = samples;
        if self.staged > 0 {
            let take = (SUB_BLOCK - self.staged).min(x.len());
            for (d, &s) in self.staging[self.staged..self.staged + take]
                .iter_mut()
                .zip(&x[..take])
            {
                *d = s as f32;
            }
            self.staged += take;
            x = &x[take..];
            if self.staged < SUB_BLOCK {
                return;
            }
            self.staged = 0;
            let mut out = [BlockTerms::default(); 1];
            run_bank(&self.bank, self.quiet_block, &self.staging, &mut out);
            observe(&out[0]);
            self.push_block(&out[0]);
        }
        while x.len() >= PAIR * SUB_BLOCK {
            for (d, &s) in self.scratch.iter_mut().zip(&x[..PAIR * SUB_BLOCK]) {
                *d = s as f32;
            }
            let mut out = [BlockTerms::default(); PAIR];
            run_bank(&self.bank, self.quiet_block, &self.scratch, &mut out);
            for b in &out {
                observe(b);
                self.push_block(b);
            }
            x = &x[PAIR * SUB_BLOCK..];
        }
        while x.len() >= SUB_BLOCK {
            for (d, &s) in self.scratch.iter_mut().zip(&x[..SUB_BLOCK]) {
                *d = s as f32;
            }
            let mut out = [BlockTerms::default(); 1];
            run_bank(
                &self.bank,
                self.quiet_block,
                &self.scratch[..SUB_BLOCK],
                &mut out,
            );
            observe(&out[0]);
            self.push_block(&out[0]);
            x = &x[SUB_BLOCK..];
        }
        for (d, &s) in self.staging.iter_mut().zip(x) {
            *d = s as f32;
        }
        self.staged = x.len();
    }

    /// Samples still waiting for their sub-block to fill.
    pub fn staged(&self) -> usize {
        self.staged
    }

    /// Ends the stream: completes the partial sub-block with silence and closes any open tone,
    /// so a key at the very end is reported.
    pub fn flush(&mut self) {
        self.flush_observed(|_| {});
    }

    /// [`flush`](Self::flush), handing the completed sub-block's terms to `observe`.
    pub fn flush_observed(&mut self, observe: impl FnMut(&BlockTerms)) {
        if self.staged > 0 {
            let zeros = [0i16; SUB_BLOCK];
            let missing = SUB_BLOCK - self.staged;
            self.process_observed(&zeros[..missing], observe);
        }
        if self.active.is_some() {
            self.finish_tone();
        }
    }

    /// The next detected key, oldest first.
    pub fn poll_key(&mut self) -> Option<KeyPress> {
        if self.event_len == 0 {
            return None;
        }
        let e = self.events[self.event_head];
        self.event_head = (self.event_head + 1) % EVENT_CAPACITY;
        self.event_len -= 1;
        Some(e)
    }

    /// Keys lost because [`poll_key`](Self::poll_key) was not called often enough.
    pub fn dropped_keys(&self) -> u64 {
        self.dropped_events
    }

    /// Samples consumed so far (including a partial sub-block still being collected).
    pub fn position(&self) -> u64 {
        self.blocks * SUB_BLOCK as u64 + self.staged as u64
    }

    /// Samples fully analysed so far.
    pub fn analysed(&self) -> u64 {
        self.blocks * SUB_BLOCK as u64
    }

    /// The key whose tone is sounding now, if one is (not yet confirmed as a key).
    pub fn sounding(&self) -> Option<DtmfKey> {
        self.active.map(|a| a.key)
    }

    /// Whether any tone the detector has seen (a reported key, or a candidate it later
    /// rejected) overlaps samples `start..end`, widened by `margin` samples on each side.
    ///
    /// Only the last few tones are remembered; the masker asks about recent samples only.
    pub fn tone_overlaps(&self, start: u64, end: u64, margin: u64) -> bool {
        let (lo, hi) = (start.saturating_sub(margin), end + margin);
        if let Some(a) = &self.active {
            if a.start_block * (SUB_BLOCK as u64) < hi {
                return true;
            }
        }
        self.spans.iter().any(|&(s, e)| e > s && s < hi && e > lo)
    }

    fn push_block(&mut self, terms: &BlockTerms) {
        self.history[(self.blocks % HISTORY as u64) as usize] = *terms;
        self.blocks += 1;
        self.step();
    }

    fn block(&self, index: u64) -> &BlockTerms {
        &self.history[(index % HISTORY as u64) as usize]
    }

    /// One 5 ms step of the tone state machine, after sub-block `blocks - 1` arrived.
    fn step(&mut self) {
        let now = self.blocks - 1;
        let window = self.judge_window();
        let Some(mut a) = self.active else {
            if let Some(w) = window {
                self.begin_tone(&w, now);
            }
            return;
        };
        // A window showing another key ends this one at once; otherwise the sub-block decides.
        let switched = window.filter(|w| w.key != a.key);
        if switched.is_none() && self.present(a.row, a.col, now) {
            a.on_blocks += 1;
            a.last_on = now;
            a.gap = 0;
            if let Some(w) = window.filter(|w| w.key == a.key) {
                a.absorb(&w);
            }
            self.active = Some(a);
            return;
        }
        a.gap += 1;
        self.active = Some(a);
        if a.gap >= GAP_END || switched.is_some() {
            self.finish_tone();
            if let Some(w) = switched {
                self.begin_tone(&w, now);
            }
        }
    }

    fn begin_tone(&mut self, w: &WindowMatch, now: u64) {
        // Walk back over recent sub-blocks to find where the tone began.
        let oldest = now.saturating_sub(HISTORY as u64 - 1).max(self.floor_block);
        let (mut start, mut last_on, mut on_blocks, mut gap) = (now, None, 0u32, 0u32);
        let mut j = now;
        loop {
            if self.present(w.row, w.col, j) {
                on_blocks += 1;
                start = j;
                last_on.get_or_insert(j);
                gap = 0;
            } else {
                gap += 1;
                if gap >= GAP_END {
                    break;
                }
            }
            if j == oldest {
                break;
            }
            j -= 1;
        }
        if on_blocks == 0 {
            // The window passed but no sub-block did on its own: place the tone on the window.
            start = (now + 1).saturating_sub(WINDOW as u64).max(oldest);
        }
        let last_on = last_on.unwrap_or(now);
        let mut tone = ActiveTone {
            key: w.key,
            row: w.row,
            col: w.col,
            start_block: start,
            last_on,
            on_blocks,
            valid_windows: 0,
            gap: (now - last_on) as u32,
            advance_row: (0.0, 0.0),
            advance_col: (0.0, 0.0),
            tone_energy: 0.0,
            total_energy: 0.0,
        };
        tone.absorb(w);
        self.active = Some(tone);
    }

    fn finish_tone(&mut self) {
        let Some(a) = self.active.take() else { return };
        let start = a.start_block * SUB_BLOCK as u64;
        let end = (a.last_on + 1) * SUB_BLOCK as u64;
        self.spans[self.span_next] = (start, end);
        self.span_next = (self.span_next + 1) % SPAN_CAPACITY;
        self.floor_block = a.last_on + 1;
        if self.is_key(&a) {
            if self.event_len == EVENT_CAPACITY {
                self.event_head = (self.event_head + 1) % EVENT_CAPACITY;
                self.event_len -= 1;
                self.dropped_events += 1;
            }
            self.events[(self.event_head + self.event_len) % EVENT_CAPACITY] = KeyPress {
                key: a.key,
                start,
                end,
            };
            self.event_len += 1;
        }
    }

    /// The decision on a finished tone: long enough, clean, and steadily on frequency.
    fn is_key(&self, a: &ActiveTone) -> bool {
        let n = a.valid_windows as f32;
        // Mean advance within tolerance, and the advances bunched together (steady frequency).
        let steady = |(re, im): (f32, f32), k: usize| {
            let mag2 = re * re + im * im;
            re > 0.0
                && re * re >= self.cos_key_tol[k] * self.cos_key_tol[k] * mag2
                && mag2 >= self.min_coherence2[k] * n * n
        };
        a.on_blocks >= MIN_ON_BLOCKS
            && a.valid_windows >= MIN_VALID_WINDOWS
            && steady(a.advance_row, a.row)
            && steady(a.advance_col, 4 + a.col)
            && a.tone_energy >= MIN_KEY_ENERGY_SHARE as f64 * a.total_energy
    }

    /// Whether sub-block `index` carries the row and column tones on its own.
    ///
    /// A 5 ms sub-block barely separates neighbouring frequencies (a tone 1 % off sits only
    /// about 1.5 dB above the next row's filter), so each tone need only come within
    /// [`PRESENCE_GROUP_MARGIN`] of the strongest filter in its group; telling neighbouring keys
    /// apart is the 20 ms window's job.
    fn present(&self, row: usize, col: usize, index: u64) -> bool {
        let b = self.block(index);
        let pr = b.power[row];
        let pc = b.power[4 + col];
        for k in 0..4 {
            if (k != row && b.power[k] > PRESENCE_GROUP_MARGIN * pr)
                || (k != col && b.power[4 + k] > PRESENCE_GROUP_MARGIN * pc)
            {
                return false;
            }
        }
        let scale = 2.0 / SUB_BLOCK as f32;
        let (er, ec) = (pr * scale, pc * scale);
        er >= self.min_block_tone_energy
            && ec >= self.min_block_tone_energy
            && er + ec >= MIN_PRESENCE_SHARE * b.energy
    }

    /// Judges the 20 ms window ending at the newest sub-block.
    fn judge_window(&self) -> Option<WindowMatch> {
        if self.blocks < WINDOW as u64 {
            return None;
        }
        let now = self.blocks - 1;
        let total: f32 = (0..WINDOW).map(|j| self.block(now - j as u64).energy).sum();
        // Too quiet to hold two tones at the minimum level: most of silence stops here.
        if total < 2.0 * self.min_window_tone_energy {
            return None;
        }
        // Incoherent sums of sub-block powers bound each frequency's on-frequency energy from
        // above (Cauchy-Schwarz): a window whose best row and column cannot reach the level
        // and share thresholds even on this bound fails for certain. Most speech stops here.
        let mut bound = [0.0f32; BANK_SIZE];
        for j in 0..WINDOW {
            let p = &self.block(now - j as u64).power;
            for k in 0..BANK_SIZE {
                bound[k] += p[k];
            }
        }
        let scale = 2.0 / SUB_BLOCK as f32;
        let best_row = bound[..4].iter().fold(0.0f32, |m, &v| m.max(v)) * scale;
        let best_col = bound[4..].iter().fold(0.0f32, |m, &v| m.max(v)) * scale;
        if best_row < self.min_window_tone_energy
            || best_col < self.min_window_tone_energy
            || best_row + best_col < MIN_WINDOW_ENERGY_SHARE * total
        {
            return None;
        }
        // Coherent (phase-aligned) sums for all eight frequencies.
        let pow = self.align.coherent_power(self.window_blocks(now));
        let row = strongest(&pow[..4]);
        let col = strongest(&pow[4..]);
        for k in 0..4 {
            if (k != row && pow[row] < self.relative_peak * pow[k])
                || (k != col && pow[4 + col] < self.relative_peak * pow[4 + k])
            {
                return None;
            }
        }
        let (er, advance_row) = self.on_frequency_energy(row, now)?;
        let (ec, advance_col) = self.on_frequency_energy(4 + col, now)?;
        if er < self.min_window_tone_energy || ec < self.min_window_tone_energy {
            return None;
        }
        if er > self.normal_twist * ec || ec > self.reverse_twist * er {
            return None;
        }
        if er + ec < MIN_WINDOW_ENERGY_SHARE * total {
            return None;
        }
        Some(WindowMatch {
            key: DtmfKey::at(row, col),
            row,
            col,
            advance_row,
            advance_col,
            tone_energy: er + ec,
            total_energy: total,
        })
    }

    /// Energy of frequency `k`'s tone over the window, measured at the tone's actual frequency
    /// (see [`phase_advance`]), and the tone's phase advance per sub-block as a unit phasor;
    /// `None` when the frequency is off by more than [`MAX_WINDOW_FREQ_OFFSET`].
    fn on_frequency_energy(&self, k: usize, now: u64) -> Option<(f32, (f32, f32))> {
        let aligned = self.align.aligned(self.window_blocks(now), k);
        let advance = phase_advance(&aligned)?;
        if advance.0 < self.cos_window_tol[k] {
            return None;
        }
        let energy = rotated_power(&aligned, advance) * 2.0 / (WINDOW * SUB_BLOCK) as f32;
        Some((energy, advance))
    }

    /// The window's sub-blocks ending at `now`, newest first.
    fn window_blocks(&self, now: u64) -> [&BlockTerms; WINDOW] {
        core::array::from_fn(|j| self.block(now - j as u64))
    }
}

/// Runs the bank over `B` sub-blocks, unless all of them are quieter than `quiet` (energy):
/// then their terms are zero, which is what they would round to next to any tone the tests
/// could see, and a quarter of a call's audio (pauses, silence) costs no filtering.
#[inline]
fn run_bank<const B: usize>(bank: &GoertzelBank, quiet: f32, x: &[f32], out: &mut [BlockTerms; B]) {
    let mut energy = [0.0f32; B];
    for (e, block) in energy.iter_mut().zip(x.chunks_exact(SUB_BLOCK)) {
        *e = block.iter().map(|v| v * v).sum();
    }
    if energy.iter().all(|&e| e < quiet) {
        for (o, e) in out.iter_mut().zip(energy) {
            *o = BlockTerms {
                energy: e,
                ..BlockTerms::default()
            };
        }
    } else {
        bank.run::<B, SUB_BLOCK>(x, out);
    }
}

fn strongest(p: &[f32]) -> usize {
    let mut best = 0;
    for k in 1..p.len() {
        if p[k] > p[best] {
            best = k;
        }
    }
    best
}

fn db_to_power(db: f32) -> f32 {
    10f32.powf(db / 10.0)
}

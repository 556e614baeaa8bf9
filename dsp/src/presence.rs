//! The masking test: is there anything DTMF-like in this audio, however quiet, noisy, twisted,
//! off-frequency or short?
//!
//! Capture asks whether a tone is a key by ITU-T Q.24 and must reject much of what a person or a
//! decoder tuned to its limits can still read. Masking asks the physical question instead and
//! errs on the side of hiding: is there one low-group and one high-group spectral line that
//! together hold most of the audio, wherever they sit within [`MAX_FREQ_OFFSET`] of a DTMF
//! frequency, at any level above the G.711 quantisation floor ([`MIN_TONE_LEVEL_DBM0`]), at any
//! twist up to [`MAX_TWIST_DB`]?
//!
//! Every 5 ms the last 20 ms (four 5 ms sub-blocks of the capture detector's own Goertzel terms)
//! are judged. Per group, of the two filters with the most energy, the one holding more energy
//! at its tone's own frequency (phase advance between sub-blocks, see [`crate::window`]) is the
//! candidate line. Then:
//! - **share**: the two lines' part of the window's energy. A key holds nearly all of it; one at
//!   0 dB S/N in white noise about 0.67. Decoders need more than our weakest tier: multimon-ng
//!   reads a key at 0.4 of a 40 ms window, spandsp at about 0.8 of a 12.75 ms block;
//! - **weak-to-rest**: the weaker line's energy over everything outside the pair. Voiced speech
//!   whose strongest harmonic happens to sit in one group scores a few tenths at most;
//! - **relative peak**: each line's filter above the rest of its group at the nominal
//!   frequencies, as a decoder's relative-peak test sees it (they ask 8-10 dB); for the
//!   steady tier, a rival filter's line that belongs to a note's series the pair is not on is
//!   set aside (`rival`: a key under a note whose line shares its group);
//! - **harmonic**: lines in the ratio of two low harmonics of one fundamental (3:2, 5:3, 7:4, …)
//!   *and* carrying the rest of that fundamental's series are a voice or a note, not a key
//!   ([`crate::harmonic`]: the ratio alone never decides; an off-nominal keypad lands on 7:4),
//!   judged on the 40 ms ending with the window, where a low voice's harmonics stand apart;
//! - **two real lines**: both lines stand in a Hann-windowed spectrum of the window's samples
//!   within [`MAX_TWIST_DB`] of each other, so a single tone whose leakage into the other group's
//!   broad 5 ms filters looks like a weak second line is not a key.
//!
//! Four tiers of [`EVIDENCE`] make a window DTMF-like: a clean pair at once, weaker pairs only
//! when the same pair holds for several consecutive windows (speech rarely keeps two lines that
//! dominate and are not harmonics of each other for 15-30 ms), the weakest (a key under louder
//! music, voices or noise) only while both lines also hold still in frequency
//! ([`STEADY_TOLERANCE`]). The harmonic verdict is weighed over the whole run, not per window: a
//! run counts unless more than [`HARMONIC_SHARE`] of its windows looked harmonic (a note whose
//! series happens to pass through a key's two lines shares some windows with it, a voice all).
//! Once marked, the pair stays marked while it holds [`HOLD_PAIR_SHARE`], or while both lines
//! are still there at the frequencies measured when it was marked, within
//! [`HOLD_LINE_DROP_DB`] of their strongest level since (the tone is tracked by its frequency,
//! not by its share, so a key partly under louder speech, music or noise stays covered to its
//! end). A marked run covers every window of it from its first, i.e. from up to 15 ms before
//! the first window that saw the tone: that, with a 20 ms look-ahead, is what catches onsets.

//! Measured on the public leak battery (and its μ-law, band-pass and GSM round trips): every key
//! any of three decoders reads is covered, while speech and music get about 0.1-0.3 % of their
//! frames marked (README, "The masker").
//!
//! Cost, cheapest first: the window's energy and incoherent bounds reject most windows from
//! the terms alone; the coherent measures follow only for the two best filters of each group;
//! the Hann-windowed tests (samples, not terms) only for a pair that already meets a tier. The
//! harmonic test, the dearest, is not run per window at all: a shaped window's verdict stays
//! open until the run's outcome depends on it, and is then settled oldest first only until the
//! run's harmonic share is decided either way. Runs of speech that never reach a tier's window
//! count, most of them, never pay for it; one that does pays for about half its windows. An
//! open window is judged at the latest while its samples are still in the ring. What the
//! harmonic tests may cost is bounded by a credit per window ([`HARMONIC_CREDIT`]).
//!
//! Sans-IO, no allocation; fed sub-block terms in order, queried by sample range.

use crate::detector::{SAMPLE_RATE, SUB_BLOCK};
use crate::goertzel::{BlockTerms, BANK_SIZE};
use crate::harmonic::{HannDft, LONG_SPAN, SPAN};
use crate::key::{COL_HZ, ROW_HZ};
use crate::level;
use crate::window::{phase_advance, rotated_power, WindowAlign, WINDOW};
use rival::Peak;
pub use rival::RIVAL_CREDIT;

/// One way for a window's pair to count as DTMF-like.
#[derive(Debug, Clone, Copy)]
pub struct Evidence {
    /// Smallest share of the window's energy held by the two lines.
    pub min_share: f32,
    /// Smallest ratio of the weaker line's energy to the energy outside the pair.
    pub min_weak_to_rest: f32,
    /// Whether the relative-peak and harmonic tests apply.
    pub shaped: bool,
    /// Consecutive windows of the same pair needed.
    pub windows: u32,
    /// Whether those windows must also show both lines at one frequency each, within
    /// [`STEADY_TOLERANCE`] (a generator's tone, not a glide).
    pub steady: bool,
}

/// The tiers, strongest first: a clean pair marks at once; weaker pairs must persist.
pub const EVIDENCE: [Evidence; 4] = [
    // Clean: the weaker line alone outweighs everything else.
    Evidence {
        min_share: 0.5,
        min_weak_to_rest: 1.2,
        shaped: false,
        windows: 1,
        steady: false,
    },
    // Noisy or under speech, for 15 ms (three windows 5 ms apart).
    Evidence {
        min_share: 0.4,
        min_weak_to_rest: 0.3,
        shaped: true,
        windows: 3,
        steady: false,
    },
    // Deep in noise or speech, for 30 ms.
    Evidence {
        min_share: 0.35,
        min_weak_to_rest: 0.15,
        shaped: true,
        windows: 6,
        steady: false,
    },
    // Under louder music, voices or noise: two lines holding still for 30 ms while the
    // background moves around them.
    Evidence {
        min_share: 0.2,
        min_weak_to_rest: 0.08,
        shaped: true,
        windows: 6,
        steady: true,
    },
];
/// Largest drift of a line's measured frequency from the start of a steady run, as a fraction.
///
/// Keypad generators hold their frequencies still (a window's estimate wobbles by ±0.4 %);
/// voiced speech glides and music's vibrato swings by more.
pub const STEADY_TOLERANCE: f32 = 0.008;
/// Largest share (numerator, denominator) of a run's shaped windows that may look harmonic for
/// the run to count as a key: a half.
pub const HARMONIC_SHARE: (u32, u32) = (1, 2);
/// Windows in a row (5 ms apart) a run may miss its pair and go on: a key is judged over its
/// whole duration, and louder moments of music or voices hide it from single windows.
pub const MAX_RUN_GAP: u32 = 2;
/// Share that keeps an already DTMF-like pair marked (the same two filters).
pub const HOLD_PAIR_SHARE: f32 = 0.2;
/// Smallest relative peak of each line over the rest of its group (nominal filters), dB.
pub const MIN_RELATIVE_PEAK_DB: f32 = 4.0;
/// How far (dB) a tracked line may fall below its strongest level since marking and still hold
/// the mark: a tone filling a third of the window is 10 dB down.
pub const HOLD_LINE_DROP_DB: f32 = 12.0;
/// Largest frequency offset followed, as a fraction of the nominal frequency.
///
/// Decoders read keys several per cent off (spandsp's wide filters up to about ±4.5 %); a
/// 5 ms term keeps a tone this far off within 2.5 dB of its filter's peak.
pub const MAX_FREQ_OFFSET: f32 = 0.06;
/// Largest level difference between the two lines, dB (either way).
///
/// spandsp can be set to 20 dB of twist either way; 4 dB beyond that.
pub const MAX_TWIST_DB: f32 = 24.0;
/// Lowest level per line considered, dBm0: just above what G.711 quantisation itself produces
/// (A-law's finest step leaves about -71 dBm0 of noise).
pub const MIN_TONE_LEVEL_DBM0: f32 = -66.0;
/// Marked spans remembered (the masker asks about the last 100 ms or so).
const SPANS: usize = 8;
/// Samples kept for the Hann-windowed tests (a power of two): the windows of a run whose
/// harmonic verdict is still open ([`MAX_OPEN_AGE`]), and [`MAX_CHUNK`] pushed ahead of their
/// terms.
const RING: usize = 1024;
/// Most samples that may be pushed with [`TonePresence::push_samples`] before their terms.
pub const MAX_CHUNK: usize = 160;
/// Oldest window (samples from its end to the newest window's end) whose harmonic verdict may
/// still be open: its samples are still in the ring (`RING` less the span itself and what
/// may be pushed ahead); an older one is judged before they are overwritten.
const MAX_OPEN_AGE: u64 = (RING - LONG_SPAN - MAX_CHUNK) as u64;
/// Windows of a run whose harmonic verdict may be open at once (one per window within
/// [`MAX_OPEN_AGE`]).
const MAX_OPEN: usize = MAX_OPEN_AGE as usize / SUB_BLOCK + 1;
/// Fundamentals the harmonic tests may try, as a credit: (gained per 5 ms window, most held).
/// Each fundamental is one batch of [`HannDft::powers`] over [`LONG_SPAN`] (one or two passes,
/// about 1 µs); settling a run and judging windows about to age out both draw on it, so no
/// 20 ms frame pays for more than 28 (most held plus three windows' gain). Unbounded, a run
/// settling eight open windows of a pair near 2:1 (which fits all eight fundamentals) cost
/// 40-50 µs in one frame. When it runs out, a run whose judged windows are mostly not harmonic
/// is marked (errs toward masking); one whose judged windows are mostly harmonic waits for the
/// next window's credit; a window about to age out unjudged counts as not harmonic.
pub const HARMONIC_CREDIT: (u32, u32) = (4, 16);

/// A marked pair being followed: its filters, the lines' phase advance per sub-block (their
/// frequencies) when marked, and their strongest energy since.
#[derive(Debug, Clone, Copy)]
struct Track {
    pair: (usize, usize),
    advance: [(f32, f32); 2],
    peak: [f32; 2],
}

/// A candidate pair's measures in one window.
#[derive(Debug, Clone, Copy)]
struct PairMeasure {
    share: f32,
    weak_to_rest: f32,
}

/// One window's judgement of its candidate pair.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    pair: (usize, usize),
    /// The strongest tier of [`EVIDENCE`] met, the harmonic test aside.
    tier: usize,
    /// The lines' frequencies, Hz.
    hz: (f32, f32),
}

/// A shaped window of a run whose harmonic verdict is not needed yet: where it ends and the
/// lines it would be asked about.
#[derive(Debug, Clone, Copy, Default)]
struct OpenWindow {
    end: u64,
    hz: (f32, f32),
}

/// Consecutive windows of one pair not yet marked.
#[derive(Debug, Clone, Copy)]
struct Run {
    pair: (usize, usize),
    /// First sample of the run's first window.
    start: u64,
    /// Windows so far that met each tier.
    windows: [u32; EVIDENCE.len()],
    /// The lines' frequencies (Hz) when the steady count began.
    hz: (f32, f32),
    /// Consecutive windows at those frequencies that met each steady tier.
    steady: [u32; EVIDENCE.len()],
    /// Windows judged by a shaped tier, and how many of them looked harmonic (of those judged
    /// so far: see `open`).
    shaped: u32,
    harmonic: u32,
    /// Shaped windows whose harmonic verdict is still open, oldest first: the (costly) test
    /// runs only when the run's outcome depends on it, so short runs of speech never pay for it.
    open: [OpenWindow; MAX_OPEN],
    open_len: usize,
    /// Consecutive windows since the last that met a tier with this pair.
    misses: u32,
}

impl Run {
    /// Whether the run meets a tier (shaped or not) of [`EVIDENCE`], or will once `slack` more
    /// windows meet it.
    fn meets(&self, shaped: bool, slack: u32) -> bool {
        EVIDENCE.iter().enumerate().any(|(i, e)| {
            let n = if e.steady {
                self.steady[i]
            } else {
                self.windows[i]
            };
            e.shaped == shaped && n + slack >= e.windows
        })
    }
}

/// The masking test. See the module documentation.
#[derive(Debug, Clone)]
pub struct TonePresence {
    align: WindowAlign,
    /// cos of the largest phase advance per sub-block followed, per frequency.
    cos_offset: [f32; BANK_SIZE],
    min_window_tone_energy: f32,
    twist: f32,
    relative_peak: f32,
    history: [BlockTerms; WINDOW],
    blocks: u64,
    /// The marked pair being followed (row filter 0-3, column filter 4-7).
    tracked: Option<Track>,
    hold_drop: f32,
    dft: HannDft,
    /// The harmonic test's, over [`LONG_SPAN`].
    long_dft: HannDft<LONG_SPAN>,
    /// The last [`RING`] samples, by stream position.
    ring: [f32; RING],
    written: u64,
    run: Option<Run>,
    /// Fundamentals the harmonic tests may still try (see [`HARMONIC_CREDIT`]).
    credit: u32,
    /// Batches the rival tests of [`Self::peaked`] may still run (see [`RIVAL_CREDIT`]).
    rival_credit: u32,
    /// The span being marked, in samples.
    open: Option<(u64, u64)>,
    spans: [(u64, u64); SPANS],
    span_next: usize,
    windows_marked: u64,
}

impl Default for TonePresence {
    fn default() -> Self {
        Self::new()
    }
}

impl TonePresence {
    /// A presence test with the thresholds documented on this module's constants.
    pub fn new() -> Self {
        let freqs = bank_frequencies();
        let mut cos_offset = [0.0; BANK_SIZE];
        for k in 0..BANK_SIZE {
            let advance = 2.0
                * core::f64::consts::PI
                * MAX_FREQ_OFFSET as f64
                * freqs[k] as f64
                * SUB_BLOCK as f64
                / SAMPLE_RATE as f64;
            cos_offset[k] = advance.cos() as f32;
        }
        TonePresence {
            align: WindowAlign::new(&freqs, SUB_BLOCK, SAMPLE_RATE as f32),
            cos_offset,
            min_window_tone_energy: level::sine_power(MIN_TONE_LEVEL_DBM0)
                * (WINDOW * SUB_BLOCK) as f32,
            twist: 10f32.powf(MAX_TWIST_DB / 10.0),
            relative_peak: 10f32.powf(MIN_RELATIVE_PEAK_DB / 10.0),
            history: [BlockTerms::default(); WINDOW],
            blocks: 0,
            tracked: None,
            hold_drop: 10f32.powf(-HOLD_LINE_DROP_DB / 10.0),
            dft: HannDft::new(),
            long_dft: HannDft::new(),
            ring: [0.0; RING],
            written: 0,
            run: None,
            credit: HARMONIC_CREDIT.1,
            rival_credit: RIVAL_CREDIT.1,
            open: None,
            spans: [(0, 0); SPANS],
            span_next: 0,
            windows_marked: 0,
        }
    }

    /// Takes the next samples of the stream (at most [`MAX_CHUNK`]), before their sub-blocks'
    /// terms are pushed (the Hann-windowed tests read them).
    #[inline]
    pub fn push_samples(&mut self, x: &[i16]) {
        for &v in x {
            self.ring[(self.written % RING as u64) as usize] = v as f32;
            self.written += 1;
        }
    }

    /// Takes the next 5 ms sub-block's terms (from the detector's bank, in stream order).
    #[inline]
    pub fn push(&mut self, terms: &BlockTerms) {
        self.history[(self.blocks % WINDOW as u64) as usize] = *terms;
        self.blocks += 1;
        if self.blocks < WINDOW as u64 {
            return;
        }
        let (per_window, most) = HARMONIC_CREDIT;
        self.credit = (self.credit + per_window).min(most);
        let (per_window, most) = RIVAL_CREDIT;
        self.rival_credit = (self.rival_credit + per_window).min(most);
        let now = self.blocks - 1;
        let start = (now + 1 - WINDOW as u64) * SUB_BLOCK as u64;
        let end = (now + 1) * SUB_BLOCK as u64;
        let blocks = self.window_blocks(now);
        let total: f32 = blocks.iter().map(|b| b.energy).sum();
        if let Some(mut t) = self.tracked {
            if self.holds(&blocks, &mut t, total) {
                self.tracked = Some(t);
                self.extend(start, end);
                return;
            }
            self.tracked = None;
            self.close();
        }
        let mut budget = self.rival_credit;
        let verdict = self.judge(&blocks, total, &mut budget);
        self.rival_credit = budget;
        let Some(Verdict { pair, tier, hz }) = verdict else {
            self.miss(end);
            return;
        };
        let mut run = match self.run {
            Some(run) if run.pair == pair => run,
            // Another pair for a window or two inside a run is a louder moment of the
            // background, not the end of the key.
            Some(run) if run.misses < MAX_RUN_GAP && run.windows.iter().any(|&n| n > 1) => {
                self.miss(end);
                return;
            }
            _ => Run {
                pair,
                start,
                windows: [0; EVIDENCE.len()],
                hz,
                steady: [0; EVIDENCE.len()],
                shaped: 0,
                harmonic: 0,
                open: [OpenWindow::default(); MAX_OPEN],
                open_len: 0,
                misses: 0,
            },
        };
        run.misses = 0;
        if EVIDENCE[tier].shaped {
            run.shaped += 1;
            run.open[run.open_len] = OpenWindow { end, hz };
            run.open_len += 1;
        }
        // A window meeting a tier meets every weaker one too.
        for w in &mut run.windows[tier..] {
            *w += 1;
        }
        let near = |a: f32, b: f32| (a - b).abs() <= STEADY_TOLERANCE * b;
        if !(near(hz.0, run.hz.0) && near(hz.1, run.hz.1)) {
            run.hz = hz;
            run.steady = [0; EVIDENCE.len()];
        }
        for w in &mut run.steady[tier..] {
            *w += 1;
        }
        let mut budget = self.credit;
        let marked =
            run.meets(false, 0) || (run.meets(true, 0) && self.not_harmonic(&mut run, &mut budget));
        self.credit = budget;
        if marked {
            self.tracked = Some(self.track(&blocks, pair));
            self.run = None;
            self.extend(run.start, end);
        } else {
            self.keep(run, end);
        }
    }

    /// Harmonics are judged over the run, not per window: a key under music can share a window
    /// with a note whose series happens to pass through its two lines, but not most of them; a
    /// voice's pair is harmonic in nearly all. Whether at most [`HARMONIC_SHARE`] of the run's
    /// shaped windows look harmonic, judging open windows (oldest first) only until the answer
    /// no longer depends on the rest, within `budget` (then: see [`HARMONIC_CREDIT`]).
    fn not_harmonic(&self, run: &mut Run, budget: &mut u32) -> bool {
        let (num, den) = HARMONIC_SHARE;
        let decided = |run: &Run| {
            let open = run.open_len as u32;
            if (run.harmonic + open) * den <= run.shaped * num {
                Some(true)
            } else if run.harmonic * den > run.shaped * num {
                Some(false)
            } else {
                None
            }
        };
        loop {
            if let Some(d) = decided(run) {
                return d;
            }
            if !self.judge_oldest_open(run, budget) {
                let judged = run.shaped - run.open_len as u32;
                return run.harmonic * den <= judged * num;
            }
        }
    }

    /// Judges the run's oldest open window (there is one) and closes it; false, leaving it
    /// open, when `budget` ran out first.
    fn judge_oldest_open(&self, run: &mut Run, budget: &mut u32) -> bool {
        let w = run.open[0];
        let x = self.samples_ending::<LONG_SPAN>(w.end);
        let Some(harmonic) = self
            .long_dft
            .harmonic_pair_within(&x, w.hz.0, w.hz.1, budget)
        else {
            return false;
        };
        run.harmonic += harmonic as u32;
        run.open.copy_within(1..run.open_len, 0);
        run.open_len -= 1;
        true
    }

    /// Keeps `run` going after the window ending at `end`: an open window whose samples would
    /// be gone by the next window is judged now (one at most: one opens per window), or, with
    /// the budget spent, closed as not harmonic.
    fn keep(&mut self, mut run: Run, end: u64) {
        let mut budget = self.credit;
        while run.open_len > 0 && run.open[0].end + MAX_OPEN_AGE < end + SUB_BLOCK as u64 {
            if !self.judge_oldest_open(&mut run, &mut budget) {
                run.open.copy_within(1..run.open_len, 0);
                run.open_len -= 1;
            }
        }
        self.credit = budget;
        self.run = Some(run);
    }

    /// A window (ending at `end`) without the run's pair: the run survives [`MAX_RUN_GAP`] of
    /// them in a row.
    fn miss(&mut self, end: u64) {
        match self.run.take() {
            Some(r) if r.misses < MAX_RUN_GAP => self.keep(
                Run {
                    misses: r.misses + 1,
                    ..r
                },
                end,
            ),
            _ => {}
        }
    }

    /// Ends the stream: closes the span being marked.
    pub fn flush(&mut self) {
        self.close();
        self.tracked = None;
        self.run = None;
    }

    /// Whether any DTMF-like window overlaps samples `start..end`, widened by `margin` samples
    /// on each side.
    pub fn overlaps(&self, start: u64, end: u64, margin: u64) -> bool {
        let (lo, hi) = (start.saturating_sub(margin), end + margin);
        let hit = |&(s, e): &(u64, u64)| e > s && s < hi && e > lo;
        self.open.as_ref().is_some_and(hit) || self.spans.iter().any(hit)
    }

    /// Windows judged DTMF-like so far.
    pub fn windows_marked(&self) -> u64 {
        self.windows_marked
    }

    /// Starts following `pair` at the frequencies its lines show in this window.
    fn track(&self, blocks: &[BlockTerms; WINDOW], pair: (usize, usize)) -> Track {
        let line = |k: usize| {
            let aligned = self.align.aligned(blocks.each_ref(), k);
            let adv = phase_advance(&aligned)
                .filter(|a| a.0 >= self.cos_offset[k])
                .unwrap_or((1.0, 0.0));
            (adv, rotated_power(&aligned, adv))
        };
        let ((ar, pr), (ac, pc)) = (line(pair.0), line(pair.1));
        Track {
            pair,
            advance: [ar, ac],
            peak: [pr, pc],
        }
    }

    /// Whether a marked pair still sounds in this window: by its share, or by both lines still
    /// being there at their tracked frequencies (see [`HOLD_LINE_DROP_DB`]).
    fn holds(&self, blocks: &[BlockTerms; WINDOW], t: &mut Track, total: f32) -> bool {
        let (r, c) = t.pair;
        if self
            .measure(blocks, r, c, total)
            .is_some_and(|m| m.share >= HOLD_PAIR_SHARE)
        {
            return true;
        }
        let mut held = true;
        for (i, k) in [r, c].into_iter().enumerate() {
            let p = rotated_power(&self.align.aligned(blocks.each_ref(), k), t.advance[i]);
            t.peak[i] = t.peak[i].max(p);
            held &= p >= self.hold_drop * t.peak[i]
                && p * 2.0 / (WINDOW * SUB_BLOCK) as f32 >= self.min_window_tone_energy;
        }
        held
    }

    /// The window's samples (the 20 ms ending with the newest sub-block), oldest first.
    fn window_samples(&self) -> [f32; SPAN] {
        self.samples_ending(self.blocks * SUB_BLOCK as u64)
    }

    /// The `N` samples ending at stream position `end`, oldest first.
    fn samples_ending<const N: usize>(&self, end: u64) -> [f32; N] {
        debug_assert!(self.written >= end, "samples pushed after their terms");
        debug_assert!(
            self.written - end + N as u64 <= RING as u64,
            "samples already overwritten"
        );
        let start = end.saturating_sub(N as u64);
        core::array::from_fn(|i| self.ring[((start + i as u64) % RING as u64) as usize])
    }

    /// Whether both lines are real in the window's Hann-windowed spectrum: each within
    /// [`MAX_TWIST_DB`] of the other at its measured frequency. A single tone leaks into the
    /// other group's 5 ms filters; with the Hann window its leakage is 60 dB down or more.
    fn two_lines(&self, x: &[f32; SPAN], (r, fr): (usize, f32), (c, fc): (usize, f32)) -> bool {
        // At the measured frequency, or the nominal one where a line filling only part of the
        // window was measured poorly.
        let nominal = bank_frequencies();
        let mut p = [0.0; 4];
        self.dft
            .powers(x, &[fr, nominal[r], fc, nominal[c]], &mut p);
        let (pr, pc) = (p[0].max(p[1]), p[2].max(p[3]));
        pr <= self.twist * pc && pc <= self.twist * pr
    }

    fn extend(&mut self, start: u64, end: u64) {
        self.windows_marked += 1;
        self.open = Some(match self.open {
            Some((s, _)) => (s.min(start), end),
            None => (start, end),
        });
    }

    fn close(&mut self) {
        if let Some(span) = self.open.take() {
            self.spans[self.span_next] = span;
            self.span_next = (self.span_next + 1) % SPANS;
        }
    }

    /// The window's sub-block terms, newest first (copied: the history is overwritten next).
    fn window_blocks(&self, now: u64) -> [BlockTerms; WINDOW] {
        core::array::from_fn(|j| self.history[((now - j as u64) % WINDOW as u64) as usize])
    }

    /// The window's candidate pair and the strongest tier of [`EVIDENCE`] it meets, if any.
    fn judge(
        &self,
        blocks: &[BlockTerms; WINDOW],
        total: f32,
        budget: &mut u32,
    ) -> Option<Verdict> {
        if total < 2.0 * self.min_window_tone_energy {
            return None;
        }
        // Incoherent sums of sub-block powers bound each filter's coherent energy from above
        // (Cauchy-Schwarz): they pick each group's candidates and reject most windows cheaply.
        let mut bound = [0.0f32; BANK_SIZE];
        for b in blocks {
            for (s, p) in bound.iter_mut().zip(&b.power) {
                *s += p;
            }
        }
        let (r1, r2) = two_strongest(&bound[..4]);
        let (c1, c2) = two_strongest(&bound[4..]);
        let weakest = EVIDENCE[EVIDENCE.len() - 1].min_share;
        if (bound[r1] + bound[4 + c1]) * 2.0 / (SUB_BLOCK as f32) < weakest * total {
            return None;
        }
        // A strong tone of one group leaks into the other group's 5 ms filters (-14 dB 270 Hz
        // away), which can outweigh a tone 13 dB weaker: of each group's two strongest filters,
        // the one holding more energy at its own frequency is the line.
        let order = |a: usize, b: usize| {
            let (ea, eb) = (self.tone_energy(blocks, a), self.tone_energy(blocks, b));
            if eb > ea {
                [(b, eb), (a, ea)]
            } else {
                [(a, ea), (b, eb)]
            }
        };
        let (rows, cols) = (order(r1, r2), order(4 + c1, 4 + c2));
        // The preferred pair first; the runners-up only when the Hann-windowed spectrum shows
        // that a picked line was the other group's tone leaking into a broad 5 ms filter.
        let mut x = None;
        for (r, er) in rows {
            for (c, ec) in cols {
                let Some((tier, found)) = self.tier(blocks, (r, er), (c, ec), total, budget) else {
                    continue;
                };
                let x = x.get_or_insert_with(|| self.window_samples());
                let (fr, fc) =
                    found.unwrap_or_else(|| (self.line_hz(blocks, r), self.line_hz(blocks, c)));
                if self.two_lines(x, (r, fr), (c, fc)) {
                    return Some(Verdict {
                        pair: (r, c),
                        tier,
                        hz: (fr, fc),
                    });
                }
            }
        }
        None
    }

    /// The strongest tier of [`EVIDENCE`] lines `r` and `c` holding `er` and `ec` meet, and
    /// their frequencies where [`Self::peaked`] found them on the span.
    fn tier(
        &self,
        blocks: &[BlockTerms; WINDOW],
        (r, er): (usize, f32),
        (c, ec): (usize, f32),
        total: f32,
        budget: &mut u32,
    ) -> Option<(usize, Option<(f32, f32)>)> {
        let m = self.pair_measure(er, ec, total)?;
        let mut shaped = None;
        let tier = EVIDENCE.iter().position(|e| {
            m.share >= e.min_share
                && m.weak_to_rest >= e.min_weak_to_rest
                && (!e.shaped
                    || match *shaped.get_or_insert_with(|| self.peaked(blocks, r, c, budget)) {
                        Peak::Clear => true,
                        // Only for a pair holding still: a key under a note is steady; a voice
                        // whose harmonics fall in the pair and a rival filter glides.
                        Peak::Apart(_) => e.steady,
                        Peak::Hidden => false,
                    })
        })?;
        match shaped {
            Some(Peak::Apart(hz)) => Some((tier, Some(hz))),
            _ => Some((tier, None)),
        }
    }

    /// The pair's measures, or `None` when a line is too quiet or the twist too large.
    fn measure(
        &self,
        blocks: &[BlockTerms; WINDOW],
        r: usize,
        c: usize,
        total: f32,
    ) -> Option<PairMeasure> {
        self.pair_measure(
            self.tone_energy(blocks, r),
            self.tone_energy(blocks, c),
            total,
        )
    }

    /// The measures of lines holding `er` and `ec` of a window's `total` energy.
    fn pair_measure(&self, er: f32, ec: f32, total: f32) -> Option<PairMeasure> {
        let ok = er >= self.min_window_tone_energy
            && ec >= self.min_window_tone_energy
            && er <= self.twist * ec
            && ec <= self.twist * er;
        ok.then(|| PairMeasure {
            share: (er + ec) / total,
            weak_to_rest: er.min(ec) / (total - er - ec).max(f32::MIN_POSITIVE),
        })
    }

    /// Filter `k`'s line frequency in Hz: measured, or nominal when it cannot be.
    fn line_hz(&self, blocks: &[BlockTerms; WINDOW], k: usize) -> f32 {
        self.frequency(blocks, k)
            .unwrap_or_else(|| bank_frequencies()[k])
    }

    /// Filter `k`'s line frequency in Hz, from its phase advance per sub-block.
    fn frequency(&self, blocks: &[BlockTerms; WINDOW], k: usize) -> Option<f32> {
        let (ur, ui) = phase_advance(&self.align.aligned(blocks.each_ref(), k))?;
        let per_turn = SAMPLE_RATE as f32 / (2.0 * core::f32::consts::PI * SUB_BLOCK as f32);
        Some(bank_frequencies()[k] + ui.atan2(ur) * per_turn)
    }

    /// Energy of filter `k`'s line over the window: the larger of its energy at the nominal
    /// frequency and at the frequency its phase advance shows (within [`MAX_FREQ_OFFSET`]), so a
    /// tone filling only part of the window is not lost to a poor frequency estimate.
    #[inline]
    fn tone_energy(&self, blocks: &[BlockTerms; WINDOW], k: usize) -> f32 {
        let aligned = self.align.aligned(blocks.each_ref(), k);
        let mut p = rotated_power(&aligned, (1.0, 0.0));
        if let Some(adv) = phase_advance(&aligned) {
            if adv.0 >= self.cos_offset[k] {
                p = p.max(rotated_power(&aligned, adv));
            }
        }
        p * 2.0 / (WINDOW * SUB_BLOCK) as f32
    }
}

/// The bank's eight frequencies: rows, then columns.
fn bank_frequencies() -> [f32; BANK_SIZE] {
    let mut freqs = [0.0f32; BANK_SIZE];
    freqs[..4].copy_from_slice(&ROW_HZ);
    freqs[4..].copy_from_slice(&COL_HZ);
    freqs
}

/// Indices of the largest and second-largest of four values.
fn two_strongest(p: &[f32]) -> (usize, usize) {
    let (mut a, mut b) = if p[1] > p[0] { (1, 0) } else { (0, 1) };
    for k in 2..p.len() {
        if p[k] > p[a] {
            b = a;
            a = k;
        } else if p[k] > p[b] {
            b = k;
        }
    }
    (a, b)
}

mod rival;
#[cfg(test)]
mod tests;

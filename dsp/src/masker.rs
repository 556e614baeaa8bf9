//! Masking: decides which frames carry any part of anything DTMF-like and supplies their
//! replacement.
//!
//! Two tests run over the same Goertzel terms: the capture [`DtmfDetector`] (strict, Q.24: what
//! is a key) and the paranoid [`TonePresence`] (what any decoder at any setting could read as
//! one). A frame is replaced when either saw a tone overlapping it — a confirmed key, a
//! candidate the detector later threw out, or a DTMF-like window — widened by one 5 ms
//! sub-block on each side.
//!
//! The look-ahead is time, not frames: a frame's verdict waits until `lookahead` × 20 ms of
//! audio *after its last sample* has been analysed, whatever the packet size (10, 20, 30, 60 ms
//! or a mix). A tone needs at most 20 ms to be noticed, so with the default of one (20 ms) the
//! frame holding a tone's first sample is judged once the tone has sounded long enough to be
//! seen: onsets are caught before they leave. Zero means "judge at once" and lets onsets
//! through; callers refuse it unless explicitly told it is unsafe.
//!
//! The masker never holds audio itself: callers keep their own delay line (PCM frames, or RTP
//! packets in the relay) and replace what the verdicts say. [`mask_signal`] does that for a whole
//! in-memory signal.

use crate::detector::{DtmfDetector, KeyPress, SUB_BLOCK};
use crate::guard::OutputGuard;
use crate::level;
use crate::noise::NoiseSource;
use crate::presence::{TonePresence, MAX_CHUNK};

/// Largest look-ahead, in 20 ms units.
pub const MAX_LOOKAHEAD: usize = 3;
/// Samples in one look-ahead unit (20 ms).
pub const LOOKAHEAD_UNIT: u64 = 160;
/// Frames that can await a verdict at once (2.5 ms packets at the longest look-ahead fit).
pub const MAX_PENDING: usize = 32;
/// Frequency of the uniform beep, Hz: a single tone between the DTMF groups, never a key.
pub const BEEP_HZ: u32 = 1000;
/// Level of the uniform beep, dBm0.
pub const BEEP_LEVEL_DBM0: f32 = -18.0;

/// What a masked frame is replaced with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaskingMode {
    /// Digital silence.
    Silence,
    /// White noise at the given level (dBm0), so the line does not sound dead.
    ComfortNoise {
        /// Noise level, dBm0.
        level_dbm0: f32,
    },
    /// The same 1 kHz beep whatever the key: "a key was pressed", never which.
    Beep,
}

/// The masker's verdict on one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameVerdict {
    /// Frame number, counted from 0 at the first frame pushed.
    pub frame: u64,
    /// Whether the frame must be replaced.
    pub replace: bool,
}

/// Errors from building a masker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskerError {
    /// Look-ahead above [`MAX_LOOKAHEAD`].
    LookaheadTooLong(usize),
}

impl core::fmt::Display for MaskerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MaskerError::LookaheadTooLong(n) => {
                write!(
                    f,
                    "look-ahead of {n} frames is above the maximum of {MAX_LOOKAHEAD}"
                )
            }
        }
    }
}

impl std::error::Error for MaskerError {}

/// Frame-by-frame masking decisions with a fixed look-ahead in time.
#[derive(Debug, Clone)]
pub struct Masker {
    detector: DtmfDetector,
    presence: TonePresence,
    lookahead: usize,
    lookahead_samples: u64,
    /// Sample ranges of the frames still awaiting a verdict, oldest first.
    pending: [(u64, u64); MAX_PENDING],
    pending_head: usize,
    pending_len: usize,
    /// Frame number of the oldest pending frame.
    next_verdict: u64,
    flushed: bool,
    frames_in: u64,
    frames_masked: u64,
    forced: u64,
    /// Forced verdicts not yet handed out (they precede every pending frame).
    forced_verdicts: usize,
    fill: Replacement,
}

impl Masker {
    /// A masker replacing frames with `mode`, judging each frame once `lookahead` × 20 ms of
    /// audio after it has been analysed.
    pub fn new(mode: MaskingMode, lookahead: usize) -> Result<Self, MaskerError> {
        if lookahead > MAX_LOOKAHEAD {
            return Err(MaskerError::LookaheadTooLong(lookahead));
        }
        Ok(Masker {
            detector: DtmfDetector::new(),
            presence: TonePresence::new(),
            lookahead,
            lookahead_samples: lookahead as u64 * LOOKAHEAD_UNIT,
            pending: [(0, 0); MAX_PENDING],
            pending_head: 0,
            pending_len: 0,
            next_verdict: 0,
            flushed: false,
            frames_in: 0,
            frames_masked: 0,
            forced: 0,
            forced_verdicts: 0,
            fill: Replacement::new(mode),
        })
    }

    /// The look-ahead in 20 ms units.
    pub fn lookahead(&self) -> usize {
        self.lookahead
    }

    /// Feeds the newest frame (any length: 80 samples for 10 ms, 160 for 20 ms, …). Its verdict
    /// comes from [`poll_verdict`](Self::poll_verdict) once enough later audio has been seen.
    pub fn push(&mut self, frame: &[i16]) {
        if self.pending_len == MAX_PENDING {
            // Frames far smaller than the look-ahead: the oldest cannot wait for its full
            // look-ahead, so it is replaced unjudged (fail closed) and counted.
            self.pending_head = (self.pending_head + 1) % MAX_PENDING;
            self.pending_len -= 1;
            self.forced += 1;
            self.forced_verdicts += 1;
        }
        let start = self.detector.position();
        let presence = &mut self.presence;
        // The presence test reads the samples of the window it judges: they go in just ahead
        // of their terms, a bounded chunk at a time (four sub-blocks: the bank's stride).
        for chunk in frame.chunks(MAX_CHUNK) {
            presence.push_samples(chunk);
            self.detector
                .process_observed(chunk, |terms| presence.push(terms));
        }
        let end = self.detector.position();
        self.pending[(self.pending_head + self.pending_len) % MAX_PENDING] = (start, end);
        self.pending_len += 1;
        self.frames_in += 1;
    }

    /// The next verdict, oldest frame first, once the frame's look-ahead has been analysed (or
    /// the stream was flushed).
    pub fn poll_verdict(&mut self) -> Option<FrameVerdict> {
        if self.forced_verdicts > 0 {
            self.forced_verdicts -= 1;
            self.frames_masked += 1;
            let frame = self.next_verdict;
            self.next_verdict += 1;
            return Some(FrameVerdict {
                frame,
                replace: true,
            });
        }
        if self.pending_len == 0 {
            return None;
        }
        let (start, end) = self.pending[self.pending_head];
        if !self.flushed && end + self.lookahead_samples > self.detector.analysed() {
            return None;
        }
        self.pending_head = (self.pending_head + 1) % MAX_PENDING;
        self.pending_len -= 1;
        let margin = SUB_BLOCK as u64;
        let replace = self.detector.tone_overlaps(start, end, margin)
            || self.presence.overlaps(start, end, margin);
        self.frames_masked += replace as u64;
        let frame = self.next_verdict;
        self.next_verdict += 1;
        Some(FrameVerdict { frame, replace })
    }

    /// Ends the stream: every frame still pending gets its verdict from
    /// [`poll_verdict`](Self::poll_verdict) with what has been seen.
    pub fn flush(&mut self) {
        let presence = &mut self.presence;
        // The detector completes its last sub-block with silence; so do the samples.
        let missing = (SUB_BLOCK - self.detector.staged()) % SUB_BLOCK;
        presence.push_samples(&[0; SUB_BLOCK][..missing]);
        self.detector.flush_observed(|terms| presence.push(terms));
        self.presence.flush();
        self.flushed = true;
    }

    /// The next key the masker's detector confirmed.
    pub fn poll_key(&mut self) -> Option<KeyPress> {
        self.detector.poll_key()
    }

    /// Writes this masker's replacement audio for one frame into `out`.
    pub fn fill_replacement(&mut self, out: &mut [i16]) {
        self.fill.fill(out);
    }

    /// The replacement mode.
    pub fn mode(&self) -> MaskingMode {
        self.fill.mode
    }

    /// Frames pushed so far.
    pub fn frames_in(&self) -> u64 {
        self.frames_in
    }

    /// Frames judged "replace" so far.
    pub fn frames_masked(&self) -> u64 {
        self.frames_masked
    }

    /// Frames replaced without a full look-ahead because too many small frames were waiting.
    pub fn forced(&self) -> u64 {
        self.forced
    }
}

/// Source of replacement audio for one [`MaskingMode`].
#[derive(Debug, Clone)]
struct Replacement {
    mode: MaskingMode,
    noise: NoiseSource,
    noise_amp: f32,
    beep_phase: usize,
    beep: [i16; 8],
}

impl Replacement {
    fn new(mode: MaskingMode) -> Self {
        let noise_amp = match mode {
            // Uniform noise in [-a, a] has power a²/3.
            MaskingMode::ComfortNoise { level_dbm0 } => {
                (3.0 * level::sine_power(level_dbm0)).sqrt()
            }
            _ => 0.0,
        };
        // 1 kHz at 8 kHz is exactly eight samples a period: one table, phase carried on.
        let mut beep = [0i16; 8];
        let a = level::amplitude(BEEP_LEVEL_DBM0);
        for (i, b) in beep.iter_mut().enumerate() {
            *b = (a * (2.0 * core::f32::consts::PI * i as f32 / 8.0).sin()).round() as i16;
        }
        Replacement {
            mode,
            noise: NoiseSource::new(0x5EED),
            noise_amp,
            beep_phase: 0,
            beep,
        }
    }

    fn fill(&mut self, out: &mut [i16]) {
        match self.mode {
            MaskingMode::Silence => out.fill(0),
            MaskingMode::ComfortNoise { .. } => {
                for o in out.iter_mut() {
                    *o = (self.noise.uniform() * self.noise_amp) as i16;
                }
            }
            MaskingMode::Beep => {
                for o in out.iter_mut() {
                    *o = self.beep[self.beep_phase];
                    self.beep_phase = (self.beep_phase + 1) % self.beep.len();
                }
            }
        }
    }
}

/// What [`mask_signal`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskReport {
    /// Frames in the signal.
    pub frames: u64,
    /// Frames replaced (by the masker or the output guard).
    pub masked: u64,
    /// Frames the output guard replaced after the masker let them through.
    pub guarded: u64,
    /// Keys the masker's detector confirmed.
    pub keys: Vec<KeyPress>,
}

/// Masks a whole signal in `frame`-sample frames, returning the masked signal (same length,
/// same timing) and what was done: the masker's verdicts, then the [`OutputGuard`] on every
/// frame as it would leave. For tests, fixtures and offline tools; the relay drives a
/// [`Masker`] itself.
pub fn mask_signal(
    input: &[i16],
    frame: usize,
    mode: MaskingMode,
    lookahead: usize,
) -> Result<(Vec<i16>, MaskReport), MaskerError> {
    let mut m = Masker::new(mode, lookahead)?;
    let mut guard = OutputGuard::new();
    let mut out = input.to_vec();
    let mut report = MaskReport::default();
    let apply =
        |m: &mut Masker, guard: &mut OutputGuard, out: &mut Vec<i16>, report: &mut MaskReport| {
            while let Some(v) = m.poll_verdict() {
                report.frames += 1;
                let s = v.frame as usize * frame;
                let e = (s + frame).min(out.len());
                if v.replace {
                    report.masked += 1;
                    m.fill_replacement(&mut out[s..e]);
                    guard.skip();
                } else if guard.check(&out[s..e]) {
                    report.masked += 1;
                    report.guarded += 1;
                    m.fill_replacement(&mut out[s..e]);
                }
            }
            report.keys.extend(core::iter::from_fn(|| m.poll_key()));
        };
    for chunk in input.chunks(frame) {
        m.push(chunk);
        apply(&mut m, &mut guard, &mut out, &mut report);
    }
    m.flush();
    apply(&mut m, &mut guard, &mut out, &mut report);
    Ok((out, report))
}

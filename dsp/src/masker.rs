//! Masking: decides which frames carry any part of a key and supplies their replacement.
//!
//! The masker runs its own [`DtmfDetector`] over the frame stream and gives its verdict on a frame
//! only after `lookahead` newer frames have been analysed. A frame is replaced when any tone the
//! detector saw — a confirmed key, or a candidate it later threw out as too short — overlaps it,
//! widened by one 5 ms sub-block on each side for the onset the sub-block grid cannot place
//! exactly. A tone needs about 20 ms to be recognised, so with a look-ahead of one 20 ms frame the
//! frame holding a tone's first sample is judged when the tone has sounded for at least 20 ms:
//! onsets are caught before they leave.
//!
//! The masker never holds audio itself: callers keep their own delay line (PCM frames, or RTP
//! packets in the relay) and replace what the verdicts say. [`mask_signal`] does that for a whole
//! in-memory signal.

use crate::detector::{DtmfDetector, KeyPress, SUB_BLOCK};
use crate::level;
use crate::noise::NoiseSource;

/// Largest look-ahead, in frames.
pub const MAX_LOOKAHEAD: usize = 3;
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

/// Frame-by-frame masking decisions with a fixed look-ahead.
#[derive(Debug, Clone)]
pub struct Masker {
    detector: DtmfDetector,
    lookahead: usize,
    /// Sample ranges of the frames still awaiting a verdict, oldest first.
    pending: [(u64, u64); MAX_LOOKAHEAD + 1],
    pending_len: usize,
    frames_in: u64,
    frames_masked: u64,
    fill: Replacement,
}

impl Masker {
    /// A masker replacing frames with `mode`, judging each frame `lookahead` frames late.
    pub fn new(mode: MaskingMode, lookahead: usize) -> Result<Self, MaskerError> {
        if lookahead > MAX_LOOKAHEAD {
            return Err(MaskerError::LookaheadTooLong(lookahead));
        }
        Ok(Masker {
            detector: DtmfDetector::new(),
            lookahead,
            pending: [(0, 0); MAX_LOOKAHEAD + 1],
            pending_len: 0,
            frames_in: 0,
            frames_masked: 0,
            fill: Replacement::new(mode),
        })
    }

    /// The look-ahead in frames.
    pub fn lookahead(&self) -> usize {
        self.lookahead
    }

    /// Feeds the newest frame (any length; 160 samples for 20 ms). Returns the verdict on the
    /// frame `lookahead` frames older, once there is one.
    pub fn push(&mut self, frame: &[i16]) -> Option<FrameVerdict> {
        let start = self.detector.position();
        self.detector.process(frame);
        let end = self.detector.position();
        self.pending[self.pending_len] = (start, end);
        self.pending_len += 1;
        self.frames_in += 1;
        if self.pending_len > self.lookahead {
            Some(self.judge_oldest())
        } else {
            None
        }
    }

    /// Ends the stream: the verdicts on every frame still pending, oldest first.
    pub fn flush(&mut self) -> impl Iterator<Item = FrameVerdict> + '_ {
        self.detector.flush();
        core::iter::from_fn(move || (self.pending_len > 0).then(|| self.judge_oldest()))
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

    fn judge_oldest(&mut self) -> FrameVerdict {
        let (start, end) = self.pending[0];
        self.pending.copy_within(1..self.pending_len, 0);
        self.pending_len -= 1;
        let replace = self.detector.tone_overlaps(start, end, SUB_BLOCK as u64);
        self.frames_masked += replace as u64;
        FrameVerdict {
            frame: self.frames_in - 1 - self.pending_len as u64,
            replace,
        }
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
    /// Frames replaced.
    pub masked: u64,
    /// Keys the masker's detector confirmed.
    pub keys: Vec<KeyPress>,
}

/// Masks a whole signal in `frame`-sample frames, returning the masked signal (same length,
/// same timing) and what was done. For tests, fixtures and offline tools; the relay drives a
/// [`Masker`] itself.
pub fn mask_signal(
    input: &[i16],
    frame: usize,
    mode: MaskingMode,
    lookahead: usize,
) -> Result<(Vec<i16>, MaskReport), MaskerError> {
    let mut m = Masker::new(mode, lookahead)?;
    let mut out = input.to_vec();
    let mut report = MaskReport::default();
    let mut apply = |v: FrameVerdict, m: &mut Masker, out: &mut Vec<i16>| {
        report.frames += 1;
        if v.replace {
            report.masked += 1;
            let s = v.frame as usize * frame;
            let e = (s + frame).min(out.len());
            m.fill_replacement(&mut out[s..e]);
        }
    };
    let mut keys = Vec::new();
    for chunk in input.chunks(frame) {
        if let Some(v) = m.push(chunk) {
            apply(v, &mut m, &mut out);
        }
        keys.extend(core::iter::from_fn(|| m.poll_key()));
    }
    let rest: Vec<FrameVerdict> = m.flush().collect();
    for v in rest {
        apply(v, &mut m, &mut out);
    }
    keys.extend(core::iter::from_fn(|| m.poll_key()));
    report.keys = keys;
    Ok((out, report))
}

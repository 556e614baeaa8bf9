//! tonegate's signal processing: G.711, a Goertzel filter bank, a streaming DTMF detector
//! (capture: strict), a tone-presence test (masking: paranoid), a masker, an output guard and a
//! DTMF generator.
//!
//! Everything here is sans-IO: plain values in, plain values out, no clocks, sockets or threads,
//! and no allocation per frame once constructed. Time is counted in samples at 8 kHz.

// No `unsafe` here, ever (the workspace denies it; this crate forbids even an allow).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod detector;
pub mod g711;
pub mod generator;
pub mod goertzel;
pub mod guard;
pub mod harmonic;
pub mod key;
pub mod level;
pub mod masker;
pub mod noise;
pub mod presence;
pub mod window;

pub use detector::{DtmfDetector, KeyPress, SAMPLE_RATE, SUB_BLOCK};
pub use g711::G711Law;
pub use generator::{DtmfGenerator, ToneSpec};
pub use guard::OutputGuard;
pub use key::DtmfKey;
pub use masker::{mask_signal, FrameVerdict, MaskReport, Masker, MaskerError, MaskingMode};
pub use noise::NoiseSource;
pub use presence::TonePresence;

/// Samples in a 20 ms frame at 8 kHz, the usual RTP packetisation.
pub const FRAME_SAMPLES: usize = 160;

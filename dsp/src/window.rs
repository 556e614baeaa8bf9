//! The 20 ms coherent analysis window shared by the capture detector and the masking presence
//! test: four 5 ms sub-blocks of Goertzel terms, phase-aligned and summed, with the tone's own
//! frequency measured from the phase advance between sub-blocks.
//!
//! Working from sub-block terms keeps frequency resolution and frequency tolerance separate: a
//! 5 ms term sees a tone up to ±100 Hz from its filter with little loss, and rotating the four
//! terms by the measured advance before summing gives the tone's energy as if a 20 ms filter sat
//! exactly on it.

use crate::goertzel::{BlockTerms, BANK_SIZE};

/// Sub-blocks in the window (4 × 5 ms = 20 ms).
pub const WINDOW: usize = 4;

/// `e^{+jωNj}` for j sub-blocks back, per frequency: aligns past sub-blocks to the newest one.
#[derive(Debug, Clone)]
pub struct WindowAlign {
    re: [[f32; BANK_SIZE]; WINDOW],
    im: [[f32; BANK_SIZE]; WINDOW],
}

/// One frequency's four sub-block terms, phase-aligned, newest first.
pub type Aligned = [(f32, f32); WINDOW];

impl WindowAlign {
    /// Alignment factors for filters at `freqs_hz` over sub-blocks of `block` samples.
    pub fn new(freqs_hz: &[f32; BANK_SIZE], block: usize, sample_rate: f32) -> Self {
        let mut re = [[0.0; BANK_SIZE]; WINDOW];
        let mut im = [[0.0; BANK_SIZE]; WINDOW];
        for k in 0..BANK_SIZE {
            let w = 2.0 * core::f64::consts::PI * freqs_hz[k] as f64 / sample_rate as f64;
            for j in 0..WINDOW {
                re[j][k] = (w * block as f64 * j as f64).cos() as f32;
                im[j][k] = (w * block as f64 * j as f64).sin() as f32;
            }
        }
        WindowAlign { re, im }
    }

    /// Frequency `k`'s terms of `blocks` (newest first), aligned to the newest.
    #[inline]
    pub fn aligned(&self, blocks: [&BlockTerms; WINDOW], k: usize) -> Aligned {
        let mut out = [(0.0f32, 0.0f32); WINDOW];
        for (j, a) in out.iter_mut().enumerate() {
            let b = blocks[j];
            let (ar, ai) = (self.re[j][k], self.im[j][k]);
            *a = (b.re[k] * ar - b.im[k] * ai, b.re[k] * ai + b.im[k] * ar);
        }
        out
    }

    /// Coherent (phase-aligned) power of all filters over the window: `|Σ aligned|²`.
    #[inline]
    pub fn coherent_power(&self, blocks: [&BlockTerms; WINDOW]) -> [f32; BANK_SIZE] {
        let mut cre = [0.0f32; BANK_SIZE];
        let mut cim = [0.0f32; BANK_SIZE];
        for (j, b) in blocks.iter().enumerate() {
            let (ar, ai) = (&self.re[j], &self.im[j]);
            for k in 0..BANK_SIZE {
                cre[k] += b.re[k] * ar[k] - b.im[k] * ai[k];
                cim[k] += b.re[k] * ai[k] + b.im[k] * ar[k];
            }
        }
        let mut pow = [0.0f32; BANK_SIZE];
        for k in 0..BANK_SIZE {
            pow[k] = cre[k] * cre[k] + cim[k] * cim[k];
        }
        pow
    }
}

/// The tone's phase advance per sub-block as a unit phasor `(cos, sin)`, or `None` when the
/// terms hold nothing to measure.
///
/// The advance between the window's two 10 ms halves is the fine estimate: the longer span and
/// sharper selectivity keep the other group's tone from bending it much. Over 10 ms it is
/// ambiguous by half a turn beyond ±50 Hz; the advance between 5 ms sub-blocks, coarser but
/// unambiguous to ±100 Hz, picks the branch. Products and square roots only, no trigonometry.
#[inline]
pub fn phase_advance(aligned: &Aligned) -> Option<(f32, f32)> {
    // Coarse: sub-block to sub-block (aligned terms already carry absolute phase).
    let (mut cr, mut ci) = (0.0f32, 0.0f32);
    for j in 0..WINDOW - 1 {
        let (a, b) = (aligned[j], aligned[j + 1]);
        cr += a.0 * b.0 + a.1 * b.1;
        ci += a.1 * b.0 - a.0 * b.1;
    }
    // Fine: newer half against older half, twice the lag.
    let half = WINDOW / 2;
    let (mut nr, mut ni, mut or, mut oi) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
    for j in 0..half {
        nr += aligned[j].0;
        ni += aligned[j].1;
        or += aligned[j + half].0;
        oi += aligned[j + half].1;
    }
    let (vr, vi) = (nr * or + ni * oi, ni * or - nr * oi);
    let vmag = (vr * vr + vi * vi).sqrt();
    if vmag == 0.0 {
        return None;
    }
    let (vr, vi) = (vr / vmag, vi / vmag);
    // Half the fine advance (principal square root), then the branch the coarse one picks.
    let mut ur = ((1.0 + vr) * 0.5).max(0.0).sqrt();
    let mut ui = ((1.0 - vr) * 0.5).max(0.0).sqrt().copysign(vi);
    if ur * cr + ui * ci < 0.0 {
        ur = -ur;
        ui = -ui;
    }
    Some((ur, ui))
}

/// `|Σ aligned_j · e^{-j·advance·j}|²`: the window's power at the tone's own frequency.
#[inline]
pub fn rotated_power(aligned: &Aligned, (ur, ui): (f32, f32)) -> f32 {
    let (mut tr, mut ti) = (1.0f32, 0.0f32);
    let (mut sr, mut si) = (0.0f32, 0.0f32);
    for &(yr, yi) in aligned {
        sr += yr * tr - yi * ti;
        si += yr * ti + yi * tr;
        let nt = tr * ur - ti * ui;
        ti = tr * ui + ti * ur;
        tr = nt;
    }
    sr * sr + si * si
}

//! The relative-peak test with rivals set aside: a key's line under a louder note can share
//! its group with one of the note's lines, as loud as it, in another filter (a G5 at 784 Hz
//! in the 770 Hz filter beside key C's 852 Hz). A decoder with finer filters still reads
//! the key; the rival line, one of a series of its own that the key is not on, is no reason
//! to let it through.

use super::{bank_frequencies, TonePresence, MAX_FREQ_OFFSET};
use crate::detector::SUB_BLOCK;
use crate::goertzel::{BlockTerms, BANK_SIZE};
use crate::harmonic::LONG_SPAN;
use crate::window::WINDOW;

/// Batches the relative-peak test's rival tests may run, as a credit (gained per 5 ms window,
/// most held): their own, so a run's harmonic verdict ([`super::HARMONIC_CREDIT`]) is never starved
/// by them. A rival test is a batch to find the line and one per fundamental tried; most
/// rivals (voices) fail at the first. With it spent, a rival counts, as it did before.
pub const RIVAL_CREDIT: (u32, u32) = (4, 16);

/// How far (fraction) a pair line's peak is looked for around its measured frequency on the
/// 40 ms span, when a rival was set aside ([`TonePresence::peaked`]).
const LINE_REACH: f32 = 0.012;

/// What the relative-peak test saw of a pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Peak {
    /// Both lines stand above the rest of their groups.
    Clear,
    /// Only with rivals set aside that belong to series of their own: the lines' frequencies
    /// as found on the 40 ms span.
    Apart((f32, f32)),
    /// A rival hides a line.
    Hidden,
}

impl TonePresence {
    /// Whether each line stands [`super::MIN_RELATIVE_PEAK_DB`] above the rest of its group
    /// at the nominal frequencies, or does once every rival filter's line is set aside as
    /// belonging to a harmonic series of its own that the pair is not on (a note beside a
    /// key: [`crate::harmonic::HannDft::foreign_series`], within `budget`; with the budget
    /// spent a rival counts).
    pub(super) fn peaked(
        &self,
        blocks: &[BlockTerms; WINDOW],
        r: usize,
        c: usize,
        budget: &mut u32,
    ) -> Peak {
        let pow = self.align.coherent_power(blocks.each_ref());
        let mut rivals = [0usize; BANK_SIZE - 2];
        let mut n = 0;
        for (line, group) in [(r, 0..4), (c, 4..BANK_SIZE)] {
            for k in group {
                if k != line && pow[line] < self.relative_peak * pow[k] {
                    rivals[n] = k;
                    n += 1;
                }
            }
        }
        if n == 0 {
            return Peak::Clear;
        }
        let x = self.samples_ending::<LONG_SPAN>(self.blocks * SUB_BLOCK as u64);
        let measured = (self.line_hz(blocks, r), self.line_hz(blocks, c));
        let nominal = bank_frequencies();
        let dft = &self.long_dft;
        if !rivals[..n].iter().all(|&k| {
            dft.line_near(&x, nominal[k], MAX_FREQ_OFFSET, budget)
                .is_some_and(|l| dft.foreign_series(&x, l, measured, budget) == Some(true))
        }) {
            return Peak::Hidden;
        }
        // The pair's lines found on the 40 ms span: steadier than the 5 ms terms' estimate
        // beside a louder neighbour (the steady tier holds them to 0.8 %). A line not yet
        // filling the span may not show a peak of its own; its estimate stands.
        let [lr, lc] = dft.lines_near::<2, 13>(&x, [measured.0, measured.1], LINE_REACH, budget);
        Peak::Apart((
            lr.map_or(measured.0, |l| l.0),
            lc.map_or(measured.1, |l| l.0),
        ))
    }
}

//! A bank of eight Goertzel filters evaluated over fixed-length blocks.
//!
//! Each block yields, per frequency, the complex term `y = s[N-1] - e^{-jω} s[N-2]`, which equals
//! the block's DFT term at that frequency times a fixed phase factor `e^{jω(N-1)}`. Callers that
//! only compare magnitudes, or phases of the same frequency across blocks, never need the factor.
//!
//! Blocks can be processed several at once: the Goertzel recursion is one long dependency chain
//! per filter, so interleaving independent blocks keeps the FPU busy instead of waiting on that
//! chain. Four at a time measured fastest with 128-bit vectors (two and three are
//! latency-bound; an AVX2 build of the same loop was slower still). The `goertzel-filter` crate is the reference this is cross-checked and
//! benchmarked against (it allocates per call, so it cannot sit on the hot path itself).

/// Number of filters in the bank (the eight DTMF frequencies).
pub const BANK_SIZE: usize = 8;

/// Complex Goertzel terms and the block's energy, for one block.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BlockTerms {
    /// Real parts of `y`, one per frequency.
    pub re: [f32; BANK_SIZE],
    /// Imaginary parts of `y`, one per frequency.
    pub im: [f32; BANK_SIZE],
    /// `|y|²` per frequency: the block's DFT power there.
    pub power: [f32; BANK_SIZE],
    /// Sum of squared samples over the block.
    pub energy: f32,
}

impl BlockTerms {}

/// Eight Goertzel filters sharing one input.
#[derive(Debug, Clone)]
pub struct GoertzelBank {
    coeff: [f32; BANK_SIZE],
    cos_w: [f32; BANK_SIZE],
    sin_w: [f32; BANK_SIZE],
}

impl GoertzelBank {
    /// A bank for the given frequencies (Hz) at `sample_rate` (Hz).
    pub fn new(freqs_hz: [f32; BANK_SIZE], sample_rate: f32) -> Self {
        let mut coeff = [0.0; BANK_SIZE];
        let mut cos_w = [0.0; BANK_SIZE];
        let mut sin_w = [0.0; BANK_SIZE];
        for k in 0..BANK_SIZE {
            let w = 2.0 * core::f64::consts::PI * freqs_hz[k] as f64 / sample_rate as f64;
            cos_w[k] = w.cos() as f32;
            sin_w[k] = w.sin() as f32;
            coeff[k] = (2.0 * w.cos()) as f32;
        }
        GoertzelBank {
            coeff,
            cos_w,
            sin_w,
        }
    }

    /// Runs `B` consecutive blocks of `N` samples each from `x` (length `B * N`).
    #[inline]
    pub fn run<const B: usize, const N: usize>(&self, x: &[f32], out: &mut [BlockTerms; B]) {
        assert!(x.len() >= B * N, "need {} samples", B * N);
        let mut s1 = [[0.0f32; BANK_SIZE]; B];
        let mut s2 = [[0.0f32; BANK_SIZE]; B];
        let mut energy = [0.0f32; B];
        let c = self.coeff;
        for n in 0..N {
            for b in 0..B {
                let xn = x[b * N + n];
                energy[b] += xn * xn;
                let (p1, p2) = (&mut s1[b], &mut s2[b]);
                for k in 0..BANK_SIZE {
                    // (x - s2) does not depend on the previous step: only mul + add stay on the chain.
                    let s0 = (xn - p2[k]) + c[k] * p1[k];
                    p2[k] = p1[k];
                    p1[k] = s0;
                }
            }
        }
        for b in 0..B {
            let o = &mut out[b];
            for k in 0..BANK_SIZE {
                o.re[k] = s1[b][k] - self.cos_w[k] * s2[b][k];
                o.im[k] = self.sin_w[k] * s2[b][k];
                o.power[k] = o.re[k] * o.re[k] + o.im[k] * o.im[k];
            }
            o.energy = energy[b];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(f: f64, n: usize, amp: f64, phase: f64) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (amp * (2.0 * std::f64::consts::PI * f * i as f64 / 8000.0 + phase).sin()) as f32
            })
            .collect()
    }

    /// Direct DFT term at an arbitrary frequency, the textbook definition.
    fn dft(x: &[f32], f: f64) -> (f64, f64) {
        let w = 2.0 * std::f64::consts::PI * f / 8000.0;
        x.iter().enumerate().fold((0.0, 0.0), |(re, im), (n, &v)| {
            (
                re + v as f64 * (w * n as f64).cos(),
                im - v as f64 * (w * n as f64).sin(),
            )
        })
    }

    #[test]
    fn matches_direct_dft_power() {
        let freqs = [697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0];
        let bank = GoertzelBank::new(freqs, 8000.0);
        let mut x = sine(770.0, 160, 5000.0, 0.3);
        for (v, w) in x.iter_mut().zip(sine(1477.0, 160, 3000.0, 1.1)) {
            *v += w;
        }
        let mut out = [BlockTerms::default(); 4];
        bank.run::<4, 40>(&x, &mut out);
        for (b, o) in out.iter().enumerate() {
            let blk = &x[b * 40..(b + 1) * 40];
            let e: f32 = blk.iter().map(|v| v * v).sum();
            assert!((o.energy - e).abs() / e < 1e-5);
            for (k, &f) in freqs.iter().enumerate() {
                let (re, im) = dft(blk, f as f64);
                let want = re * re + im * im;
                let got = o.power[k] as f64;
                assert!(
                    (got - want).abs() <= 1e-3 * want.max(1e6),
                    "block {b} f {f}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn phase_advances_by_the_frequency_offset() {
        // A tone 20 Hz above the filter: y's phase turns by 2π·20·N/fs per block (N = 40).
        let bank = GoertzelBank::new([1010.0; 8], 8000.0);
        let x = sine(1030.0, 80, 8000.0, 0.0);
        let mut out = [BlockTerms::default(); 2];
        bank.run::<2, 40>(&x, &mut out);
        // y_1·conj(y_0), then undo the filter's own rotation e^{-jωN}.
        let (a, b) = (out[1], out[0]);
        let pr = a.re[0] * b.re[0] + a.im[0] * b.im[0];
        let pi = a.im[0] * b.re[0] - a.re[0] * b.im[0];
        let rot = -2.0 * std::f32::consts::PI * 1010.0 * 40.0 / 8000.0;
        let ang = pi.atan2(pr) + rot;
        let ang = (ang + std::f32::consts::PI).rem_euclid(2.0 * std::f32::consts::PI)
            - std::f32::consts::PI;
        let want = 2.0 * std::f32::consts::PI * 20.0 * 40.0 / 8000.0;
        assert!((ang - want).abs() < 0.02, "{ang} vs {want}");
    }
}

//! Deterministic pseudo-random noise: comfort noise for the masker and noisy lines for tests.

/// A small, fast, seeded noise source (xorshift32). Not for anything cryptographic.
#[derive(Debug, Clone)]
pub struct NoiseSource {
    state: u32,
}

impl NoiseSource {
    /// A source started from `seed` (0 is replaced by a fixed non-zero seed).
    pub fn new(seed: u32) -> Self {
        NoiseSource {
            state: if seed == 0 { 0x9E37_79B9 } else { seed },
        }
    }

    /// The next raw 32-bit value.
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        x
    }

    /// Uniform in `[-1, 1)`.
    #[inline]
    pub fn uniform(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.uniform() + 1.0) * 0.5
    }

    /// Standard normal (Box-Muller).
    pub fn gaussian(&mut self) -> f32 {
        let u1 = ((self.next_u32() >> 8) as f32 + 1.0) / (1u32 << 24) as f32;
        let u2 = (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
        (-2.0 * u1.ln()).sqrt() * (2.0 * core::f32::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_right() {
        let mut n = NoiseSource::new(7);
        let (mut s, mut s2, mut u) = (0.0f64, 0.0f64, 0.0f64);
        let count = 200_000;
        for _ in 0..count {
            let g = n.gaussian() as f64;
            s += g;
            s2 += g * g;
            let v = n.uniform() as f64;
            assert!((-1.0..1.0).contains(&v));
            u += v * v;
        }
        let c = count as f64;
        assert!((s / c).abs() < 0.01);
        assert!((s2 / c - 1.0).abs() < 0.02);
        assert!((u / c - 1.0 / 3.0).abs() < 0.01);
    }
}

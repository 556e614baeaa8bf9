//! The `goertzel-filter` crate as a reference for our Goertzel bank.
//!
//! That crate allocates on every call and snaps the frequency to a DFT bin of the input length,
//! so it cannot sit on the hot path; it is the baseline the bank is benchmarked and
//! cross-checked against (`bench/benches/hot_path.rs`, `tests/goertzel_baseline.rs`; both include this file). Its frequency
//! argument is `2π·ω` (ω in radians per sample), and it prints a warning to stdout unless that
//! lands exactly on a bin, so [`bin_exact_argument`] finds an argument that does.

/// The argument `goertzel_filter::dft_power` needs to evaluate bin `k` of an `n`-sample input.
///
/// The crate floors `(arg / 2π) · n / 2π` to pick its bin. This searches the ulps around the
/// ideal argument for one that gives exactly `k` (no warning printed); where none does, it
/// returns the nearest one that gives a hair above `k`, which still floors to `k`.
pub fn bin_exact_argument(k: usize, n: usize) -> f64 {
    use std::f64::consts::PI;
    let approx = |arg: f64| (arg / 2.0 / PI) * n as f64 / 2.0 / PI;
    let ideal = 2.0 * PI * (2.0 * PI * k as f64 / n as f64);
    let mut above = None;
    for step in 0..4096u64 {
        for arg in [
            f64::from_bits(ideal.to_bits() + step),
            f64::from_bits(ideal.to_bits() - step),
        ] {
            let a = approx(arg);
            if a == k as f64 {
                return arg;
            }
            if a > k as f64 && a.floor() == k as f64 && above.is_none() {
                above = Some(arg);
            }
        }
    }
    above.unwrap_or(ideal)
}

/// The DFT bin nearest `hz` for an `n`-sample input at 8 kHz.
pub fn nearest_bin(hz: f32, n: usize) -> usize {
    (hz as f64 * n as f64 / 8000.0).round() as usize
}

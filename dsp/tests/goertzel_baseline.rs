//! Our Goertzel bank against the `goertzel-filter` crate: the same powers within f32 precision.

mod baseline;

use baseline::{bin_exact_argument, nearest_bin};
use tonegate_dsp::goertzel::{BlockTerms, GoertzelBank};
use tonegate_dsp::key::{COL_HZ, ROW_HZ};
use tonegate_dsp::NoiseSource;

#[test]
fn bank_power_matches_goertzel_filter_crate() {
    const N: usize = 160;
    let mut rng = NoiseSource::new(42);
    // Two DTMF tones plus noise, like a real frame.
    let x: Vec<f64> = (0..N)
        .map(|n| {
            let t = n as f64 / 8000.0;
            6000.0 * (2.0 * std::f64::consts::PI * 852.0 * t).sin()
                + 4000.0 * (2.0 * std::f64::consts::PI * 1336.0 * t + 0.4).sin()
                + 300.0 * rng.gaussian() as f64
        })
        .collect();
    let bins: Vec<usize> = ROW_HZ
        .iter()
        .chain(COL_HZ.iter())
        .map(|&f| nearest_bin(f, N))
        .collect();
    let mut freqs = [0f32; 8];
    for (f, &k) in freqs.iter_mut().zip(&bins) {
        *f = (k as f64 * 8000.0 / N as f64) as f32;
    }
    // goertzel-filter's dft_power drops the last sample: it is the power over x[0..N-1].
    let bank = GoertzelBank::new(freqs, 8000.0);
    let xf: Vec<f32> = x[..N - 1].iter().map(|&v| v as f32).collect();
    let mut out = [BlockTerms::default(); 1];
    bank.run::<1, { N - 1 }>(&xf, &mut out);
    for (i, &k) in bins.iter().enumerate() {
        let theirs = goertzel_filter::dft_power(&x, bin_exact_argument(k, N));
        let ours = out[0].power[i] as f64;
        let rel = (ours - theirs).abs() / theirs.max(1.0);
        assert!(rel < 1e-3, "bin {k}: ours {ours} theirs {theirs}");
    }
}

#[test]
fn bin_exact_argument_picks_the_bin() {
    for n in [40usize, 102, 160, 205] {
        for k in 1..n / 2 {
            let arg = bin_exact_argument(k, n);
            let approx = (arg / 2.0 / std::f64::consts::PI) * n as f64 / 2.0 / std::f64::consts::PI;
            assert_eq!(approx.floor(), k as f64, "n {n} k {k}");
        }
    }
}

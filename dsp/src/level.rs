//! Signal levels in dBm0 for 16-bit linear PCM.

/// Peak amplitude of a 0 dBm0 sine in 16-bit linear PCM.
///
/// G.711's full-scale sine is +3.17 dBm0 (ITU-T G.711 §4; the same convention as the DTMF
/// battery), so 0 dBm0 sits 3.17 dB below 16-bit full scale.
pub const DBM0_PEAK: f32 = 22_747.66;

/// Peak amplitude of a sine at `dbm0`.
pub fn amplitude(dbm0: f32) -> f32 {
    DBM0_PEAK * 10f32.powf(dbm0 / 20.0)
}

/// Mean power (mean of squared samples) of a sine at `dbm0`.
pub fn sine_power(dbm0: f32) -> f32 {
    let a = amplitude(dbm0);
    a * a / 2.0
}

/// Level in dBm0 of a signal with the given mean power.
pub fn power_to_dbm0(power: f32) -> f32 {
    10.0 * (power / sine_power(0.0)).max(1e-30).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_dbm0_is_3_17_db_below_full_scale() {
        let db = 20.0 * (32767.0 / DBM0_PEAK).log10();
        assert!((db - 3.17).abs() < 0.01, "{db}");
        assert!((power_to_dbm0(sine_power(-26.0)) + 26.0).abs() < 1e-3);
    }
}

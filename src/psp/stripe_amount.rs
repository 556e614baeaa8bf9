//! Stripe's amount units, which are not always ISO 4217's minor units.
//!
//! tonegate keeps amounts in ISO 4217 minor units ([`crate::card::money`]). Stripe's API
//! takes "the currency's smallest unit" by its own table (docs: Supported currencies,
//! zero-decimal and special cases): its zero-decimal list includes MGA, which ISO gives two
//! decimals, and it keeps ISK two-decimal (amounts in multiples of 100) though ISO gives it
//! none. Everything else matches ISO (three-decimal BHD, JOD, KWD, OMR and TND included). These
//! are Stripe's published exceptions, so they live here, in the Stripe adapter, and nowhere else.

use crate::card::money::Currency;

use super::PspError;

/// Currencies Stripe takes in whole units (its "zero-decimal currencies").
const STRIPE_ZERO_DECIMAL: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];
/// Currencies ISO gives no decimals but Stripe still takes in hundredths.
const STRIPE_TWO_DECIMAL_OF_ZERO: &[&str] = &["ISK"];

/// Decimals of Stripe's amount unit for `currency`.
fn stripe_exponent(currency: Currency) -> u32 {
    let code = currency.code();
    if STRIPE_ZERO_DECIMAL.contains(&code) {
        0
    } else if STRIPE_TWO_DECIMAL_OF_ZERO.contains(&code) {
        2
    } else {
        currency.exponent()
    }
}

/// `minor` ISO units of `currency` as Stripe's `amount`; an amount Stripe's unit cannot hold
/// (fractions of a unit Stripe takes whole) is refused before anything is sent.
pub(super) fn to_stripe(minor: i64, currency: &str) -> Result<i64, PspError> {
    let c = Currency::from_code(currency)
        .map_err(|_| PspError::Rejected("currency unknown to ISO 4217".into()))?;
    let (iso, stripe) = (c.exponent(), stripe_exponent(c));
    if stripe >= iso {
        minor
            .checked_mul(10i64.pow(stripe - iso))
            .ok_or_else(|| PspError::Rejected("amount too large".into()))
    } else {
        let unit = 10i64.pow(iso - stripe);
        if minor % unit != 0 {
            return Err(PspError::Rejected(format!(
                "the PSP takes {} in whole units only",
                c.code()
            )));
        }
        Ok(minor / unit)
    }
}

/// Stripe's `amount` in `currency` (as Stripe writes it, lower case) as ISO minor units.
pub(super) fn from_stripe(amount: i64, currency: &str) -> Option<i64> {
    let c = Currency::from_code(currency).ok()?;
    let (iso, stripe) = (c.exponent(), stripe_exponent(c));
    if iso >= stripe {
        amount.checked_mul(10i64.pow(iso - stripe))
    } else {
        let unit = 10i64.pow(stripe - iso);
        (amount % unit == 0).then_some(amount / unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_units_follow_stripes_table() {
        assert_eq!(to_stripe(1000, "JPY").unwrap(), 1000);
        assert_eq!(to_stripe(4999, "GBP").unwrap(), 4999);
        assert_eq!(to_stripe(12345, "KWD").unwrap(), 12345);
        // ISK: no decimals in ISO, hundredths at Stripe.
        assert_eq!(to_stripe(500, "ISK").unwrap(), 50000);
        // MGA: two decimals in ISO, whole units at Stripe.
        assert_eq!(to_stripe(150000, "MGA").unwrap(), 1500);
        assert!(to_stripe(150050, "MGA").is_err());
        assert!(to_stripe(100, "XXX").is_err());
        for (minor, c) in [
            (1000, "jpy"),
            (4999, "gbp"),
            (500, "isk"),
            (150000, "mga"),
            (12345, "kwd"),
        ] {
            assert_eq!(
                from_stripe(to_stripe(minor, c).unwrap(), c),
                Some(minor),
                "{c}"
            );
        }
        assert_eq!(from_stripe(50001, "isk"), None);
    }
}

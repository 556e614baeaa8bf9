//! Money: an amount in a currency's minor units, where the minor unit is the one ISO 4217
//! gives the currency (its exponent: JPY 0, GBP 2, KWD 3 decimals).
//!
//! Amounts arrive as decimal text (`"49.99"`, `"1000"`, `"12.345"`) and are parsed against
//! their currency: more decimals than the currency has is an error, never a rounding. They are
//! kept as an integer count of minor units, and written back out the one way, so what the PSP
//! receives, what is stored and what every page, webhook and message shows agree.
//!
//! The exponents come from `iso_currency`, which generates its table from ISO 4217's own list
//! at build time, rather than from a hand list of the currencies we happened to think of.

use core::fmt;

/// Most digits before the decimal point: keeps every amount far inside `i64` whatever the
/// exponent, and above any card payment.
const MAX_WHOLE_DIGITS: usize = 12;

/// Why an amount or a currency was refused. No variant carries the input: it may be anything
/// a caller typed, a card number included.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not an active ISO 4217 currency with minor units (funds, metals and testing codes have
    /// none a card payment can use).
    #[error("is not an ISO 4217 currency code such as GBP, EUR or JPY")]
    UnknownCurrency,
    /// Not a plain decimal number.
    #[error("is not an amount written like 49.99 (digits, an optional '.' and decimals)")]
    NotAnAmount,
    /// More decimals than the currency has.
    #[error("has more decimals than {currency} allows ({allowed})")]
    TooManyDecimals {
        /// The currency's code.
        currency: &'static str,
        /// Its decimals.
        allowed: u32,
    },
    /// Too many digits before the decimal point.
    #[error("has more than {MAX_WHOLE_DIGITS} digits before the decimal point")]
    TooLarge,
    /// Zero.
    #[error("must be above zero")]
    Zero,
}

/// An ISO 4217 currency that has minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    iso: iso_currency::Currency,
    exponent: u8,
}

impl Currency {
    /// The currency with code `code` (any letter case).
    pub fn from_code(code: &str) -> Result<Currency, MoneyError> {
        let upper = code.trim().to_ascii_uppercase();
        let iso = iso_currency::Currency::from_code(&upper).ok_or(MoneyError::UnknownCurrency)?;
        if iso.is_fund() || iso.is_special() {
            return Err(MoneyError::UnknownCurrency);
        }
        let exponent = iso.exponent().ok_or(MoneyError::UnknownCurrency)?;
        Ok(Currency {
            iso,
            exponent: u8::try_from(exponent).map_err(|_| MoneyError::UnknownCurrency)?,
        })
    }

    /// The three-letter code, upper case.
    pub fn code(self) -> &'static str {
        self.iso.code()
    }

    /// Decimals of the minor unit (ISO 4217's exponent).
    pub fn exponent(self) -> u32 {
        u32::from(self.exponent)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount of a currency, in its minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    /// Parses decimal text (`"49.99"`, `"1000"`, `"7."`; `".5"` is refused) as a positive amount of
    /// `currency`. Surrounding whitespace is ignored; signs, exponents, grouping commas and more
    /// decimals than the currency has are refused.
    pub fn parse(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let text = text.trim();
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(frac) {
            return Err(MoneyError::NotAnAmount);
        }
        if whole.len() > MAX_WHOLE_DIGITS {
            return Err(MoneyError::TooLarge);
        }
        let exp = currency.exponent();
        // Trailing zeros past the currency's decimals say nothing: "1000.00" JPY is 1000.
        let significant = frac.trim_end_matches('0');
        if significant.len() > exp as usize {
            return Err(MoneyError::TooManyDecimals {
                currency: currency.code(),
                allowed: exp,
            });
        }
        let mut minor: i64 = 0;
        let padded = significant.bytes().chain(core::iter::repeat(b'0'));
        for b in whole.bytes().chain(padded.take(exp as usize)) {
            minor = minor * 10 + i64::from(b - b'0');
        }
        if minor == 0 {
            return Err(MoneyError::Zero);
        }
        Ok(Money { minor, currency })
    }

    /// `minor` units of `currency` (as stored).
    pub fn from_minor(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    /// The amount in minor units.
    pub fn minor(self) -> i64 {
        self.minor
    }

    /// The currency.
    pub fn currency(self) -> Currency {
        self.currency
    }

    /// The amount as decimal text without the currency: `49.99`, `1000`, `12.345`.
    pub fn decimal(self) -> Decimal {
        Decimal(self)
    }
}

/// [`Money::decimal`]: the amount written with exactly its currency's decimals.
#[derive(Debug, Clone, Copy)]
pub struct Decimal(Money);

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Money { minor, currency } = self.0;
        let exp = currency.exponent();
        if minor < 0 {
            f.write_str("-")?;
        }
        let abs = minor.unsigned_abs();
        if exp == 0 {
            return write!(f, "{abs}");
        }
        let unit = 10u64.pow(exp);
        write!(
            f,
            "{}.{:0width$}",
            abs / unit,
            abs % unit,
            width = exp as usize
        )
    }
}

impl fmt::Display for Money {
    /// `49.99 GBP`, `1000 JPY`, `12.345 KWD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.decimal(), self.currency)
    }
}

/// A language's way of writing amounts for people (CLDR's `en-GB` and `de` patterns): the one
/// place amounts are formatted for the payment pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Locale {
    /// English (`en-GB`): `£1,234,567.50`, `KWD 12.345`.
    #[default]
    En,
    /// German: `1.234.567,50 £`, `12,345 KWD`.
    De,
}

impl Locale {
    /// The locale of a language tag's primary subtag (`de`, `de-AT`, `EN_gb`); `None` for a
    /// language without one.
    pub fn from_tag(tag: &str) -> Option<Locale> {
        let primary = tag.split(['-', '_']).next().unwrap_or_default();
        match primary.to_ascii_lowercase().as_str() {
            "en" => Some(Locale::En),
            "de" => Some(Locale::De),
            _ => None,
        }
    }

    /// The BCP 47 tag (`lang` of the page).
    pub fn tag(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::De => "de",
        }
    }

    /// Thousands separator, decimal separator.
    fn separators(self) -> (char, char) {
        match self {
            Locale::En => (',', '.'),
            Locale::De => ('.', ','),
        }
    }

    /// The sign a reader of this language knows the currency by (CLDR's symbols for the
    /// currencies that have one there), else none: the ISO code is written instead.
    fn symbol(self, code: &str) -> Option<&'static str> {
        match (code, self) {
            ("GBP", _) => Some("£"),
            ("EUR", _) => Some("€"),
            ("JPY", _) => Some("¥"),
            ("USD", Locale::En) => Some("US$"),
            ("USD", Locale::De) => Some("$"),
            _ => None,
        }
    }
}

/// [`Money::localized`]: the amount as a reader of the locale expects it.
#[derive(Debug, Clone, Copy)]
pub struct Localized(Money, Locale);

impl fmt::Display for Localized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Localized(Money { minor, currency }, locale) = *self;
        let (group, point) = locale.separators();
        let exp = currency.exponent();
        let unit = 10u64.pow(exp);
        let abs = minor.unsigned_abs();
        let whole = (abs / unit).to_string();
        // A no-break space keeps the amount and its currency on one line.
        const NBSP: char = '\u{a0}';
        let number = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            if minor < 0 {
                f.write_str("-")?;
            }
            for (i, c) in whole.chars().enumerate() {
                if i > 0 && (whole.len() - i) % 3 == 0 {
                    write!(f, "{group}")?;
                }
                write!(f, "{c}")?;
            }
            if exp > 0 {
                write!(f, "{point}{:0width$}", abs % unit, width = exp as usize)?;
            }
            Ok(())
        };
        let code = currency.code();
        match (locale, locale.symbol(code)) {
            (Locale::En, Some(sym)) => {
                f.write_str(sym)?;
                number(f)
            }
            (Locale::En, None) => {
                write!(f, "{code}{NBSP}")?;
                number(f)
            }
            (Locale::De, sym) => {
                number(f)?;
                write!(f, "{NBSP}{}", sym.unwrap_or(code))
            }
        }
    }
}

impl Money {
    /// The amount written for a reader of `locale`: grouping, decimal mark and currency sign
    /// as that language writes them, with exactly the currency's decimals.
    pub fn localized(self, locale: Locale) -> Localized {
        Localized(self, locale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cur(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    #[test]
    fn exponents_come_from_iso_4217() {
        assert_eq!(cur("JPY").exponent(), 0);
        assert_eq!(cur("gbp").exponent(), 2);
        assert_eq!(cur("KWD").exponent(), 3);
        assert_eq!(cur("BHD").exponent(), 3);
        assert_eq!(cur("KRW").exponent(), 0);
        assert_eq!(cur("CLP").exponent(), 0);
        assert_eq!(cur("usd").code(), "USD");
        for bad in ["XAU", "XTS", "XXX", "ABC", "", "GB", "GBPX", "£"] {
            assert_eq!(
                Currency::from_code(bad),
                Err(MoneyError::UnknownCurrency),
                "{bad}"
            );
        }
    }

    #[test]
    fn amounts_parse_to_the_currencys_minor_units() {
        let m = |s: &str, c: &str| Money::parse(s, cur(c)).map(Money::minor);
        assert_eq!(m("1000", "JPY"), Ok(1000));
        assert_eq!(m("1000.00", "JPY"), Ok(1000));
        assert_eq!(m("49.99", "GBP"), Ok(4999));
        assert_eq!(m("7", "GBP"), Ok(700));
        assert_eq!(m("7.5", "GBP"), Ok(750));
        assert_eq!(m(" 12.345 ", "KWD"), Ok(12345));
        assert_eq!(m("12.3", "KWD"), Ok(12300));
        assert_eq!(
            m("1000.5", "JPY"),
            Err(MoneyError::TooManyDecimals {
                currency: "JPY",
                allowed: 0
            })
        );
        assert_eq!(
            m("7.555", "GBP"),
            Err(MoneyError::TooManyDecimals {
                currency: "GBP",
                allowed: 2
            })
        );
        assert!(m("12.3456", "KWD").unwrap_err().to_string().contains("(3)"));
        for bad in [
            "",
            ".",
            ".5",
            "-1",
            "+1",
            "1e3",
            "1,000.00",
            "1 000",
            "١٢",
            "0x10",
            "4242424242424242a",
        ] {
            assert_eq!(m(bad, "GBP"), Err(MoneyError::NotAnAmount), "{bad:?}");
        }
        assert_eq!(m("0", "GBP"), Err(MoneyError::Zero));
        assert_eq!(m("0.00", "GBP"), Err(MoneyError::Zero));
        assert_eq!(m("1234567890123", "GBP"), Err(MoneyError::TooLarge));
        assert_eq!(m("999999999999.999", "KWD"), Ok(999_999_999_999_999));
    }

    #[test]
    fn amounts_print_with_exactly_their_currencys_decimals() {
        let show = |minor, c: &str| Money::from_minor(minor, cur(c)).to_string();
        assert_eq!(show(1000, "JPY"), "1000 JPY");
        assert_eq!(show(4999, "GBP"), "49.99 GBP");
        assert_eq!(show(5, "GBP"), "0.05 GBP");
        assert_eq!(show(12345, "KWD"), "12.345 KWD");
        assert_eq!(show(12, "KWD"), "0.012 KWD");
        assert_eq!(
            Money::from_minor(123456750, cur("GBP"))
                .decimal()
                .to_string(),
            "1234567.50"
        );
    }

    #[test]
    fn amounts_are_written_the_way_each_language_reads_them() {
        let show = |minor, c: &str, l| {
            Money::from_minor(minor, cur(c))
                .localized(l)
                .to_string()
                .replace('\u{a0}', " ")
        };
        assert_eq!(show(4999, "GBP", Locale::En), "£49.99");
        assert_eq!(show(4999, "GBP", Locale::De), "49,99 £");
        assert_eq!(show(123456750, "GBP", Locale::En), "£1,234,567.50");
        assert_eq!(show(123456750, "GBP", Locale::De), "1.234.567,50 £");
        assert_eq!(show(1000, "JPY", Locale::En), "¥1,000");
        assert_eq!(show(1000, "JPY", Locale::De), "1.000 ¥");
        assert_eq!(show(12345, "KWD", Locale::En), "KWD 12.345");
        assert_eq!(show(12345, "KWD", Locale::De), "12,345 KWD");
        assert_eq!(show(5, "EUR", Locale::De), "0,05 €");
        assert_eq!(show(100000, "USD", Locale::En), "US$1,000.00");
        assert_eq!(show(999, "CHF", Locale::En), "CHF 9.99");
        assert_eq!(show(-4999, "GBP", Locale::En), "£-49.99");
        assert!(Money::from_minor(100, cur("GBP"))
            .localized(Locale::De)
            .to_string()
            .contains('\u{a0}'));
        assert_eq!(Locale::from_tag("de-AT"), Some(Locale::De));
        assert_eq!(Locale::from_tag("EN_gb"), Some(Locale::En));
        assert_eq!(Locale::from_tag("fr"), None);
        assert_eq!(Locale::De.tag(), "de");
    }

    #[test]
    fn errors_never_repeat_the_input() {
        let pan = "4242424242424242.123";
        for c in ["JPY", "GBP"] {
            let e = Money::parse(pan, cur(c)).unwrap_err().to_string();
            assert!(!e.contains("4242"), "{e}");
        }
        let e = Money::parse("x4242424242424242", cur("GBP"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("4242"), "{e}");
    }

    proptest! {
        /// Whatever is printed parses back to the same amount, in every currency with units.
        #[test]
        fn printing_and_parsing_round_trip(minor in 1i64..1_000_000_000_000, pick in 0usize..3) {
            let c = cur(["JPY", "GBP", "KWD"][pick]);
            let m = Money::from_minor(minor, c);
            prop_assert_eq!(Money::parse(&m.decimal().to_string(), c), Ok(m));
        }
    }
}

//! Card brands by IIN (issuer identification number) range, with their PAN and CVV lengths.

use serde::Serialize;

/// A card scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Brand {
    /// Visa: 4.
    Visa,
    /// Mastercard: 51-55 and the 2-series 2221-2720.
    Mastercard,
    /// American Express: 34, 37.
    Amex,
    /// Discover: 6011, 644-649, 65, and 622126-622925 (co-branded UnionPay range).
    Discover,
    /// Diners Club International: 300-305, 3095, 36, 38-39.
    Diners,
    /// JCB: 3528-3589.
    Jcb,
    /// UnionPay: 62 (outside Discover's co-branded range).
    UnionPay,
    /// Maestro: 5018, 5020, 5038, 5893, 6304, 6759, 6761-6763.
    Maestro,
}

impl Brand {
    /// The brand for a PAN's leading digits (at least six for a sure answer; fewer may do).
    pub fn from_prefix(digits: &[u8]) -> Option<Brand> {
        let n = |len: usize| -> Option<u32> {
            (digits.len() >= len)
                .then(|| digits[..len].iter().fold(0u32, |a, &d| a * 10 + d as u32))
        };
        let in_range =
            |len: usize, lo: u32, hi: u32| n(len).is_some_and(|v| (lo..=hi).contains(&v));
        // Most specific ranges first.
        if in_range(6, 622126, 622925)
            || in_range(4, 6011, 6011)
            || in_range(3, 644, 649)
            || in_range(2, 65, 65)
        {
            return Some(Brand::Discover);
        }
        if [5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763]
            .iter()
            .any(|&p| in_range(4, p, p))
        {
            return Some(Brand::Maestro);
        }
        if in_range(4, 3528, 3589) {
            return Some(Brand::Jcb);
        }
        if in_range(3, 300, 305)
            || in_range(4, 3095, 3095)
            || in_range(2, 36, 36)
            || in_range(2, 38, 39)
        {
            return Some(Brand::Diners);
        }
        if in_range(2, 34, 34) || in_range(2, 37, 37) {
            return Some(Brand::Amex);
        }
        if in_range(2, 51, 55) || in_range(4, 2221, 2720) {
            return Some(Brand::Mastercard);
        }
        if in_range(2, 62, 62) {
            return Some(Brand::UnionPay);
        }
        if in_range(1, 4, 4) {
            return Some(Brand::Visa);
        }
        None
    }

    /// PAN lengths the brand issues.
    pub fn pan_lengths(self) -> &'static [usize] {
        match self {
            Brand::Visa => &[13, 16, 19],
            Brand::Mastercard => &[16],
            Brand::Amex => &[15],
            Brand::Discover => &[16, 17, 18, 19],
            Brand::Diners => &[14, 15, 16, 17, 18, 19],
            Brand::Jcb => &[16, 17, 18, 19],
            Brand::UnionPay => &[16, 17, 18, 19],
            Brand::Maestro => &[12, 13, 14, 15, 16, 17, 18, 19],
        }
    }

    /// Security-code length: four for Amex, three for the rest.
    pub fn cvv_length(self) -> usize {
        if self == Brand::Amex {
            4
        } else {
            3
        }
    }

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Brand::Visa => "Visa",
            Brand::Mastercard => "Mastercard",
            Brand::Amex => "American Express",
            Brand::Discover => "Discover",
            Brand::Diners => "Diners Club",
            Brand::Jcb => "JCB",
            Brand::UnionPay => "UnionPay",
            Brand::Maestro => "Maestro",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(s: &str) -> Vec<u8> {
        s.bytes().map(|b| b - b'0').collect()
    }

    #[test]
    fn iin_ranges() {
        let cases = [
            ("4242424242424242", Brand::Visa),
            ("5555555555554444", Brand::Mastercard),
            ("2223003122003222", Brand::Mastercard),
            ("2720999999999999", Brand::Mastercard),
            ("378282246310005", Brand::Amex),
            ("341111111111111", Brand::Amex),
            ("6011111111111117", Brand::Discover),
            ("6445644564456445", Brand::Discover),
            ("6221260000000000", Brand::Discover),
            ("30569309025904", Brand::Diners),
            ("36227206271667", Brand::Diners),
            ("3566002020360505", Brand::Jcb),
            ("6200000000000005", Brand::UnionPay),
            ("6759649826438453", Brand::Maestro),
            ("5018000000000009", Brand::Maestro),
        ];
        for (pan, brand) in cases {
            assert_eq!(Brand::from_prefix(&digits(pan)), Some(brand), "{pan}");
        }
        assert_eq!(Brand::from_prefix(&digits("1234567890123456")), None);
        assert_eq!(Brand::from_prefix(&digits("2721000000000000")), None);
        assert_eq!(Brand::Amex.cvv_length(), 4);
        assert_eq!(Brand::Visa.cvv_length(), 3);
        assert_eq!(Brand::Amex.pan_lengths(), &[15]);
    }
}

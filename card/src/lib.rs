//! Card data: PAN, expiry and security code in types that zeroize on drop, cannot be cloned,
//! never print and never serialise; Luhn; brands by IIN; expiry and CVV rules; display masking.
//!
//! Also [`money`]: amounts in a currency's ISO 4217 minor units, parsed and printed one way.
//!
//! The only way digits leave these types is [`egress`], which writes the body of the PSP's one
//! tokenization request; every digit accessor is private to this crate.

#![warn(missing_docs)]

mod brand;
pub mod capture;
pub mod egress;
// Locked, non-dumpable memory needs mmap/mlock/madvise and raw slot pointers: the crate's
// one `unsafe` module, its invariants stated there.
#[allow(unsafe_code)]
pub mod memory;
pub mod money;
pub mod redact;

use core::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

pub use brand::Brand;

/// Most digits any card field holds (a 19-digit PAN).
pub const MAX_DIGITS: usize = 19;

/// Digits held in a fixed slot of the locked, non-dumpable card memory ([`memory`]), wiped
/// on drop. Takes its slot at the first digit.
#[derive(Default)]
pub struct Digits {
    slot: Option<memory::DigitBytes>,
    len: u8,
}

impl Digits {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// From a string of ASCII digits (tests, the hosted payment page); `None` if anything else
    /// is in it or it is too long. Spaces and dashes are skipped.
    pub fn parse(s: &str) -> Option<Digits> {
        let mut d = Digits::new();
        for c in s.chars() {
            match c {
                '0'..='9' => {
                    if !d.push(c as u8 - b'0') {
                        return None;
                    }
                }
                ' ' | '-' => {}
                _ => return None,
            }
        }
        Some(d)
    }

    /// Appends a digit (0-9); false when full.
    pub fn push(&mut self, digit: u8) -> bool {
        if (self.len as usize) < MAX_DIGITS && digit < 10 {
            let slot = self.slot.get_or_insert_with(memory::DigitBytes::new);
            slot.bytes_mut()[self.len as usize] = digit;
            self.len += 1;
            true
        } else {
            false
        }
    }

    /// Wipes the digits (the slot stays with this buffer).
    pub fn clear(&mut self) {
        if let Some(slot) = &mut self.slot {
            slot.bytes_mut().zeroize();
        }
        self.len = 0;
    }

    /// Number of digits.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn as_slice(&self) -> &[u8] {
        match &self.slot {
            Some(slot) => &slot.bytes()[..self.len as usize],
            None => &[],
        }
    }

    /// Moves the digits out, leaving this empty; the bytes stay where they are (the slot moves
    /// with them, nothing is copied).
    pub fn take(&mut self) -> Digits {
        std::mem::take(self)
    }

    /// Where the digits are held, once there is one (tests check the memory's flags).
    #[cfg(test)]
    pub(crate) fn storage_address(&self) -> Option<usize> {
        self.slot.as_ref().map(memory::DigitBytes::address)
    }

    /// Writes the digits as ASCII into `out` (for the PSP request body only); returns the
    /// length.
    pub(crate) fn write_ascii(&self, out: &mut [u8]) -> usize {
        for (o, &d) in out.iter_mut().zip(self.as_slice()) {
            *o = b'0' + d;
        }
        self.len()
    }
}

impl Zeroize for Digits {
    fn zeroize(&mut self) {
        self.clear();
    }
}

// Dropping the slot wipes it.
impl ZeroizeOnDrop for Digits {}

impl fmt::Debug for Digits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digits(<{} redacted>)", self.len)
    }
}

/// Whether digits pass the Luhn (mod 10) check.
pub fn luhn_valid(digits: &[u8]) -> bool {
    if digits.len() < 2 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = d as u32;
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Why a card field is not acceptable. Carries no digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CardError {
    /// The number fails the Luhn check.
    #[error("card number check digit is wrong")]
    Luhn,
    /// No brand issues numbers starting like this.
    #[error("card number is not from a supported scheme")]
    UnknownBrand,
    /// The brand does not issue numbers of this length.
    #[error("card number has the wrong length for its scheme")]
    Length,
    /// Month not 01-12, or not four digits.
    #[error("expiry date is not MMYY")]
    ExpiryFormat,
    /// The card has expired.
    #[error("card has expired")]
    Expired,
    /// More than 20 years ahead.
    #[error("expiry date is too far in the future")]
    ExpiryTooFar,
    /// Wrong security-code length for the brand.
    #[error("security code has the wrong length")]
    CvvLength,
    /// Postcode digits outside 3-10.
    #[error("postcode digits have the wrong length")]
    PostcodeLength,
}

/// A primary account number. Zeroized on drop; never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Pan {
    digits: Digits,
    #[zeroize(skip)]
    brand: Brand,
}

impl Pan {
    /// Checks digits as a PAN: Luhn, a known brand, a length that brand issues.
    pub fn new(mut digits: Digits) -> Result<Pan, CardError> {
        let d = digits.as_slice();
        let brand = Brand::from_prefix(d).ok_or(CardError::UnknownBrand);
        let result = brand.and_then(|b| {
            if !b.pan_lengths().contains(&d.len()) {
                Err(CardError::Length)
            } else if !luhn_valid(d) {
                Err(CardError::Luhn)
            } else {
                Ok(b)
            }
        });
        match result {
            Ok(brand) => Ok(Pan {
                digits: digits.take(),
                brand,
            }),
            Err(e) => {
                digits.clear();
                Err(e)
            }
        }
    }

    /// From a string (hosted payment page, tests).
    pub fn parse(s: &str) -> Result<Pan, CardError> {
        Pan::new(Digits::parse(s).ok_or(CardError::Length)?)
    }

    /// The brand.
    pub fn brand(&self) -> Brand {
        self.brand
    }

    /// The last four digits: the most a receipt or screen may show on its own.
    pub fn last4(&self) -> String {
        let d = self.digits.as_slice();
        d[d.len() - 4..]
            .iter()
            .map(|&x| (b'0' + x) as char)
            .collect()
    }

    /// The PAN masked for display: one `*` per hidden digit, then the last four.
    pub fn masked(&self) -> String {
        let n = self.digits.len();
        format!("{}{}", "*".repeat(n - 4), self.last4())
    }

    /// Number of digits.
    pub fn len(&self) -> usize {
        self.digits.len()
    }

    /// Whether empty (never, for a checked PAN).
    pub fn is_empty(&self) -> bool {
        self.digits.is_empty()
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({:?}, {})", self.brand, self.masked())
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// A card expiry (month and four-digit year). Zeroized on drop; never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Expiry {
    month: u8,
    year: u16,
}

impl Expiry {
    /// From MMYY digits, checked against today (`today` = (year, month)): not past, at most
    /// 20 years ahead.
    pub fn new(mut digits: Digits, today: (u16, u8)) -> Result<Expiry, CardError> {
        let d = digits.as_slice();
        let result = if d.len() != 4 {
            Err(CardError::ExpiryFormat)
        } else {
            let month = d[0] * 10 + d[1];
            let yy = (d[2] * 10 + d[3]) as u16;
            let year = 2000 + yy;
            if !(1..=12).contains(&month) {
                Err(CardError::ExpiryFormat)
            } else if (year, month) < (today.0, today.1) {
                Err(CardError::Expired)
            } else if year > today.0 + 20 {
                Err(CardError::ExpiryTooFar)
            } else {
                Ok(Expiry { month, year })
            }
        };
        digits.clear();
        result
    }
}

impl fmt::Debug for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Expiry(<redacted>)")
    }
}

/// A card security code. Zeroized on drop; never printed, not even its length.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Cvv {
    digits: Digits,
}

impl Cvv {
    /// Checks the length against the card's brand.
    pub fn new(mut digits: Digits, brand: Brand) -> Result<Cvv, CardError> {
        if digits.len() != brand.cvv_length() {
            digits.clear();
            return Err(CardError::CvvLength);
        }
        Ok(Cvv {
            digits: digits.take(),
        })
    }
}

impl fmt::Debug for Cvv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cvv(<redacted>)")
    }
}

/// A complete card, as captured. Zeroized on drop; no `Clone`, no `Serialize`.
#[derive(Debug)]
pub struct Card {
    /// Number.
    pub pan: Pan,
    /// Expiry.
    pub expiry: Expiry,
    /// Security code.
    pub cvv: Cvv,
    /// Postcode digits, when the account captures them.
    pub postcode: Option<Digits>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn() {
        let d = |s: &str| s.bytes().map(|b| b - b'0').collect::<Vec<u8>>();
        assert!(luhn_valid(&d("4242424242424242")));
        assert!(luhn_valid(&d("378282246310005")));
        assert!(!luhn_valid(&d("4242424242424241")));
        assert!(!luhn_valid(&d("0")));
    }

    #[test]
    fn pan_rules_and_masking() {
        let p = Pan::parse("4242 4242 4242 4242").unwrap();
        assert_eq!(p.brand(), Brand::Visa);
        assert_eq!(p.last4(), "4242");
        assert_eq!(p.masked(), "************4242");
        assert_eq!(format!("{p:?}"), "Pan(Visa, ************4242)");
        assert!(!format!("{p} {p:?}").contains("424242424242"));
        assert_eq!(Pan::parse("4242424242424241").unwrap_err(), CardError::Luhn);
        assert_eq!(
            Pan::parse("424242424242424").unwrap_err(),
            CardError::Length
        );
        assert_eq!(
            Pan::parse("9999999999999995").unwrap_err(),
            CardError::UnknownBrand
        );
        assert_eq!(Pan::parse("37828224631000").unwrap_err(), CardError::Length);
        assert!(Pan::parse("4242-4242-4242-4242x").is_err());
    }

    #[test]
    fn expiry_rules() {
        let today = (2026, 11);
        let e = |s: &str| Expiry::new(Digits::parse(s).unwrap(), today);
        assert!(e("1126").is_ok());
        assert!(e("1230").is_ok());
        assert_eq!(e("1026").unwrap_err(), CardError::Expired);
        assert_eq!(e("1325").unwrap_err(), CardError::ExpiryFormat);
        assert_eq!(e("0030").unwrap_err(), CardError::ExpiryFormat);
        assert_eq!(e("123").unwrap_err(), CardError::ExpiryFormat);
        assert!(e("1246").is_ok());
        assert_eq!(e("0147").unwrap_err(), CardError::ExpiryTooFar);
        assert_eq!(format!("{:?}", e("1230").unwrap()), "Expiry(<redacted>)");
    }

    #[test]
    fn cvv_length_by_brand() {
        let c = |s: &str, b| Cvv::new(Digits::parse(s).unwrap(), b);
        assert!(c("123", Brand::Visa).is_ok());
        assert_eq!(c("1234", Brand::Visa).unwrap_err(), CardError::CvvLength);
        assert!(c("1234", Brand::Amex).is_ok());
        assert_eq!(c("123", Brand::Amex).unwrap_err(), CardError::CvvLength);
        assert_eq!(
            format!("{:?}", c("123", Brand::Visa).unwrap()),
            "Cvv(<redacted>)"
        );
    }

    #[test]
    fn digits_take_and_wipe() {
        let mut d = Digits::parse("1234").unwrap();
        let t = d.take();
        assert_eq!((d.len(), t.len()), (0, 4));
        let mut out = [0u8; 4];
        t.write_ascii(&mut out);
        assert_eq!(&out, b"1234");
        assert_eq!(format!("{t:?}"), "Digits(<4 redacted>)");
    }
}

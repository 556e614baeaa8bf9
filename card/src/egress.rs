//! The one way card digits leave the card types: the body of the PSP's tokenization request.
//!
//! Every digit accessor of [`Pan`], [`Expiry`], [`Cvv`] and [`Digits`] is private to this
//! crate, so outside it a card can be masked, measured and dropped, and turned into bytes only
//! here. In the gateway only the PSP adapters (`src/psp/`) call this module; a workspace test
//! (`tests/gateway/crate_graph.rs`) fails if anything else does.
//!
//! ```compile_fail
//! // Outside this crate the digits cannot be read, not even one field's:
//! let pan = tonegate_card::Pan::parse("4242 4242 4242 4242").unwrap();
//! let _ = &pan.digits;
//! ```
//! ```compile_fail
//! let d = tonegate_card::Digits::parse("1234").unwrap();
//! let mut out = [0u8; 4];
//! d.write_ascii(&mut out);
//! ```
//! ```
//! // What the rest of the code may see of a card:
//! let pan = tonegate_card::Pan::parse("4242 4242 4242 4242").unwrap();
//! assert_eq!(pan.masked(), "************4242");
//! assert_eq!(pan.to_string(), "************4242");
//! ```

use core::fmt;
use std::io::Write as _;

use zeroize::Zeroize;

use crate::{Card, Pan, MAX_DIGITS};

/// A request body holding card digits: sized once, so it never reallocates and leaves an
/// unwiped copy behind, and wiped on drop. `Debug` shows its length only.
pub struct CardBody(Vec<u8>);

impl AsRef<[u8]> for CardBody {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for CardBody {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for CardBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardBody(<{} bytes redacted>)", self.0.len())
    }
}

/// The names a PSP gives the card's fields in a form-encoded request, already percent-encoded
/// (`card%5Bnumber%5D`), and what goes before them (`type=card`).
#[derive(Debug, Clone, Copy)]
pub struct CardForm {
    /// Pairs before the card's, with no trailing `&` (may be empty).
    pub prefix: &'static str,
    /// The number's field.
    pub number: &'static str,
    /// The expiry month's field (1-12, no leading zero).
    pub exp_month: &'static str,
    /// The four-digit expiry year's field.
    pub exp_year: &'static str,
    /// The security code's field.
    pub cvc: &'static str,
    /// The postcode's field (sent only when the card has one).
    pub postcode: &'static str,
}

/// Card digits as decimal ASCII, ready to write: at most [`MAX_DIGITS`], wiped on drop.
struct Ascii {
    bytes: [u8; MAX_DIGITS],
    len: usize,
}

impl Ascii {
    fn of(d: &crate::Digits) -> Ascii {
        let mut bytes = [0u8; MAX_DIGITS];
        let len = d.write_ascii(&mut bytes);
        Ascii { bytes, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Drop for Ascii {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl CardForm {
    /// The form-encoded body of the tokenization request for `card`. Digits and the expiry need
    /// no escaping; names are written as given.
    pub fn body(&self, card: &Card) -> CardBody {
        // Exactly enough room: names, separators, the longest value each field can have.
        let room = self.prefix.len()
            + self.number.len()
            + self.exp_month.len()
            + self.exp_year.len()
            + self.cvc.len()
            + self.postcode.len()
            + 5 * 2 // `&` and `=` per field
            + 3 * MAX_DIGITS // number, security code, postcode
            + 2 // month
            + 5; // year (u16)
        let mut body = CardBody(Vec::with_capacity(room));
        let b = &mut body.0;
        fn field(b: &mut Vec<u8>, name: &str) {
            if !b.is_empty() {
                b.push(b'&');
            }
            b.extend_from_slice(name.as_bytes());
            b.push(b'=');
        }
        b.extend_from_slice(self.prefix.as_bytes());
        field(b, self.number);
        b.extend_from_slice(Ascii::of(&card.pan.digits).as_bytes());
        // Straight into the wiped buffer: no intermediate String holds the expiry.
        field(b, self.exp_month);
        write!(b, "{}", card.expiry.month).expect("writing to a Vec");
        field(b, self.exp_year);
        write!(b, "{}", card.expiry.year).expect("writing to a Vec");
        field(b, self.cvc);
        b.extend_from_slice(Ascii::of(&card.cvv.digits).as_bytes());
        if let Some(pc) = &card.postcode {
            field(b, self.postcode);
            b.extend_from_slice(Ascii::of(pc).as_bytes());
        }
        debug_assert!(b.capacity() == room, "the card body reallocated");
        body
    }
}

/// Whether `pan` is the number `number` (ASCII digits; a sandbox PSP's test cards). Says
/// nothing else about the digits, and takes as long whatever they are.
pub fn pan_is(pan: &Pan, number: &str) -> bool {
    let d = pan.digits.as_slice();
    let n = number.as_bytes();
    let mut differ = (d.len() != n.len()) as u8;
    for (i, &x) in d.iter().enumerate() {
        let want = n.get(i).map_or(0xff, |c| c.wrapping_sub(b'0'));
        differ |= x ^ want;
    }
    differ == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cvv, Digits, Expiry};

    // A made-up PSP's names (the Stripe adapter's are in `src/psp/stripe.rs`).
    const FORM: CardForm = CardForm {
        prefix: "kind=card",
        number: "pan",
        exp_month: "m",
        exp_year: "y",
        cvc: "csc",
        postcode: "address%5Bzip%5D",
    };

    fn card(pan: &str, cvv: &str, postcode: Option<&str>) -> Card {
        let pan = Pan::parse(pan).unwrap();
        let brand = pan.brand();
        Card {
            pan,
            expiry: Expiry::new(Digits::parse("0931").unwrap(), (2026, 12)).unwrap(),
            cvv: Cvv::new(Digits::parse(cvv).unwrap(), brand).unwrap(),
            postcode: postcode.map(|p| Digits::parse(p).unwrap()),
        }
    }

    #[test]
    fn the_body_is_the_form_the_psp_reads() {
        let body = FORM.body(&card("4242424242424242", "123", None));
        assert_eq!(
            std::str::from_utf8(body.as_ref()).unwrap(),
            "kind=card&pan=4242424242424242&m=9&y=2031&csc=123"
        );
        let body = FORM.body(&card("378282246310005", "1234", Some("94107")));
        assert_eq!(
            std::str::from_utf8(body.as_ref()).unwrap(),
            "kind=card&pan=378282246310005&m=9&y=2031&csc=1234&address%5Bzip%5D=94107"
        );
        let bare = CardForm { prefix: "", ..FORM };
        let body = bare.body(&card("4242424242424242", "123", None));
        assert!(body.as_ref().starts_with(b"pan=4242"));
    }

    #[test]
    fn the_longest_card_fits_the_room_it_was_given() {
        // 19 digits and a 10-digit postcode: the debug assertion checks the
        // buffer did not grow (and so left no unwiped copy).
        let pan19 = (0..10)
            .map(|last| format!("601100000000000000{last}"))
            .find(|p| Pan::parse(p).is_ok())
            .expect("a 19-digit Discover number");
        let body = FORM.body(&card(&pan19, "123", Some("1234567890")));
        assert!(body.as_ref().len() <= body.0.capacity());
    }

    #[test]
    fn the_body_never_prints_its_digits() {
        let body = FORM.body(&card("4242424242424242", "123", None));
        let shown = format!("{body:?}");
        assert!(!shown.contains("4242") && !shown.contains("123"), "{shown}");
    }

    #[test]
    fn pan_is_compares_every_digit_and_the_length() {
        let pan = Pan::parse("4000000000000002").unwrap();
        assert!(pan_is(&pan, "4000000000000002"));
        assert!(!pan_is(&pan, "4000000000000003"));
        assert!(!pan_is(&pan, "400000000000000"));
        assert!(!pan_is(&pan, "40000000000000020"));
        assert!(!pan_is(&pan, "400000000000000x"));
        assert!(!pan_is(&pan, ""));
    }
}

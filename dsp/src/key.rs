//! The sixteen DTMF keys and their frequency pairs (ITU-T Q.23).

use core::fmt;

/// Low-group (row) frequencies in Hz, ITU-T Q.23.
pub const ROW_HZ: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// High-group (column) frequencies in Hz, ITU-T Q.23.
pub const COL_HZ: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

const LAYOUT: [[DtmfKey; 4]; 4] = {
    use DtmfKey::*;
    [
        [D1, D2, D3, A],
        [D4, D5, D6, B],
        [D7, D8, D9, C],
        [Star, D0, Hash, D],
    ]
};

/// One key of the DTMF keypad.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DtmfKey {
    /// Key `0`.
    D0,
    /// Key `1`.
    D1,
    /// Key `2`.
    D2,
    /// Key `3`.
    D3,
    /// Key `4`.
    D4,
    /// Key `5`.
    D5,
    /// Key `6`.
    D6,
    /// Key `7`.
    D7,
    /// Key `8`.
    D8,
    /// Key `9`.
    D9,
    /// Key `*`.
    Star,
    /// Key `#`.
    Hash,
    /// Key `A`.
    A,
    /// Key `B`.
    B,
    /// Key `C`.
    C,
    /// Key `D`.
    D,
}

impl DtmfKey {
    /// All keys in RFC 4733 event-code order (0-9, *, #, A-D).
    pub const ALL: [DtmfKey; 16] = {
        use DtmfKey::*;
        [
            D0, D1, D2, D3, D4, D5, D6, D7, D8, D9, Star, Hash, A, B, C, D,
        ]
    };

    /// The key at a row (0-3) and column (0-3) of the keypad.
    pub fn at(row: usize, col: usize) -> DtmfKey {
        LAYOUT[row][col]
    }

    /// Row and column of this key on the keypad.
    pub fn position(self) -> (usize, usize) {
        let code = self.event_code() as usize;
        // Rows and columns of keys in event-code order (0-9, *, #, A-D).
        const POS: [(u8, u8); 16] = [
            (3, 1),
            (0, 0),
            (0, 1),
            (0, 2),
            (1, 0),
            (1, 1),
            (1, 2),
            (2, 0),
            (2, 1),
            (2, 2),
            (3, 0),
            (3, 2),
            (0, 3),
            (1, 3),
            (2, 3),
            (3, 3),
        ];
        let (r, c) = POS[code];
        (r as usize, c as usize)
    }

    /// Low- and high-group frequencies in Hz.
    pub fn frequencies(self) -> (f32, f32) {
        let (r, c) = self.position();
        (ROW_HZ[r], COL_HZ[c])
    }

    /// RFC 4733 §3.2 event code (0-9, 10 = `*`, 11 = `#`, 12-15 = A-D).
    pub fn event_code(self) -> u8 {
        self as u8
    }

    /// The key for an RFC 4733 event code, if it is a DTMF event.
    pub fn from_event_code(code: u8) -> Option<DtmfKey> {
        Self::ALL.get(code as usize).copied()
    }

    /// The key's character: `0-9 * # A B C D`.
    pub fn as_char(self) -> char {
        b"0123456789*#ABCD"[self as usize] as char
    }

    /// The key for a character (`a-d` accepted as `A-D`).
    pub fn from_char(c: char) -> Option<DtmfKey> {
        let c = c.to_ascii_uppercase();
        b"0123456789*#ABCD"
            .iter()
            .position(|&b| b as char == c)
            .map(|i| Self::ALL[i])
    }

    /// The digit value for `0-9`, `None` for the other keys.
    pub fn digit(self) -> Option<u8> {
        let code = self.event_code();
        (code < 10).then_some(code)
    }
}

impl fmt::Display for DtmfKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_codes_agree() {
        for (i, k) in DtmfKey::ALL.iter().enumerate() {
            assert_eq!(k.event_code() as usize, i);
            assert_eq!(DtmfKey::from_event_code(i as u8), Some(*k));
            let (r, c) = k.position();
            assert_eq!(DtmfKey::at(r, c), *k);
            assert_eq!(DtmfKey::from_char(k.as_char()), Some(*k));
        }
        assert_eq!(DtmfKey::from_event_code(16), None);
        assert_eq!(DtmfKey::from_char('x'), None);
        assert_eq!(DtmfKey::from_char('b'), Some(DtmfKey::B));
        assert_eq!(DtmfKey::D5.frequencies(), (770.0, 1336.0));
        assert_eq!(DtmfKey::Hash.frequencies(), (941.0, 1477.0));
        assert_eq!(DtmfKey::D.frequencies(), (941.0, 1633.0));
        assert_eq!(DtmfKey::D7.digit(), Some(7));
        assert_eq!(DtmfKey::Star.digit(), None);
    }
}

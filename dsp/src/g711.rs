//! ITU-T G.711 μ-law and A-law companding, table-driven.
//!
//! The arithmetic follows the ITU-T G.191 software tools library (`g711.c`), the ITU's own
//! bit-exact reference: 16-bit linear input, negative values taken as one's complement, so that
//! `-1` encodes as negative zero. Both directions are lookups in tables built at compile time,
//! so the hot path is one indexed load per sample.

/// Which G.711 law a payload uses (RTP payload type 0 or 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum G711Law {
    /// μ-law, RTP payload type 0 (PCMU).
    Ulaw,
    /// A-law, RTP payload type 8 (PCMA).
    Alaw,
}

impl G711Law {
    /// Decodes one code to 16-bit linear PCM.
    #[inline]
    pub fn decode(self, code: u8) -> i16 {
        match self {
            G711Law::Ulaw => ulaw_decode(code),
            G711Law::Alaw => alaw_decode(code),
        }
    }

    /// Encodes one 16-bit linear sample.
    #[inline]
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            G711Law::Ulaw => ulaw_encode(sample),
            G711Law::Alaw => alaw_encode(sample),
        }
    }

    /// Decodes a payload into `out` (which must be at least as long); returns samples written.
    pub fn decode_into(self, codes: &[u8], out: &mut [i16]) -> usize {
        let table = match self {
            G711Law::Ulaw => &ULAW_DECODE,
            G711Law::Alaw => &ALAW_DECODE,
        };
        let n = codes.len().min(out.len());
        for (o, &c) in out[..n].iter_mut().zip(&codes[..n]) {
            *o = table[c as usize];
        }
        n
    }

    /// Encodes samples into `out` (which must be at least as long); returns codes written.
    pub fn encode_into(self, samples: &[i16], out: &mut [u8]) -> usize {
        let n = samples.len().min(out.len());
        match self {
            G711Law::Ulaw => {
                for (o, &s) in out[..n].iter_mut().zip(&samples[..n]) {
                    *o = ulaw_encode(s);
                }
            }
            G711Law::Alaw => {
                for (o, &s) in out[..n].iter_mut().zip(&samples[..n]) {
                    *o = alaw_encode(s);
                }
            }
        }
        n
    }

    /// The code for digital silence (linear 0).
    pub fn silence(self) -> u8 {
        self.encode(0)
    }
}

/// μ-law code to linear, all 256 codes.
pub static ULAW_DECODE: [i16; 256] = build_ulaw_decode();
/// A-law code to linear, all 256 codes.
pub static ALAW_DECODE: [i16; 256] = build_alaw_decode();
/// Linear to μ-law, indexed by the 14-bit signed value `(x >> 2) + 8192`.
static ULAW_ENCODE: [u8; 16384] = build_ulaw_encode();
/// Linear to A-law, indexed by the 12-bit signed value `(x >> 4) + 2048`.
static ALAW_ENCODE: [u8; 4096] = build_alaw_encode();

/// Decodes one μ-law code.
#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_DECODE[code as usize]
}

/// Decodes one A-law code.
#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DECODE[code as usize]
}

/// Encodes one sample to μ-law.
#[inline]
pub fn ulaw_encode(sample: i16) -> u8 {
    ULAW_ENCODE[((sample >> 2) as i32 + 8192) as usize]
}

/// Encodes one sample to A-law.
#[inline]
pub fn alaw_encode(sample: i16) -> u8 {
    ALAW_ENCODE[((sample >> 4) as i32 + 2048) as usize]
}

/// G.191 `ulaw_compress` for one sample (used to build the table and as the test oracle).
pub const fn ulaw_compress_reference(x: i16) -> u8 {
    let mut absno: i32 = if x < 0 {
        ((!x) as i32 >> 2) + 33
    } else {
        (x as i32 >> 2) + 33
    };
    if absno > 0x1FFF {
        absno = 0x1FFF;
    }
    let mut i = absno >> 6;
    let mut segno = 1;
    while i != 0 {
        segno += 1;
        i >>= 1;
    }
    let high = 0x0008 - segno;
    let low = 0x000F - ((absno >> segno) & 0x000F);
    let mut code = (high << 4) | low;
    if x >= 0 {
        code |= 0x0080;
    }
    code as u8
}

/// G.191 `ulaw_expand` for one code.
pub const fn ulaw_expand_reference(code: u8) -> i16 {
    let sign: i32 = if code < 0x80 { -1 } else { 1 };
    let m = !(code as i32);
    let exponent = (m >> 4) & 0x07;
    let segment = exponent + 1;
    let mantissa = m & 0x0F;
    let step = 4 << segment;
    (sign * ((0x0080 << exponent) + step * mantissa + step / 2 - 4 * 33)) as i16
}

/// G.191 `alaw_compress` for one sample.
pub const fn alaw_compress_reference(x: i16) -> u8 {
    let mut ix: i32 = if x < 0 {
        (!x) as i32 >> 4
    } else {
        x as i32 >> 4
    };
    if ix > 15 {
        let mut iexp = 1;
        while ix > 16 + 15 {
            ix >>= 1;
            iexp += 1;
        }
        ix -= 16;
        ix += iexp << 4;
    }
    if x >= 0 {
        ix |= 0x0080;
    }
    (ix ^ 0x0055) as u8
}

/// G.191 `alaw_expand` for one code.
pub const fn alaw_expand_reference(code: u8) -> i16 {
    let ix = ((code as i32) ^ 0x0055) & 0x007F;
    let iexp = ix >> 4;
    let mut mant = ix & 0x000F;
    if iexp > 0 {
        mant += 16;
    }
    mant = (mant << 4) + 0x0008;
    if iexp > 1 {
        mant <<= iexp - 1;
    }
    (if code > 127 { mant } else { -mant }) as i16
}

const fn build_ulaw_decode() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_expand_reference(i as u8);
        i += 1;
    }
    t
}

const fn build_alaw_decode() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_expand_reference(i as u8);
        i += 1;
    }
    t
}

const fn build_ulaw_encode() -> [u8; 16384] {
    let mut t = [0u8; 16384];
    let mut i = 0;
    while i < 16384 {
        // Every x with the same x >> 2 encodes alike (one's complement keeps that true for x < 0).
        let x = ((i as i32 - 8192) << 2) as i16;
        t[i] = ulaw_compress_reference(x);
        i += 1;
    }
    t
}

const fn build_alaw_encode() -> [u8; 4096] {
    let mut t = [0u8; 4096];
    let mut i = 0;
    while i < 4096 {
        let x = ((i as i32 - 2048) << 4) as i16;
        t[i] = alaw_compress_reference(x);
        i += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_vectors() {
        // Values from the G.711 segment tables (G.191 expand): extremes, zeros, one step.
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0xEF), 132);
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(-1), 0x7F);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
    }

    #[test]
    fn alaw_known_vectors() {
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn every_code_round_trips() {
        for c in 0..=255u8 {
            // μ-law 0x7F is negative zero: it decodes to 0, which encodes as positive zero.
            let want = if c == 0x7F { 0xFF } else { c };
            assert_eq!(ulaw_encode(ulaw_decode(c)), want, "ulaw code {c:#04x}");
            assert_eq!(alaw_encode(alaw_decode(c)), c, "alaw code {c:#04x}");
        }
    }

    #[test]
    fn tables_match_reference_for_every_input() {
        for x in i16::MIN..=i16::MAX {
            assert_eq!(ulaw_encode(x), ulaw_compress_reference(x), "ulaw {x}");
            assert_eq!(alaw_encode(x), alaw_compress_reference(x), "alaw {x}");
        }
    }

    #[test]
    fn decode_is_monotonic_and_symmetric() {
        // Codes 0x80..=0xFF are the positive half, largest first for μ-law.
        for c in 0x80..0xFFu8 {
            assert!(ulaw_decode(c) > ulaw_decode(c + 1));
            assert_eq!(ulaw_decode(c), -ulaw_decode(c & 0x7F));
            assert_eq!(alaw_decode(c), -alaw_decode(c & 0x7F));
        }
    }

    #[test]
    fn encode_error_is_within_half_a_step() {
        // Quantisation error is bounded by the segment's step size.
        for x in (i16::MIN..=i16::MAX).step_by(7) {
            let u = ulaw_decode(ulaw_encode(x)) as i32;
            let a = alaw_decode(alaw_encode(x)) as i32;
            let xu = (x as i32).clamp(-32124, 32124);
            let xa = (x as i32).clamp(-32256, 32256);
            assert!((u - xu).abs() <= 1024, "ulaw {x} -> {u}");
            assert!((a - xa).abs() <= 1024, "alaw {x} -> {a}");
            // Relative error above the linear segments stays within about 3.2 %.
            if x.unsigned_abs() > 1024 && x.unsigned_abs() < 32000 {
                assert!(((u - x as i32) as f64).abs() / (x as f64).abs() < 0.035);
                assert!(((a - x as i32) as f64).abs() / (x as f64).abs() < 0.035);
            }
        }
    }

    #[test]
    fn slices_encode_and_decode() {
        let codes: Vec<u8> = (0..=255).collect();
        let mut lin = [0i16; 256];
        let mut back = [0u8; 256];
        for law in [G711Law::Ulaw, G711Law::Alaw] {
            assert_eq!(law.decode_into(&codes, &mut lin), 256);
            assert_eq!(law.encode_into(&lin, &mut back), 256);
            for c in 0..256 {
                assert_eq!(law.decode(back[c]), lin[c]);
            }
        }
        assert_eq!(G711Law::Ulaw.silence(), 0xFF);
        assert_eq!(G711Law::Alaw.silence(), 0xD5);
    }
}

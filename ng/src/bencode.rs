//! Bencode, as rtpengine's ng protocol uses it: integers, byte strings, lists, dictionaries.
//!
//! Tolerant where real peers are sloppy (Kamailio sends dictionary keys unsorted, so keys are
//! kept in wire order and not checked), strict where input could hurt: nesting is bounded,
//! lengths are checked against the input before anything is allocated, trailing bytes are an
//! error. Written here rather than taken from a crate: the bencode crates on crates.io either
//! reject unsorted keys (serde_bencode) or are unmaintained, and the whole format is 150 lines.

use thiserror::Error;

/// Deepest nesting accepted (ng messages nest three levels at most).
pub const MAX_DEPTH: usize = 32;

/// A bencoded value. Dictionaries keep their keys in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `i…e`.
    Int(i64),
    /// `len:bytes`.
    Bytes(Vec<u8>),
    /// `l…e`.
    List(Vec<Value>),
    /// `d…e`.
    Dict(Vec<(Vec<u8>, Value)>),
}

/// Why bytes are not bencode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("bad bencode at byte {at}: {what}")]
pub struct BencodeError {
    /// Offset of the problem.
    pub at: usize,
    /// What is wrong.
    pub what: &'static str,
}

impl Value {
    /// A byte-string value from text.
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// A dictionary from `(key, value)` pairs.
    pub fn dict<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        )
    }

    /// The value as UTF-8 text, if it is a byte string holding some.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Appends the encoding of this value to `out` (dictionary keys in the order held).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => {
                out.push(b'i');
                out.extend_from_slice(i.to_string().as_bytes());
                out.push(b'e');
            }
            Value::Bytes(b) => {
                out.extend_from_slice(b.len().to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(b);
            }
            Value::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    out.extend_from_slice(k.len().to_string().as_bytes());
                    out.push(b':');
                    out.extend_from_slice(k);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }

    /// The encoding of this value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// Decodes exactly one value filling all of `input`.
pub fn decode(input: &[u8]) -> Result<Value, BencodeError> {
    let mut d = Decoder { input, at: 0 };
    let v = d.value(0)?;
    if d.at != input.len() {
        return Err(d.err("trailing bytes after the value"));
    }
    Ok(v)
}

struct Decoder<'a> {
    input: &'a [u8],
    at: usize,
}

impl Decoder<'_> {
    fn err(&self, what: &'static str) -> BencodeError {
        BencodeError { at: self.at, what }
    }

    fn peek(&self) -> Result<u8, BencodeError> {
        self.input
            .get(self.at)
            .copied()
            .ok_or_else(|| self.err("input ends inside a value"))
    }

    fn value(&mut self, depth: usize) -> Result<Value, BencodeError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        match self.peek()? {
            b'i' => {
                self.at += 1;
                let n = self.number(b'e')?;
                Ok(Value::Int(n))
            }
            b'l' => {
                self.at += 1;
                let mut l = Vec::new();
                while self.peek()? != b'e' {
                    l.push(self.value(depth + 1)?);
                }
                self.at += 1;
                Ok(Value::List(l))
            }
            b'd' => {
                self.at += 1;
                let mut d = Vec::new();
                while self.peek()? != b'e' {
                    if !self.peek()?.is_ascii_digit() {
                        return Err(self.err("dictionary key is not a string"));
                    }
                    let k = self.bytes()?;
                    let v = self.value(depth + 1)?;
                    d.push((k, v));
                }
                self.at += 1;
                Ok(Value::Dict(d))
            }
            b'0'..=b'9' => Ok(Value::Bytes(self.bytes()?)),
            _ => Err(self.err("not the start of a value")),
        }
    }

    /// Digits (with an optional leading '-') up to `end`, which is consumed.
    fn number(&mut self, end: u8) -> Result<i64, BencodeError> {
        let start = self.at;
        let rest = &self.input[start..];
        let len = rest
            .iter()
            .position(|&b| b == end)
            .ok_or_else(|| self.err("number not terminated"))?;
        let text = std::str::from_utf8(&rest[..len]).map_err(|_| self.err("number not ASCII"))?;
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || (digits.len() > 1 && digits.starts_with('0'))
            || text == "-0"
        {
            return Err(self.err("malformed number"));
        }
        let n = text.parse().map_err(|_| self.err("number out of range"))?;
        self.at = start + len + 1;
        Ok(n)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, BencodeError> {
        let n = self.number(b':')?;
        let n = usize::try_from(n).map_err(|_| self.err("negative string length"))?;
        // Checked against what is there before anything is allocated.
        if n > self.input.len() - self.at {
            return Err(self.err("string longer than the input"));
        }
        let b = self.input[self.at..self.at + n].to_vec();
        self.at += n;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_what_kamailio_sends_unsorted() {
        let v = decode(b"d7:command4:ping8:supportsl10:load limitee").unwrap();
        let Value::Dict(d) = &v else { panic!() };
        assert_eq!(d[0].0, b"command");
        assert_eq!(d[0].1.as_str(), Some("ping"));
        assert_eq!(d[1].1, Value::List(vec![Value::str("load limit")]));
        // Keys out of order are fine; the order is kept.
        let v = decode(b"d1:bi1e1:ai-2ee").unwrap();
        assert_eq!(v.encode(), b"d1:bi1e1:ai-2ee");
    }

    #[test]
    fn rejects_malformed_input_with_a_position() {
        for (bad, at) in [
            (&b"d7:command4:ping"[..], 16),
            (b"i01e", 1),
            (b"i-0e", 1),
            (b"ie", 1),
            (b"5:abc", 2),
            (b"di1ei2ee", 1),
            (b"x", 0),
            (b"4:pingX", 6),
            (b"99999999999999999999:x", 0),
        ] {
            let e = decode(bad).unwrap_err();
            assert_eq!(e.at, at, "{:?}: {e}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{}{}", "l".repeat(40), "e".repeat(40));
        assert_eq!(
            decode(deep.as_bytes()).unwrap_err().what,
            "nested too deeply"
        );
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::vec(
                    (proptest::collection::vec(any::<u8>(), 0..8), inner),
                    0..6
                )
                .prop_map(Value::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn every_value_round_trips(v in value()) {
            prop_assert_eq!(decode(&v.encode()).unwrap(), v);
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Never a panic; when it decodes, re-encoding gives the same bytes back (canonical
            // integers and lengths), so nothing is silently reinterpreted.
            if let Ok(v) = decode(&b) {
                prop_assert_eq!(v.encode(), b);
            }
        }

        #[test]
        fn truncating_a_value_is_always_an_error(v in value(), cut in 0usize..64) {
            let e = v.encode();
            if cut < e.len() {
                prop_assert!(decode(&e[..cut]).is_err());
            }
        }
    }
}

//! ng messages: `cookie SP dictionary`, the dictionary in bencode or JSON.
//!
//! Lookups are forgiving the way rtpengine is: keys and flags match case-insensitively with
//! spaces and hyphens alike (`received-from` = `received from`, `trust-address` = `trust
//! address`), and numbers may arrive as strings (Kamailio sends `delay-buffer: "40"`).

use thiserror::Error;

use crate::bencode::{self, Value};

/// Largest datagram accepted (an SDP with many media sections fits easily).
pub const MAX_MESSAGE: usize = 65_535;

/// Longest cookie answered (Kamailio's and OpenSIPS's are a few characters; a reply echoes it
/// and the reply cache keeps it).
pub const MAX_COOKIE: usize = 128;

/// Longest call-id, tag, branch or label accepted, in bytes (SIP's are far shorter).
pub const MAX_ID: usize = 256;

/// Largest SDP accepted, in bytes (an offer with several media sections and ICE candidates is
/// a few KiB; the rewritten SDP goes into the reply).
pub const MAX_SDP: usize = 32 * 1024;

/// Most keys a request's dictionary may have (rtpengine documents about a hundred; Kamailio
/// sends a dozen).
pub const MAX_KEYS: usize = 128;

/// The keys whose values are identifiers, each at most [`MAX_ID`] bytes.
const ID_KEYS: &[&str] = &[
    "call-id",
    "from-tag",
    "to-tag",
    "via-branch",
    "label",
    "from-label",
    "to-label",
    "set-label",
    "tonegate-callguid",
];

/// How the dictionary was encoded (replies use the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Bencode (what Kamailio and OpenSIPS send).
    Bencode,
    /// JSON.
    Json,
}

/// Why a datagram is not an ng request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageError {
    /// No space between cookie and dictionary, or an empty cookie.
    #[error("no cookie: a request is `cookie SP dictionary`")]
    NoCookie,
    /// The dictionary does not decode.
    #[error("{0}")]
    Bencode(#[from] bencode::BencodeError),
    /// The JSON does not parse.
    #[error("bad JSON: {0}")]
    Json(String),
    /// The document is not a dictionary.
    #[error("the request is not a dictionary")]
    NotADict,
    /// No `command` key.
    #[error("no command")]
    NoCommand,
    /// Over [`MAX_MESSAGE`].
    #[error("message over {MAX_MESSAGE} bytes")]
    TooLarge,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The cookie, echoed in the reply.
    pub cookie: Vec<u8>,
    /// The dictionary's encoding.
    pub format: Format,
    /// The dictionary, keys in wire order.
    pub dict: Vec<(Vec<u8>, Value)>,
}

/// Normalises a key or flag for comparison: lower case, `-` and `_` as space.
pub fn norm(s: &[u8]) -> String {
    s.iter()
        .map(|&b| match b {
            b'-' | b'_' => ' ',
            b => (b as char).to_ascii_lowercase(),
        })
        .collect()
}

/// Splits the cookie off a datagram.
pub fn split_cookie(datagram: &[u8]) -> Result<(&[u8], &[u8]), MessageError> {
    let sp = datagram
        .iter()
        .position(|&b| b == b' ')
        .ok_or(MessageError::NoCookie)?;
    if sp == 0 {
        return Err(MessageError::NoCookie);
    }
    Ok((&datagram[..sp], &datagram[sp + 1..]))
}

impl Request {
    /// Parses a datagram.
    pub fn parse(datagram: &[u8]) -> Result<Request, MessageError> {
        if datagram.len() > MAX_MESSAGE {
            return Err(MessageError::TooLarge);
        }
        let (cookie, body) = split_cookie(datagram)?;
        let (format, value) = if body.first() == Some(&b'{') {
            let j: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| MessageError::Json(e.to_string()))?;
            (
                Format::Json,
                from_json(&j, 0).ok_or(MessageError::NotADict)?,
            )
        } else {
            (Format::Bencode, bencode::decode(body)?)
        };
        let Value::Dict(dict) = value else {
            return Err(MessageError::NotADict);
        };
        let req = Request {
            cookie: cookie.to_vec(),
            format,
            dict,
        };
        if req.str("command").is_none() {
            return Err(MessageError::NoCommand);
        }
        Ok(req)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let want = norm(key.as_bytes());
        self.dict
            .iter()
            .find(|(k, _)| norm(k) == want)
            .map(|(_, v)| v)
    }

    /// The text value of `key`.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// The command, normalised (`block dtmf`).
    pub fn command(&self) -> String {
        norm(self.str("command").unwrap_or_default().as_bytes())
    }

    /// An integer, sent as one or as a string.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Value::Int(i) => Some(*i),
            v => v.as_str()?.trim().parse().ok(),
        }
    }

    /// A list of strings (a single string counts as a list of one), normalised.
    pub fn strs(&self, key: &str) -> Vec<String> {
        match self.get(key) {
            Some(Value::List(l)) => l
                .iter()
                .filter_map(|v| v.as_str())
                .map(|s| norm(s.as_bytes()))
                .collect(),
            Some(v) => v
                .as_str()
                .map(|s| vec![norm(s.as_bytes())])
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Whether `flag` is in the `flags` list.
    pub fn flag(&self, flag: &str) -> bool {
        let want = norm(flag.as_bytes());
        self.strs("flags").contains(&want)
    }

    /// Why the request is over a size limit ([`MAX_KEYS`], [`MAX_ID`], [`MAX_SDP`]), as an
    /// `error-reason` that names the key and the limit, never the value.
    pub fn over_limits(&self) -> Option<String> {
        if self.dict.len() > MAX_KEYS {
            return Some(format!("more than {MAX_KEYS} keys in message"));
        }
        let len = |key: &str| match self.get(key) {
            Some(Value::Bytes(b)) => b.len(),
            _ => 0,
        };
        if let Some(key) = ID_KEYS.iter().find(|k| len(k) > MAX_ID) {
            return Some(format!("{key} longer than {MAX_ID} bytes"));
        }
        if len("sdp") > MAX_SDP {
            return Some(format!("sdp longer than {MAX_SDP} bytes"));
        }
        None
    }

    /// The keys present, normalised.
    pub fn keys(&self) -> impl Iterator<Item = String> + '_ {
        self.dict.iter().map(|(k, _)| norm(k))
    }
}

/// The reply datagram: `cookie SP dictionary` in the request's format.
pub fn reply(cookie: &[u8], format: Format, dict: Value) -> Vec<u8> {
    let mut out = cookie.to_vec();
    out.push(b' ');
    match format {
        Format::Bencode => dict.encode_into(&mut out),
        Format::Json => {
            out.extend_from_slice(to_json(&dict).to_string().as_bytes());
        }
    }
    out
}

/// `{"result":"error","error-reason":…}`.
pub fn error(reason: &str) -> Value {
    Value::dict([
        ("result", Value::str("error")),
        ("error-reason", Value::str(reason)),
    ])
}

fn from_json(j: &serde_json::Value, depth: usize) -> Option<Value> {
    if depth > bencode::MAX_DEPTH {
        return None;
    }
    Some(match j {
        serde_json::Value::Null => Value::Bytes(Vec::new()),
        serde_json::Value::Bool(b) => Value::Int(*b as i64),
        serde_json::Value::Number(n) => Value::Int(n.as_i64()?),
        serde_json::Value::String(s) => Value::str(s),
        serde_json::Value::Array(a) => Value::List(
            a.iter()
                .map(|v| from_json(v, depth + 1))
                .collect::<Option<_>>()?,
        ),
        serde_json::Value::Object(o) => Value::Dict(
            o.iter()
                .map(|(k, v)| Some((k.as_bytes().to_vec(), from_json(v, depth + 1)?)))
                .collect::<Option<_>>()?,
        ),
    })
}

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Bytes(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        Value::List(l) => serde_json::Value::Array(l.iter().map(to_json).collect()),
        Value::Dict(d) => serde_json::Value::Object(
            d.iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bencode_and_json_requests_read_alike() {
        let b = Request::parse(
            b"5323_1 d7:command10:block DTMF12:delay-buffer2:405:flagsl13:trust-addressee",
        )
        .unwrap();
        let j = Request::parse(
            br#"5323_1 {"command":"block DTMF","delay buffer":40,"flags":["trust address"]}"#,
        )
        .unwrap();
        for r in [&b, &j] {
            assert_eq!(r.cookie, b"5323_1");
            assert_eq!(r.command(), "block dtmf");
            assert_eq!(r.int("delay-buffer"), Some(40));
            assert!(r.flag("trust-address") && r.flag("Trust Address"));
        }
        assert_eq!((b.format, j.format), (Format::Bencode, Format::Json));
        let out = reply(
            &j.cookie,
            j.format,
            Value::dict([("result", Value::str("pong"))]),
        );
        assert_eq!(out, br#"5323_1 {"result":"pong"}"#);
    }

    #[test]
    fn bad_requests_say_why() {
        assert_eq!(
            Request::parse(b"d7:command4:pinge"),
            Err(MessageError::NoCookie)
        );
        assert_eq!(
            Request::parse(b" d7:command4:pinge"),
            Err(MessageError::NoCookie)
        );
        assert_eq!(Request::parse(b"c l4:pinge"), Err(MessageError::NotADict));
        assert_eq!(
            Request::parse(b"c d3:fooi1ee"),
            Err(MessageError::NoCommand)
        );
        assert!(matches!(
            Request::parse(b"c d7:command"),
            Err(MessageError::Bencode(_))
        ));
        assert!(matches!(
            Request::parse(b"c {\"command\":"),
            Err(MessageError::Json(_))
        ));
        let big = vec![b'x'; MAX_MESSAGE + 1];
        assert_eq!(Request::parse(&big), Err(MessageError::TooLarge));
    }

    #[test]
    fn overlong_ids_and_sdp_are_named_not_echoed() {
        let with = |key: &str, len: usize| {
            let v = "4".repeat(len);
            Request::parse(format!("c d7:command5:query{}:{key}{len}:{v}e", key.len()).as_bytes())
                .unwrap()
                .over_limits()
        };
        assert_eq!(with("call-id", MAX_ID), None);
        let why = with("call-id", MAX_ID + 1).unwrap();
        assert_eq!(why, "call-id longer than 256 bytes");
        // Keys match as rtpengine matches them; the reason never carries the value.
        assert_eq!(
            with("from tag", MAX_ID + 1).as_deref(),
            Some("from-tag longer than 256 bytes")
        );
        assert!(with("to_tag", 1000).is_some_and(|w| !w.contains("4444")));
        assert!(with("tonegate-callguid", 257).is_some());
        assert_eq!(with("sdp", MAX_SDP), None);
        assert_eq!(
            with("sdp", MAX_SDP + 1).as_deref(),
            Some("sdp longer than 32768 bytes")
        );
        let mut many = b"c d7:command4:ping".to_vec();
        for i in 0..MAX_KEYS {
            let key = format!("k{i}");
            many.extend(format!("{}:{key}i1e", key.len()).as_bytes());
        }
        many.push(b'e');
        let r = Request::parse(&many).unwrap();
        assert_eq!(
            r.over_limits().as_deref(),
            Some("more than 128 keys in message")
        );
    }
}

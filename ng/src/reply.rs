//! What tonegate answers, typed; [`encode`] turns an answer (or an [`NgError`]) into the reply
//! datagram, with the keys and layout rtpengine uses.

use std::net::SocketAddr;

use crate::bencode::Value;
use crate::message::Format;
use crate::NgError;

/// Most bytes of call ids a `list` reply carries, so it fits one UDP datagram.
const LIST_BUDGET: usize = 60_000;

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `pong`.
    Pong,
    /// `ok`.
    Ok,
    /// `ok` with the rewritten SDP (offer, answer).
    Sdp(String),
    /// `ok` with the warning `Unknown call-id` (a `delete` of a call already gone).
    UnknownCallDeleted,
    /// A `query`'s answer.
    Query(CallReport),
    /// A `list`'s call ids.
    List(Vec<String>),
    /// A `statistics` answer.
    Statistics(Statistics),
}

/// One call as `query` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallReport {
    /// When the call was created (Unix seconds).
    pub created: u64,
    /// When it was last signalled (Unix seconds).
    pub last_signal: u64,
    /// The offerer, then the answerer.
    pub parties: [PartyReport; 2],
    /// RTP packets in, both legs.
    pub rtp_packets: u64,
    /// RTP bytes in.
    pub rtp_bytes: u64,
    /// Malformed packets.
    pub rtp_errors: u64,
    /// RTCP packets.
    pub rtcp_packets: u64,
}

/// One party of a queried call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyReport {
    /// Its tag.
    pub tag: String,
    /// Its label (empty if none).
    pub label: String,
    /// The relay's port facing it.
    pub local_port: u16,
    /// Where its media goes, once known.
    pub endpoint: Option<SocketAddr>,
}

/// What `statistics` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statistics {
    /// Live ng calls.
    pub sessions: u64,
    /// Seconds since the service started.
    pub uptime_s: u64,
    /// Relay calls created.
    pub managed: u64,
    /// Relay calls refused.
    pub rejected: u64,
    /// Relay calls ended by media timeout.
    pub timed_out: u64,
}

impl Reply {
    /// A `list` answer: the first `limit` of `ids` that fit one datagram.
    pub fn list<'a>(ids: impl Iterator<Item = &'a String>, limit: usize) -> Reply {
        // Each id costs its text and a length prefix.
        let mut budget = LIST_BUDGET;
        Reply::List(
            ids.take(limit)
                .take_while(|k| {
                    budget = budget.saturating_sub(k.len() + 6);
                    budget > 0
                })
                .cloned()
                .collect(),
        )
    }

    /// The reply dictionary.
    pub fn to_value(&self) -> Value {
        let ok = ("result", Value::str("ok"));
        match self {
            Reply::Pong => Value::dict([("result", Value::str("pong"))]),
            Reply::Ok => Value::dict([ok]),
            Reply::Sdp(sdp) => Value::dict([ok, ("sdp", Value::Bytes(sdp.as_bytes().to_vec()))]),
            Reply::UnknownCallDeleted => {
                Value::dict([ok, ("warning", Value::str("Unknown call-id"))])
            }
            Reply::Query(r) => r.to_value(),
            Reply::List(ids) => Value::dict([
                ok,
                (
                    "calls",
                    Value::List(ids.iter().map(|i| Value::str(i)).collect()),
                ),
            ]),
            Reply::Statistics(s) => s.to_value(),
        }
    }
}

/// The reply datagram for `cookie`: the answer or the error, in the request's format.
pub fn encode(cookie: &[u8], format: Format, answer: &Result<Reply, NgError>) -> Vec<u8> {
    let dict = match answer {
        Ok(r) => r.to_value(),
        Err(e) => e.to_value(),
    };
    crate::message::reply(cookie, format, dict)
}

impl CallReport {
    fn to_value(&self) -> Value {
        let [offerer, answerer] = &self.parties;
        let tag = |p: &PartyReport, other: &PartyReport| {
            Value::dict([
                ("tag", Value::str(&p.tag)),
                ("created", int(self.created)),
                ("label", Value::str(&p.label)),
                (
                    "medias",
                    Value::List(vec![Value::dict([
                        ("index", Value::Int(1)),
                        ("type", Value::str("audio")),
                        ("protocol", Value::str("RTP/AVP")),
                        (
                            "streams",
                            Value::List(vec![Value::dict([
                                ("local port", int(p.local_port.into())),
                                ("endpoint", endpoint(p.endpoint)),
                            ])]),
                        ),
                    ])]),
                ),
                ("in dialogue with", Value::str(&other.tag)),
            ])
        };
        let tags = Value::Dict(vec![
            (offerer.tag.as_bytes().to_vec(), tag(offerer, answerer)),
            (answerer.tag.as_bytes().to_vec(), tag(answerer, offerer)),
        ]);
        let totals = |packets: u64, bytes: u64, errors: u64| {
            Value::dict([
                ("packets", int(packets)),
                ("bytes", int(bytes)),
                ("errors", int(errors)),
            ])
        };
        Value::dict([
            ("result", Value::str("ok")),
            ("created", int(self.created)),
            ("last signal", int(self.last_signal)),
            ("tags", tags),
            (
                "totals",
                Value::dict([
                    (
                        "RTP",
                        totals(self.rtp_packets, self.rtp_bytes, self.rtp_errors),
                    ),
                    ("RTCP", totals(self.rtcp_packets, 0, 0)),
                ]),
            ),
        ])
    }
}

impl Statistics {
    fn to_value(self) -> Value {
        Value::dict([
            ("result", Value::str("ok")),
            (
                "statistics",
                Value::dict([
                    (
                        "currentstatistics",
                        Value::dict([
                            ("sessionsown", int(self.sessions)),
                            ("sessionsforeign", Value::Int(0)),
                            ("sessionstotal", int(self.sessions)),
                            ("transcodedmedia", Value::Int(0)),
                        ]),
                    ),
                    (
                        "totalstatistics",
                        Value::dict([
                            ("uptime", int(self.uptime_s)),
                            ("managedsessions", int(self.managed)),
                            ("rejectedsessions", int(self.rejected)),
                            ("timeoutsessions", int(self.timed_out)),
                        ]),
                    ),
                ]),
            ),
        ])
    }
}

/// A count as bencode's signed integer (as the protocol had it: `as i64`).
fn int(n: u64) -> Value {
    Value::Int(n as i64)
}

fn endpoint(a: Option<SocketAddr>) -> Value {
    match a {
        Some(a) => Value::dict([
            (
                "family",
                Value::str(if a.is_ipv4() { "IPv4" } else { "IPv6" }),
            ),
            ("address", Value::str(&a.ip().to_string())),
            ("port", Value::Int(a.port() as i64)),
        ]),
        None => Value::dict([]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_errors_encode_as_rtpengine_words_them() {
        let b = |a: Result<Reply, NgError>| {
            String::from_utf8(encode(b"7", Format::Bencode, &a)).unwrap()
        };
        assert_eq!(b(Ok(Reply::Pong)), "7 d6:result4:ponge");
        assert_eq!(
            b(Ok(Reply::UnknownCallDeleted)),
            "7 d6:result2:ok7:warning15:Unknown call-ide"
        );
        assert_eq!(
            b(Err(NgError::UnknownCallId)),
            "7 d6:result5:error12:error-reason15:Unknown call-ide"
        );
        let full = |supported| NgError::LoadLimit {
            limit: crate::Limit::Ports,
            supported,
        };
        assert_eq!(
            b(Err(full(true))),
            "7 d6:result10:load limit7:message16:Ran out of portse"
        );
        assert!(!full(true).is_error_reply() && full(false).is_error_reply());
        assert_eq!(
            b(Err(full(false))),
            "7 d6:result5:error12:error-reason16:Ran out of portse"
        );
        let json = encode(b"7", Format::Json, &Ok(Reply::List(vec!["a".into()])));
        let (cookie, body) = json.split_at(2);
        assert_eq!(cookie, b"7 ");
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v, serde_json::json!({"result": "ok", "calls": ["a"]}));
    }

    #[test]
    fn a_list_fits_one_datagram() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("{i:0>20}")).collect();
        let Reply::List(l) = Reply::list(ids.iter(), 5000) else {
            panic!()
        };
        assert!(l.len() < 5000 && l.len() * 26 < LIST_BUDGET);
        let Reply::List(l) = Reply::list(ids.iter(), 3) else {
            panic!()
        };
        assert_eq!(l, ids[..3]);
    }
}

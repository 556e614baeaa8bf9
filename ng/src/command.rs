//! The commands tonegate answers, read once from a request into types: what each one needs,
//! checked in the order rtpengine checks it (so a request missing two things is told the same
//! first reason).

use std::net::IpAddr;

use tonegate_dsp::MaskingMode;

use crate::bencode::Value;
use crate::message::{Format, Request};
use crate::sdp::{AudioStream, Sdp};
use crate::NgError;

/// Keys tonegate reads or knowingly accepts without acting on (anything else is counted).
const KNOWN_KEYS: &[&str] = &[
    "command",
    "call id",
    "from tag",
    "to tag",
    "via branch",
    "sdp",
    "flags",
    "replace",
    "received from",
    "supports",
    "ice",
    "label",
    "from label",
    "to label",
    "set label",
    "dtmf security",
    "delay buffer",
    "trigger",
    "trigger end",
    "end trigger",
    "trigger end time",
    "trigger end digits",
    "address",
    "address family",
    "media address",
    "transport protocol",
    "rtcp mux",
    "sdes",
    "dtls",
    "direction",
    "all",
    "tonegate callguid",
    "delete delay",
    "limit",
    "digit",
    "code",
    "record call",
    "metadata",
    "ptime",
    "codec",
    "dtmf log dest",
    "interface",
    "from interface",
    "to interface",
    "osrtp",
    "t.38",
    "tos",
];

/// The commands answered, as its metrics label them (anything else: `other`).
const COMMANDS: &[&str] = &[
    "ping",
    "offer",
    "answer",
    "delete",
    "query",
    "list",
    "block dtmf",
    "unblock dtmf",
    "block media",
    "unblock media",
    "statistics",
];

/// A normalised command name as a bounded metric label.
fn command_label(command: &str) -> &'static str {
    COMMANDS
        .iter()
        .find(|c| **c == command)
        .copied()
        .unwrap_or("other")
}

/// One datagram read: how to answer it, how to count it, and what it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// The reply's encoding (the request's; bencode when the request did not parse).
    pub format: Format,
    /// The command as a bounded metric label (`other` when unknown or unparsed).
    pub label: &'static str,
    /// Keys tonegate neither reads nor knowingly ignores (counted, as rtpengine ignores them).
    pub unknown_keys: usize,
    /// The command, or why there is none to carry out.
    pub command: Result<Command, NgError>,
}

impl Incoming {
    /// Reads one datagram (the cookie is split off by the caller, which answers with it).
    pub fn read(datagram: &[u8]) -> Incoming {
        match Request::parse(datagram) {
            Ok(req) => Incoming {
                format: req.format,
                label: command_label(&req.command()),
                unknown_keys: req
                    .keys()
                    .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
                    .count(),
                command: match req.over_limits() {
                    Some(why) => Err(NgError::OverLimit(why)),
                    None => Command::parse(&req),
                },
            },
            Err(e) => Incoming {
                format: Format::Bencode,
                label: "other",
                unknown_keys: 0,
                command: Err(e.into()),
            },
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `ping`.
    Ping,
    /// `offer`: the offerer's SDP (a first offer creates the call).
    Offer(Signal),
    /// `answer`: the answerer's SDP.
    Answer(Signal),
    /// `delete`: end the call.
    Delete {
        /// The SIP Call-ID.
        call_id: String,
        /// `fatal` flag: an unknown call is an error rather than a warning.
        fatal: bool,
    },
    /// `query`: the call's parties, media and totals.
    Query {
        /// The SIP Call-ID.
        call_id: String,
    },
    /// `list`: the live calls' ids.
    List {
        /// Most ids wanted.
        limit: usize,
    },
    /// `block DTMF` / `unblock DTMF`: secure mode on or off.
    Dtmf {
        /// Whose keys.
        target: Target,
        /// On (`block DTMF` without `DTMF-security: off`) or off.
        secure: bool,
    },
    /// `block media` / `unblock media`.
    Media {
        /// Whose media.
        target: Target,
        /// Blocked or flowing.
        block: bool,
    },
    /// `statistics`.
    Statistics,
}

/// What an `offer` or `answer` carries: one party's SDP and how to treat it.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// The SIP Call-ID.
    pub call_id: String,
    /// The tag of the party whose SDP this is (`from-tag` of an offer, `to-tag` of an answer).
    pub tag: String,
    /// The SDP body (read by [`Signal::sdp`] when the handler reaches it).
    pub sdp: Option<String>,
    /// `replace: origin`: the rewritten `o=` names the relay too.
    pub replace_origin: bool,
    /// `label` (or `from-label`): a name for the party.
    pub label: Option<String>,
    /// Where the party's media comes from when not its SDP's host: the SIP source
    /// (`SIP-source-address` without `trust-address`) or `media-address`.
    pub host_override: Option<IpAddr>,
    /// `tonegate-callguid`: the CallGuid sessions link by (else the Call-ID).
    pub call_guid: Option<String>,
    /// `address-family: IP6`.
    pub ipv6: bool,
    /// The masking `DTMF-security` asks for (`None`: the account's default).
    pub masking: Option<MaskingMode>,
    /// `supports: load limit`.
    pub supports_load_limit: bool,
}

impl Signal {
    /// The SDP, parsed and checked.
    pub fn sdp(&self) -> Result<Sdp, NgError> {
        let body = self.sdp.as_deref().ok_or(NgError::NoSdp)?;
        Ok(Sdp::parse(body)?)
    }

    /// Where the party's media comes from: the override, else its SDP's host.
    pub fn media_host(&self, stream: &AudioStream) -> Option<IpAddr> {
        self.host_override.or(stream.host)
    }
}

/// Which party a `block`/`unblock` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The SIP Call-ID.
    pub call_id: String,
    /// How the party is named.
    pub party: Named,
}

/// How a `block`/`unblock` names its party (the first that the request gives, in this order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// `all`, or nothing: the whole call.
    Everyone,
    /// `label`.
    Label(String),
    /// `address`: the party whose media comes from there.
    Address(IpAddr),
    /// `from-tag`.
    Tag(String),
}

impl Command {
    /// The command `req` asks for, or the first reason it cannot be carried out.
    pub fn parse(req: &Request) -> Result<Command, NgError> {
        let call_id = || {
            req.str("call-id")
                .map(str::to_string)
                .ok_or(NgError::NoCallId)
        };
        Ok(match req.command().as_str() {
            "ping" => Command::Ping,
            "offer" => Command::Offer(Signal::parse(req, call_id()?, "from-tag")?),
            "answer" => Command::Answer(Signal::parse(req, call_id()?, "to-tag")?),
            "delete" => Command::Delete {
                call_id: call_id()?,
                fatal: req.flag("fatal"),
            },
            "query" => Command::Query {
                call_id: call_id()?,
            },
            "list" => Command::List {
                limit: req.int("limit").filter(|l| *l > 0).unwrap_or(32) as usize,
            },
            c @ ("block dtmf" | "unblock dtmf") => {
                let off = req
                    .str("DTMF-security")
                    .is_some_and(|m| m.eq_ignore_ascii_case("off"));
                Command::Dtmf {
                    target: Target::parse(req, call_id()?),
                    secure: c == "block dtmf" && !off,
                }
            }
            c @ ("block media" | "unblock media") => Command::Media {
                target: Target::parse(req, call_id()?),
                block: c == "block media",
            },
            "statistics" => Command::Statistics,
            _ => return Err(NgError::UnrecognizedCommand),
        })
    }
}

impl Signal {
    /// An offer's or answer's fields; `tag_key` names the party whose SDP it carries.
    fn parse(req: &Request, call_id: String, tag_key: &str) -> Result<Signal, NgError> {
        let tag = req.str(tag_key).ok_or(if tag_key == "to-tag" {
            NgError::NoToTag
        } else {
            NgError::NoFromTag
        })?;
        let sip_source = req.flag("SIP-source-address") && !req.flag("trust-address");
        let received_from = match req.get("received-from") {
            Some(Value::List(l)) if sip_source => l
                .get(1)
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse().ok()),
            _ => None,
        };
        Ok(Signal {
            call_id,
            tag: tag.to_string(),
            sdp: req.str("sdp").map(str::to_string),
            replace_origin: req.strs("replace").iter().any(|r| r == "origin"),
            label: req
                .str("label")
                .or_else(|| req.str("from-label"))
                .map(str::to_string),
            host_override: received_from
                .or_else(|| req.str("media-address").and_then(|s| s.parse().ok())),
            call_guid: req.str("tonegate-callguid").map(str::to_string),
            ipv6: req.str("address-family") == Some("IP6"),
            masking: masking(req),
            supports_load_limit: req.strs("supports").iter().any(|s| s == "load limit"),
        })
    }
}

impl Target {
    fn parse(req: &Request, call_id: String) -> Target {
        let party = if req.flag("all") || req.str("all") == Some("all") {
            Named::Everyone
        } else if let Some(label) = req.str("label") {
            Named::Label(label.to_string())
        } else if let Some(a) = req.str("address").and_then(|a| a.parse().ok()) {
            Named::Address(a)
        } else if let Some(tag) = req.str("from-tag") {
            Named::Tag(tag.to_string())
        } else {
            Named::Everyone
        };
        Target { call_id, party }
    }
}

/// `DTMF-security` as a masking mode: `drop` and `silence` mask with silence, the tone and
/// digit modes with the uniform beep (events are never re-rendered as a key); anything else
/// leaves the account's default. The in-band audio is masked whatever the mode says.
fn masking(req: &Request) -> Option<MaskingMode> {
    match req
        .str("DTMF-security")
        .map(|m| m.to_ascii_lowercase())
        .as_deref()
    {
        Some("silence" | "drop") => Some(MaskingMode::Silence),
        Some("tone" | "random" | "zero" | "dtmf") => Some(MaskingMode::Beep),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(d: &[u8]) -> Result<Command, NgError> {
        Incoming::read(d).command
    }

    #[test]
    fn dtmf_security_maps_as_documented() {
        let offer = |ds: &str| {
            let d = format!(
                "c d7:command5:offer7:call-id1:x8:from-tag1:a13:DTMF-security{}:{ds}e",
                ds.len()
            );
            match command(d.as_bytes()) {
                Ok(Command::Offer(s)) => s.masking,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(offer("drop"), Some(MaskingMode::Silence));
        assert_eq!(offer("silence"), Some(MaskingMode::Silence));
        assert_eq!(offer("random"), Some(MaskingMode::Beep));
        assert_eq!(offer("DTMF"), Some(MaskingMode::Beep));
        assert_eq!(offer("x"), None, "the account's default");
    }

    #[test]
    fn missing_fields_are_named_in_rtpengines_order() {
        assert_eq!(command(b"c d7:command5:offere"), Err(NgError::NoCallId));
        assert_eq!(
            command(b"c d7:command5:offer7:call-id1:xe"),
            Err(NgError::NoFromTag)
        );
        assert_eq!(
            command(b"c d7:command6:answer7:call-id1:x8:from-tag1:ae"),
            Err(NgError::NoToTag)
        );
        // The SDP is read when the handler gets to it (an answer checks the call first).
        let Ok(Command::Offer(s)) = command(b"c d7:command5:offer7:call-id1:x8:from-tag1:ae")
        else {
            panic!()
        };
        assert_eq!(s.sdp().err(), Some(NgError::NoSdp));
        assert_eq!(
            command(b"c d7:command4:posee"),
            Err(NgError::UnrecognizedCommand)
        );
        let bad = Incoming::read(b"c d7:command");
        assert!(matches!(bad.command, Err(NgError::Message(_))));
        assert_eq!((bad.format, bad.label), (Format::Bencode, "other"));
    }

    #[test]
    fn block_and_unblock_name_their_party_and_mode() {
        let read = |d: &str| command(format!("c d{d}e").as_bytes()).unwrap();
        assert_eq!(
            read("7:command10:block DTMF7:call-id1:x8:from-tag1:a5:label1:l"),
            Command::Dtmf {
                target: Target {
                    call_id: "x".into(),
                    party: Named::Label("l".into())
                },
                secure: true
            }
        );
        assert_eq!(
            read("7:command10:block DTMF7:call-id1:x13:DTMF-security3:off"),
            Command::Dtmf {
                target: Target {
                    call_id: "x".into(),
                    party: Named::Everyone
                },
                secure: false
            }
        );
        assert_eq!(
            read("7:command13:unblock media7:call-id1:x7:address8:10.0.0.1"),
            Command::Media {
                target: Target {
                    call_id: "x".into(),
                    party: Named::Address("10.0.0.1".parse().unwrap())
                },
                block: false
            }
        );
        let unknown = Incoming::read(b"c d7:command4:ping3:fooi1e5:flagsl3:baree");
        assert_eq!((unknown.label, unknown.unknown_keys), ("ping", 1));
    }
}

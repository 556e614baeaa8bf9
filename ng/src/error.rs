//! Why a request is refused: each error is one `error-reason` (rtpengine's strings where
//! rtpengine has one, since proxies match on them), or `load limit` where the proxy said it
//! supports that.

use thiserror::Error;

use crate::bencode::Value;
use crate::message::MessageError;
use crate::sdp::SdpError;

/// Why an ng request was not carried out. Its `Display` is the `error-reason` sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NgError {
    /// The datagram is not an ng request (it had a cookie, so it is answered).
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A key, an identifier or the SDP is over a size limit (named, never echoed).
    #[error("{0}")]
    OverLimit(String),
    /// A command tonegate does not know.
    #[error("Unrecognized command")]
    UnrecognizedCommand,
    /// No `call-id`.
    #[error("No call-id in message")]
    NoCallId,
    /// An offer without `from-tag`.
    #[error("No from-tag in message")]
    NoFromTag,
    /// An answer without `to-tag`.
    #[error("No to-tag in message")]
    NoToTag,
    /// An offer or answer without `sdp`.
    #[error("No SDP body in message")]
    NoSdp,
    /// The SDP is malformed or cannot be masked (encrypted, no G.711).
    #[error(transparent)]
    Sdp(#[from] SdpError),
    /// No live call by that `call-id`.
    #[error("Unknown call-id")]
    UnknownCallId,
    /// A `from-tag` that is neither party of the call.
    #[error("Unknown from-tag")]
    UnknownTag,
    /// A `label` no party carries.
    #[error("Unknown label")]
    UnknownLabel,
    /// An `address` neither party's media comes from.
    #[error("Unknown address")]
    UnknownAddress,
    /// `block DTMF` for the answerer: its keys are not card data and are never masked.
    #[error(
        "tonegate masks the keys of the calling party (the offerer) only; block DTMF for the \
         caller's from-tag or the whole call"
    )]
    AnswererKeys,
    /// The relay is full (ports or the call limit).
    #[error("{limit}")]
    LoadLimit {
        /// Which limit.
        limit: Limit,
        /// Whether the proxy said `supports: load limit` (then the reply is `load limit`, the
        /// answer Kamailio fails over on without counting an error).
        supported: bool,
    },
    /// The relay refused (its own reason).
    #[error("{0}")]
    Relay(String),
}

/// Which relay limit a new call hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Limit {
    /// `max_calls`.
    #[error("Parallel session limit reached")]
    Calls,
    /// No free port pair.
    #[error("Ran out of ports")]
    Ports,
}

impl NgError {
    /// Whether the reply says `result: error` (a `load limit` reply does not).
    pub fn is_error_reply(&self) -> bool {
        !matches!(
            self,
            NgError::LoadLimit {
                supported: true,
                ..
            }
        )
    }

    /// The reply dictionary.
    pub fn to_value(&self) -> Value {
        match self {
            NgError::LoadLimit {
                limit,
                supported: true,
            } => Value::dict([
                ("result", Value::str("load limit")),
                ("message", Value::str(&limit.to_string())),
            ]),
            other => crate::message::error(&other.to_string()),
        }
    }
}

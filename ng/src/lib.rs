//! rtpengine's ng control protocol (`docs/ng_control_protocol.md` in sipwise/rtpengine), as
//! Kamailio's and OpenSIPS's `rtpengine` modules speak it, without IO.
//!
//! How to drive it (the gateway's `ng` module does, over UDP and the relay):
//!
//! 1. A datagram comes in: [`message::split_cookie`] gives the cookie (a reply echoes it; the
//!    [`ReplyCache`], with `now` passed in, answers a retransmission with the reply already sent).
//! 2. [`Incoming::read`] reads the rest into a typed [`Command`] (or an [`NgError`] saying why
//!    not), with its metric label and the count of keys tonegate does not know.
//! 3. The caller carries the command out on its relay. [`NgCall`] holds what the protocol knows
//!    of a call and its rules: whose SDP an offer or answer carries ([`NgCall::apply`]; the
//!    first offer's `from-tag` is the [`Party::Offerer`], the caller whose keys are masked),
//!    where that party's media moved, the SDP rewritten ([`sdp::Sdp`]) for the other party,
//!    and which party a `block`/`unblock` names.
//! 4. The outcome, a [`Reply`] or an [`NgError`], goes out through [`reply::encode`] in the
//!    request's format (bencode or JSON).
//!
//! What it never does: open a socket, read a clock, spawn a task or hold a lock. Time comes in
//! as arguments; relay calls, ports and counters belong to the caller. Every input is bounded
//! ([`message::MAX_MESSAGE`], [`message::MAX_ID`], [`message::MAX_SDP`], bencode nesting),
//! and an SDP whose keys tonegate could not mask is refused ([`sdp::SdpError`]), never passed on.

// No `unsafe` here, ever (the workspace denies it; this crate forbids even an allow).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bencode;
mod cache;
mod call;
mod command;
mod error;
pub mod message;
pub mod reply;
pub mod sdp;

pub use cache::{ReplyCache, MAX_REPLIES};
pub use call::{Applied, NgCall, Party};
pub use command::{Command, Incoming, Named, Signal, Target};
pub use error::{Limit, NgError};
pub use reply::{CallReport, PartyReport, Reply, Statistics};

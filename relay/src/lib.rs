//! The RTP relay (`tonegate-relay`), the IO shell around the sans-IO media core: binds each call's UDP sockets, hands each call to an IO engine (a tokio
//! task per call, or io_uring workers) where one [`driver::CallDriver`] moves its datagrams
//! through the sans-IO [`CallMedia`], and keeps the registry the control API works on.
//!
//! Keys captured in secure mode go to the call's one subscriber (the session layer); the relay
//! itself never logs, stores or counts key values.
//!
//! Every call belongs to the client that created it: other clients cannot see, steer or
//! delete it ([`Access`]). Secure mode is held, not toggled: the account's policy
//! ([`DtmfMasking::Call`] holds it for the whole call), a session's capture, or the owner's
//! request each hold it, and it goes off only when an explicit release leaves nobody holding
//! it — never while a capture is live, nor within `secure_hold_off_s` of the last key.
//!
//! Where things are: [`Relay`] and its call registry (`registry.rs`: create, find, steer,
//! delete, totals); a call's record and the handles on its IO (`call.rs`); secure-mode holds
//! and key streams (`secure.rs`); the public views of calls and totals (`view.rs`); the IO
//! engines (`engine.rs` picks one and applies what engines report; `task.rs` for tokio,
//! `uring/` for io_uring, whose `unsafe` is all in `uring/sys.rs`); the one per-call driver
//! both engines run (`driver.rs`); ports (`ports.rs`).

// `unsafe` (denied by the workspace) only where allowed by name: the io_uring engine's
// `uring/sys.rs` and three libc calls in `ports.rs`.
#![warn(missing_docs)]

mod added_latency;
mod call;
mod clock;
pub mod config;
mod driver;
mod engine;
mod handle;
mod ports;
mod registry;
mod secure;
mod task;
#[cfg(target_os = "linux")]
mod uring;
mod view;

use thiserror::Error;

// `crate::media::…` reads as the gateway's paths do.
use tonegate_media as media;

pub use added_latency::LatencySnapshot;
pub use call::{CallClosing, InjectedFault, KeyStream};
pub use clock::{SystemClock, WallClock};
pub use engine::io_uring_available;
pub use handle::CallHandle;
pub use ports::{open_file_limit, raise_open_file_limit, PortAllocator};
pub use registry::Relay;
pub use secure::SecureLease;
pub use view::{
    AuditSink, CallInfo, CallNotice, CounterSnapshot, LegInfo, NewCall, RelayAudit, RelayTotals,
};

/// Why a relay request failed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RelayError {
    /// No free port pair in the configured range, or the call limit is reached.
    #[error("no relay capacity: {0}")]
    Exhausted(&'static str),
    /// No call with that id.
    #[error("no such call")]
    UnknownCall,
    /// A request that makes no sense.
    #[error("{0}")]
    Invalid(String),
    /// The client already holds as many live calls as `relay.max_calls_per_client` lets it.
    #[error(
        "this client already has {0} live relay calls, its limit (relay.max_calls_per_client); \
         end one first"
    )]
    OverQuota(usize),
    /// The configured IO engine cannot run here.
    #[error("relay engine unavailable: {0}")]
    Engine(String),
    /// The request conflicts with the call's state (secure mode held, a subscriber present,
    /// a duplicate call).
    #[error("{0}")]
    Conflict(String),
}

/// Who asks the relay about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// A client: it sees and steers only the calls it created.
    Owner(&'a str),
    /// An operator (token scope `admin`, client id given): every call; each use is audited.
    Admin(&'a str),
}

impl Access<'_> {
    pub(crate) fn allows(&self, owner: &str) -> bool {
        match self {
            Access::Owner(c) => *c == owner,
            Access::Admin(_) => true,
        }
    }

    /// The client making the request.
    pub fn client(&self) -> &str {
        match self {
            Access::Owner(c) | Access::Admin(c) => c,
        }
    }
}

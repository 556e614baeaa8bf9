//! Media: RTP and RFC 4733 handling, the per-call relay state and the secure-mode masking path.
//! Sans-IO: the relay shell (`tonegate::relay`) owns the sockets.

// No `unsafe` here, ever (the workspace denies it; this crate forbids even an allow).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod call;
pub mod prompt;
pub mod rtp;
pub mod secure;

pub use call::{
    is_unicast_host, is_unicast_remote, CallCounters, CallMedia, CallMediaConfig, Channel,
    MediaEvent, RemoteRule, Side, Transmit,
};
pub use prompt::{Clip, PromptPlayer, StreamStart};
pub use secure::{CapturedKey, EventReplacement, KeySource};

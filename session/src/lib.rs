//! The rules of a GlobalPCI payment session, without IO.
//!
//! - [`model`]: the session, its kinds and states, and which transitions are allowed.
//! - [`voice`]: a voice session's workflow. Drive a [`voice::VoiceSession`] with what happened
//!   (a key, the agent's reset or submit, the PSP's answer, the time since the capture began) and
//!   poll it for [`voice::VoiceOutput`]s (prompts to play or stop, transitions to store, events to
//!   publish, a card to pay); the caller carries those out.
//! - [`link_id`]: making and checking `dtmfLinkId`s and bounding how often callers may guess.
//! - [`payment_data`]: the integrator's `PaymentData`, checked (amount, mandatory keys, no card
//!   numbers kept).
//! - [`view`]: a session as the API answer, the result webhook and the agent UI's stream show
//!   it (one [`view::SessionView`]), and the one way an amount is written.
//!
//! It never opens a socket, starts a task, reads a clock or a random source, or touches a
//! store: time and randomness come in as arguments (`tests/gateway/crate_graph.rs` checks the
//! dependencies, `clippy.toml` the clocks). The session service (`tonegate::session`) owns all
//! of that.

// No `unsafe` here, ever (the workspace denies it; this crate forbids even an allow).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod link_id;
pub mod model;
pub mod payment_data;
pub mod view;
pub mod voice;

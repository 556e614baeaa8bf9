//! tonegate: a secure-capture gateway for contact-centre card payments.
//!
//! See `README.md` for the tour and `../shared/design.md` for the architecture. The signal
//! processing lives in the `tonegate-dsp` crate (`dsp/`); this crate holds the rest of the
//! data path and the IO around it.

pub mod api;
pub mod auth;
#[doc(hidden)]
pub mod baseline;
pub mod capture;
pub mod card;
pub mod config;
pub mod demo;
pub mod hygiene;
pub mod interaction;
pub mod media;
pub mod ng;
pub mod notify;
pub mod prompts;
pub mod psp;
pub mod relay;
pub mod server;
pub mod session;
pub mod sms;
pub mod wav;

//! tonegate: a secure-capture gateway for contact-centre card payments.
//!
//! See `README.md` for the tour and `../shared/design.md` for the architecture. The sans-IO
//! core lives in its own crates: `tonegate-dsp` (`dsp/`, signal processing), `tonegate-media`
//! (`media/`, per-call RTP and masking) and `tonegate-card` (`card/`, card data and capture);
//! `tonegate-interaction` (`interaction/`) runs IVR `ApiInteraction` definitions. The RTP relay
//! (`relay/`, `tonegate-relay`) drives the media core on its IO engines. This crate holds the
//! rest of the IO: sessions, PSPs, ng control and HTTP.

pub mod api;
pub mod auth;
#[doc(hidden)]
pub mod clock;
pub use tonegate_card as card;
pub use tonegate_card::capture;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod forwarded;
// setrlimit/prctl/getrlimit through libc: no safe wrapper in std.
#[allow(unsafe_code)]
pub mod hygiene;
pub use tonegate_interaction as interaction;
pub mod latency;
pub use tonegate_media as media;
pub mod networks;
pub mod ng;
pub mod notify;
pub mod prompts;
pub mod psp;
pub use tonegate_relay as relay;
pub mod server;
pub mod session;
pub mod sip;
pub mod sms;
pub mod wav;

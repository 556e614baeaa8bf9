//! One call's driver, the same for both IO engines: it feeds datagrams, control messages and
//! time into the sans-IO [`CallMedia`] and acts on what comes out — datagrams go to the
//! engine's [`DatagramTx`], keys to the call's one subscriber, latches and secure mode to the
//! [`CallStatus`] the registry reads. The engines (`task.rs`, `uring/`) differ only in how
//! datagrams move and how they wait (quinn's `Runtime` split is the model).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::WallClock;
use crate::media::rtp::MAX_DATAGRAM;
use crate::media::{CallMedia, CapturedKey, Channel, MediaEvent, RemoteRule, Side, Transmit};

/// What the relay asks of a running call (through its engine).
pub(crate) enum CallControl {
    Secure(bool, oneshot::Sender<()>),
    Keys(mpsc::Sender<CapturedKey>),
    Play(Vec<crate::media::Clip>),
    StopPrompt,
    Listen(bool),
    Remote(crate::media::Side, RemoteRule),
    Block(crate::media::Side, bool),
    /// Panic in the call's media step (a test's fault injection).
    Fault,
}

/// How an engine sends a datagram: from `from`'s `channel` socket to `to`. Never waits; false
/// when the datagram could not go (the driver counts it).
pub(super) trait DatagramTx {
    /// Sends `bytes` or reports that it could not.
    fn send(&mut self, from: Side, channel: Channel, to: SocketAddr, bytes: &[u8]) -> bool;
}

/// What the registry reads about a running call. The driver writes it; the registry writes
/// `remotes` only when signalling names a remote before media does.
#[derive(Debug, Default)]
pub(super) struct CallStatus {
    /// Secure mode as the media path has applied it.
    pub secure: AtomicBool,
    /// Keys outside secure mode go to the subscriber (link-id listening), as applied.
    pub listening: AtomicBool,
    /// Each leg's remote RTP address, once known.
    pub remotes: Mutex<[Option<SocketAddr>; 2]>,
    /// When a key last went to the subscriber, ms since the Unix epoch (0: never).
    pub last_key_ms: AtomicU64,
    /// Datagrams the engine could not send at once (dropped, as a router would).
    pub send_dropped: AtomicU64,
    /// Prompt requests handed to the engine, and those it has applied: while they differ a
    /// prompt is on its way.
    pub prompts_sent: AtomicU64,
    /// See `prompts_sent`.
    pub prompts_applied: AtomicU64,
    /// A prompt is playing or queued, as of the last control message or timeout.
    pub prompting: AtomicBool,
}

/// Why a call's driving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// Deleted, or the relay shut down.
    Stopped,
    /// No datagram on either leg for the media timeout.
    Silence,
}

/// One call as an engine drives it. See the module documentation.
pub(super) struct CallDriver {
    media: CallMedia,
    status: Arc<CallStatus>,
    /// The one key subscriber (a closed one may be replaced).
    keys: Option<mpsc::Sender<CapturedKey>>,
    /// Where queued datagrams are copied before they are sent.
    out: [u8; MAX_DATAGRAM],
    silent: bool,
    /// When a key was last delivered is wall-clock time (the release hold-off counts from it).
    wall: Arc<dyn WallClock>,
}

impl CallDriver {
    /// Drives `media`, publishing to `status`.
    pub fn new(media: CallMedia, status: Arc<CallStatus>, wall: Arc<dyn WallClock>) -> Self {
        CallDriver {
            media,
            status,
            keys: None,
            out: [0; MAX_DATAGRAM],
            silent: false,
            wall,
        }
    }

    /// A datagram of `len` bytes arrived in `buf` on `side`'s `channel` socket from `from`.
    /// Returns how many datagrams went out because of it (for the added-latency histogram).
    pub fn on_datagram(
        &mut self,
        tx: &mut impl DatagramTx,
        side: Side,
        channel: Channel,
        from: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> u64 {
        let mut sent = 0;
        if let Some(t) = self.media.on_datagram(side, channel, from, buf, len) {
            sent += u64::from(send(&self.status, tx, t, buf));
        }
        sent + self.drain(tx)
    }

    /// Applies a control message from the registry.
    pub fn on_control(&mut self, tx: &mut impl DatagramTx, c: CallControl) {
        match c {
            CallControl::Secure(on, ack) => {
                self.media.set_secure(on);
                // What the look-ahead held goes out before the registry hears "applied".
                self.drain(tx);
                self.status.secure.store(on, Relaxed);
                let _ = ack.send(());
            }
            CallControl::Keys(sink) => self.keys = Some(sink),
            CallControl::Play(clips) => {
                for c in clips {
                    self.media.play(c);
                }
                self.status
                    .prompting
                    .store(self.media.is_prompting(), Relaxed);
                self.status.prompts_applied.fetch_add(1, Relaxed);
            }
            CallControl::StopPrompt => {
                self.media.stop_prompt();
                self.status.prompting.store(false, Relaxed);
            }
            CallControl::Listen(on) => {
                self.media.set_listening(on);
                self.status.listening.store(on, Relaxed);
            }
            CallControl::Remote(side, rule) => self.media.set_remote_rule(side, rule),
            CallControl::Block(side, on) => self.media.set_blocked(side, on),
            CallControl::Fault => panic!("injected media fault"),
        }
        self.drain(tx);
    }

    /// When [`on_timeout`](Self::on_timeout) must next run.
    pub fn poll_timeout(&self) -> Instant {
        self.media.poll_timeout()
    }

    /// Time has reached `now`: sends a due prompt frame; `Some(Silence)` once the call has
    /// heard nothing for its media timeout.
    pub fn on_timeout(&mut self, tx: &mut impl DatagramTx, now: Instant) -> Option<Ended> {
        self.media.handle_timeout(now);
        self.drain(tx);
        // Timeouts, not datagrams, advance prompts: the hot path stores nothing here.
        self.status
            .prompting
            .store(self.media.is_prompting(), Relaxed);
        self.silent.then_some(Ended::Silence)
    }

    /// Sends what the media core has queued and acts on what it reports; returns how many
    /// datagrams went.
    fn drain(&mut self, tx: &mut impl DatagramTx) -> u64 {
        let mut sent = 0;
        while let Some(t) = self.media.poll_transmit(&mut self.out) {
            sent += u64::from(send(&self.status, tx, t, &self.out));
        }
        while let Some(e) = self.media.poll_event() {
            match e {
                MediaEvent::Key(k) => {
                    // The hold-off on releasing secure mode counts from here.
                    self.status.last_key_ms.store(self.wall.unix_ms(), Relaxed);
                    if let Some(sink) = &self.keys {
                        // A subscriber that stopped reading loses keys rather than stalling
                        // media.
                        let _ = sink.try_send(k);
                    }
                }
                // Rare (a leg's first packet, a re-latch): the lock is not per packet.
                MediaEvent::Latched => {
                    if let Ok(mut r) = self.status.remotes.lock() {
                        *r = [
                            self.media.remote(Side::Caller),
                            self.media.remote(Side::Agent),
                        ];
                    }
                }
                MediaEvent::Silent => self.silent = true,
            }
        }
        sent
    }
}

/// Sends `bytes[..t.len]` as `t` says, counting it in `status` if it could not go; whether it
/// went.
fn send(status: &CallStatus, tx: &mut impl DatagramTx, t: Transmit, bytes: &[u8]) -> bool {
    let went = tx.send(t.from, t.channel, t.to, &bytes[..t.len]);
    if !went {
        status.send_dropped.fetch_add(1, Relaxed);
    }
    went
}

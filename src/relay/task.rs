//! One tokio task per call: receive on the call's sockets, run the datagram through
//! [`CallMedia`], send what it says. Sends never wait: a send that would block is dropped and
//! counted, as a router would.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::ports::LegSockets;
use super::Control;
use crate::media::{CallMedia, CapturedKey, Channel, Side, Transmit};

/// A call's four sockets (two with rtcp-mux).
pub(super) struct Sockets {
    caller_rtp: UdpSocket,
    caller_rtcp: Option<UdpSocket>,
    agent_rtp: UdpSocket,
    agent_rtcp: Option<UdpSocket>,
}

impl Sockets {
    pub(super) fn new(caller: LegSockets, agent: LegSockets) -> io::Result<Self> {
        let wrap = |s: std::net::UdpSocket| -> io::Result<UdpSocket> {
            s.set_nonblocking(true)?;
            UdpSocket::from_std(s)
        };
        Ok(Sockets {
            caller_rtp: wrap(caller.rtp)?,
            caller_rtcp: caller.rtcp.map(wrap).transpose()?,
            agent_rtp: wrap(agent.rtp)?,
            agent_rtcp: agent.rtcp.map(wrap).transpose()?,
        })
    }

    fn socket(&self, side: Side, channel: Channel) -> &UdpSocket {
        match (side, channel) {
            (Side::Caller, Channel::Rtcp) => self.caller_rtcp.as_ref().unwrap_or(&self.caller_rtp),
            (Side::Agent, Channel::Rtcp) => self.agent_rtcp.as_ref().unwrap_or(&self.agent_rtp),
            (Side::Caller, Channel::Rtp) => &self.caller_rtp,
            (Side::Agent, Channel::Rtp) => &self.agent_rtp,
        }
    }
}

pub(super) struct CallTask {
    pub media: CallMedia,
    pub sockets: Sockets,
    pub control: mpsc::Receiver<Control>,
    pub stop: oneshot::Receiver<()>,
    pub timeout: Duration,
    pub secure: Arc<AtomicBool>,
    pub remotes: Arc<Mutex<[Option<SocketAddr>; 2]>>,
    pub send_dropped: Arc<AtomicU64>,
    /// When a key last went to the subscriber, ms since the Unix epoch.
    pub last_key_ms: Arc<AtomicU64>,
}

/// Why a call task ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ended {
    /// Deleted, or the relay shut down.
    Stopped,
    /// No packet on either leg for the media timeout.
    Silence,
}

async fn tick_opt(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn recv_opt(s: &Option<UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

struct Io<'a> {
    media: &'a mut CallMedia,
    sockets: &'a Sockets,
    keys: &'a mut Option<mpsc::Sender<CapturedKey>>,
    send_dropped: &'a AtomicU64,
    last_key_ms: &'a AtomicU64,
    out: &'a mut [u8; 1500],
}

impl Io<'_> {
    fn send(&self, t: Transmit, bytes: &[u8]) {
        if self
            .sockets
            .socket(t.from, t.channel)
            .try_send_to(&bytes[..t.len], t.to)
            .is_err()
        {
            self.send_dropped.fetch_add(1, Relaxed);
        }
    }

    /// Runs one received datagram through the call and sends what comes out.
    fn datagram(
        &mut self,
        side: Side,
        channel: Channel,
        r: io::Result<(usize, SocketAddr)>,
        buf: &mut [u8],
    ) {
        let Ok((n, from)) = r else { return };
        if let Some(t) = self.media.on_datagram(side, channel, from, buf, n) {
            self.send(t, buf);
        }
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(t) = self.media.poll_transmit(self.out) {
            self.send(t, &self.out[..]);
        }
        while let Some(k) = self.media.poll_key() {
            // The hold-off on releasing secure mode counts from here.
            self.last_key_ms.store(super::unix_ms(), Relaxed);
            if let Some(tx) = self.keys.as_ref() {
                // A subscriber that stopped reading loses keys rather than stalling media.
                let _ = tx.try_send(k);
            }
        }
    }
}

pub(super) async fn run(mut t: CallTask) -> Ended {
    // One buffer per socket: select! polls all receives at once.
    let mut bufs = [[0u8; 2048]; 4];
    let mut out = [0u8; 1500];
    let mut keys: Option<mpsc::Sender<CapturedKey>> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let counters = t.media.counters();
    let activity = || counters.bytes_in[0].load(Relaxed) + counters.bytes_in[1].load(Relaxed);
    let (mut last_activity, mut idle) = (activity(), Duration::ZERO);
    let mut latches_seen = 0;
    // Runs only while a prompt plays.
    let mut prompt_tick: Option<tokio::time::Interval> = None;
    loop {
        let [b0, b1, b2, b3] = &mut bufs;
        let mut io = Io {
            media: &mut t.media,
            sockets: &t.sockets,
            keys: &mut keys,
            send_dropped: &t.send_dropped,
            last_key_ms: &t.last_key_ms,
            out: &mut out,
        };
        tokio::select! {
            biased;
            _ = &mut t.stop => return Ended::Stopped,
            c = t.control.recv() => match c {
                Some(Control::Secure(on, ack)) => {
                    io.media.set_secure(on);
                    io.drain();
                    t.secure.store(on, Relaxed);
                    let _ = ack.send(());
                }
                Some(Control::Keys(tx)) => *io.keys = Some(tx),
                Some(Control::Play(clips)) => {
                    for c in clips {
                        io.media.play(c);
                    }
                    if prompt_tick.is_none() {
                        let mut t = tokio::time::interval(Duration::from_millis(20));
                        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        prompt_tick = Some(t);
                    }
                }
                Some(Control::StopPrompt) => io.media.stop_prompt(),
                Some(Control::Listen(on)) => io.media.set_listening(on),
                Some(Control::Remote(side, rule)) => io.media.set_remote_rule(side, rule),
                Some(Control::Block(side, on)) => io.media.set_blocked(side, on),
                Some(Control::Fault) => panic!("injected media fault"),
                None => return Ended::Stopped,
            },
            _ = tick_opt(&mut prompt_tick) => {
                if let Some(t) = io.media.on_tick(io.out) {
                    io.send(t, &io.out[..]);
                }
                if !io.media.is_prompting() {
                    prompt_tick = None;
                }
            },
            r = t.sockets.caller_rtp.recv_from(b0) => io.datagram(Side::Caller, Channel::Rtp, r, b0),
            r = t.sockets.agent_rtp.recv_from(b1) => io.datagram(Side::Agent, Channel::Rtp, r, b1),
            r = recv_opt(&t.sockets.caller_rtcp, b2) => io.datagram(Side::Caller, Channel::Rtcp, r, b2),
            r = recv_opt(&t.sockets.agent_rtcp, b3) => io.datagram(Side::Agent, Channel::Rtcp, r, b3),
            _ = tick.tick() => {
                let now = activity();
                if now == last_activity {
                    idle += Duration::from_secs(1);
                    if idle >= t.timeout {
                        return Ended::Silence;
                    }
                } else {
                    idle = Duration::ZERO;
                    last_activity = now;
                }
            }
        }
        // Publish newly learned remote addresses for the control API.
        let latches = counters.latch_events.load(Relaxed);
        if latches != latches_seen {
            latches_seen = latches;
            *t.remotes.lock().expect("remotes lock") =
                [t.media.remote(Side::Caller), t.media.remote(Side::Agent)];
        }
    }
}

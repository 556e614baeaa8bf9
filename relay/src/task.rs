//! The tokio engine: one task per call waits on the call's sockets, its control channel and
//! the time the call next needs, and hands each to the call's [`CallDriver`]. Sends never wait:
//! a send that would block is dropped and counted, as a router would.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::added_latency::LatencyRecorder;
use super::driver::{CallControl, CallDriver, DatagramTx, Ended};
use super::ports::LegSockets;
use crate::media::{Channel, Side};

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

impl DatagramTx for &Sockets {
    fn send(&mut self, from: Side, channel: Channel, to: SocketAddr, bytes: &[u8]) -> bool {
        self.socket(from, channel).try_send_to(bytes, to).is_ok()
    }
}

/// A call on the tokio engine.
pub(super) struct CallTask {
    pub driver: CallDriver,
    pub sockets: Sockets,
    pub control: mpsc::Receiver<CallControl>,
    pub stop: oneshot::Receiver<()>,
    /// Where this call's added latency is counted.
    pub latency: Arc<LatencyRecorder>,
}

async fn recv_opt(s: &Option<UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// One received datagram (a failed receive is skipped: the socket stays armed), timed from
/// the receive's return to the last forwarded copy's send.
fn datagram(
    driver: &mut CallDriver,
    tx: &mut &Sockets,
    latency: &LatencyRecorder,
    (side, channel): (Side, Channel),
    r: io::Result<(usize, SocketAddr)>,
    buf: &mut [u8],
) {
    if let Ok((n, from)) = r {
        let got = std::time::Instant::now();
        let sent = driver.on_datagram(tx, side, channel, from, buf, n);
        latency.record(got.elapsed(), sent);
    }
}

/// Drives the call until it is stopped or falls silent.
pub(super) async fn run(t: CallTask) -> Ended {
    let CallTask {
        mut driver,
        sockets,
        mut control,
        mut stop,
        latency,
    } = t;
    // One buffer per socket: select! polls all receives at once.
    let mut bufs = [[0u8; 2048]; 4];
    // One timer for the call's life, moved only when the call's next deadline moves.
    let mut due = driver.poll_timeout();
    let timer = tokio::time::sleep_until(Instant::from_std(due));
    tokio::pin!(timer);
    loop {
        let [b0, b1, b2, b3] = &mut bufs;
        let mut tx = &sockets;
        tokio::select! {
            biased;
            _ = &mut stop => return Ended::Stopped,
            c = control.recv() => match c {
                Some(c) => driver.on_control(&mut tx, c),
                None => return Ended::Stopped,
            },
            _ = &mut timer => {
                if let Some(ended) = driver.on_timeout(&mut tx, std::time::Instant::now()) {
                    return ended;
                }
            },
            r = sockets.caller_rtp.recv_from(b0) => datagram(&mut driver, &mut tx, &latency, (Side::Caller, Channel::Rtp), r, b0),
            r = sockets.agent_rtp.recv_from(b1) => datagram(&mut driver, &mut tx, &latency, (Side::Agent, Channel::Rtp), r, b1),
            r = recv_opt(&sockets.caller_rtcp, b2) => datagram(&mut driver, &mut tx, &latency, (Side::Caller, Channel::Rtcp), r, b2),
            r = recv_opt(&sockets.agent_rtcp, b3) => datagram(&mut driver, &mut tx, &latency, (Side::Agent, Channel::Rtcp), r, b3),
        }
        let next = driver.poll_timeout();
        if next != due {
            due = next;
            timer.as_mut().reset(Instant::from_std(due));
        }
    }
}

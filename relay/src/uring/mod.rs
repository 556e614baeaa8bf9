//! The io_uring engine: a few worker threads, each owning one ring that carries every receive
//! and send of its share of the calls.
//!
//! Why: the tokio engine pays a readiness wake-up, a `recvfrom`, a `sendto` and an EAGAIN
//! `recvfrom` per datagram, and a system call costs microseconds on a virtual machine. Here a
//! loop turn is one `io_uring_enter` that submits every send of the turn and collects every
//! receive since the last one, so that cost is paid per batch. Receives are multishot
//! `recvmsg` into a ring of provided buffers: one request per socket for the call's life.
//!
//! Calls arrive, are steered and stop through [`WorkerCommand`]s on a channel; an eventfd that the
//! ring reads wakes the worker for them. Each call is the same [`CallDriver`] the tokio engine
//! runs; this engine only moves its datagrams and runs it when its time comes.
//!
//! `sys.rs` holds every `unsafe` of the engine behind a safe interface, with its invariants;
//! `worker.rs` is the loop. A worker reports what happens to its calls (ended, faulted, its
//! own failure) as [`WorkerEvent`]s on a channel; it never calls into the registry.

// The engine's one module with `unsafe` (the crate denies it everywhere else).
#[allow(unsafe_code)]
mod sys;
mod worker;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Duration;

use super::added_latency::LatencyRecorder;
use super::driver::{CallControl, CallDriver, DatagramTx, Ended};
use crate::media::{Channel, Side};
use sys::{read_sockaddr, EventFd, Ring, NAME_LEN, RECVMSG_HEADER};
use worker::{Shared, Worker};

/// What the relay asks of a worker.
pub(super) enum WorkerCommand {
    /// Start relaying a call.
    Add(Box<RingCall>),
    /// Steer a call, by its number.
    Control(u64, CallControl),
    /// Stop a call, by its number, and close its sockets.
    Stop(u64),
    /// Behave as if the ring had failed (a test's fault injection).
    Fail,
}

/// What a worker reports (the relay applies it; a worker never calls into the registry).
pub(crate) enum WorkerEvent {
    /// A call's driving ended (media silence, or stopped with the worker); it is closed.
    Ended {
        /// Relay call id.
        id: String,
        /// Why.
        why: Ended,
    },
    /// A call's media step panicked; it is closed, the other calls go on.
    Faulted {
        /// Relay call id.
        id: String,
    },
    /// Worker `index` failed: its calls (`moved`, media state and sockets intact) are to be
    /// placed on the running workers; `lost` ones could not be moved.
    Failed {
        /// Which worker.
        index: usize,
        /// Calls to place elsewhere.
        moved: Vec<RingCall>,
        /// Calls to retire.
        lost: Vec<String>,
    },
}

/// A call handed to a worker.
pub(super) struct RingCall {
    /// Unique within the relay; commands name the call by it.
    pub number: u64,
    /// Relay call id (for retiring it after media silence).
    pub id: String,
    /// The call: media state, key subscriber and status, moved whole between workers.
    pub driver: CallDriver,
    /// Caller RTP, agent RTP, caller RTCP, agent RTCP (the last two absent with rtcp-mux).
    pub sockets: [Option<UdpSocket>; 4],
    /// Told (or dropped) once the sockets are closed.
    pub closed: tokio::sync::oneshot::Sender<()>,
}

/// The relay's handle on one worker thread. Dropping it stops the worker.
pub(super) struct RingWorker {
    index: usize,
    /// The worker's added-latency buckets (a restarted worker goes on counting in them).
    latency: Arc<LatencyRecorder>,
    commands: Option<std_mpsc::Sender<WorkerCommand>>,
    wake: EventFd,
    load: Arc<AtomicUsize>,
    /// False once the worker thread has ended, for whatever reason (a panic included).
    alive: Arc<AtomicBool>,
}

/// Clears a worker's `alive` flag when its thread ends, by return or by panic.
struct AliveFlag(Arc<AtomicBool>);

impl Drop for AliveFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl RingWorker {
    /// Starts worker `index`; fails if this kernel cannot run the engine (checked by relaying
    /// a datagram through a fresh ring).
    pub(super) fn start(
        index: usize,
        events: std_mpsc::Sender<WorkerEvent>,
        latency: Arc<LatencyRecorder>,
    ) -> io::Result<RingWorker> {
        let wake = EventFd::new()?;
        // The worker reads its own copy, so its pending read never meets a reused number.
        let worker_wake = wake.try_clone()?;
        let (tx, rx) = std_mpsc::channel();
        let (ready_tx, ready_rx) = std_mpsc::sync_channel(1);
        let load = Arc::new(AtomicUsize::new(0));
        let worker_load = load.clone();
        let alive = Arc::new(AtomicBool::new(true));
        let flag = AliveFlag(alive.clone());
        let worker_alive = alive.clone();
        let worker_latency = latency.clone();
        std::thread::Builder::new()
            .name(format!("relay-ring-{index}"))
            .spawn(move || {
                let _flag = flag;
                let shared = Shared {
                    events,
                    load: worker_load,
                    alive: worker_alive,
                    latency: worker_latency,
                };
                match Worker::new(index, rx, worker_wake, shared) {
                    Ok(w) => {
                        let _ = ready_tx.send(Ok(()));
                        w.run();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })?;
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "relay worker did not start"))??;
        Ok(RingWorker {
            index,
            latency,
            commands: Some(tx),
            wake,
            load,
            alive,
        })
    }

    /// Which worker this is (its thread is `relay-ring-{index}`).
    pub(super) fn index(&self) -> usize {
        self.index
    }

    /// Its added-latency buckets.
    pub(super) fn latency(&self) -> Arc<LatencyRecorder> {
        self.latency.clone()
    }

    /// Whether the worker still runs; a stopped one takes no calls.
    pub(super) fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Hands the worker a command; false if the worker has stopped.
    pub(super) fn command(&self, c: WorkerCommand) -> bool {
        let sent = self.commands.as_ref().is_some_and(|tx| tx.send(c).is_ok());
        if sent {
            self.poke();
        }
        sent
    }

    /// Calls this worker carries.
    pub(super) fn load(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }

    fn poke(&self) {
        self.wake.poke();
    }
}

impl Drop for RingWorker {
    fn drop(&mut self) {
        // The worker sees the channel closed when the poke wakes it, and ends.
        self.commands = None;
        self.poke();
    }
}

struct HeldCall {
    number: u64,
    id: String,
    driver: CallDriver,
    sockets: [Option<UdpSocket>; 4],
    /// Told (or dropped) once the sockets are closed ([`RingCall::closed`]).
    closed: tokio::sync::oneshot::Sender<()>,
    /// The socket each (side, channel) sends from: RTCP rides the RTP socket with rtcp-mux.
    fds: [RawFd; 4],
    /// Multishot receives not yet ended.
    live: u8,
    /// Stopping: receives are being cancelled; the slot is freed when the last one ends.
    closing: bool,
    /// Stopping to move to another worker: kept, not closed, when the receives have ended.
    handover: bool,
    /// On the worker's `soon` list (kept here so membership is not a search of the list).
    soon: bool,
}

/// A call's sends through the worker's ring.
struct RingTx<'a> {
    ring: &'a mut Ring,
    fds: &'a [RawFd; 4],
}

impl DatagramTx for RingTx<'_> {
    fn send(&mut self, from: Side, channel: Channel, to: SocketAddr, bytes: &[u8]) -> bool {
        let rtcp = if channel == Channel::Rtcp { 2 } else { 0 };
        self.ring.send(self.fds[from as usize + rtcp], to, bytes)
    }
}

impl HeldCall {
    /// The call as it goes to another worker: media state, sockets and subscriber intact.
    fn into_ring_call(self) -> RingCall {
        RingCall {
            number: self.number,
            id: self.id,
            driver: self.driver,
            sockets: self.sockets,
            closed: self.closed,
        }
    }

    /// One received buffer: `recvmsg` header, source address, datagram. Returns how many
    /// datagrams went out because of it.
    fn datagram(&mut self, ring: &mut Ring, socket: usize, data: &mut [u8]) -> u64 {
        if data.len() < RECVMSG_HEADER + NAME_LEN {
            return 0;
        }
        let payload_len = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]) as usize;
        let Some(from) = read_sockaddr(&data[RECVMSG_HEADER..RECVMSG_HEADER + NAME_LEN]) else {
            return 0;
        };
        let payload = &mut data[RECVMSG_HEADER + NAME_LEN..];
        // A datagram larger than any RTP we carry arrives cut short (payload_len says how long
        // it was): the media core counts it as malformed.
        let side = if socket & 1 == 0 {
            Side::Caller
        } else {
            Side::Agent
        };
        let channel = if socket < 2 {
            Channel::Rtp
        } else {
            Channel::Rtcp
        };
        let mut tx = RingTx {
            ring,
            fds: &self.fds,
        };
        self.driver
            .on_datagram(&mut tx, side, channel, from, payload, payload_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RelayConfig, RelayEngine};
    use crate::{NewCall, Relay};

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0u8; 172];
        let n = crate::media::rtp::write_packet(
            &mut p,
            0,
            false,
            seq,
            seq as u32 * 160,
            7,
            &[0xFF; 160],
        );
        p.truncate(n);
        p
    }

    /// More datagrams at once than the worker has receive buffers (16 in unit tests): the
    /// receives pause, re-arm, and every datagram still arrives, in order per call.
    #[test]
    fn bursts_beyond_the_receive_buffers_all_arrive() {
        if !crate::io_uring_available() {
            eprintln!("io_uring is unavailable on this machine");
            return;
        }
        let relay = Relay::new(RelayConfig {
            engine: RelayEngine::IoUring,
            workers: 1,
            port_min: 45000,
            port_max: 45999,
            ..RelayConfig::default()
        })
        .unwrap();
        assert_eq!(relay.engine(), "io_uring");
        const CALLS: usize = 4;
        const ROUNDS: u16 = 6;
        const BURST: u16 = 40;
        let mut legs = Vec::new();
        for i in 0..CALLS {
            let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
            let agent = UdpSocket::bind("127.0.0.1:0").unwrap();
            agent
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let info = relay
                .create_call(NewCall {
                    call_guid: format!("burst-{i}"),
                    law: tonegate_dsp::G711Law::Ulaw,
                    event_pt: None,
                    caller_remote: crate::media::RemoteRule::Exact(caller.local_addr().unwrap()),
                    agent_remote: crate::media::RemoteRule::Exact(agent.local_addr().unwrap()),
                    rtcp_mux: true,
                    ipv6: false,
                    masking: None,
                    owner: "test".into(),
                    account: None,
                    policy: crate::config::DtmfMasking::Session,
                })
                .unwrap();
            legs.push((caller, agent, info.caller.local));
        }
        let readers: Vec<_> = legs
            .iter()
            .map(|(_, agent, _)| {
                let agent = agent.try_clone().unwrap();
                std::thread::spawn(move || {
                    let mut seqs = Vec::new();
                    let mut buf = [0u8; 2048];
                    while seqs.len() < (ROUNDS * BURST) as usize {
                        let Ok(n) = agent.recv(&mut buf) else { break };
                        assert!(n >= 12);
                        seqs.push(u16::from_be_bytes([buf[2], buf[3]]));
                    }
                    seqs
                })
            })
            .collect();
        for round in 0..ROUNDS {
            for k in 0..BURST {
                for (caller, _, to) in &legs {
                    caller.send_to(&rtp(round * BURST + k), to).unwrap();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for r in readers {
            let seqs = r.join().unwrap();
            assert_eq!(seqs, (0..ROUNDS * BURST).collect::<Vec<_>>());
        }
        let totals = relay.totals();
        assert_eq!(
            totals.counters.agent_rtp_out,
            (CALLS as u64) * (ROUNDS * BURST) as u64
        );
        relay.stop_all();
        assert_eq!(relay.totals().calls_active, 0);
    }
}

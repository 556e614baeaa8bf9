//! The io_uring engine: a few worker threads, each owning one ring that carries every receive
//! and send of its share of the calls.
//!
//! Why: the tokio engine pays a readiness wake-up, a `recvfrom`, a `sendto` and an EAGAIN
//! `recvfrom` per datagram, and a system call costs microseconds on a virtual machine. Here a
//! loop turn is one `io_uring_enter` that submits every send of the turn and collects every
//! receive since the last one, so that cost is paid per batch. Receives are multishot
//! `recvmsg` into a ring of provided buffers: one request per socket for the call's life.
//!
//! Calls arrive, are steered and stop through [`Command`]s on a channel; an eventfd that the
//! ring reads wakes the worker for them. Each call is the same [`CallDriver`] the tokio engine
//! runs; this engine only moves its datagrams and runs it when its time comes.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Weak};
use std::time::{Duration, Instant};

use io_uring::types::BufRingEntry;
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::added_latency::LatencyRecorder;
use super::driver::{CallDriver, DatagramTx, Ended};
use super::{Control, Inner, Relay};
use crate::media::{Channel, Side};

/// Receive buffers per worker (a power of two). When all are in use, receives pause and the
/// datagrams wait in the sockets' queues; nothing is lost.
const RECV_BUFS: usize = if cfg!(test) { 16 } else { 2048 };
/// One receive buffer: the `recvmsg` header, the source address, then the datagram.
const RECV_BUF_SIZE: usize = 2048;
/// Size of `struct io_uring_recvmsg_out`, which the kernel writes at the start of a buffer.
const RECVMSG_HEADER: usize = 16;
/// Room for the source address: large enough for IPv6.
const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();
/// Sends submitted and not yet completed, per worker; beyond this a send is dropped and counted.
const SEND_SLOTS: usize = 4096;
/// The largest datagram sent (matches the media layer's limit).
const SEND_BUF_SIZE: usize = crate::media::rtp::MAX_DATAGRAM;
const RING_ENTRIES: u32 = 8192;
const BUF_GROUP: u16 = 0;
const SECOND: Duration = Duration::from_secs(1);

// user_data: kind in the low 2 bits, socket index (0-3) in the next 2, slot from bit 8.
const RECV: u64 = 0;
const SEND: u64 = 1;
const WAKE: u64 = 2;
const CANCEL: u64 = 3;

fn user_data(kind: u64, socket: usize, slot: usize) -> u64 {
    kind | (socket as u64) << 2 | (slot as u64) << 8
}

/// What the relay asks of a worker.
pub(super) enum Command {
    /// Start relaying a call.
    Add(Box<RingCall>),
    /// Steer a call, by its number.
    Control(u64, Control),
    /// Stop a call, by its number, and close its sockets.
    Stop(u64),
    /// Behave as if the ring had failed (a test's fault injection).
    Fail,
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
    commands: Option<std_mpsc::Sender<Command>>,
    wake: OwnedFd,
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
        relay: Weak<Inner>,
        latency: Arc<LatencyRecorder>,
    ) -> io::Result<RingWorker> {
        // SAFETY: eventfd has no memory preconditions; a non-negative result is a new fd.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
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
                    relay,
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
    pub(super) fn command(&self, c: Command) -> bool {
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
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
        unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

impl Drop for RingWorker {
    fn drop(&mut self) {
        // The worker sees the channel closed when the poke wakes it, and ends.
        self.commands = None;
        self.poke();
    }
}

/// Heap memory the kernel reads or writes while we hold it: allocated once, never moved,
/// freed only after the ring is gone (see field order in [`Io`]).
struct RawRegion {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl RawRegion {
    fn new(size: usize) -> io::Result<RawRegion> {
        let layout = std::alloc::Layout::from_size_align(size, 4096)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "relay buffers"));
        }
        Ok(RawRegion { ptr, layout })
    }
}

impl Drop for RawRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// One datagram on its way out: the bytes and the destination.
#[repr(C)]
struct SendSlot {
    buf: [u8; SEND_BUF_SIZE],
    addr: libc::sockaddr_storage,
}

/// The ring and the memory it works on. Field order is drop order: the ring goes first.
struct Io {
    ring: IoUring,
    /// The provided-buffer ring (entries the kernel takes receive buffers from).
    buf_ring: RawRegion,
    /// The receive buffers themselves.
    recv_bufs: RawRegion,
    /// Send slots.
    sends: RawRegion,
    free_sends: Vec<u16>,
    /// Our copy of the buffer ring's tail, published once per turn.
    tail: u16,
    /// Template for multishot receives: the kernel reads only the name and control lengths.
    recv_msg: Box<libc::msghdr>,
}

impl Io {
    fn new() -> io::Result<Io> {
        // One thread submits; deferred task work runs when we ask for completions, not on
        // every interrupt. Older kernels lack the flags: fall back to a plain ring.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(RING_ENTRIES * 2)
            .build(RING_ENTRIES)
            .or_else(|_| IoUring::builder().build(RING_ENTRIES))?;
        let buf_ring = RawRegion::new(RECV_BUFS * std::mem::size_of::<BufRingEntry>())?;
        let recv_bufs = RawRegion::new(RECV_BUFS * RECV_BUF_SIZE)?;
        let sends = RawRegion::new(SEND_SLOTS * std::mem::size_of::<SendSlot>())?;
        // SAFETY: buf_ring is page-aligned, RECV_BUFS entries long, and outlives the ring.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                buf_ring.ptr as u64,
                RECV_BUFS as u16,
                BUF_GROUP,
                0,
            )?;
        }
        // SAFETY: an all-zero msghdr is valid; we set the one length the kernel reads.
        let mut recv_msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_msg.msg_namelen = NAME_LEN as libc::socklen_t;
        let mut io = Io {
            ring,
            buf_ring,
            recv_bufs,
            sends,
            free_sends: (0..SEND_SLOTS as u16).rev().collect(),
            tail: 0,
            recv_msg,
        };
        for bid in 0..RECV_BUFS as u16 {
            io.give_back(bid);
        }
        io.publish_buffers();
        Ok(io)
    }

    /// Queues a submission, submitting what is queued if the queue is full. False if it
    /// could not be queued.
    fn push(&mut self, e: &squeue::Entry) -> bool {
        for _ in 0..3 {
            // SAFETY: every entry we build points at memory that outlives its completion.
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return true;
            }
            let _ = self.ring.submit();
        }
        false
    }

    fn arm_recv(&mut self, fd: RawFd, socket: usize, slot: usize) -> bool {
        let e = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.recv_msg, BUF_GROUP)
            .build()
            .user_data(user_data(RECV, socket, slot));
        self.push(&e)
    }

    /// Receive buffer `bid`.
    ///
    /// # Safety
    /// The kernel handed `bid` to us in a completion and it has not been given back.
    unsafe fn recv_buf<'a>(&self, bid: u16) -> &'a mut [u8] {
        std::slice::from_raw_parts_mut(
            self.recv_bufs.ptr.add(bid as usize * RECV_BUF_SIZE),
            RECV_BUF_SIZE,
        )
    }

    /// Returns receive buffer `bid` to the kernel (visible from the next `publish_buffers`).
    fn give_back(&mut self, bid: u16) {
        let entries = self.buf_ring.ptr.cast::<BufRingEntry>();
        // SAFETY: the index is masked into the ring; the entry is ours until the tail moves.
        unsafe {
            let e = &mut *entries.add(self.tail as usize & (RECV_BUFS - 1));
            e.set_addr(self.recv_bufs.ptr.add(bid as usize * RECV_BUF_SIZE) as u64);
            e.set_len(RECV_BUF_SIZE as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish_buffers(&self) {
        // SAFETY: the tail lives in the first entry's reserved field of our page-aligned ring.
        unsafe {
            let tail = BufRingEntry::tail(self.buf_ring.ptr.cast::<BufRingEntry>()) as *mut u16;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    /// Sends `bytes` from `fd` to `to`; false when no send slot is free or the queue is stuck.
    fn send(&mut self, fd: RawFd, to: SocketAddr, bytes: &[u8]) -> bool {
        if bytes.len() > SEND_BUF_SIZE {
            return false;
        }
        let Some(k) = self.free_sends.pop() else {
            return false;
        };
        // SAFETY: slot k is free (not in flight), so nothing else reads or writes it.
        let e = unsafe {
            let slot = &mut *self.sends.ptr.cast::<SendSlot>().add(k as usize);
            slot.buf[..bytes.len()].copy_from_slice(bytes);
            let namelen = write_sockaddr(to, &mut slot.addr);
            // `send` with a destination (a `sendto`): no msghdr for the kernel to import.
            opcode::Send::new(types::Fd(fd), slot.buf.as_ptr(), bytes.len() as u32)
                .dest_addr((&slot.addr as *const libc::sockaddr_storage).cast())
                .dest_addr_len(namelen)
                .build()
                .user_data(user_data(SEND, 0, k as usize))
        };
        if self.push(&e) {
            true
        } else {
            self.free_sends.push(k);
            false
        }
    }
}

/// A call as a worker holds it.
struct Call {
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
    io: &'a mut Io,
    fds: &'a [RawFd; 4],
}

impl DatagramTx for RingTx<'_> {
    fn send(&mut self, from: Side, channel: Channel, to: SocketAddr, bytes: &[u8]) -> bool {
        let rtcp = if channel == Channel::Rtcp { 2 } else { 0 };
        self.io.send(self.fds[from as usize + rtcp], to, bytes)
    }
}

impl Call {
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
    fn datagram(&mut self, io: &mut Io, socket: usize, data: &mut [u8]) -> u64 {
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
        let mut tx = RingTx { io, fds: &self.fds };
        self.driver
            .on_datagram(&mut tx, side, channel, from, payload, payload_len)
    }
}

/// The worker thread's state.
struct Worker {
    io: Io,
    calls: Vec<Option<Call>>,
    free_calls: Vec<usize>,
    numbers: HashMap<u64, usize>,
    /// Calls that need running before the next sweep (a prompt frame due every 20 ms).
    soon: Vec<usize>,
    /// When the first of them is due (`None`: none is).
    soon_at: Option<Instant>,
    /// When every call next runs (silence checks).
    next_sweep: Instant,
    commands: std_mpsc::Receiver<Command>,
    wake: OwnedFd,
    wake_buf: Box<u64>,
    relay: Weak<Inner>,
    load: Arc<AtomicUsize>,
    completions: Vec<(u64, i32, u32)>,
    index: usize,
    /// Cleared first thing on failure, so no new call is steered here.
    alive: Arc<AtomicBool>,
    /// Set when the ring fails (or a test says it has): the calls move to other workers.
    failed: bool,
    /// Calls whose receives have ended, ready to move.
    evacuated: Vec<RingCall>,
    /// Datagrams forwarded because of this turn's receives.
    forwarded: u64,
    /// Where those are timed.
    latency: Arc<LatencyRecorder>,
}

/// What a worker shares with the relay.
struct Shared {
    relay: Weak<Inner>,
    load: Arc<AtomicUsize>,
    alive: Arc<AtomicBool>,
    latency: Arc<LatencyRecorder>,
}

/// Why the worker's loop ended.
enum Exit {
    /// The relay dropped its handle: close everything.
    RelayGone,
    /// The ring failed: hand the calls over.
    RingFailed,
}

impl Worker {
    fn new(
        index: usize,
        commands: std_mpsc::Receiver<Command>,
        wake: OwnedFd,
        shared: Shared,
    ) -> io::Result<Worker> {
        let Shared {
            relay,
            load,
            alive,
            latency,
        } = shared;
        let mut w = Worker {
            io: Io::new()?,
            calls: Vec::new(),
            free_calls: Vec::new(),
            numbers: HashMap::new(),
            soon: Vec::new(),
            soon_at: None,
            next_sweep: Instant::now() + SECOND,
            commands,
            wake,
            wake_buf: Box::new(0),
            relay,
            load,
            completions: Vec::with_capacity(RING_ENTRIES as usize * 2),
            index,
            alive,
            failed: false,
            evacuated: Vec::new(),
            forwarded: 0,
            latency,
        };
        w.self_test()?;
        Ok(w)
    }

    /// Relays one datagram between two loopback sockets through this ring: proves the kernel
    /// has multishot receive with provided buffers before any call depends on it.
    fn self_test(&mut self) -> io::Result<()> {
        let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        a.set_nonblocking(true)?;
        if !self.io.arm_recv(a.as_raw_fd(), 0, 0) {
            return Err(io::Error::other("cannot queue a receive"));
        }
        self.io.ring.submit()?;
        b.send_to(b"tonegate", a.local_addr()?)?;
        let deadline = Instant::now() + SECOND;
        let mut got = None;
        while got.is_none() && Instant::now() < deadline {
            let ts = types::Timespec::from(Duration::from_millis(100));
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.io.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
                Err(e) => return Err(e),
            }
            for c in self.io.ring.completion() {
                got = Some((c.result(), c.flags()));
            }
        }
        let (res, flags) = got.ok_or_else(|| io::Error::other("no receive completion"))?;
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        let bid = cqueue::buffer_select(flags)
            .ok_or_else(|| io::Error::other("no provided buffer in the completion"))?;
        // SAFETY: the kernel just handed us bid.
        let data = unsafe { self.io.recv_buf(bid) };
        let ok = data.len() >= RECVMSG_HEADER + NAME_LEN + 8
            && &data[RECVMSG_HEADER + NAME_LEN..][..8] == b"tonegate"
            && read_sockaddr(&data[RECVMSG_HEADER..RECVMSG_HEADER + NAME_LEN])
                == Some(b.local_addr()?);
        self.io.give_back(bid);
        self.io.publish_buffers();
        // End the test receive before its socket closes.
        if cqueue::more(flags) {
            let e = opcode::AsyncCancel::new(user_data(RECV, 0, 0))
                .build()
                .user_data(user_data(CANCEL, 0, 0));
            self.io.push(&e);
            let deadline = Instant::now() + SECOND;
            let mut ended = false;
            while !ended && Instant::now() < deadline {
                let ts = types::Timespec::from(Duration::from_millis(100));
                let args = types::SubmitArgs::new().timespec(&ts);
                let _ = self.io.ring.submitter().submit_with_args(1, &args);
                let done: Vec<(u64, u32)> = self
                    .io
                    .ring
                    .completion()
                    .map(|c| (c.user_data(), c.flags()))
                    .collect();
                for (ud, flags) in done {
                    if ud == user_data(RECV, 0, 0) && !cqueue::more(flags) {
                        ended = true;
                    }
                    if let Some(bid) = cqueue::buffer_select(flags) {
                        self.io.give_back(bid);
                    }
                }
            }
            self.io.publish_buffers();
            if !ended {
                return Err(io::Error::other("test receive would not end"));
            }
        }
        if ok {
            Ok(())
        } else {
            Err(io::Error::other("received datagram did not match"))
        }
    }

    fn arm_wake(&mut self) {
        let e = opcode::Read::new(
            types::Fd(self.wake.as_raw_fd()),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(user_data(WAKE, 0, 0));
        self.io.push(&e);
    }

    fn run(mut self) {
        match self.relay_loop() {
            Exit::RelayGone => self.shut_down(),
            Exit::RingFailed => self.fail_over(),
        }
    }

    fn relay_loop(&mut self) -> Exit {
        self.arm_wake();
        // Two clock reads a turn: when the wait ended (the turn's datagrams are in hand) and
        // when they have been handled (their copies are queued; the next submit, right after,
        // hands them to the kernel). The second also serves as the next turn's "now".
        let mut now = Instant::now();
        loop {
            let deadline = self
                .soon_at
                .map_or(self.next_sweep, |s| s.min(self.next_sweep));
            let ts = types::Timespec::from(deadline.saturating_duration_since(now));
            let args = types::SubmitArgs::new().timespec(&ts);
            if let Err(e) = self.io.ring.submitter().submit_with_args(1, &args) {
                match e.raw_os_error() {
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => {}
                    _ => {
                        tracing::error!(worker = self.index, error = %e, "relay ring failed; its calls move to the other workers");
                        return Exit::RingFailed;
                    }
                }
            }
            let woke_at = Instant::now();
            let mut completions = std::mem::take(&mut self.completions);
            completions.extend(
                self.io
                    .ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            let mut woken = false;
            for &(ud, res, flags) in &completions {
                let (socket, slot) = ((ud >> 2 & 3) as usize, (ud >> 8) as usize);
                match ud & 3 {
                    RECV => self.on_recv(socket, slot, res, flags),
                    SEND => self.io.free_sends.push(slot as u16),
                    WAKE => woken = true,
                    _ => {}
                }
            }
            completions.clear();
            self.completions = completions;
            self.io.publish_buffers();
            now = Instant::now();
            // Every datagram of the turn is counted at the turn's length: an upper bound for
            // the first handled, exact for the last.
            self.latency
                .record(now - woke_at, std::mem::take(&mut self.forwarded));
            if woken {
                self.arm_wake();
                if !self.take_commands() {
                    return Exit::RelayGone;
                }
                if self.failed {
                    tracing::error!(
                        worker = self.index,
                        "relay worker failed (injected); its calls move to the other workers"
                    );
                    return Exit::RingFailed;
                }
                now = Instant::now();
            }
            if now >= self.next_sweep {
                self.sweep(now);
                // Once a second, and long with many calls: the next wait counts from after it.
                now = Instant::now();
            }
            // Only when one is due: a turn with nothing due costs no walk of the list.
            if self.soon_at.is_some_and(|t| t <= now) {
                self.soon_at = self.run_soon(now);
            }
        }
    }

    fn on_recv(&mut self, socket: usize, slot: usize, res: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        let open = match self.calls.get(slot).and_then(Option::as_ref) {
            Some(call) => !call.closing,
            None => {
                if let Some(bid) = bid {
                    self.io.give_back(bid);
                }
                return;
            }
        };
        if let Some(bid) = bid {
            if res > 0 && open {
                // SAFETY: the kernel handed us bid in this completion; given back below.
                let data = unsafe { self.io.recv_buf(bid) };
                let sent = self.guarded(slot, |call, io| {
                    call.datagram(io, socket, &mut data[..res as usize])
                });
                self.forwarded += sent.unwrap_or(0);
            }
            self.io.give_back(bid);
        }
        let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if cqueue::more(flags) {
            return;
        }
        // The multishot receive ended: re-arm it unless the call is stopping or the socket broke.
        let retry = matches!(-res, 0 | libc::ENOBUFS | libc::EINTR | libc::EAGAIN) || res > 0;
        if !call.closing && retry {
            let fd = call.sockets[socket].as_ref().map_or(-1, |s| s.as_raw_fd());
            if self.io.arm_recv(fd, socket, slot) {
                return;
            }
        }
        if !call.closing {
            tracing::warn!(call = %call.id, error = %io::Error::from_raw_os_error(-res), "relay receive ended");
        }
        call.live -= 1;
        if call.closing && call.live == 0 {
            self.free(slot);
        }
    }

    /// Frees a stopped call's slot; a call moving to another worker is kept for it.
    fn free(&mut self, slot: usize) {
        if let Some(call) = self.calls[slot].take() {
            if call.handover {
                self.evacuated.push(call.into_ring_call());
            } else {
                let Call {
                    sockets, closed, ..
                } = call;
                drop(sockets);
                let _ = closed.send(());
            }
        }
        self.free_calls.push(slot);
    }

    /// Runs one call's media step. A panic in it ends that call alone: it is closed (nothing
    /// more of it is relayed, masked or not) and retired, and the worker goes on with the
    /// others.
    fn guarded<R>(&mut self, slot: usize, step: impl FnOnce(&mut Call, &mut Io) -> R) -> Option<R> {
        let call = self.calls.get_mut(slot)?.as_mut()?;
        let io = &mut self.io;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(call, io))) {
            Ok(r) => Some(r),
            Err(_) => {
                let id = self.calls[slot].as_ref().map(|c| c.id.clone());
                self.close(slot);
                if let Some(id) = id {
                    tracing::error!(call = %id, worker = self.index, "media processing failed; the call is stopped, the others go on");
                    if let Some(inner) = self.relay.upgrade() {
                        Relay { inner }.faulted(&id);
                    }
                }
                None
            }
        }
    }

    /// Applies every queued command; false once the relay has dropped its handle.
    fn take_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(c) => self.command(c),
                Err(std_mpsc::TryRecvError::Empty) => return true,
                Err(std_mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Add(new) => self.add(*new),
            Command::Stop(number) => {
                if let Some(slot) = self.numbers.get(&number).copied() {
                    self.close(slot);
                }
            }
            Command::Fail => self.failed = true,
            Command::Control(number, c) => {
                let Some(&slot) = self.numbers.get(&number) else {
                    return; // Gone: dropping `c` tells an awaiting acknowledgement so.
                };
                self.guarded(slot, |call, io| {
                    let mut tx = RingTx { io, fds: &call.fds };
                    call.driver.on_control(&mut tx, c);
                });
                self.schedule(slot);
            }
        }
    }

    fn add(&mut self, new: RingCall) {
        let slot = self.free_calls.pop().unwrap_or_else(|| {
            self.calls.push(None);
            self.calls.len() - 1
        });
        let fd = |i: usize| new.sockets[i].as_ref().map_or(-1, |s| s.as_raw_fd());
        // RTCP leaves from the RTP socket with rtcp-mux.
        let rtcp = |i: usize| {
            if new.sockets[i].is_some() {
                fd(i)
            } else {
                fd(i - 2)
            }
        };
        let fds = [fd(0), fd(1), rtcp(2), rtcp(3)];
        let mut call = Call {
            number: new.number,
            id: new.id,
            driver: new.driver,
            sockets: new.sockets,
            closed: new.closed,
            fds,
            live: 0,
            closing: false,
            handover: false,
            soon: false,
        };
        for (i, s) in call.sockets.iter().enumerate() {
            let Some(s) = s else { continue };
            // A send that cannot go at once must not park the ring's worker in the kernel.
            let _ = s.set_nonblocking(true);
            if self.io.arm_recv(s.as_raw_fd(), i, slot) {
                call.live += 1;
            }
        }
        self.numbers.insert(call.number, slot);
        self.calls[slot] = Some(call);
        self.schedule(slot);
        self.load.fetch_add(1, Ordering::Relaxed);
    }

    /// Puts a call on the `soon` list if it must run before the next sweep.
    fn schedule(&mut self, slot: usize) {
        if let Some(due) = self
            .calls
            .get(slot)
            .and_then(Option::as_ref)
            .map(|c| c.driver.poll_timeout())
        {
            self.enlist(slot, due);
        }
    }

    /// Call `slot` is next due at `due`: on the `soon` list (once) if that is before the next
    /// sweep, and the list's first deadline brought forward to it.
    fn enlist(&mut self, slot: usize, due: Instant) {
        if due >= self.next_sweep {
            return;
        }
        let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if !call.soon {
            call.soon = true;
            self.soon.push(slot);
        }
        self.soon_at = Some(self.soon_at.map_or(due, |t| t.min(due)));
    }

    /// Stops a call: cancels its receives; the slot (and sockets) go when they have ended.
    fn close(&mut self, slot: usize) {
        self.stop_receives(slot, false);
    }

    /// Cancels a call's receives; when they have ended the call is freed, or with `handover`
    /// kept whole for another worker.
    fn stop_receives(&mut self, slot: usize, handover: bool) {
        let Some(call) = self.calls[slot].as_mut() else {
            return;
        };
        if call.closing {
            return;
        }
        call.closing = true;
        call.handover = handover;
        self.numbers.remove(&call.number);
        if call.soon {
            call.soon = false;
            self.soon.retain(|&s| s != slot);
        }
        self.load.fetch_sub(1, Ordering::Relaxed);
        let live = call.live;
        for i in 0..4 {
            if call.sockets[i].is_some() {
                let e = opcode::AsyncCancel::new(user_data(RECV, i, slot))
                    .build()
                    .user_data(user_data(CANCEL, i, slot));
                self.io.push(&e);
            }
        }
        if live == 0 {
            self.free(slot);
        }
    }

    /// Once a second: runs every call (its silence check) and removes those silent on both
    /// legs for their media timeout.
    fn sweep(&mut self, now: Instant) {
        self.next_sweep = now + SECOND;
        for slot in 0..self.calls.len() {
            if !matches!(&self.calls[slot], Some(c) if !c.closing) {
                continue;
            }
            self.run_call(slot, now);
        }
    }

    /// Runs the calls due before the next sweep; returns when the next of them is due.
    fn run_soon(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut i = 0;
        while i < self.soon.len() {
            let slot = self.soon[i];
            let due = self.run_call(slot, now);
            match due.filter(|&d| d < self.next_sweep) {
                // (A silent or failed call was closed, which took it off the list already.)
                Some(d) if self.soon.get(i) == Some(&slot) => {
                    next = Some(next.map_or(d, |n| n.min(d)));
                    i += 1;
                }
                _ => {
                    // Done with it until it is enlisted again (it sits at `i`).
                    if self.soon.get(i) == Some(&slot) {
                        self.soon.swap_remove(i);
                    }
                    if let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) {
                        call.soon = false;
                    }
                }
            }
        }
        next
    }

    /// Runs call `slot`'s timers if due; returns when it is next due (None once it is gone).
    fn run_call(&mut self, slot: usize, now: Instant) -> Option<Instant> {
        let ended = self.guarded(slot, |call, io| {
            if call.driver.poll_timeout() > now {
                return None;
            }
            let mut tx = RingTx { io, fds: &call.fds };
            call.driver.on_timeout(&mut tx, now)
        })?;
        if let Some(why) = ended {
            let id = self.calls[slot].as_ref().map(|c| c.id.clone());
            self.close(slot);
            if let (Some(id), Some(inner)) = (id, self.relay.upgrade()) {
                Relay { inner }.ended(&id, why);
            }
            return None;
        }
        let due = self.calls[slot].as_ref()?.driver.poll_timeout();
        self.enlist(slot, due);
        Some(due)
    }

    /// Cancels every receive and waits (bounded) for them to end, so no buffer is written
    /// after it is freed.
    fn shut_down(mut self) {
        let open: Vec<String> = self
            .calls
            .iter()
            .flatten()
            .filter(|c| !c.closing)
            .map(|c| c.id.clone())
            .collect();
        for slot in 0..self.calls.len() {
            self.close(slot);
        }
        // If the relay lives on (the ring failed), its calls here are gone: say so.
        if let Some(inner) = self.relay.upgrade() {
            let relay = Relay { inner };
            for id in open {
                relay.ended(&id, Ended::Stopped);
            }
        }
        self.wait_for_receives();
        if self.calls.iter().any(Option::is_some) {
            // Receives the kernel did not end in time: keep their memory rather than free it
            // under them. Happens only at shutdown, if ever.
            std::mem::forget(self.io);
        }
    }

    /// Waits (up to a second) for every cancelled receive to end.
    fn wait_for_receives(&mut self) {
        let deadline = Instant::now() + SECOND;
        while self.calls.iter().any(Option::is_some) && Instant::now() < deadline {
            let ts = types::Timespec::from(Duration::from_millis(50));
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.io.ring.submitter().submit_with_args(1, &args);
            let done: Vec<(u64, i32, u32)> = self
                .io
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags()))
                .collect();
            for (ud, res, flags) in done {
                if ud & 3 == RECV {
                    self.on_recv((ud >> 2 & 3) as usize, (ud >> 8) as usize, res, flags);
                }
            }
        }
    }

    /// The ring failed: take this worker out of the choice, end every call's receives here
    /// and hand the calls, media state and sockets intact, to the relay to place on the other
    /// workers (and a fresh one in this one's place). Calls whose receives would not end are
    /// retired: stopped, never relayed unmasked.
    fn fail_over(mut self) {
        self.alive_off();
        // What was already asked of this worker still applies (an Add included).
        let _ = self.take_commands();
        for slot in 0..self.calls.len() {
            if self.calls[slot].as_ref().is_some_and(|c| !c.closing) {
                self.stop_receives(slot, true);
            }
        }
        self.wait_for_receives();
        let moved = std::mem::take(&mut self.evacuated);
        let stuck: Vec<String> = self
            .calls
            .iter()
            .flatten()
            .filter(|c| c.handover)
            .map(|c| c.id.clone())
            .collect();
        let relay = self.relay.clone();
        let index = self.index;
        if self.calls.iter().any(Option::is_some) {
            // As at shutdown: never free memory a receive may still write.
            std::mem::forget(self.io);
        } else {
            drop(self);
        }
        if let Some(inner) = relay.upgrade() {
            Relay { inner }.worker_failed(index, moved, stuck);
        }
    }

    fn alive_off(&self) {
        self.alive.store(false, Ordering::Release);
    }
}

/// Writes `to` as a C socket address; returns its length.
fn write_sockaddr(to: SocketAddr, st: &mut libc::sockaddr_storage) -> libc::socklen_t {
    let p = (st as *mut libc::sockaddr_storage).cast::<u8>();
    match to {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in.
            unsafe { p.cast::<libc::sockaddr_in>().write(sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in6.
            unsafe { p.cast::<libc::sockaddr_in6>().write(sin6) };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads the source address the kernel wrote (a `sockaddr_in` or `sockaddr_in6`).
fn read_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    if name.len() < NAME_LEN {
        return None;
    }
    let family = u16::from_ne_bytes([name[0], name[1]]) as libc::c_int;
    let port = u16::from_be_bytes([name[2], name[3]]);
    match family {
        libc::AF_INET => {
            let ip = Ipv4Addr::new(name[4], name[5], name[6], name[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 => {
            let flowinfo = u32::from_ne_bytes([name[4], name[5], name[6], name[7]]);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&name[8..24]);
            let scope = u32::from_ne_bytes([name[24], name[25], name[26], name[27]]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(octets),
                port,
                flowinfo,
                scope,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RelayConfig, RelayEngine};
    use crate::NewCall;

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

    #[test]
    fn socket_addresses_round_trip_through_the_c_layout() {
        for a in [
            "127.0.0.1:30000",
            "10.1.2.3:1",
            "[::1]:40000",
            "[2001:db8::7]:5004",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            // SAFETY: all-zero sockaddr_storage is valid.
            let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let len = write_sockaddr(a, &mut st) as usize;
            let mut name = [0u8; NAME_LEN];
            // SAFETY: reads NAME_LEN bytes of a 128-byte struct.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&st as *const libc::sockaddr_storage).cast::<u8>(),
                    NAME_LEN,
                )
            };
            name.copy_from_slice(bytes);
            assert!(len <= NAME_LEN);
            assert_eq!(read_sockaddr(&name), Some(a));
        }
        assert_eq!(read_sockaddr(&[0u8; NAME_LEN]), None, "unknown family");
        assert_eq!(read_sockaddr(&[0u8; 4]), None, "short");
    }
}

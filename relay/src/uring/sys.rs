//! Every `unsafe` of the io_uring engine, behind a safe interface: the ring, the memory the
//! kernel reads and writes through it, the wake-up eventfd and C socket addresses.
//!
//! Invariants this module keeps (the rest of the engine cannot break them, having no
//! `unsafe`):
//!
//! 1. Memory named in a submission outlives its completion. Only this module builds
//!    submissions; each names memory owned by [`Io`] (send slots, the receive template, the
//!    wake buffer, the receive buffers), which is allocated once, never moved, and freed only
//!    after the ring (field order in [`Io`] and [`Ring`]). A caller that cannot wait for every
//!    receive to end leaks the [`Io`] instead of dropping it (`std::mem::forget`).
//! 2. A receive buffer belongs to the kernel until a completion hands it over as a
//!    [`Lent`], which is neither `Copy` nor `Clone`, is made only here, once per completion,
//!    and goes back only by value ([`RecvBufs::give_back`]); so its bytes are read only while
//!    the kernel does not write them.
//! 3. A send slot is written only while it is free (not in flight); it is free again when
//!    its completion comes ([`Ring::sent`]).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::BufRingEntry;
use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// Receive buffers per worker (a power of two). When all are in use, receives pause and the
/// datagrams wait in the sockets' queues; nothing is lost.
const RECV_BUFS: usize = if cfg!(test) { 16 } else { 2048 };
/// One receive buffer: the `recvmsg` header, the source address, then the datagram.
const RECV_BUF_SIZE: usize = 2048;
/// Size of `struct io_uring_recvmsg_out`, which the kernel writes at the start of a buffer.
pub(super) const RECVMSG_HEADER: usize = 16;
/// Room for the source address: large enough for IPv6.
pub(super) const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();
/// Sends submitted and not yet completed, per worker; beyond this a send is dropped and counted.
const SEND_SLOTS: usize = 4096;
/// The largest datagram sent (matches the media layer's limit).
const SEND_BUF_SIZE: usize = crate::media::rtp::MAX_DATAGRAM;
/// Submission queue entries (the completion queue has twice as many).
pub(super) const RING_ENTRIES: u32 = 8192;
const BUF_GROUP: u16 = 0;

// user_data: kind in the low 2 bits, socket index (0-3) in the next 2, slot from bit 8.
/// A multishot receive.
pub(super) const RECV: u64 = 0;
/// A send.
pub(super) const SEND: u64 = 1;
/// The wake-up read.
pub(super) const WAKE: u64 = 2;
/// A cancellation.
const CANCEL: u64 = 3;

/// The user data of an operation of `kind` on call `slot`'s `socket`.
pub(super) fn user_data(kind: u64, socket: usize, slot: usize) -> u64 {
    kind | (socket as u64) << 2 | (slot as u64) << 8
}

/// The eventfd that wakes a worker: the relay writes to it, the worker's ring reads it.
pub(super) struct EventFd(OwnedFd);

impl EventFd {
    /// A new non-blocking eventfd.
    pub(super) fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd has no memory preconditions; a non-negative result is a new fd.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Another descriptor for the same eventfd.
    pub(super) fn try_clone(&self) -> io::Result<EventFd> {
        Ok(EventFd(self.0.try_clone()?))
    }

    /// Wakes whoever reads it.
    pub(super) fn poke(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
        unsafe {
            libc::write(
                self.0.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

/// Heap memory the kernel reads or writes while we hold it: allocated once, never moved,
/// freed only after the ring is gone.
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

/// A receive buffer the kernel has handed over (invariant 2).
#[derive(Debug)]
pub(super) struct Lent(u16);

/// One completion, read off the ring.
#[derive(Debug)]
pub(super) struct Completion {
    /// The operation's user data.
    pub user_data: u64,
    /// Its result (negative: an errno).
    pub result: i32,
    /// A multishot receive goes on (more completions will come for it).
    pub more: bool,
    /// The receive buffer it filled, if any.
    pub buf: Option<Lent>,
}

/// The ring and the memory named in its submissions. Field order is drop order: the ring
/// goes first.
pub(super) struct Ring {
    ring: IoUring,
    /// Send slots.
    sends: RawRegion,
    free_sends: Vec<u16>,
    /// Template for multishot receives: the kernel reads only the name and control lengths.
    recv_msg: Box<libc::msghdr>,
    /// Where the wake-up read writes.
    wake_buf: Box<u64>,
}

/// The provided receive buffers.
pub(super) struct RecvBufs {
    /// The provided-buffer ring (entries the kernel takes receive buffers from).
    buf_ring: RawRegion,
    /// The receive buffers themselves.
    bufs: RawRegion,
    /// Our copy of the buffer ring's tail, published once per turn.
    tail: u16,
}

/// A worker's ring and its receive buffers; the ring is dropped first.
pub(super) struct Io {
    /// Submissions and completions.
    pub ring: Ring,
    /// The receive buffers.
    pub bufs: RecvBufs,
}

impl Io {
    /// A ring with its buffers registered.
    pub(super) fn new() -> io::Result<Io> {
        // One thread submits; deferred task work runs when we ask for completions, not on
        // every interrupt. Older kernels lack the flags: fall back to a plain ring.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(RING_ENTRIES * 2)
            .build(RING_ENTRIES)
            .or_else(|_| IoUring::builder().build(RING_ENTRIES))?;
        let buf_ring = RawRegion::new(RECV_BUFS * std::mem::size_of::<BufRingEntry>())?;
        let bufs = RawRegion::new(RECV_BUFS * RECV_BUF_SIZE)?;
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
            ring: Ring {
                ring,
                sends,
                free_sends: (0..SEND_SLOTS as u16).rev().collect(),
                recv_msg,
                wake_buf: Box::new(0),
            },
            bufs: RecvBufs {
                buf_ring,
                bufs,
                tail: 0,
            },
        };
        for bid in 0..RECV_BUFS as u16 {
            io.bufs.provide(bid);
        }
        io.bufs.publish();
        Ok(io)
    }
}

impl Ring {
    /// Queues a submission, submitting what is queued if the queue is full. False if it
    /// could not be queued.
    fn push(&mut self, e: &squeue::Entry) -> bool {
        for _ in 0..3 {
            // SAFETY: every entry built in this module names memory that outlives its
            // completion (invariant 1).
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return true;
            }
            let _ = self.ring.submit();
        }
        false
    }

    /// Submits what is queued and waits for at least one completion, at most `timeout`.
    pub(super) fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<usize> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        self.ring.submitter().submit_with_args(1, &args)
    }

    /// Submits what is queued.
    pub(super) fn submit(&mut self) -> io::Result<usize> {
        self.ring.submit()
    }

    /// Moves every completion ready into `out`.
    pub(super) fn completions(&mut self, out: &mut Vec<Completion>) {
        out.extend(self.ring.completion().map(|c| Completion {
            user_data: c.user_data(),
            result: c.result(),
            more: cqueue::more(c.flags()),
            // Handed over once, here (invariant 2).
            buf: cqueue::buffer_select(c.flags()).map(Lent),
        }));
    }

    /// Starts a multishot receive on `fd` (call `slot`'s `socket`).
    pub(super) fn arm_recv(&mut self, fd: RawFd, socket: usize, slot: usize) -> bool {
        let e = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.recv_msg, BUF_GROUP)
            .build()
            .user_data(user_data(RECV, socket, slot));
        self.push(&e)
    }

    /// Cancels the multishot receive on call `slot`'s `socket`.
    pub(super) fn cancel_recv(&mut self, socket: usize, slot: usize) -> bool {
        let e = opcode::AsyncCancel::new(user_data(RECV, socket, slot))
            .build()
            .user_data(user_data(CANCEL, socket, slot));
        self.push(&e)
    }

    /// Reads the wake-up eventfd `fd` (completes when it is poked).
    pub(super) fn arm_wake(&mut self, fd: &EventFd) -> bool {
        let e = opcode::Read::new(
            types::Fd(fd.0.as_raw_fd()),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(user_data(WAKE, 0, 0));
        self.push(&e)
    }

    /// Sends `bytes` from `fd` to `to`; false when no send slot is free or the queue is stuck.
    pub(super) fn send(&mut self, fd: RawFd, to: SocketAddr, bytes: &[u8]) -> bool {
        if bytes.len() > SEND_BUF_SIZE {
            return false;
        }
        let Some(k) = self.free_sends.pop() else {
            return false;
        };
        // SAFETY: slot k is free (not in flight), so nothing else reads or writes it
        // (invariant 3); it lies within the region of SEND_SLOTS slots.
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

    /// The send in slot `slot` completed: the slot is free again.
    pub(super) fn sent(&mut self, slot: usize) {
        self.free_sends.push(slot as u16);
    }
}

impl RecvBufs {
    /// The bytes of a buffer the kernel handed over.
    pub(super) fn get(&mut self, lent: &Lent) -> &mut [u8] {
        // SAFETY: the kernel handed this buffer over (`lent` exists) and has not had it back,
        // so nothing else writes it; `&mut self` keeps the borrow single (invariant 2).
        unsafe {
            std::slice::from_raw_parts_mut(
                self.bufs.ptr.add(lent.0 as usize * RECV_BUF_SIZE),
                RECV_BUF_SIZE,
            )
        }
    }

    /// Returns a buffer to the kernel (visible from the next [`RecvBufs::publish`]).
    pub(super) fn give_back(&mut self, lent: Lent) {
        self.provide(lent.0);
    }

    fn provide(&mut self, bid: u16) {
        let entries = self.buf_ring.ptr.cast::<BufRingEntry>();
        // SAFETY: the index is masked into the ring; the entry is ours until the tail moves.
        unsafe {
            let e = &mut *entries.add(self.tail as usize & (RECV_BUFS - 1));
            e.set_addr(self.bufs.ptr.add(bid as usize * RECV_BUF_SIZE) as u64);
            e.set_len(RECV_BUF_SIZE as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the buffers given back since the last call available to the kernel.
    pub(super) fn publish(&self) {
        // SAFETY: the tail lives in the first entry's reserved field of our page-aligned ring.
        unsafe {
            let tail = BufRingEntry::tail(self.buf_ring.ptr.cast::<BufRingEntry>()) as *mut u16;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
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
pub(super) fn read_sockaddr(name: &[u8]) -> Option<SocketAddr> {
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

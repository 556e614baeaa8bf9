//! A worker thread's loop: one ring carries every receive and send of its calls; calls run
//! when a datagram, a command or their time comes.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use super::sys::{
    read_sockaddr, user_data, Completion, EventFd, Io, NAME_LEN, RECV, RECVMSG_HEADER,
    RING_ENTRIES, SEND, WAKE,
};
use super::{HeldCall, RingCall, RingTx, WorkerCommand, WorkerEvent};
use crate::added_latency::LatencyRecorder;
use crate::driver::Ended;

const SECOND: Duration = Duration::from_secs(1);

/// The worker thread's state.
pub(super) struct Worker {
    io: Io,
    calls: Vec<Option<HeldCall>>,
    free_calls: Vec<usize>,
    numbers: HashMap<u64, usize>,
    /// Calls that need running before the next sweep (a prompt frame due every 20 ms).
    soon: Vec<usize>,
    /// When the first of them is due (`None`: none is).
    soon_at: Option<Instant>,
    /// When every call next runs (silence checks).
    next_sweep: Instant,
    commands: std_mpsc::Receiver<WorkerCommand>,
    wake: EventFd,
    /// Where what happens to the calls is reported.
    events: std_mpsc::Sender<WorkerEvent>,
    load: Arc<AtomicUsize>,
    completions: Vec<Completion>,
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
pub(super) struct Shared {
    /// Where the worker reports its calls' ends and its own failure.
    pub events: std_mpsc::Sender<WorkerEvent>,
    /// Calls it carries.
    pub load: Arc<AtomicUsize>,
    /// Whether it runs.
    pub alive: Arc<AtomicBool>,
    /// Its added-latency buckets.
    pub latency: Arc<LatencyRecorder>,
}

/// Why the worker's loop ended.
enum Exit {
    /// The relay dropped its handle: close everything.
    RelayGone,
    /// The ring failed: hand the calls over.
    RingFailed,
}

impl Worker {
    /// A worker with a fresh ring, checked by relaying a datagram through it.
    pub(super) fn new(
        index: usize,
        commands: std_mpsc::Receiver<WorkerCommand>,
        wake: EventFd,
        shared: Shared,
    ) -> io::Result<Worker> {
        let Shared {
            events,
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
            events,
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
        if !self.io.ring.arm_recv(a.as_raw_fd(), 0, 0) {
            return Err(io::Error::other("cannot queue a receive"));
        }
        self.io.ring.submit()?;
        b.send_to(b"tonegate", a.local_addr()?)?;
        let deadline = Instant::now() + SECOND;
        let mut done = Vec::new();
        while done.is_empty() && Instant::now() < deadline {
            match self.io.ring.submit_and_wait(Duration::from_millis(100)) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
                Err(e) => return Err(e),
            }
            self.io.ring.completions(&mut done);
        }
        let mut got = None;
        for c in done {
            if let Some((_, _, Some(lent))) = got.replace((c.result, c.more, c.buf)) {
                self.io.bufs.give_back(lent);
            }
        }
        let (res, more, buf) = got.ok_or_else(|| io::Error::other("no receive completion"))?;
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        let lent = buf.ok_or_else(|| io::Error::other("no provided buffer in the completion"))?;
        let data = self.io.bufs.get(&lent);
        let ok = data.len() >= RECVMSG_HEADER + NAME_LEN + 8
            && &data[RECVMSG_HEADER + NAME_LEN..][..8] == b"tonegate"
            && read_sockaddr(&data[RECVMSG_HEADER..RECVMSG_HEADER + NAME_LEN])
                == Some(b.local_addr()?);
        self.io.bufs.give_back(lent);
        self.io.bufs.publish();
        // End the test receive before its socket closes.
        if more {
            self.io.ring.cancel_recv(0, 0);
            let deadline = Instant::now() + SECOND;
            let mut ended = false;
            while !ended && Instant::now() < deadline {
                let _ = self.io.ring.submit_and_wait(Duration::from_millis(100));
                let mut done = Vec::new();
                self.io.ring.completions(&mut done);
                for c in done {
                    if c.user_data == user_data(RECV, 0, 0) && !c.more {
                        ended = true;
                    }
                    if let Some(lent) = c.buf {
                        self.io.bufs.give_back(lent);
                    }
                }
            }
            self.io.bufs.publish();
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
        self.io.ring.arm_wake(&self.wake);
    }

    /// Runs until the relay drops its handle or the ring fails.
    pub(super) fn run(mut self) {
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
            if let Err(e) = self
                .io
                .ring
                .submit_and_wait(deadline.saturating_duration_since(now))
            {
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
            self.io.ring.completions(&mut completions);
            let mut woken = false;
            for c in completions.drain(..) {
                let (socket, slot) = ((c.user_data >> 2 & 3) as usize, (c.user_data >> 8) as usize);
                match c.user_data & 3 {
                    RECV => self.on_recv(socket, slot, c),
                    SEND => self.io.ring.sent(slot),
                    WAKE => woken = true,
                    _ => {}
                }
            }
            self.completions = completions;
            self.io.bufs.publish();
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

    fn on_recv(&mut self, socket: usize, slot: usize, c: Completion) {
        let Completion {
            result: res,
            more,
            buf,
            ..
        } = c;
        let open = match self.calls.get(slot).and_then(Option::as_ref) {
            Some(call) => !call.closing,
            None => {
                if let Some(lent) = buf {
                    self.io.bufs.give_back(lent);
                }
                return;
            }
        };
        if let Some(lent) = buf {
            if res > 0 && open {
                let sent = self.guarded(slot, |call, io| {
                    let data = io.bufs.get(&lent);
                    call.datagram(&mut io.ring, socket, &mut data[..res as usize])
                });
                self.forwarded += sent.unwrap_or(0);
            }
            self.io.bufs.give_back(lent);
        }
        let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if more {
            return;
        }
        // The multishot receive ended: re-arm it unless the call is stopping or the socket broke.
        let retry = matches!(-res, 0 | libc::ENOBUFS | libc::EINTR | libc::EAGAIN) || res > 0;
        if !call.closing && retry {
            let fd = call.sockets[socket].as_ref().map_or(-1, |s| s.as_raw_fd());
            if self.io.ring.arm_recv(fd, socket, slot) {
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
                let HeldCall {
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
    fn guarded<R>(
        &mut self,
        slot: usize,
        step: impl FnOnce(&mut HeldCall, &mut Io) -> R,
    ) -> Option<R> {
        let call = self.calls.get_mut(slot)?.as_mut()?;
        let io = &mut self.io;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(call, io))) {
            Ok(r) => Some(r),
            Err(_) => {
                let id = self.calls[slot].as_ref().map(|c| c.id.clone());
                self.close(slot);
                if let Some(id) = id {
                    tracing::error!(call = %id, worker = self.index, "media processing failed; the call is stopped, the others go on");
                    let _ = self.events.send(WorkerEvent::Faulted { id });
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

    fn command(&mut self, c: WorkerCommand) {
        match c {
            WorkerCommand::Add(new) => self.add(*new),
            WorkerCommand::Stop(number) => {
                if let Some(slot) = self.numbers.get(&number).copied() {
                    self.close(slot);
                }
            }
            WorkerCommand::Fail => self.failed = true,
            WorkerCommand::Control(number, c) => {
                let Some(&slot) = self.numbers.get(&number) else {
                    return; // Gone: dropping `c` tells an awaiting acknowledgement so.
                };
                self.guarded(slot, |call, io| {
                    let mut tx = RingTx {
                        ring: &mut io.ring,
                        fds: &call.fds,
                    };
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
        let mut call = HeldCall {
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
            if self.io.ring.arm_recv(s.as_raw_fd(), i, slot) {
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
                self.io.ring.cancel_recv(i, slot);
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
            let mut tx = RingTx {
                ring: &mut io.ring,
                fds: &call.fds,
            };
            call.driver.on_timeout(&mut tx, now)
        })?;
        if let Some(why) = ended {
            let id = self.calls[slot].as_ref().map(|c| c.id.clone());
            self.close(slot);
            if let Some(id) = id {
                let _ = self.events.send(WorkerEvent::Ended { id, why });
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
        // If the relay lives on, its calls here are gone: say so (unheard if it has gone).
        for id in open {
            let _ = self.events.send(WorkerEvent::Ended {
                id,
                why: Ended::Stopped,
            });
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
            let _ = self.io.ring.submit_and_wait(Duration::from_millis(50));
            let mut done = Vec::new();
            self.io.ring.completions(&mut done);
            for c in done {
                let ud = c.user_data;
                match ud & 3 {
                    RECV => self.on_recv((ud >> 2 & 3) as usize, (ud >> 8) as usize, c),
                    SEND => self.io.ring.sent((ud >> 8) as usize),
                    _ => {}
                }
            }
            self.io.bufs.publish();
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
        let events = self.events.clone();
        let index = self.index;
        if self.calls.iter().any(Option::is_some) {
            // As at shutdown: never free memory a receive may still write.
            std::mem::forget(self.io);
        } else {
            drop(self);
        }
        let _ = events.send(WorkerEvent::Failed {
            index,
            moved,
            lost: stuck,
        });
    }

    fn alive_off(&self) {
        self.alive.store(false, Ordering::Release);
    }
}

//! The agent-UI event writer: one task per node stores the masked updates that capture tasks
//! publish, so that no key waits on the database.
//!
//! A capture task hands each update over with a non-blocking send on a bounded queue. The
//! writer takes whatever is queued, stores it in one transaction (one multi-row insert, each
//! session's events in the order published, numbered under the session row as every event
//! is) and rings each session's bell once per batch. A write that fails is tried again, with
//! a growing pause, until it succeeds or the gateway stops: while the database is slow or
//! locked, keys go on being captured and masked and their updates wait here.
//!
//! When the queue is full the capture still never waits: each update is a complete masked
//! view of its session (state, field lengths and statuses), so the latest one of a session
//! supersedes those before it. It goes to a per-session overflow slot, replacing the one
//! there, and is stored after everything queued before it; the update it replaced is
//! counted (`agent_events_coalesced`) and a warning logged once per overflow. The agent's
//! screen then skips intermediate views, never the latest one.
//!
//! State changes are not written here: their event is stored in the same transaction as the
//! change. So that a session's log keeps the order the capture produced, the capture task
//! flushes this queue before it stores a state change, a result or a payment (once per state
//! change, never per key), and before its submit answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::store::PendingEvent;
use super::SessionShared;

/// Updates queued at most before they are coalesced (a few hundred bytes each).
const EVENT_QUEUE: usize = 1024;

/// How long a flush waits for the writer (a state change waits on the database anyway; this
/// bounds a wait on a database that stays down, after which the change goes ahead).
const FLUSH_WAIT: Duration = Duration::from_secs(30);

/// The longest pause between tries of a failed write.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What the queue carries.
enum Queued {
    Event(PendingEvent),
    /// Answered once everything queued before it is stored.
    Flush(oneshot::Sender<()>),
}

/// The sending side of the writer, held by the session service; counters for `/metrics`.
pub struct EventWriter {
    queue: mpsc::Sender<Queued>,
    /// The queue's receiving end until the writer task starts.
    receiver: Mutex<Option<mpsc::Receiver<Queued>>>,
    /// The latest update of each session that found the queue full.
    overflow: Mutex<HashMap<String, PendingEvent>>,
    /// Sessions in `overflow` (read without its lock on every publish).
    overflowing: AtomicUsize,
    /// Updates published and not yet stored (or given up).
    pending: AtomicUsize,
    /// Updates superseded by a later one of their session while the queue was full.
    pub coalesced: AtomicU64,
    /// Updates stored.
    pub written: AtomicU64,
    /// Writes that failed (and were tried again).
    pub write_failures: AtomicU64,
}

impl EventWriter {
    pub(super) fn new() -> EventWriter {
        let (queue, receiver) = mpsc::channel(EVENT_QUEUE);
        EventWriter {
            queue,
            receiver: Mutex::new(Some(receiver)),
            overflow: Mutex::new(HashMap::new()),
            overflowing: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            coalesced: AtomicU64::new(0),
            written: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
        }
    }

    /// Hands an update over without waiting: queued, or (queue full) put in its session's
    /// overflow slot. Only the session's capture task publishes its events, so its order is
    /// the order of these calls.
    pub(super) fn publish(&self, e: PendingEvent) {
        // Once a session has an overflow slot, its later updates go there too: queued, they
        // could be stored before the slot's.
        if self.overflowing.load(SeqCst) > 0 {
            let mut slots = self.overflow.lock().expect("overflow lock");
            if let Some(slot) = slots.get_mut(&e.session_id) {
                *slot = e;
                self.coalesced.fetch_add(1, SeqCst);
                return;
            }
        }
        self.pending.fetch_add(1, SeqCst);
        match self.queue.try_send(Queued::Event(e)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Queued::Event(e))) => {
                let mut slots = self.overflow.lock().expect("overflow lock");
                if slots.is_empty() {
                    tracing::warn!(
                        queued = EVENT_QUEUE,
                        "agent-UI updates are not being stored as fast as keys come; the screens skip to each session's latest view until the store catches up"
                    );
                }
                slots.insert(e.session_id.clone(), e);
                self.overflowing.store(slots.len(), SeqCst);
            }
            Err(_) => {
                // The writer is gone: the process is stopping.
                self.pending.fetch_sub(1, SeqCst);
            }
        }
    }

    /// Waits (bounded) until every update published before the call is stored.
    pub(super) async fn flush(&self) {
        if self.pending.load(SeqCst) == 0 {
            return;
        }
        let (ack, done) = oneshot::channel();
        let flushed = tokio::time::timeout(FLUSH_WAIT, async {
            self.queue.send(Queued::Flush(ack)).await.ok()?;
            done.await.ok()
        })
        .await;
        if !matches!(flushed, Ok(Some(()))) {
            tracing::warn!(
                pending = self.pending.load(SeqCst),
                "agent-UI updates still not stored; going on without them"
            );
        }
    }

    /// Moves the overflow slots' updates into `batch`, after what it holds.
    fn take_overflow(&self, batch: &mut Vec<PendingEvent>) {
        if self.overflowing.load(SeqCst) == 0 {
            return;
        }
        let mut slots = self.overflow.lock().expect("overflow lock");
        batch.extend(slots.drain().map(|(_, e)| e));
        self.overflowing.store(0, SeqCst);
    }

    /// Starts the writer task, once (later calls do nothing). Inside the runtime.
    pub(super) fn start(inner: &Arc<SessionShared>) {
        let Some(rx) = inner.events.receiver.lock().expect("receiver lock").take() else {
            return;
        };
        tokio::spawn(run(inner.clone(), rx));
    }
}

/// The writer task: batches, stores, answers flushes.
async fn run(inner: Arc<SessionShared>, mut rx: mpsc::Receiver<Queued>) {
    let (mut batch, mut acks) = (Vec::new(), Vec::new());
    while let Some(first) = rx.recv().await {
        inner
            .events
            .next_batch(first, &mut rx, &mut batch, &mut acks);
        store(&inner, &mut batch).await;
        for a in acks.drain(..) {
            let _ = a.send(());
        }
    }
}

impl EventWriter {
    /// Gathers what is queued after `first` into `batch` (flushes to answer into `acks`), then
    /// the overflow slots.
    fn next_batch(
        &self,
        first: Queued,
        rx: &mut mpsc::Receiver<Queued>,
        batch: &mut Vec<PendingEvent>,
        acks: &mut Vec<oneshot::Sender<()>>,
    ) {
        let mut next = Some(first);
        // Bounded: a batch takes at most a queue's worth more than was queued.
        let mut room = 2 * EVENT_QUEUE;
        while let Some(q) = next.take() {
            match q {
                Queued::Event(e) => batch.push(e),
                Queued::Flush(a) => acks.push(a),
            }
            room -= 1;
            if room > 0 {
                next = rx.try_recv().ok();
            }
        }
        // Overflow slots are newer than anything of their session still queued: taken only
        // once the queue has been emptied.
        if room > 0 {
            self.take_overflow(batch);
        }
    }
}

/// Stores `batch`, trying again until it is stored or the gateway stops; empties it.
async fn store(inner: &SessionShared, batch: &mut Vec<PendingEvent>) {
    let w = &inner.events;
    let mut pause = Duration::from_millis(50);
    while !batch.is_empty() {
        match inner.store.events_add(batch) {
            Ok(n) => {
                w.written.fetch_add(n as u64, SeqCst);
                break;
            }
            Err(e) => {
                w.write_failures.fetch_add(1, SeqCst);
                if inner.payments.stopped() {
                    tracing::error!(events = batch.len(), error = %e, "agent-UI updates not stored: the gateway is stopping");
                    break;
                }
                tracing::warn!(events = batch.len(), error = %e, "agent-UI updates not stored yet; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
    }
    w.pending.fetch_sub(batch.len(), SeqCst);
    batch.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(session: &str, n: usize) -> PendingEvent {
        PendingEvent {
            session_id: session.into(),
            body: n.to_string(),
            at: 0,
        }
    }

    /// A full queue never makes `publish` wait: each session's later updates collapse into
    /// its latest, which is batched after everything of that session queued before it, and
    /// the superseded ones are counted.
    #[test]
    fn a_full_queue_keeps_each_sessions_latest_update_in_order() {
        let w = EventWriter::new();
        let mut rx = w.receiver.lock().unwrap().take().unwrap();
        for n in 0..EVENT_QUEUE + 10 {
            w.publish(ev(if n % 2 == 0 { "a" } else { "b" }, n));
        }
        assert_eq!(w.coalesced.load(SeqCst), 8);
        assert_eq!(w.pending.load(SeqCst), EVENT_QUEUE + 2);
        let (mut batch, mut acks) = (Vec::new(), Vec::new());
        let first = rx.try_recv().unwrap();
        w.next_batch(first, &mut rx, &mut batch, &mut acks);
        assert_eq!(batch.len(), EVENT_QUEUE + 2);
        for s in ["a", "b"] {
            let ns: Vec<usize> = batch
                .iter()
                .filter(|e| e.session_id == s)
                .map(|e| e.body.parse().unwrap())
                .collect();
            assert!(ns.windows(2).all(|p| p[0] < p[1]), "{s}: {ns:?}");
            // The last published survives.
            let last = if s == "a" {
                EVENT_QUEUE + 8
            } else {
                EVENT_QUEUE + 9
            };
            assert_eq!(ns.last(), Some(&last));
        }
        // Slots emptied: the next update is queued again.
        w.publish(ev("a", 10_000));
        assert_eq!(w.overflowing.load(SeqCst), 0);
        assert!(matches!(rx.try_recv(), Ok(Queued::Event(e)) if e.body == "10000"));
    }
}

//! The table of open HTTP connections, and who makes room when it is full.
//!
//! A full table used to refuse every new connection, so a few hosts holding idle keep-alive
//! connections (one request every few seconds) shut out everyone else, the load balancer's
//! health check included. Now a new connection evicts the connection that has been quiet the
//! longest among those with no request in flight: one still sending its first request (idle
//! or slow headers) or idle between keep-alive requests. Only connections with a request being
//! answered (event streams included) are kept; when every one has, the new one is refused.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::task::AbortHandle;

/// What a connection is doing, as the table sees it.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// The table's tick when a request last started or ended (or the connection opened).
    last: AtomicU64,
    ticks: Arc<AtomicU64>,
}

impl Activity {
    /// Marks a request in flight until the returned guard is dropped (keep it with the
    /// response body, so a streamed answer counts until it ends).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        self.last.store(self.ticks.fetch_add(1, Relaxed), Relaxed);
        InFlight(self.clone())
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .last
            .store(self.0.ticks.fetch_add(1, Relaxed), Relaxed);
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// A response body that keeps its request counted as in flight until it is done or dropped.
pub struct Guarded {
    inner: Body,
    _in_flight: InFlight,
}

impl Guarded {
    /// `body`, holding `in_flight` while it lives.
    pub fn wrap(body: Body, in_flight: InFlight) -> Body {
        Body::new(Guarded {
            inner: body,
            _in_flight: in_flight,
        })
    }
}

impl HttpBody for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

struct Entry {
    activity: Arc<Activity>,
    /// Set once the connection's task runs; until then it cannot be evicted.
    abort: Option<AbortHandle>,
}

/// Open connections, at most `cap`.
pub struct ConnTable {
    cap: usize,
    ticks: Arc<AtomicU64>,
    open: Mutex<(u64, HashMap<u64, Entry>)>,
}

/// One connection's place in the table; given back when dropped.
pub struct ConnPermit {
    table: Arc<ConnTable>,
    id: u64,
    activity: Arc<Activity>,
}

/// What admitting a connection did.
pub enum Admission {
    /// There was room.
    Admitted(ConnPermit),
    /// The table was full: the connection that was quiet longest with no request in flight
    /// has been closed to make room.
    Evicted(ConnPermit),
    /// Full, and every connection has a request in flight.
    Refused,
}

impl ConnTable {
    /// A table of at most `cap` connections (at least 1).
    pub fn new(cap: usize) -> Arc<ConnTable> {
        Arc::new(ConnTable {
            cap: cap.max(1),
            ticks: Arc::new(AtomicU64::new(1)),
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A place for a new connection, evicting an idle one if the table is full.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut g = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = false;
        if g.1.len() >= self.cap {
            let victim =
                g.1.iter()
                    .filter(|(_, e)| e.abort.is_some() && e.activity.in_flight.load(Relaxed) == 0)
                    .min_by_key(|(id, e)| (e.activity.last.load(Relaxed), **id))
                    .map(|(id, _)| *id);
            let Some(victim) = victim else {
                return Admission::Refused;
            };
            if let Some(Entry {
                abort: Some(abort), ..
            }) = g.1.remove(&victim)
            {
                // Dropping its task closes the socket and gives back its other places.
                abort.abort();
            }
            evicted = true;
        }
        let id = g.0;
        g.0 += 1;
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(self.ticks.fetch_add(1, Relaxed)),
            ticks: self.ticks.clone(),
        });
        g.1.insert(
            id,
            Entry {
                activity: activity.clone(),
                abort: None,
            },
        );
        let slot = ConnPermit {
            table: self.clone(),
            id,
            activity,
        };
        if evicted {
            Admission::Evicted(slot)
        } else {
            Admission::Admitted(slot)
        }
    }

    /// How connection `id`'s task is closed if it is evicted (no-op once it has closed).
    pub fn set_abort(&self, id: u64, abort: AbortHandle) {
        let mut g = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = g.1.get_mut(&id) {
            e.abort = Some(abort);
        }
    }

    /// Connections in the table now.
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).1.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ConnPermit {
    /// How the connection's task is closed if it is evicted.
    pub fn set_abort(&self, abort: AbortHandle) {
        self.table.set_abort(self.id, abort);
    }

    /// The connection's id in its table.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The connection's activity, for marking its requests.
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut g = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        g.1.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(a: Admission) -> ConnPermit {
        match a {
            Admission::Admitted(s) => s,
            _ => panic!("not admitted with room"),
        }
    }

    #[tokio::test]
    async fn a_full_table_evicts_the_quietest_idle_connection_and_spares_busy_ones() {
        let t = ConnTable::new(3);
        let mut tasks = Vec::new();
        let mut slots = Vec::new();
        for _ in 0..3 {
            let s = admitted(t.admit());
            let task = tokio::spawn(std::future::pending::<()>());
            s.set_abort(task.abort_handle());
            tasks.push(task);
            slots.push(s);
        }
        // The oldest is busy; the second was used after the third.
        let busy = slots[0].activity().begin();
        drop(slots[1].activity().begin());
        let evicted = match t.admit() {
            Admission::Evicted(s) => s,
            _ => panic!("a full table with idle connections refused"),
        };
        let third = tasks.remove(2);
        assert!(
            third.await.unwrap_err().is_cancelled(),
            "the quietest idle one"
        );
        assert_eq!(t.len(), 3);
        // Everything busy: refused.
        let _b1 = slots[1].activity().begin();
        evicted.set_abort(tokio::spawn(std::future::pending::<()>()).abort_handle());
        let _b2 = evicted.activity().begin();
        assert!(matches!(t.admit(), Admission::Refused));
        // A request ending makes its connection evictable again.
        drop(busy);
        assert!(matches!(t.admit(), Admission::Evicted(_)));
        drop(slots);
        drop(evicted);
        assert!(t.is_empty());
    }
}

//! The IO engines calls run on, and what they report back. An engine never calls up into the
//! registry: a call's tokio task returns why it ended to the task that spawned it; the
//! io_uring workers send [`uring::WorkerEvent`]s over a channel to the `relay-events` thread,
//! which applies them to the relay while it lives.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::added_latency::AddedLatency;
use crate::call::Steer;
use crate::config::{RelayConfig, RelayEngine};
#[cfg(target_os = "linux")]
use crate::uring;
use crate::{task, Relay, RelayError};

impl Relay {
    /// Applies what an io_uring worker reported.
    #[cfg(target_os = "linux")]
    fn on_worker_event(&self, event: uring::WorkerEvent) {
        match event {
            uring::WorkerEvent::Ended { id, why } => self.ended(&id, why),
            uring::WorkerEvent::Faulted { id } => self.faulted(&id),
            uring::WorkerEvent::Failed { index, moved, lost } => {
                self.worker_failed(index, moved, lost)
            }
        }
    }
}

/// The IO engine calls run on.
pub(crate) enum IoEngine {
    /// A tokio task per call.
    Tokio,
    /// io_uring workers.
    #[cfg(target_os = "linux")]
    Ring(RingPool),
}

/// The io_uring workers and where they report.
#[cfg(target_os = "linux")]
pub(crate) struct RingPool {
    /// The workers; a failed one is replaced in place.
    workers: std::sync::RwLock<Vec<Arc<uring::RingWorker>>>,
    /// The channel to the `relay-events` thread (a replacement worker reports on it too).
    events: std::sync::mpsc::Sender<uring::WorkerEvent>,
}

impl IoEngine {
    /// `io_uring` or `tokio`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            IoEngine::Tokio => "tokio",
            #[cfg(target_os = "linux")]
            IoEngine::Ring(_) => "io_uring",
        }
    }

    /// Starts the configured engine; `auto` falls back to tokio where io_uring cannot run.
    /// Worker events are applied to the relay that `relay` gives while there is one.
    pub(crate) fn start(
        cfg: &RelayConfig,
        relay: impl Fn() -> Option<Relay> + Send + 'static,
        latency: &AddedLatency,
    ) -> Result<IoEngine, RelayError> {
        if cfg.engine == RelayEngine::Tokio {
            return Ok(IoEngine::Tokio);
        }
        match Self::start_ring(cfg, relay, latency) {
            Ok(e) => Ok(e),
            Err(e) if cfg.engine == RelayEngine::Auto => {
                tracing::info!(reason = %e, "io_uring unavailable: the relay uses the tokio engine");
                Ok(IoEngine::Tokio)
            }
            Err(e) => Err(RelayError::Engine(format!(
                "relay.engine = \"io_uring\" but {e}; use \"auto\" or \"tokio\""
            ))),
        }
    }

    #[cfg(target_os = "linux")]
    fn start_ring(
        cfg: &RelayConfig,
        relay: impl Fn() -> Option<Relay> + Send + 'static,
        latency: &AddedLatency,
    ) -> Result<IoEngine, String> {
        let n = match cfg.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        };
        let (events, reports) = std::sync::mpsc::channel::<uring::WorkerEvent>();
        let workers = (0..n)
            .map(|i| uring::RingWorker::start(i, events.clone(), latency.recorder()).map(Arc::new))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| format!("io_uring does not work here ({e})"))?;
        // The registry's side of the channel: ends when every sender has (the relay and its
        // workers gone), or when the relay is.
        std::thread::Builder::new()
            .name("relay-events".into())
            .spawn(move || {
                for event in reports {
                    let Some(relay) = relay() else { break };
                    relay.on_worker_event(event);
                }
            })
            .map_err(|e| format!("cannot start the relay-events thread ({e})"))?;
        Ok(IoEngine::Ring(RingPool {
            workers: std::sync::RwLock::new(workers),
            events,
        }))
    }

    #[cfg(not(target_os = "linux"))]
    fn start_ring(
        _: &RelayConfig,
        _: impl Fn() -> Option<Relay> + Send + 'static,
        _: &AddedLatency,
    ) -> Result<IoEngine, String> {
        Err("io_uring needs Linux".into())
    }
}

/// Whether this kernel runs the io_uring engine (starts one worker and relays a datagram).
pub fn io_uring_available() -> bool {
    #[cfg(target_os = "linux")]
    {
        let (events, _) = std::sync::mpsc::channel();
        uring::RingWorker::start(0, events, Default::default()).is_ok()
    }

    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// A new call's IO, started once the call is registered.
pub(crate) enum Launch {
    /// The call's task, and what to tell once it has ended (its sockets closed).
    Task(Box<task::CallTask>, oneshot::Sender<()>),
    #[cfg(target_os = "linux")]
    Ring(Arc<uring::RingWorker>, Box<uring::RingCall>),
}

impl Relay {
    /// The least loaded running io_uring worker.
    #[cfg(target_os = "linux")]
    pub(crate) fn pick_worker(&self) -> Option<Arc<uring::RingWorker>> {
        let IoEngine::Ring(pool) = &self.inner.engine else {
            return None;
        };
        pool.workers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|w| w.alive())
            .min_by_key(|w| w.load())
            .cloned()
    }

    /// Worker `index` failed: a fresh worker takes its place, and its calls (`moved`, media
    /// state and sockets intact) go to the running workers; `lost` calls could not be moved
    /// and are retired.
    #[cfg(target_os = "linux")]
    fn worker_failed(&self, index: usize, moved: Vec<uring::RingCall>, lost: Vec<String>) {
        self.inner.worker_failures.fetch_add(1, Relaxed);
        for id in &lost {
            tracing::error!(call = %id, worker = index, "call lost with its relay worker");
            self.retire(id);
        }
        let IoEngine::Ring(pool) = &self.inner.engine else {
            return;
        };
        // The new worker counts on in the failed one's latency buckets.
        let latency = {
            let workers = pool.workers.read().unwrap_or_else(|p| p.into_inner());
            workers
                .iter()
                .find(|w| w.index() == index)
                .map(|w| w.latency())
                .unwrap_or_else(|| self.inner.added_latency.recorder())
        };
        match uring::RingWorker::start(index, pool.events.clone(), latency) {
            Ok(w) => {
                let mut workers = pool.workers.write().unwrap_or_else(|p| p.into_inner());
                if let Some(old) = workers.iter_mut().find(|w| w.index() == index) {
                    *old = Arc::new(w);
                }
                tracing::warn!(worker = index, "relay worker restarted");
            }
            Err(e) => {
                tracing::error!(worker = index, error = %e, "relay worker could not restart; the others carry its calls");
            }
        }
        for call in moved {
            let (id, number) = (call.id.clone(), call.number);
            let worker = self.pick_worker();
            // Steer and hand over under the calls lock, so a delete meanwhile either finds the
            // call gone from here (and the call is dropped) or reaches its new worker after it.
            let mut calls = self.inner.calls.lock().expect("calls lock");
            let Some(entry) = calls.get_mut(&id) else {
                continue;
            };
            let placed = worker.filter(|w| w.command(uring::WorkerCommand::Add(Box::new(call))));
            match placed {
                Some(w) => {
                    tracing::warn!(call = %id, from = index, to = w.index(), "call moved to another relay worker");
                    entry.steer = Steer::Ring { worker: w, number };
                }
                None => {
                    drop(calls);
                    tracing::error!(call = %id, worker = index, "no relay worker could take the call; it is stopped");
                    self.retire(&id);
                }
            }
        }
    }
}

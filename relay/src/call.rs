//! One call in the registry ([`CallRecord`]): who owns it, what holds its secure mode, and
//! the handles on its IO — how to steer it ([`Steer`], [`ControlTx`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tonegate_dsp::G711Law;

use crate::config::DtmfMasking;
use crate::driver::{CallControl, CallStatus};
use crate::media::{CallCounters, CapturedKey};
#[cfg(target_os = "linux")]
use crate::uring;
use crate::view::{CallInfo, CounterSnapshot, LegInfo};
use crate::RelayError;

/// Who holds a call's secure mode on (besides the policy).
#[derive(Debug, Default)]
pub(crate) struct SecureLeases {
    /// The owner asked for secure mode over the relay API.
    pub(crate) api: bool,
    /// Sessions that captured on the call: `true` while their capture is live.
    pub(crate) sessions: BTreeMap<String, bool>,
}

/// A fault a test injects into a call's IO; no API reaches this.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedFault {
    /// The io_uring worker carrying the call behaves as if its ring had failed.
    FailWorker,
    /// The call's media processing panics.
    PanicMedia,
}

pub(crate) struct CallRecord {
    pub(crate) id: String,
    pub(crate) call_guid: String,
    pub(crate) owner: String,
    pub(crate) account: Option<String>,
    pub(crate) policy: DtmfMasking,
    pub(crate) leases: SecureLeases,
    /// The one key subscriber (a closed one may be replaced).
    pub(crate) key_sink: Option<mpsc::Sender<CapturedKey>>,
    pub(crate) law: G711Law,
    pub(crate) rtcp_mux: bool,
    pub(crate) created_at: u64,
    pub(crate) locals: [SocketAddr; 2],
    /// Written by the call's driver: secure mode as applied, remotes, last key.
    pub(crate) status: Arc<CallStatus>,
    pub(crate) counters: Arc<CallCounters>,
    pub(crate) steer: Steer,
    /// Answers (or is dropped) once the engine has closed the call's sockets.
    pub(crate) closed: Option<oneshot::Receiver<()>>,
}

/// How the relay reaches a call's IO.
pub(crate) enum Steer {
    /// A tokio task of its own.
    Task {
        control: mpsc::Sender<CallControl>,
        stop: Option<oneshot::Sender<()>>,
    },
    /// A slot on an io_uring worker.
    #[cfg(target_os = "linux")]
    Ring {
        worker: Arc<uring::RingWorker>,
        number: u64,
    },
}

impl CallRecord {
    /// Whether anything holds secure mode on.
    pub(crate) fn held(&self) -> bool {
        self.policy == DtmfMasking::Call || self.leases.api || !self.leases.sessions.is_empty()
    }

    /// Why secure mode may not go off now, if it may not.
    pub(crate) fn release_refusal(&self, hold_off: Duration, now_ms: u64) -> Option<String> {
        if self.policy == DtmfMasking::Call {
            return Some(
                "this call's keys are masked for the whole call (dtmf_masking = \"call\")".into(),
            );
        }
        if let Some((id, _)) = self.leases.sessions.iter().find(|(_, live)| **live) {
            return Some(format!(
                "session {id} is capturing on this call; cancel or finish it first"
            ));
        }
        let last = self.status.last_key_ms.load(Relaxed);
        let since = now_ms.saturating_sub(last);
        if last > 0 && since < hold_off.as_millis() as u64 {
            return Some(format!(
                "a key was pressed {:.1} s ago; secure mode stays on for {} s after the last key",
                since as f64 / 1000.0,
                hold_off.as_secs()
            ));
        }
        None
    }
}

impl Steer {
    pub(crate) fn control(&self) -> ControlTx {
        match self {
            Steer::Task { control, .. } => ControlTx::Task(control.clone()),
            #[cfg(target_os = "linux")]
            Steer::Ring { worker, number } => ControlTx::Ring(worker.clone(), *number),
        }
    }

    /// Ends the call's IO (idempotent).
    pub(crate) fn stop(&mut self) {
        match self {
            Steer::Task { stop, .. } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
            }
            #[cfg(target_os = "linux")]
            Steer::Ring { worker, number } => {
                worker.command(uring::WorkerCommand::Stop(*number));
            }
        }
    }
}

/// A sender of control messages to one call.
pub(crate) enum ControlTx {
    Task(mpsc::Sender<CallControl>),
    #[cfg(target_os = "linux")]
    Ring(Arc<uring::RingWorker>, u64),
}

impl ControlTx {
    pub(crate) async fn send(&self, c: CallControl) -> Result<(), RelayError> {
        match self {
            ControlTx::Task(tx) => tx.send(c).await.map_err(|_| RelayError::UnknownCall),
            #[cfg(target_os = "linux")]
            ControlTx::Ring(worker, number) => worker
                .command(uring::WorkerCommand::Control(*number, c))
                .then_some(())
                .ok_or(RelayError::UnknownCall),
        }
    }
}

impl CallRecord {
    pub(crate) fn info(&self) -> CallInfo {
        let remotes = *self.status.remotes.lock().expect("remotes lock");
        CallInfo {
            id: self.id.clone(),
            call_guid: self.call_guid.clone(),
            codec: match self.law {
                G711Law::Ulaw => "PCMU",
                G711Law::Alaw => "PCMA",
            },
            secure: self.status.secure.load(Relaxed),
            listening: self.status.listening.load(Relaxed),
            dtmf_masking: match self.policy {
                DtmfMasking::Call => "call",
                DtmfMasking::Session => "session",
            },
            account: self.account.clone(),
            caller: LegInfo {
                local: self.locals[0],
                remote: remotes[0],
            },
            agent: LegInfo {
                local: self.locals[1],
                remote: remotes[1],
            },
            rtcp_mux: self.rtcp_mux,
            created_at: self.created_at,
            counters: CounterSnapshot::of(&self.counters, self.status.send_dropped.load(Relaxed)),
        }
    }
}

/// A deleted call's sockets on their way to closing: [`closed`](Self::closed) waits for them.
#[derive(Debug)]
pub struct CallClosing(pub(crate) Option<oneshot::Receiver<()>>);

impl CallClosing {
    /// Waits, at most `limit`, until the call's sockets are closed (its ports can be bound
    /// again); whether they were.
    pub async fn closed(self, limit: Duration) -> bool {
        match self.0 {
            // Sent or dropped: either way the engine has let go of the call.
            Some(rx) => tokio::time::timeout(limit, rx).await.is_ok(),
            None => true,
        }
    }
}

/// How many captured keys a [`KeyStream`] buffers (a caller keys a few a second).
pub(crate) const KEY_STREAM_DEPTH: usize = 64;

/// A call's captured keys, for their one reader. Not `Clone`: while it is alive no one else
/// can read the call's keys ([`Relay::key_stream`]).
#[derive(Debug)]
pub struct KeyStream {
    pub(crate) call: String,
    pub(crate) keys: mpsc::Receiver<CapturedKey>,
}

impl KeyStream {
    /// The call whose keys these are.
    pub fn call(&self) -> &str {
        &self.call
    }

    /// The next key; `None` once the call has ended.
    pub async fn recv(&mut self) -> Option<CapturedKey> {
        self.keys.recv().await
    }

    /// A key already waiting, if one is.
    pub fn try_recv(&mut self) -> Option<CapturedKey> {
        self.keys.try_recv().ok()
    }
}

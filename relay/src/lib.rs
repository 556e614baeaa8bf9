//! The RTP relay (`tonegate-relay`), the IO shell around the sans-IO media core: binds each call's UDP sockets, hands each call to an IO engine (a tokio
//! task per call, or io_uring workers) where one [`driver::CallDriver`] moves its datagrams
//! through the sans-IO [`CallMedia`], and keeps the registry the control API works on.
//!
//! Keys captured in secure mode go to the call's one subscriber (the session layer); the relay
//! itself never logs, stores or counts key values.
//!
//! Every call belongs to the client that created it: other clients cannot see, steer or
//! delete it ([`Access`]). Secure mode is held, not toggled: the account's policy
//! ([`DtmfMasking::Call`] holds it for the whole call), a session's capture, or the owner's
//! request each hold it, and it goes off only when an explicit release leaves nobody holding
//! it — never while a capture is live, nor within `secure_hold_off_s` of the last key.

mod added_latency;
pub mod config;
mod driver;
mod ports;
mod task;
#[cfg(target_os = "linux")]
mod uring;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tonegate_dsp::{G711Law, MaskingMode};

use config::{DtmfMasking, RelayConfig, RelayEngine};
// `crate::media::…` reads as the gateway's paths do.
use added_latency::AddedLatency;
use driver::{CallDriver, CallStatus, Ended};
use media::{CallCounters, CallMedia, CallMediaConfig, CapturedKey, EventReplacement, RemoteRule};
use tonegate_media as media;

pub use added_latency::LatencySnapshot;
pub use ports::{open_file_limit, raise_open_file_limit, PortAllocator};

/// Wall-clock time for the relay's two needs of it: a call's `created_at` and the release
/// hold-off after a key. The gateway passes its own clock ([`Relay::with_wall_clock`]), so a
/// test that moves the gateway's clock moves the hold-off too; [`SystemClock`] otherwise.
pub trait WallClock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn unix_ms(&self) -> u64;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn unix_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A new call id: 22 URL-safe characters (132 random bits) from the OS.
fn call_id() -> String {
    use base64::Engine as _;
    use rand::RngCore;
    let mut b = [0u8; 17];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)[..22].to_string()
}

/// Why a relay request failed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RelayError {
    /// No free port pair in the configured range, or the call limit is reached.
    #[error("no relay capacity: {0}")]
    Exhausted(&'static str),
    /// No call with that id.
    #[error("no such call")]
    UnknownCall,
    /// A request that makes no sense.
    #[error("{0}")]
    Invalid(String),
    /// The client already holds as many live calls as `relay.max_calls_per_client` lets it.
    #[error(
        "this client already has {0} live relay calls, its limit (relay.max_calls_per_client); \
         end one first"
    )]
    OverQuota(usize),
    /// The configured IO engine cannot run here.
    #[error("relay engine unavailable: {0}")]
    Engine(String),
    /// The request conflicts with the call's state (secure mode held, a subscriber present,
    /// a duplicate call).
    #[error("{0}")]
    Conflict(String),
}

/// Who asks the relay about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// A client: it sees and steers only the calls it created.
    Owner(&'a str),
    /// An operator (token scope `admin`, client id given): every call; each use is audited.
    Admin(&'a str),
}

impl Access<'_> {
    fn allows(&self, owner: &str) -> bool {
        match self {
            Access::Owner(c) => *c == owner,
            Access::Admin(_) => true,
        }
    }

    /// The client making the request.
    pub fn client(&self) -> &str {
        match self {
            Access::Owner(c) | Access::Admin(c) => c,
        }
    }
}

/// A change to a call's control state, for the audit trail (never key values).
#[derive(Debug, Clone)]
pub struct RelayAudit {
    /// Relay call id.
    pub call_id: String,
    /// The platform's call id.
    pub call_guid: String,
    /// The client that owns the call.
    pub owner: String,
    /// Who did it: `client:<id>`, `admin:<id>`, `session:<id>`, `gateway`.
    pub actor: String,
    /// What: `create`, `secure_on`, `secure_off`, `secure_off_refused`, `delete`, `read`,
    /// `list`.
    pub action: &'static str,
    /// Why, in words.
    pub reason: String,
}

/// Receives [`RelayAudit`] records (the server writes them to the store).
pub type AuditSink = Arc<dyn Fn(RelayAudit) + Send + Sync>;

/// Who holds a call's secure mode on (besides the policy).
#[derive(Debug, Default)]
struct SecureLeases {
    /// The owner asked for secure mode over the relay API.
    api: bool,
    /// Sessions that captured on the call: `true` while their capture is live.
    sessions: BTreeMap<String, bool>,
}

/// What to set up for a new call.
#[derive(Debug, Clone)]
pub struct NewCall {
    /// The call's id in the contact-centre platform (sessions find calls by it).
    pub call_guid: String,
    /// Audio codec.
    pub law: G711Law,
    /// telephone-event payload type, if negotiated.
    pub event_pt: Option<u8>,
    /// Where the caller's RTP may come from (learned within that from its first packet).
    pub caller_remote: RemoteRule,
    /// Where the agent's RTP may come from.
    pub agent_remote: RemoteRule,
    /// RTCP on the RTP port.
    pub rtcp_mux: bool,
    /// Bind IPv6 ports even though no remote says so.
    pub ipv6: bool,
    /// Masking mode for this call (else the relay's default).
    pub masking: Option<MaskingMode>,
    /// The client creating the call: its owner.
    pub owner: String,
    /// The account the call belongs to, if known.
    pub account: Option<String>,
    /// When the call's keys are masked.
    pub policy: DtmfMasking,
}

/// Public view of a call (counters, never keys).
#[derive(Debug, Clone, Serialize)]
pub struct CallInfo {
    /// Relay call id.
    pub id: String,
    /// The platform's call id.
    pub call_guid: String,
    /// `PCMU` or `PCMA`.
    pub codec: &'static str,
    /// Whether secure mode is on.
    pub secure: bool,
    /// Whether keys are listened for outside secure mode (a caller keying a `dtmfLinkId`).
    pub listening: bool,
    /// The masking policy: `call` or `session`.
    pub dtmf_masking: &'static str,
    /// The account the call belongs to, if known.
    pub account: Option<String>,
    /// Caller leg.
    pub caller: LegInfo,
    /// Agent leg.
    pub agent: LegInfo,
    /// RTCP shares the RTP port.
    pub rtcp_mux: bool,
    /// Seconds since the Unix epoch when the call was set up.
    pub created_at: u64,
    /// Counters.
    pub counters: CounterSnapshot,
}

/// One leg's addresses.
#[derive(Debug, Clone, Serialize)]
pub struct LegInfo {
    /// Our RTP address for this leg.
    pub local: SocketAddr,
    /// The remote, once known.
    pub remote: Option<SocketAddr>,
}

/// Counter values at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// RTP packets received from the caller.
    pub caller_rtp_in: u64,
    /// RTP packets received from the agent.
    pub agent_rtp_in: u64,
    /// RTP packets sent to the caller.
    pub caller_rtp_out: u64,
    /// RTP packets sent to the agent.
    pub agent_rtp_out: u64,
    /// RTP packets missing from the caller's sequence.
    pub caller_rtp_lost: u64,
    /// RTP packets missing from the agent's sequence.
    pub agent_rtp_lost: u64,
    /// Bytes received (both legs).
    pub bytes_in: u64,
    /// Bytes sent (both legs).
    pub bytes_out: u64,
    /// RTCP packets relayed.
    pub rtcp: u64,
    /// Malformed datagrams dropped.
    pub malformed: u64,
    /// Datagrams from an address other than the latched one, dropped.
    pub foreign_source: u64,
    /// Datagrams dropped because the other leg's address is unknown.
    pub no_destination: u64,
    /// Addresses learned or followed.
    pub latch_events: u64,
    /// Audio frames masked.
    pub frames_masked: u64,
    /// telephone-event packets consumed.
    pub events_consumed: u64,
    /// Packets dropped in secure mode as not inspectable.
    pub uninspectable: u64,
    /// Keys captured (a count only).
    pub keys_captured: u64,
    /// Keys that arrived both ways and were delivered once.
    pub duplicate_keys: u64,
    /// Audio frames the output guard replaced after the masker let them through.
    pub guard_replaced: u64,
    /// Datagrams dropped because the send would have blocked.
    pub send_dropped: u64,
}

impl CounterSnapshot {
    fn of(c: &CallCounters, send_dropped: u64) -> Self {
        let r = |a: &AtomicU64| a.load(Relaxed);
        CounterSnapshot {
            caller_rtp_in: r(&c.rtp_in[0]),
            agent_rtp_in: r(&c.rtp_in[1]),
            caller_rtp_out: r(&c.rtp_out[0]),
            agent_rtp_out: r(&c.rtp_out[1]),
            caller_rtp_lost: r(&c.rtp_lost[0]),
            agent_rtp_lost: r(&c.rtp_lost[1]),
            bytes_in: r(&c.bytes_in[0]) + r(&c.bytes_in[1]),
            bytes_out: r(&c.bytes_out[0]) + r(&c.bytes_out[1]),
            rtcp: r(&c.rtcp),
            malformed: r(&c.malformed),
            foreign_source: r(&c.foreign_source),
            no_destination: r(&c.no_destination),
            latch_events: r(&c.latch_events),
            frames_masked: r(&c.frames_masked),
            events_consumed: r(&c.events_consumed),
            uninspectable: r(&c.uninspectable),
            keys_captured: r(&c.keys_captured),
            duplicate_keys: r(&c.duplicate_keys),
            guard_replaced: r(&c.guard_replaced),
            send_dropped,
        }
    }

    fn add(&mut self, o: &CounterSnapshot) {
        self.caller_rtp_in += o.caller_rtp_in;
        self.agent_rtp_in += o.agent_rtp_in;
        self.caller_rtp_out += o.caller_rtp_out;
        self.agent_rtp_out += o.agent_rtp_out;
        self.caller_rtp_lost += o.caller_rtp_lost;
        self.agent_rtp_lost += o.agent_rtp_lost;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.rtcp += o.rtcp;
        self.malformed += o.malformed;
        self.foreign_source += o.foreign_source;
        self.no_destination += o.no_destination;
        self.latch_events += o.latch_events;
        self.frames_masked += o.frames_masked;
        self.events_consumed += o.events_consumed;
        self.uninspectable += o.uninspectable;
        self.keys_captured += o.keys_captured;
        self.duplicate_keys += o.duplicate_keys;
        self.guard_replaced += o.guard_replaced;
        self.send_dropped += o.send_dropped;
    }
}

/// Totals over the relay's life.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RelayTotals {
    /// The IO engine: `io_uring` or `tokio`.
    pub engine: &'static str,
    /// Calls running now.
    pub calls_active: u64,
    /// Calls set up since start.
    pub calls_created: u64,
    /// Calls removed for media silence.
    pub calls_timed_out: u64,
    /// Call set-ups refused for lack of ports, the call limit or a client's limit.
    pub calls_refused: u64,
    /// Calls stopped because their media processing failed.
    pub call_faults: u64,
    /// io_uring workers that failed and were replaced.
    pub worker_failures: u64,
    /// Calls running now with secure mode applied.
    pub calls_secure: u64,
    /// RTP/RTCP port pairs the range holds on one address.
    pub port_pairs: u64,
    /// Port pairs handed out on the busiest address.
    pub port_pairs_used: u64,
    /// Counters summed over live and ended calls.
    pub counters: CounterSnapshot,
}

enum Control {
    Secure(bool, oneshot::Sender<()>),
    Keys(mpsc::Sender<CapturedKey>),
    Play(Vec<crate::media::Clip>),
    StopPrompt,
    Listen(bool),
    Remote(crate::media::Side, RemoteRule),
    Block(crate::media::Side, bool),
    /// Panic in the call's media step (a test's fault injection).
    Fault,
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

struct CallEntry {
    id: String,
    call_guid: String,
    owner: String,
    account: Option<String>,
    policy: DtmfMasking,
    leases: SecureLeases,
    /// The one key subscriber (a closed one may be replaced).
    key_sink: Option<mpsc::Sender<CapturedKey>>,
    law: G711Law,
    rtcp_mux: bool,
    created_at: u64,
    locals: [SocketAddr; 2],
    /// Written by the call's driver: secure mode as applied, remotes, last key.
    status: Arc<CallStatus>,
    counters: Arc<CallCounters>,
    steer: Steer,
    /// Answers (or is dropped) once the engine has closed the call's sockets.
    closed: Option<oneshot::Receiver<()>>,
}

/// How the relay reaches a call's IO.
enum Steer {
    /// A tokio task of its own.
    Task {
        control: mpsc::Sender<Control>,
        stop: Option<oneshot::Sender<()>>,
    },
    /// A slot on an io_uring worker.
    #[cfg(target_os = "linux")]
    Ring {
        worker: Arc<uring::RingWorker>,
        number: u64,
    },
}

impl CallEntry {
    /// Whether anything holds secure mode on.
    fn held(&self) -> bool {
        self.policy == DtmfMasking::Call || self.leases.api || !self.leases.sessions.is_empty()
    }

    /// Why secure mode may not go off now, if it may not.
    fn release_refusal(&self, hold_off: Duration, now_ms: u64) -> Option<String> {
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
    fn control(&self) -> ControlTx {
        match self {
            Steer::Task { control, .. } => ControlTx::Task(control.clone()),
            #[cfg(target_os = "linux")]
            Steer::Ring { worker, number } => ControlTx::Ring(worker.clone(), *number),
        }
    }

    /// Ends the call's IO (idempotent).
    fn stop(&mut self) {
        match self {
            Steer::Task { stop, .. } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
            }
            #[cfg(target_os = "linux")]
            Steer::Ring { worker, number } => {
                worker.command(uring::Command::Stop(*number));
            }
        }
    }
}

/// A sender of control messages to one call.
enum ControlTx {
    Task(mpsc::Sender<Control>),
    #[cfg(target_os = "linux")]
    Ring(Arc<uring::RingWorker>, u64),
}

impl ControlTx {
    async fn send(&self, c: Control) -> Result<(), RelayError> {
        match self {
            ControlTx::Task(tx) => tx.send(c).await.map_err(|_| RelayError::UnknownCall),
            #[cfg(target_os = "linux")]
            ControlTx::Ring(worker, number) => worker
                .command(uring::Command::Control(*number, c))
                .then_some(())
                .ok_or(RelayError::UnknownCall),
        }
    }
}

/// The IO engine calls run on.
enum Engine {
    Tokio,
    #[cfg(target_os = "linux")]
    /// The workers; a failed one is replaced in place.
    Ring(std::sync::RwLock<Vec<Arc<uring::RingWorker>>>),
}

impl Engine {
    fn name(&self) -> &'static str {
        match self {
            Engine::Tokio => "tokio",
            #[cfg(target_os = "linux")]
            Engine::Ring(_) => "io_uring",
        }
    }

    /// Starts the configured engine; `auto` falls back to tokio where io_uring cannot run.
    fn start(
        cfg: &RelayConfig,
        relay: &std::sync::Weak<Inner>,
        latency: &AddedLatency,
    ) -> Result<Engine, RelayError> {
        if cfg.engine == RelayEngine::Tokio {
            return Ok(Engine::Tokio);
        }
        match Self::start_ring(cfg, relay, latency) {
            Ok(e) => Ok(e),
            Err(e) if cfg.engine == RelayEngine::Auto => {
                tracing::info!(reason = %e, "io_uring unavailable: the relay uses the tokio engine");
                Ok(Engine::Tokio)
            }
            Err(e) => Err(RelayError::Engine(format!(
                "relay.engine = \"io_uring\" but {e}; use \"auto\" or \"tokio\""
            ))),
        }
    }

    #[cfg(target_os = "linux")]
    fn start_ring(
        cfg: &RelayConfig,
        relay: &std::sync::Weak<Inner>,
        latency: &AddedLatency,
    ) -> Result<Engine, String> {
        let n = match cfg.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        };
        let workers = (0..n)
            .map(|i| uring::RingWorker::start(i, relay.clone(), latency.recorder()).map(Arc::new))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| format!("io_uring does not work here ({e})"))?;
        Ok(Engine::Ring(std::sync::RwLock::new(workers)))
    }

    #[cfg(not(target_os = "linux"))]
    fn start_ring(
        _: &RelayConfig,
        _: &std::sync::Weak<Inner>,
        _: &AddedLatency,
    ) -> Result<Engine, String> {
        Err("io_uring needs Linux".into())
    }
}

impl CallEntry {
    fn info(&self) -> CallInfo {
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

/// Whether this kernel runs the io_uring engine (starts one worker and relays a datagram).
pub fn io_uring_available() -> bool {
    #[cfg(target_os = "linux")]
    {
        uring::RingWorker::start(0, std::sync::Weak::new(), Default::default()).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// A new call's IO, started once the call is registered.
enum Launch {
    /// The call's task, and what to tell once it has ended (its sockets closed).
    Task(Box<task::CallTask>, oneshot::Sender<()>),
    #[cfg(target_os = "linux")]
    Ring(Arc<uring::RingWorker>, Box<uring::RingCall>),
}

/// A deleted call on its way out: its engine closes its sockets on its own thread.
#[derive(Debug)]
pub struct CallClosing(Option<oneshot::Receiver<()>>);

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
const KEY_STREAM_DEPTH: usize = 64;

/// A call's captured keys, for their one reader. Not `Clone`: while it is alive no one else
/// can read the call's keys ([`Relay::key_stream`]).
#[derive(Debug)]
pub struct KeyStream {
    keys: mpsc::Receiver<CapturedKey>,
}

impl KeyStream {
    /// The next key; `None` once the call has ended.
    pub async fn recv(&mut self) -> Option<CapturedKey> {
        self.keys.recv().await
    }

    /// A key already waiting, if one is.
    pub fn try_recv(&mut self) -> Option<CapturedKey> {
        self.keys.try_recv().ok()
    }
}

/// Secure mode held on one call by one session ([`Relay::lease_secure`]). Not `Clone`, and
/// the only ways to give it up take it by value, so only the session holding it can end its
/// hold. Dropping it gives nothing up: the call stays masked until it ends (fail closed).
#[derive(Debug)]
#[must_use = "a dropped lease keeps the call masked until the call ends"]
pub struct SecureLease {
    relay: Relay,
    call: String,
    session: String,
}

impl SecureLease {
    /// The call it holds.
    pub fn call(&self) -> &str {
        &self.call
    }

    /// The session holding it.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The capture ended: the lease still holds secure mode (a caller keying another card
    /// after a decline must not be heard), but no longer blocks other holders' releases.
    pub fn capture_ended(&self) {
        let mut calls = self.relay.inner.calls.lock().expect("calls lock");
        if let Some(live) = calls
            .get_mut(&self.call)
            .and_then(|c| c.leases.sessions.get_mut(&self.session))
        {
            *live = false;
        }
    }

    /// A new capture started under this lease (a card asked for again): it blocks other
    /// holders' releases again, as a live capture does.
    pub fn capture_resumed(&self) {
        let mut calls = self.relay.inner.calls.lock().expect("calls lock");
        if let Some(live) = calls
            .get_mut(&self.call)
            .and_then(|c| c.leases.sessions.get_mut(&self.session))
        {
            *live = true;
        }
    }

    /// Gives secure mode up (it goes off where nothing else holds it). `Ok(true)`: released;
    /// `Ok(false)`: the call had already ended. Refused with the lease handed back (`Conflict`
    /// with the reason) while the capture is live or within the hold-off after a key.
    pub async fn release(self) -> Result<bool, (SecureLease, RelayError)> {
        match self.relay.end_lease(&self).await {
            Ok(released) => Ok(released),
            Err(e) => Err((self, e)),
        }
    }

    fn actor(&self) -> String {
        format!("session:{}", self.session)
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Relay")
    }
}

/// A call was set up (sessions link to calls by `call_guid`).
#[derive(Debug, Clone)]
pub struct CallNotice {
    /// Relay call id.
    pub id: String,
    /// The platform's call id.
    pub call_guid: String,
    /// The client that created the call.
    pub owner: String,
}

struct Inner {
    cfg: RelayConfig,
    /// The call limit in force (`relay.max_calls`, changed at run time by an operator).
    max_calls: AtomicUsize,
    /// Set when the gateway drains: no new calls.
    draining: AtomicBool,
    engine: Engine,
    numbers: AtomicU64,
    /// Unbounded on purpose: a dropped notice is a session that never links and never goes
    /// secure. One entry per call set-up, bounded by the relay's call limit.
    notices: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<CallNotice>>>,
    calls: Mutex<HashMap<String, CallEntry>>,
    ports: Mutex<PortAllocator>,
    retired: Mutex<CounterSnapshot>,
    created: AtomicU64,
    timed_out: AtomicU64,
    refused: AtomicU64,
    /// Calls stopped because their media processing panicked.
    call_faults: AtomicU64,
    /// io_uring workers that failed (their calls moved to the others).
    worker_failures: AtomicU64,
    audit: std::sync::OnceLock<AuditSink>,
    /// How long datagrams spend in the relay, per engine loop.
    added_latency: AddedLatency,
    /// Wall-clock time (`created_at`, the release hold-off).
    wall: Arc<dyn WallClock>,
}

/// The relay: create, steer and remove calls. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

impl Relay {
    /// A relay with no calls, its IO engine started (see `relay.engine`), on the system clock.
    pub fn new(cfg: RelayConfig) -> Result<Self, RelayError> {
        Self::with_wall_clock(cfg, Arc::new(SystemClock))
    }

    /// A relay reading wall-clock time from `wall`.
    pub fn with_wall_clock(cfg: RelayConfig, wall: Arc<dyn WallClock>) -> Result<Self, RelayError> {
        let ports = PortAllocator::new(cfg.port_min, cfg.port_max);
        let mut failed = None;
        let added_latency = AddedLatency::default();
        let inner = Arc::new_cyclic(|weak| {
            let engine = Engine::start(&cfg, weak, &added_latency).unwrap_or_else(|e| {
                failed = Some(e);
                Engine::Tokio
            });
            Inner {
                max_calls: AtomicUsize::new(cfg.max_calls),
                draining: AtomicBool::new(false),
                cfg,
                engine,
                numbers: AtomicU64::new(0),
                notices: Mutex::new(Vec::new()),
                calls: Mutex::new(HashMap::new()),
                ports: Mutex::new(ports),
                retired: Mutex::new(CounterSnapshot::default()),
                created: AtomicU64::new(0),
                timed_out: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                call_faults: AtomicU64::new(0),
                worker_failures: AtomicU64::new(0),
                audit: std::sync::OnceLock::new(),
                added_latency,
                wall,
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(Relay { inner })
    }

    /// The IO engine in use: `io_uring` or `tokio`.
    pub fn engine(&self) -> &'static str {
        self.inner.engine.name()
    }

    /// Where audit records go from now on (set once, by the server).
    pub fn set_audit(&self, sink: AuditSink) {
        let _ = self.inner.audit.set(sink);
    }

    fn audit(&self, e: &CallEntry, actor: &str, action: &'static str, reason: impl Into<String>) {
        if let Some(sink) = self.inner.audit.get() {
            sink(RelayAudit {
                call_id: e.id.clone(),
                call_guid: e.call_guid.clone(),
                owner: e.owner.clone(),
                actor: actor.to_string(),
                action,
                reason: reason.into(),
            });
        }
    }

    /// Sets up a call: binds both legs' ports and starts relaying. Must run inside a tokio
    /// runtime.
    pub fn create_call(&self, req: NewCall) -> Result<CallInfo, RelayError> {
        let cfg = &self.inner.cfg;
        // Characters, as the message and the schema's maxLength say (not bytes of UTF-8).
        if req.call_guid.trim().is_empty() || req.call_guid.chars().count() > 128 {
            return Err(RelayError::Invalid(
                "call_guid must be 1-128 characters".into(),
            ));
        }
        {
            let calls = self.inner.calls.lock().expect("calls lock");
            if self.inner.draining.load(Relaxed) {
                self.inner.refused.fetch_add(1, Relaxed);
                return Err(RelayError::Exhausted(
                    "the gateway is draining and takes no new calls",
                ));
            }
            if calls.len() >= self.inner.max_calls.load(Relaxed) {
                self.inner.refused.fetch_add(1, Relaxed);
                return Err(RelayError::Exhausted("call limit reached"));
            }
            // CallGuids are the owner's own namespace: only the owner's calls are compared
            // (another client's same string changes nothing here, and reveals nothing).
            let mut own = 0;
            for c in calls.values().filter(|c| c.owner == req.owner) {
                if c.call_guid == req.call_guid {
                    return Err(RelayError::Conflict(format!(
                        "a call with call_guid {:?} is already relayed",
                        req.call_guid
                    )));
                }
                own += 1;
            }
            if let Some(limit) = cfg.per_client_limit().filter(|&l| own >= l) {
                self.inner.refused.fetch_add(1, Relaxed);
                return Err(RelayError::OverQuota(limit));
            }
        }
        let ip_for = |remote: RemoteRule| -> IpAddr {
            match remote.ip() {
                Some(IpAddr::V6(_)) => cfg.bind_ipv6.into(),
                Some(IpAddr::V4(_)) => cfg.bind_ipv4.into(),
                None if req.ipv6 => cfg.bind_ipv6.into(),
                None => cfg.bind_ipv4.into(),
            }
        };
        let (caller_ip, agent_ip) = (ip_for(req.caller_remote), ip_for(req.agent_remote));
        let (caller, agent) = {
            let mut ports = self.inner.ports.lock().expect("ports lock");
            let c = ports.bind(caller_ip, req.rtcp_mux).map_err(|why| {
                self.inner.refused.fetch_add(1, Relaxed);
                RelayError::Exhausted(why)
            })?;
            let a = ports.bind(agent_ip, req.rtcp_mux).map_err(|why| {
                let port = c.rtp.local_addr().map(|a| a.port()).unwrap_or(0);
                ports.release(caller_ip, port);
                self.inner.refused.fetch_add(1, Relaxed);
                RelayError::Exhausted(why)
            })?;
            (c, a)
        };
        let local = |s: &std::net::UdpSocket| {
            s.local_addr()
                .map_err(|e| RelayError::Invalid(e.to_string()))
        };
        let locals = [local(&caller.rtp)?, local(&agent.rtp)?];
        let timeout = Duration::from_secs(cfg.media_timeout_s);
        let mut media = CallMedia::with_rules(
            CallMediaConfig {
                law: req.law,
                event_pt: req.event_pt,
                rtcp_mux: req.rtcp_mux,
                relatch: cfg.relatch,
                mode: req.masking.unwrap_or_else(|| cfg.masking_mode()),
                lookahead: cfg.lookahead_frames,
                event_replacement: cfg.event_replacement().unwrap_or(EventReplacement::Drop),
                prompt_start: crate::media::StreamStart {
                    ssrc: rand::random(),
                    seq: rand::random(),
                    ts: rand::random(),
                },
                media_timeout: timeout,
            },
            req.caller_remote,
            req.agent_remote,
            std::time::Instant::now(),
        );
        let id = call_id();
        let counters = media.counters();
        // A call masked for its whole life is secure before its first packet.
        let secure_from_start = req.policy == DtmfMasking::Call;
        media.set_secure(secure_from_start);
        let status = Arc::new(CallStatus {
            secure: AtomicBool::new(secure_from_start),
            remotes: Mutex::new([req.caller_remote.known(), req.agent_remote.known()]),
            ..CallStatus::default()
        });
        let driver = CallDriver::new(media, status.clone(), self.inner.wall.clone());
        let (closed_tx, closed_rx) = oneshot::channel();
        let (steer, launch) = match &self.inner.engine {
            Engine::Tokio => {
                let sockets = match task::Sockets::new(caller, agent) {
                    Ok(s) => s,
                    Err(e) => {
                        self.release_ports(&locals);
                        return Err(RelayError::Invalid(e.to_string()));
                    }
                };
                let (control_tx, control_rx) = mpsc::channel(16);
                let (stop_tx, stop_rx) = oneshot::channel();
                let steer = Steer::Task {
                    control: control_tx,
                    stop: Some(stop_tx),
                };
                let t = task::CallTask {
                    driver,
                    sockets,
                    control: control_rx,
                    stop: stop_rx,
                    latency: self.inner.added_latency.recorder(),
                };
                (steer, Launch::Task(Box::new(t), closed_tx))
            }
            #[cfg(target_os = "linux")]
            Engine::Ring(_) => {
                let Some(worker) = self.pick_worker() else {
                    self.release_ports(&locals);
                    return Err(RelayError::Engine("every relay worker has stopped".into()));
                };
                let number = self.inner.numbers.fetch_add(1, Relaxed);
                let call = uring::RingCall {
                    number,
                    id: id.clone(),
                    driver,
                    sockets: [Some(caller.rtp), Some(agent.rtp), caller.rtcp, agent.rtcp],
                    closed: closed_tx,
                };
                let steer = Steer::Ring {
                    worker: worker.clone(),
                    number,
                };
                (steer, Launch::Ring(worker, Box::new(call)))
            }
        };
        let entry = CallEntry {
            id: id.clone(),
            call_guid: req.call_guid.clone(),
            owner: req.owner.clone(),
            account: req.account.clone(),
            policy: req.policy,
            leases: SecureLeases::default(),
            key_sink: None,
            law: req.law,
            rtcp_mux: req.rtcp_mux,
            created_at: self.inner.wall.unix_ms() / 1000,
            locals,
            status,
            counters,
            steer,
            closed: Some(closed_rx),
        };
        let info = entry.info();
        self.audit(
            &entry,
            &format!("client:{}", req.owner),
            "create",
            if secure_from_start {
                "secure from the first packet (dtmf_masking = \"call\")"
            } else {
                "plain until secure mode is held (dtmf_masking = \"session\")"
            },
        );
        self.inner
            .calls
            .lock()
            .expect("calls lock")
            .insert(id.clone(), entry);
        self.inner.created.fetch_add(1, Relaxed);
        match launch {
            Launch::Task(t, closed) => {
                let relay = self.clone();
                let id = id.clone();
                let latency = t.latency.clone();
                tokio::spawn(async move {
                    // The call's own task: a panic in its media ends this call alone.
                    let ended = tokio::spawn(task::run(*t)).await;
                    // Its sockets went with it.
                    let _ = closed.send(());
                    relay.inner.added_latency.retire(&latency);
                    match ended {
                        Ok(ended) => relay.ended(&id, ended),
                        Err(e) => {
                            tracing::error!(call = %id, error = %e, "media processing failed; the call is stopped, the others go on");
                            relay.faulted(&id);
                        }
                    }
                });
            }
            #[cfg(target_os = "linux")]
            Launch::Ring(worker, call) => {
                if !worker.command(uring::Command::Add(call)) {
                    self.retire(&id);
                    return Err(RelayError::Engine("relay worker stopped".into()));
                }
            }
        }
        tracing::info!(call = %info.id, call_guid = %info.call_guid, caller = %info.caller.local, agent = %info.agent.local, "relay call created");
        let notice = CallNotice {
            id: info.id.clone(),
            call_guid: info.call_guid.clone(),
            owner: req.owner,
        };
        self.inner
            .notices
            .lock()
            .expect("notices lock")
            .retain(|tx| tx.send(notice.clone()).is_ok());
        Ok(info)
    }

    /// Notices of new calls from now on; none is ever dropped while the receiver lives.
    pub fn watch_calls(&self) -> tokio::sync::mpsc::UnboundedReceiver<CallNotice> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.inner.notices.lock().expect("notices lock").push(tx);
        rx
    }

    /// A call's current state, if `access` may see it.
    pub fn get(&self, id: &str, access: Access<'_>) -> Option<CallInfo> {
        let calls = self.inner.calls.lock().expect("calls lock");
        let c = calls.get(id).filter(|c| access.allows(&c.owner))?;
        if let Access::Admin(who) = access {
            self.audit(
                c,
                &format!("admin:{who}"),
                "read",
                "call read by an operator",
            );
        }
        Some(c.info())
    }

    /// The calls `access` may see, newest first.
    pub fn list(&self, access: Access<'_>) -> Vec<CallInfo> {
        let calls = self.inner.calls.lock().expect("calls lock");
        let mut v: Vec<CallInfo> = calls
            .values()
            .filter(|c| access.allows(&c.owner))
            .inspect(|c| {
                if let Access::Admin(who) = access {
                    self.audit(c, &format!("admin:{who}"), "list", "listed by an operator");
                }
            })
            .map(CallEntry::info)
            .collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        v
    }

    /// The relay call `owner` created with `call_guid`, if any.
    pub fn find_by_call_guid(&self, owner: &str, call_guid: &str) -> Option<String> {
        self.inner
            .calls
            .lock()
            .expect("calls lock")
            .values()
            .find(|c| c.owner == owner && c.call_guid == call_guid)
            .map(|c| c.id.clone())
    }

    /// The client that created call `id`.
    pub fn owner(&self, id: &str) -> Option<String> {
        self.inner
            .calls
            .lock()
            .expect("calls lock")
            .get(id)
            .map(|c| c.owner.clone())
    }

    /// The owner asks for secure mode on or off (relay API). On: the owner holds it. Off: the
    /// owner's hold ends — refused (`Conflict`, with the reason) under policy `call`, while a
    /// session holds a lease on the call, or within the hold-off after a key.
    pub async fn request_secure(
        &self,
        id: &str,
        access: Access<'_>,
        on: bool,
    ) -> Result<CallInfo, RelayError> {
        let actor = match access {
            Access::Owner(c) => format!("client:{c}"),
            Access::Admin(c) => format!("admin:{c}"),
        };
        let hold_off = Duration::from_secs(self.inner.cfg.secure_hold_off_s);
        let now_ms = self.inner.wall.unix_ms();
        {
            let mut calls = self.inner.calls.lock().expect("calls lock");
            let c = calls
                .get_mut(id)
                .filter(|c| access.allows(&c.owner))
                .ok_or(RelayError::UnknownCall)?;
            if on {
                c.leases.api = true;
            } else {
                // The owner gives up its own hold only: a session's lease is its session's to
                // release.
                let refusal = c.release_refusal(hold_off, now_ms).or_else(|| {
                    c.leases.sessions.keys().next().map(|s| {
                        format!(
                            "session {s} holds secure mode on this call; release it with \
                             POST /globalpci/v1/session/{s}/release"
                        )
                    })
                });
                if let Some(why) = refusal {
                    self.audit(c, &actor, "secure_off_refused", why.clone());
                    return Err(RelayError::Conflict(why));
                }
                c.leases.api = false;
            }
        }
        self.apply_secure(
            id,
            &actor,
            if on {
                "asked for over the relay API"
            } else {
                "released over the relay API"
            },
        )
        .await?;
        self.get(id, Access::Owner(&self.owner(id).unwrap_or_default()))
            .ok_or(RelayError::UnknownCall)
    }

    /// Session `session` starts capturing on call `id`: secure mode is on when this returns,
    /// held by the [`SecureLease`] it returns (until its holder releases it or the call ends).
    /// A session holds one lease per call: asking again is a `Conflict`.
    pub async fn lease_secure(&self, id: &str, session: &str) -> Result<SecureLease, RelayError> {
        {
            let mut calls = self.inner.calls.lock().expect("calls lock");
            let c = calls.get_mut(id).ok_or(RelayError::UnknownCall)?;
            if c.leases.sessions.contains_key(session) {
                return Err(RelayError::Conflict(format!(
                    "session {session} already holds secure mode on this call"
                )));
            }
            c.leases.sessions.insert(session.to_string(), true);
        }
        let lease = SecureLease {
            relay: self.clone(),
            call: id.to_string(),
            session: session.to_string(),
        };
        match self
            .apply_secure(id, &lease.actor(), "capture started")
            .await
        {
            Ok(()) => Ok(lease),
            Err(e) => {
                // Not applied: the capture must not start. The entry goes; the call, if it
                // still exists, keeps whatever else holds it.
                if let Some(c) = self.inner.calls.lock().expect("calls lock").get_mut(id) {
                    c.leases.sessions.remove(session);
                }
                Err(e)
            }
        }
    }

    /// How long datagrams have spent in the relay, from the engine having one to its
    /// forwarded copy going to the kernel (`/metrics`: `tonegate_relay_added_latency_seconds`).
    pub fn added_latency(&self) -> LatencySnapshot {
        self.inner.added_latency.snapshot()
    }

    /// Whether call `id` still exists.
    pub fn has_call(&self, id: &str) -> bool {
        self.inner
            .calls
            .lock()
            .expect("calls lock")
            .contains_key(id)
    }

    /// Ends `lease`'s hold: secure mode goes off where nothing else holds it. Refused
    /// (`Conflict`) while its capture is live, or when it would turn masking off within the
    /// hold-off after a key. Under policy `call` masking stays on. `Ok(false)`: the call is gone.
    async fn end_lease(&self, lease: &SecureLease) -> Result<bool, RelayError> {
        let hold_off = Duration::from_secs(self.inner.cfg.secure_hold_off_s);
        let now_ms = self.inner.wall.unix_ms();
        let actor = lease.actor();
        {
            let mut calls = self.inner.calls.lock().expect("calls lock");
            let Some(c) = calls.get_mut(&lease.call) else {
                return Ok(false);
            };
            if c.leases.sessions.get(&lease.session) == Some(&true) {
                let why = "the session is still capturing; cancel or finish it first";
                self.audit(c, &actor, "secure_off_refused", why);
                return Err(RelayError::Conflict(why.into()));
            }
            c.leases.sessions.remove(&lease.session);
            // Only a release that would turn masking off waits out the hold-off; while others
            // hold it (or policy `call` does), giving up this hold changes nothing audible.
            if !c.held() {
                if let Some(why) = c.release_refusal(hold_off, now_ms) {
                    c.leases.sessions.insert(lease.session.clone(), false);
                    self.audit(c, &actor, "secure_off_refused", why.clone());
                    return Err(RelayError::Conflict(why));
                }
            }
        }
        self.apply_secure(&lease.call, &actor, "released by the session")
            .await?;
        Ok(true)
    }

    /// Brings the call's secure mode in line with what holds it; audits a change.
    async fn apply_secure(&self, id: &str, actor: &str, why: &str) -> Result<(), RelayError> {
        let (control, want, was) = {
            let calls = self.inner.calls.lock().expect("calls lock");
            let c = calls.get(id).ok_or(RelayError::UnknownCall)?;
            (c.steer.control(), c.held(), c.status.secure.load(Relaxed))
        };
        if want == was {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        control.send(Control::Secure(want, tx)).await?;
        rx.await.map_err(|_| RelayError::UnknownCall)?;
        tracing::info!(call = %id, secure = want, actor, "relay secure mode changed");
        if let Some(c) = self.inner.calls.lock().expect("calls lock").get(id) {
            self.audit(c, actor, if want { "secure_on" } else { "secure_off" }, why);
        }
        Ok(())
    }

    /// The call's captured keys from now on. A call has one [`KeyStream`] at a time: while
    /// one is alive, asking again is a `Conflict`, never a replacement; dropping it frees the
    /// call for the next.
    pub async fn key_stream(&self, id: &str) -> Result<KeyStream, RelayError> {
        let (sink, keys) = mpsc::channel(KEY_STREAM_DEPTH);
        let control = {
            let mut calls = self.inner.calls.lock().expect("calls lock");
            let c = calls.get_mut(id).ok_or(RelayError::UnknownCall)?;
            if c.key_sink.as_ref().is_some_and(|s| !s.is_closed()) {
                return Err(RelayError::Conflict(
                    "the call's keys already go to another subscriber".into(),
                ));
            }
            c.key_sink = Some(sink.clone());
            c.steer.control()
        };
        control.send(Control::Keys(sink)).await?;
        Ok(KeyStream { keys })
    }

    /// Plays clips to the caller, after any already queued (a caller's key stops them).
    pub async fn play(&self, id: &str, clips: Vec<crate::media::Clip>) -> Result<(), RelayError> {
        let status = self.status(id)?;
        status.prompts_sent.fetch_add(1, Relaxed);
        let sent = self.control(id)?.send(Control::Play(clips)).await;
        if sent.is_err() {
            status.prompts_applied.fetch_add(1, Relaxed);
        }
        sent
    }

    /// Whether a prompt is playing, queued or on its way to the caller (`None`: no such
    /// call). The SIP endpoint waits for the result prompt before it hangs up.
    pub fn is_prompting(&self, id: &str) -> Option<bool> {
        let s = self.status(id).ok()?;
        Some(
            s.prompting.load(Relaxed)
                || s.prompts_sent.load(Relaxed) != s.prompts_applied.load(Relaxed),
        )
    }

    fn status(&self, id: &str) -> Result<Arc<CallStatus>, RelayError> {
        self.inner
            .calls
            .lock()
            .expect("calls lock")
            .get(id)
            .map(|c| c.status.clone())
            .ok_or(RelayError::UnknownCall)
    }

    /// Stops any prompt on the call.
    pub async fn stop_prompt(&self, id: &str) -> Result<(), RelayError> {
        self.control(id)?.send(Control::StopPrompt).await
    }

    /// Detects keys outside secure mode (without masking) and sends them to the subscriber:
    /// for a caller who keys a session's `dtmfLinkId`.
    pub async fn listen(&self, id: &str, on: bool) -> Result<(), RelayError> {
        self.control(id)?.send(Control::Listen(on)).await
    }

    /// Signalling said anew where a leg's remote is (ng answer, re-offer).
    pub async fn set_remote(
        &self,
        id: &str,
        side: crate::media::Side,
        rule: RemoteRule,
    ) -> Result<(), RelayError> {
        {
            let calls = self.inner.calls.lock().expect("calls lock");
            let c = calls.get(id).ok_or(RelayError::UnknownCall)?;
            c.status.remotes.lock().expect("remotes lock")[side as usize] = rule.known();
        }
        self.control(id)?.send(Control::Remote(side, rule)).await
    }

    /// Drops (or forwards again) all media a leg sends (ng `block media`).
    pub async fn block_media(
        &self,
        id: &str,
        side: crate::media::Side,
        on: bool,
    ) -> Result<(), RelayError> {
        self.control(id)?.send(Control::Block(side, on)).await
    }

    /// Ends a call and frees its ports, if `access` may see it.
    pub fn delete(&self, id: &str, access: Access<'_>) -> Result<CallClosing, RelayError> {
        let mut calls = self.inner.calls.lock().expect("calls lock");
        let entry = calls
            .get_mut(id)
            .filter(|c| access.allows(&c.owner))
            .ok_or(RelayError::UnknownCall)?;
        let actor = match access {
            Access::Owner(c) => format!("client:{c}"),
            Access::Admin(c) => format!("admin:{c}"),
        };
        self.audit(
            entry,
            &actor,
            "delete",
            "call ended; secure mode ends with it",
        );
        entry.steer.stop();
        let closed = entry.closed.take();
        drop(calls);
        self.retire(id);
        tracing::info!(call = %id, "relay call deleted");
        Ok(CallClosing(closed))
    }

    /// Totals for the metrics endpoint.
    pub fn totals(&self) -> RelayTotals {
        // Not nested in the calls lock: each is taken alone.
        let (port_pairs, port_pairs_used) = {
            let ports = self.inner.ports.lock().expect("ports lock");
            (ports.capacity() as u64, ports.in_use_busiest() as u64)
        };
        let calls = self.inner.calls.lock().expect("calls lock");
        let mut counters = *self.inner.retired.lock().expect("retired lock");
        let mut calls_secure = 0;
        for c in calls.values() {
            counters.add(&CounterSnapshot::of(
                &c.counters,
                c.status.send_dropped.load(Relaxed),
            ));
            calls_secure += u64::from(c.status.secure.load(Relaxed));
        }
        RelayTotals {
            engine: self.engine(),
            calls_active: calls.len() as u64,
            calls_created: self.inner.created.load(Relaxed),
            calls_timed_out: self.inner.timed_out.load(Relaxed),
            calls_refused: self.inner.refused.load(Relaxed),
            call_faults: self.inner.call_faults.load(Relaxed),
            worker_failures: self.inner.worker_failures.load(Relaxed),
            calls_secure,
            port_pairs,
            port_pairs_used,
            counters,
        }
    }

    /// The call limit in force.
    pub fn max_calls(&self) -> usize {
        self.inner.max_calls.load(Relaxed)
    }

    /// Changes the call limit from now on (live calls above it carry on); 1 to the
    /// configured `relay.max_calls`, which the port range and open-file budget were sized for.
    pub fn set_max_calls(&self, n: usize) -> Result<(), RelayError> {
        let cap = self.inner.cfg.max_calls;
        if n == 0 || n > cap {
            return Err(RelayError::Invalid(format!(
                "max calls must be 1-{cap} (relay.max_calls in the config)"
            )));
        }
        self.inner.max_calls.store(n, Relaxed);
        Ok(())
    }

    /// Refuses every new call from now on (a drain); live calls carry on.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Relaxed);
    }

    /// Whether the relay is draining.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Relaxed)
    }

    /// Stops every call (shutdown).
    pub fn stop_all(&self) {
        let ids: Vec<String> = self
            .inner
            .calls
            .lock()
            .expect("calls lock")
            .keys()
            .cloned()
            .collect();
        for id in ids {
            let _ = self.delete(&id, Access::Admin("gateway"));
        }
    }

    fn control(&self, id: &str) -> Result<ControlTx, RelayError> {
        self.inner
            .calls
            .lock()
            .expect("calls lock")
            .get(id)
            .map(|c| c.steer.control())
            .ok_or(RelayError::UnknownCall)
    }

    /// A call's driving ended in its engine (the engine has stopped it already).
    fn ended(&self, id: &str, why: Ended) {
        if why == Ended::Silence {
            self.inner.timed_out.fetch_add(1, Relaxed);
            tracing::info!(call = %id, "call removed after media silence");
        }
        self.forget(id);
    }

    /// A call's media step panicked; its engine has stopped it, the other calls go on.
    fn faulted(&self, id: &str) {
        self.inner.call_faults.fetch_add(1, Relaxed);
        self.forget(id);
    }

    /// Stops a call's IO and removes it.
    fn retire(&self, id: &str) {
        if let Some(mut entry) = self.forget(id) {
            entry.steer.stop();
        }
    }

    /// Removes a call from the registry (its engine stops it, or has), keeping its counts in
    /// the totals.
    fn forget(&self, id: &str) -> Option<CallEntry> {
        let entry = self.inner.calls.lock().expect("calls lock").remove(id)?;
        let snap = CounterSnapshot::of(&entry.counters, entry.status.send_dropped.load(Relaxed));
        self.inner.retired.lock().expect("retired lock").add(&snap);
        self.release_ports(&entry.locals);
        Some(entry)
    }

    fn release_ports(&self, locals: &[SocketAddr]) {
        let mut ports = self.inner.ports.lock().expect("ports lock");
        for a in locals {
            ports.release(a.ip(), a.port());
        }
    }

    /// The least loaded running io_uring worker.
    #[cfg(target_os = "linux")]
    fn pick_worker(&self) -> Option<Arc<uring::RingWorker>> {
        let Engine::Ring(pool) = &self.inner.engine else {
            return None;
        };
        pool.read()
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
        let Engine::Ring(pool) = &self.inner.engine else {
            return;
        };
        // The new worker counts on in the failed one's latency buckets.
        let latency = {
            let pool = pool.read().unwrap_or_else(|p| p.into_inner());
            pool.iter()
                .find(|w| w.index() == index)
                .map(|w| w.latency())
                .unwrap_or_else(|| self.inner.added_latency.recorder())
        };
        match uring::RingWorker::start(index, Arc::downgrade(&self.inner), latency) {
            Ok(w) => {
                let mut pool = pool.write().unwrap_or_else(|p| p.into_inner());
                if let Some(old) = pool.iter_mut().find(|w| w.index() == index) {
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
            let placed = worker.filter(|w| w.command(uring::Command::Add(Box::new(call))));
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

    /// Injects `fault` into call `id`'s IO (tests only: no API reaches this).
    #[doc(hidden)]
    pub async fn inject_fault(&self, id: &str, fault: InjectedFault) -> Result<(), RelayError> {
        let control = self.control(id)?;
        match (fault, control) {
            (InjectedFault::PanicMedia, c) => c.send(Control::Fault).await,
            #[cfg(target_os = "linux")]
            (InjectedFault::FailWorker, ControlTx::Ring(worker, _)) => worker
                .command(uring::Command::Fail)
                .then_some(())
                .ok_or(RelayError::Engine("relay worker stopped".into())),
            (InjectedFault::FailWorker, _) => Err(RelayError::Invalid(
                "the tokio engine has no workers to fail".into(),
            )),
        }
    }
}

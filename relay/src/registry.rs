//! The call registry: [`Relay`] creates calls (ports, media, an engine to run them), finds
//! and steers them for their owner, and removes them, keeping the totals.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::added_latency::AddedLatency;
use crate::call::{CallClosing, CallRecord, ControlTx, InjectedFault, SecureLeases, Steer};
use crate::config::{DtmfMasking, RelayConfig};
use crate::driver::{CallControl, CallDriver, CallStatus, Ended};
use crate::engine::{IoEngine, Launch};
use crate::media::{CallMedia, CallMediaConfig, EventReplacement, RemoteRule};
#[cfg(target_os = "linux")]
use crate::uring;
use crate::view::{
    AuditSink, CallInfo, CallNotice, CounterSnapshot, NewCall, RelayAudit, RelayTotals,
};
use crate::{task, Access, LatencySnapshot, PortAllocator, RelayError, SystemClock, WallClock};

/// A new call id: 22 URL-safe characters (132 random bits) from the OS.
fn call_id() -> String {
    use base64::Engine as _;
    use rand::RngCore;
    let mut b = [0u8; 17];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)[..22].to_string()
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Relay")
    }
}

/// The calls, ports, engine and counts every [`Relay`] handle shares.
pub(crate) struct Registry {
    pub(crate) cfg: RelayConfig,
    /// The call limit in force (`relay.max_calls`, changed at run time by an operator).
    pub(crate) max_calls: AtomicUsize,
    /// Set when the gateway drains: no new calls.
    pub(crate) draining: AtomicBool,
    pub(crate) engine: IoEngine,
    pub(crate) numbers: AtomicU64,
    /// Unbounded on purpose: a dropped notice is a session that never links and never goes
    /// secure. One entry per call set-up, bounded by the relay's call limit.
    pub(crate) notices: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<CallNotice>>>,
    pub(crate) calls: Mutex<HashMap<String, CallRecord>>,
    pub(crate) ports: Mutex<PortAllocator>,
    pub(crate) retired: Mutex<CounterSnapshot>,
    pub(crate) created: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) refused: AtomicU64,
    /// Calls stopped because their media processing panicked.
    pub(crate) call_faults: AtomicU64,
    /// io_uring workers that failed (their calls moved to the others).
    pub(crate) worker_failures: AtomicU64,
    pub(crate) audit: std::sync::OnceLock<AuditSink>,
    /// How long datagrams spend in the relay, per engine loop.
    pub(crate) added_latency: AddedLatency,
    /// Wall-clock time (`created_at`, the release hold-off).
    pub(crate) wall: Arc<dyn WallClock>,
}

/// The relay: create, steer and remove calls. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    pub(crate) inner: Arc<Registry>,
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
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Registry>| {
            // What the engine reports reaches the relay while it lives.
            let weak = weak.clone();
            let relay = move || weak.upgrade().map(|inner| Relay { inner });
            let engine = IoEngine::start(&cfg, relay, &added_latency).unwrap_or_else(|e| {
                failed = Some(e);
                IoEngine::Tokio
            });
            Registry {
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

    pub(crate) fn audit(
        &self,
        e: &CallRecord,
        actor: &str,
        action: &'static str,
        reason: impl Into<String>,
    ) {
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
            IoEngine::Tokio => {
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
            IoEngine::Ring(_) => {
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
        let entry = CallRecord {
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
                        Ok(why) => relay.ended(&id, why),
                        Err(e) => {
                            tracing::error!(call = %id, error = %e, "media processing failed; the call is stopped, the others go on");
                            relay.faulted(&id);
                        }
                    }
                });
            }
            #[cfg(target_os = "linux")]
            Launch::Ring(worker, call) => {
                if !worker.command(uring::WorkerCommand::Add(call)) {
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
            .map(CallRecord::info)
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

    /// Plays clips to the caller, after any already queued (a caller's key stops them).
    pub async fn play(&self, id: &str, clips: Vec<crate::media::Clip>) -> Result<(), RelayError> {
        let status = self.status(id)?;
        status.prompts_sent.fetch_add(1, Relaxed);
        let sent = self.control(id)?.send(CallControl::Play(clips)).await;
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
        self.with_call(id, |c| c.status.clone())
    }

    /// Stops any prompt on the call.
    pub async fn stop_prompt(&self, id: &str) -> Result<(), RelayError> {
        self.control(id)?.send(CallControl::StopPrompt).await
    }

    /// Detects keys outside secure mode (without masking) and sends them to the subscriber:
    /// for a caller who keys a session's `dtmfLinkId`.
    pub async fn listen(&self, id: &str, on: bool) -> Result<(), RelayError> {
        self.control(id)?.send(CallControl::Listen(on)).await
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
        self.control(id)?
            .send(CallControl::Remote(side, rule))
            .await
    }

    /// Drops (or forwards again) all media a leg sends (ng `block media`).
    pub async fn block_media(
        &self,
        id: &str,
        side: crate::media::Side,
        on: bool,
    ) -> Result<(), RelayError> {
        self.control(id)?.send(CallControl::Block(side, on)).await
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

    pub(crate) fn control(&self, id: &str) -> Result<ControlTx, RelayError> {
        self.with_call(id, |c| c.steer.control())
    }

    /// `f` of call `id`'s record, under the calls lock.
    fn with_call<T>(&self, id: &str, f: impl FnOnce(&CallRecord) -> T) -> Result<T, RelayError> {
        self.inner
            .calls
            .lock()
            .expect("calls lock")
            .get(id)
            .map(f)
            .ok_or(RelayError::UnknownCall)
    }

    /// A call's driving ended in its engine (the engine has stopped it already).
    pub(crate) fn ended(&self, id: &str, why: Ended) {
        if why == Ended::Silence {
            self.inner.timed_out.fetch_add(1, Relaxed);
            tracing::info!(call = %id, "call removed after media silence");
        }
        self.forget(id);
    }

    /// A call's media step panicked; its engine has stopped it, the other calls go on.
    pub(crate) fn faulted(&self, id: &str) {
        self.inner.call_faults.fetch_add(1, Relaxed);
        self.forget(id);
    }

    /// Stops a call's IO and removes it.
    pub(crate) fn retire(&self, id: &str) {
        if let Some(mut entry) = self.forget(id) {
            entry.steer.stop();
        }
    }

    /// Removes a call from the registry (its engine stops it, or has), keeping its counts in
    /// the totals.
    pub(crate) fn forget(&self, id: &str) -> Option<CallRecord> {
        let entry = self.inner.calls.lock().expect("calls lock").remove(id)?;
        let snap = CounterSnapshot::of(&entry.counters, entry.status.send_dropped.load(Relaxed));
        self.inner.retired.lock().expect("retired lock").add(&snap);
        self.release_ports(&entry.locals);
        Some(entry)
    }

    pub(crate) fn release_ports(&self, locals: &[SocketAddr]) {
        let mut ports = self.inner.ports.lock().expect("ports lock");
        for a in locals {
            ports.release(a.ip(), a.port());
        }
    }

    /// Injects `fault` into call `id`'s IO (tests only: no API reaches this).
    #[doc(hidden)]
    pub async fn inject_fault(&self, id: &str, fault: InjectedFault) -> Result<(), RelayError> {
        let control = self.control(id)?;
        match (fault, control) {
            (InjectedFault::PanicMedia, c) => c.send(CallControl::Fault).await,
            #[cfg(target_os = "linux")]
            (InjectedFault::FailWorker, ControlTx::Ring(worker, _)) => worker
                .command(uring::WorkerCommand::Fail)
                .then_some(())
                .ok_or(RelayError::Engine("relay worker stopped".into())),
            (InjectedFault::FailWorker, _) => Err(RelayError::Invalid(
                "the tokio engine has no workers to fail".into(),
            )),
        }
    }
}

//! The fallback number: tonegate as the SIP endpoint an IVR transfers a self-service caller
//! to (seed 002's `dtmfFallbackNumber`). An INVITE to an account's `dtmf_fallback_number`
//! becomes a relay call owned by `[sip] owner` (for that account) with the caller as its
//! caller leg and no agent leg; the call links to the waiting self-service session by the
//! `X-Tonegate-Link-Id` header or `tonegate-link-id` URI parameter, else by the `dtmfLinkId`
//! the caller keys; the session's capture prompts, takes the card and pays; then tonegate
//! hangs up (BYE) or transfers back (REFER).
//!
//! - [`message`]: the one parser entry point and response writer (bounded, sans-IO);
//! - [`call`]: [`call::Endpoint`], the user agent server as a sans-IO state machine;
//! - this module: the thin tokio shell (UDP and TCP sockets, `[sip] allow`, timers, the relay
//!   and session hooks).
//!
//! Which SIP stack, and why (compared in December 2026):
//!
//! | | ezk (`ezk-sip-types`, `-core`, `-ua`) | rsipstack | rsip |
//! | --- | --- | --- | --- |
//! | maintained | yes (kbalt/ezk, releases through 2026) | yes (restsend, 0.7.x in 2026) | no (0.4.0, 2022) |
//! | parser | `ezk-sip-types`: nom, typed headers, a pull parser over a buffer; no IO | its own fork of rsip, inside the stack crate | nom, typed headers; no IO |
//! | transactions, UDP + TCP | `ezk-sip-core`: yes, but it owns the sockets and tasks (an async `Endpoint`) | yes, tokio tasks own sockets and timers | none |
//! | sans-IO | parser only | no: parsing comes only with the whole async stack | yes, parser only |
//! | weight, MSRV | types: nom, bytes, memchr; edition 2024 (Rust 1.85); core adds hickory-resolver, rand 0.10, STUN | hickory, rustls, tungstenite, rand 0.10 (Rust 1.85) by default | old bstr, sha2 0.9, uuid 0.8 |
//! | licence | MIT | MIT | MIT |
//!
//! tonegate takes `ezk-sip-types` for parsing and headers: maintained, sans-IO and light. The
//! transaction and dialog logic a UAS with one kind of call needs (INVITE server transaction,
//! retransmissions, CANCEL, BYE both ways, re-INVITE, session timers) is small enough to keep
//! in [`call`] as a sans-IO state machine driven by `input + now → output`, testable without
//! sockets, as the relay's media core is; neither stack's async transaction layer allows that,
//! and either would bring its own sockets and tasks beside the relay's.

pub mod call;
pub mod message;
pub mod sdp;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;

use call::{AfterPayment, Counts, Endpoint, EndpointConfig, Output, Peer, Refusal, Transport};

use crate::config::{dialled_digits as digits, AfterPaymentSetting, Config};
use crate::media::{RemoteRule, Side};
use crate::relay::{Access, NewCall, Relay, RelayError};
use crate::session::Sessions;

/// Most TCP connections open at once (the carriers' and proxies' few, with room).
const MAX_TCP: usize = 1024;
/// Messages waiting for the endpoint; beyond, UDP datagrams are dropped (peers retransmit).
const QUEUE: usize = 4096;
/// Messages waiting behind the one in hand above which new calls get 503 (about a quarter
/// of a second's work at the rates `scripts/sip-load` measured).
const OVERLOAD: usize = 256;
/// Longest wait for a result prompt to finish before hanging up anyway.
const PROMPT_WAIT: Duration = Duration::from_secs(60);
/// How long a TLS client gets to finish its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// On stop, how long the BYEs sent to every live call get for their answers.
pub const STOP_WAIT: Duration = Duration::from_secs(2);

/// What the SIP listener counts (exported on `/metrics`).
#[derive(Debug, Default)]
pub struct SipCounters {
    /// Datagrams and connections from sources outside `[sip] allow`, dropped unanswered.
    pub dropped_foreign: AtomicU64,
    /// Datagrams dropped because the endpoint was behind.
    pub dropped_overload: AtomicU64,
    /// The endpoint's own counts, as of its last input.
    endpoint: Mutex<Counts>,
    /// Calls up now.
    pub live_calls: AtomicU64,
}

impl SipCounters {
    /// The endpoint's counts.
    pub fn counts(&self) -> Counts {
        *self.endpoint.lock().expect("counts lock")
    }
}

enum Event {
    Message(Peer, Vec<u8>),
    HangUp(String),
    TcpOpen(u64, mpsc::Sender<Vec<u8>>),
    TcpClosed(u64),
}

/// The fallback number's SIP service: see the module documentation.
pub struct SipService {
    config: Arc<Config>,
    relay: Relay,
    sessions: Sessions,
    allow: Vec<ipnet::IpNet>,
    counters: SipCounters,
    /// Told once tonegate stops (see [`SipService::stop`]).
    stopping: tokio::sync::Notify,
    /// The last TCP or TLS connection's number.
    conn_ids: AtomicU64,
}

impl SipService {
    /// A service over `relay` and `sessions`, as `config.sip` says.
    pub fn new(config: Arc<Config>, relay: Relay, sessions: Sessions) -> Self {
        // Validated at load; were it not, nobody is allowed (closed, not open).
        let allow = config.sip.allow_nets().unwrap_or_else(|why| {
            tracing::error!(%why, "sip: no peer is allowed");
            Vec::new()
        });
        SipService {
            config,
            relay,
            sessions,
            allow,
            counters: SipCounters::default(),
            stopping: tokio::sync::Notify::new(),
            conn_ids: AtomicU64::new(0),
        }
    }

    /// tonegate is stopping: every live call gets a BYE, and [`run`](Self::run) returns once
    /// they are answered or [`STOP_WAIT`] has passed (callers are not left holding a dead
    /// call until their own timers notice).
    pub fn stop(&self) {
        self.stopping.notify_one();
    }

    /// The listener's counters.
    pub fn counters(&self) -> &SipCounters {
        &self.counters
    }

    /// Whether `ip` may send requests (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn allows(&self, ip: IpAddr) -> bool {
        crate::networks::contains(&self.allow, ip)
    }

    fn endpoint_config(&self, local: SocketAddr, tls_local: Option<SocketAddr>) -> EndpointConfig {
        let sip = &self.config.sip;
        let numbers = self
            .config
            .accounts
            .iter()
            .map(|a| (digits(&a.dtmf_fallback_number), a.id.clone()))
            .filter(|(n, _)| !n.is_empty())
            .collect();
        EndpointConfig {
            numbers,
            ring: Duration::from_millis(sip.ring_ms),
            session_expires_s: sip.session_expires_s,
            min_se_s: sip.min_se_s,
            invites_per_second: sip.invites_per_second,
            after_payment: match (sip.after_payment, &sip.refer_to) {
                (AfterPaymentSetting::Refer, Some(to)) => AfterPayment::Refer(to.clone()),
                _ => AfterPayment::Bye,
            },
            local,
            tls_local,
        }
    }

    /// Serves SIP on `udp` and `tcp` (bound to the same address), and over TLS on `tls` where
    /// given, until the task is aborted or [`stop`](Self::stop) has ended every call.
    pub async fn run(
        self: Arc<Self>,
        udp: UdpSocket,
        tcp: TcpListener,
        tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    ) {
        let local = udp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 5060)));
        let udp = Arc::new(udp);
        let (tx, rx) = mpsc::channel::<Event>(QUEUE);
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(self.clone().receive_udp(udp.clone(), tx.clone()));
        let tls_local = tls.as_ref().and_then(|(l, _)| l.local_addr().ok());
        tasks.spawn(self.clone().accept_tcp(tcp, None, tx.clone()));
        if let Some((listener, acceptor)) = tls {
            tasks.spawn(
                self.clone()
                    .accept_tcp(listener, Some(acceptor), tx.clone()),
            );
        }
        tasks.spawn(self.clone().watch_flows(tx.clone()));
        self.drive(local, tls_local, udp, rx).await;
        tasks.abort_all();
    }

    /// The endpoint's loop: events and time in, outputs carried out.
    async fn drive(
        &self,
        local: SocketAddr,
        tls_local: Option<SocketAddr>,
        udp: Arc<UdpSocket>,
        mut rx: mpsc::Receiver<Event>,
    ) {
        let seed = rand::random();
        let mut ep = Endpoint::new(self.endpoint_config(local, tls_local), seed);
        let mut conns: HashMap<u64, mpsc::Sender<Vec<u8>>> = HashMap::new();
        // Relay calls that end by themselves (media timeout, an operator) are noticed here.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop_by: Option<Instant> = None;
        loop {
            let deadline = match (ep.poll_timeout().map(Instant::from_std), stop_by) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                _ = self.stopping.notified(), if stop_by.is_none() => {
                    ep.shut_down(std::time::Instant::now());
                    stop_by = Some(Instant::now() + STOP_WAIT);
                    tracing::info!(calls = ep.hanging_up(), "sip: stopping: BYE sent to every live call");
                }
                ev = rx.recv() => {
                    let now = std::time::Instant::now();
                    match ev {
                        None => break,
                        Some(Event::Message(peer, bytes)) => {
                            ep.set_overloaded(rx.len() > OVERLOAD);
                            ep.on_message(now, peer, &bytes)
                        }
                        Some(Event::HangUp(relay)) => ep.hang_up(now, &relay),
                        Some(Event::TcpOpen(id, w)) => {
                            conns.insert(id, w);
                        }
                        Some(Event::TcpClosed(id)) => {
                            conns.remove(&id);
                        }
                    }
                }
                _ = sleep_until_opt(deadline) => ep.handle_timeout(std::time::Instant::now()),
                _ = tick.tick() => {
                    let now = std::time::Instant::now();
                    for relay in ep.relays() {
                        if !self.relay.has_call(&relay) {
                            ep.relay_gone(now, &relay);
                        }
                    }
                }
            }
            while let Some(out) = ep.poll_output() {
                self.carry_out(&mut ep, out, &udp, &conns);
            }
            *self.counters.endpoint.lock().expect("counts lock") = ep.counts();
            self.counters
                .live_calls
                .store(ep.live_calls() as u64, Relaxed);
            if let Some(by) = stop_by {
                let left = ep.hanging_up();
                if left == 0 || Instant::now() >= by {
                    if left > 0 {
                        tracing::warn!(calls = left, "sip: stopped before every BYE was answered");
                    }
                    break;
                }
            }
        }
    }

    fn carry_out(
        &self,
        ep: &mut Endpoint,
        out: Output,
        udp: &UdpSocket,
        conns: &HashMap<u64, mpsc::Sender<Vec<u8>>>,
    ) {
        let owner = &self.config.sip.owner;
        match out {
            Output::Send { to, bytes } => match to.transport {
                // A full socket buffer drops the datagram, as the network may: SIP retransmits.
                Transport::Udp => {
                    let _ = udp.try_send_to(&bytes, to.addr);
                }
                Transport::Tcp(id) | Transport::Tls(id) => {
                    if let Some(w) = conns.get(&id) {
                        let _ = w.try_send(bytes);
                    }
                }
            },
            Output::CreateCall(n) => {
                let now = std::time::Instant::now();
                // Masked as sessions mask theirs, so a card number in a Call-ID is never stored.
                let guid = crate::card::redact::redact_card_numbers(&n.call_id);
                if let Some(link) = &n.link_id {
                    self.sessions.expect_link_id(owner, &guid, link);
                }
                let policy = self
                    .config
                    .account(&n.account)
                    .map(|a| a.dtmf_masking)
                    .unwrap_or(self.config.relay.dtmf_masking);
                let created = self.relay.create_call(NewCall {
                    call_guid: guid.clone(),
                    law: n.law,
                    event_pt: n.event_pt,
                    caller_remote: match (n.remote, n.host) {
                        (Some(r), _) => RemoteRule::Sdp(r),
                        (None, Some(h)) => RemoteRule::Host(h),
                        _ => RemoteRule::Any,
                    },
                    // No agent: nothing may take that leg.
                    agent_remote: RemoteRule::Closed,
                    rtcp_mux: false,
                    ipv6: n.host.is_some_and(|h| h.is_ipv6()),
                    masking: None,
                    owner: owner.clone(),
                    account: Some(n.account.clone()),
                    policy,
                });
                match created {
                    Ok(info) => {
                        let logged = crate::card::redact::redact_card_numbers(&n.call_id);
                        tracing::info!(call_id = %logged, relay = %info.id, account = %n.account, "sip: fallback-number call set up");
                        ep.relay_ready(now, &n.call_id, info.id, info.caller.local);
                    }
                    Err(e) => {
                        self.sessions.forget_link_id(owner, &guid);
                        tracing::warn!(error = %e, "sip: the relay refused a fallback-number call");
                        let why = match e {
                            RelayError::Exhausted(_) | RelayError::OverQuota(_) => Refusal::Busy,
                            _ => Refusal::Failed,
                        };
                        ep.relay_refused(now, &n.call_id, why);
                    }
                }
            }
            Output::MediaMoved {
                relay,
                host,
                remote,
            } => {
                let rule = match (remote, host) {
                    (Some(r), _) => RemoteRule::Sdp(r),
                    (None, Some(h)) => RemoteRule::Host(h),
                    _ => RemoteRule::Any,
                };
                let r = self.relay.clone();
                tokio::spawn(async move {
                    let _ = r.set_remote(&relay, Side::Caller, rule).await;
                });
            }
            Output::EndCall { relay } => {
                let _ = self.relay.delete(&relay, Access::Owner(owner));
            }
        }
    }

    async fn receive_udp(self: Arc<Self>, udp: Arc<UdpSocket>, tx: mpsc::Sender<Event>) {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            if !self.allows(from.ip()) {
                self.counters.dropped_foreign.fetch_add(1, Relaxed);
                continue;
            }
            let peer = Peer {
                transport: Transport::Udp,
                addr: from,
            };
            if tx
                .try_send(Event::Message(peer, buf[..n].to_vec()))
                .is_err()
            {
                self.counters.dropped_overload.fetch_add(1, Relaxed);
            }
        }
    }

    /// Accepts connections on `tcp`, each over TLS where `tls` is given.
    async fn accept_tcp(
        self: Arc<Self>,
        tcp: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        tx: mpsc::Sender<Event>,
    ) {
        let open = Arc::new(AtomicU64::new(0));
        loop {
            let Ok((stream, from)) = tcp.accept().await else {
                continue;
            };
            if !self.allows(from.ip()) {
                self.counters.dropped_foreign.fetch_add(1, Relaxed);
                continue;
            }
            if open.load(Relaxed) as usize >= MAX_TCP {
                self.counters.dropped_overload.fetch_add(1, Relaxed);
                continue;
            }
            // One numbering for both listeners: the endpoint keys connections by it.
            let id = self.conn_ids.fetch_add(1, Relaxed) + 1;
            open.fetch_add(1, Relaxed);
            let (w_tx, w_rx) = mpsc::channel(64);
            if tx.send(Event::TcpOpen(id, w_tx)).await.is_err() {
                return;
            }
            let (tx, open, tls) = (tx.clone(), open.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => {
                        let peer = Peer {
                            transport: Transport::Tcp(id),
                            addr: from,
                        };
                        connection(stream, peer, tx.clone(), w_rx).await;
                    }
                    Some(acceptor) => {
                        let peer = Peer {
                            transport: Transport::Tls(id),
                            addr: from,
                        };
                        // A client that never finishes its handshake holds no slot for long.
                        match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => connection(s, peer, tx.clone(), w_rx).await,
                            Ok(Err(e)) => {
                                tracing::info!(%from, error = %e, "sip: TLS handshake failed")
                            }
                            Err(_) => tracing::info!(%from, "sip: TLS handshake timed out"),
                        }
                    }
                }
                open.fetch_sub(1, Relaxed);
                let _ = tx.send(Event::TcpClosed(id)).await;
            });
        }
    }

    /// Hangs up each SIP call whose self-service part is over, once its prompts have played.
    async fn watch_flows(self: Arc<Self>, tx: mpsc::Sender<Event>) {
        let mut flows = self.sessions.watch_flows();
        while let Some(f) = flows.recv().await {
            if self.relay.owner(&f.call_id).as_deref() != Some(self.config.sip.owner.as_str()) {
                continue;
            }
            let (relay, tx) = (self.relay.clone(), tx.clone());
            tokio::spawn(async move {
                let give_up = Instant::now() + PROMPT_WAIT;
                // The result prompt ("approved", "goodbye") plays to its end first.
                while relay.is_prompting(&f.call_id) == Some(true) && Instant::now() < give_up {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let _ = tx.send(Event::HangUp(f.call_id)).await;
            });
        }
    }
}

/// One TCP or TLS connection: messages framed by Content-Length in, the endpoint's answers
/// out.
async fn connection<S>(
    stream: S,
    peer: Peer,
    tx: mpsc::Sender<Event>,
    mut out: mpsc::Receiver<Vec<u8>>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        while let Some(b) = out.recv().await {
            // TLS holds records back until flushed.
            if wr.write_all(&b).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
    });
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    'conn: loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match message::framed_len(&buf) {
                Ok(Some(len)) => {
                    let msg: Vec<u8> = buf.drain(..len).collect();
                    if tx.send(Event::Message(peer, msg)).await.is_err() {
                        break 'conn;
                    }
                }
                Ok(None) => break,
                // A stream that cannot be framed cannot be resynchronised: the message as far
                // as it goes is answered (400 or 513, where it can be), then the connection
                // closes.
                Err(_) => {
                    let cut = buf.len().min(message::MAX_MESSAGE);
                    let _ = tx.send(Event::Message(peer, buf[..cut].to_vec())).await;
                    break 'conn;
                }
            }
        }
    }
    // Whatever was answered last goes out before the connection closes.
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Binds `[sip] listen` for UDP and TCP (the same port; with port 0 the UDP socket's port is
/// taken for TCP too).
pub async fn bind(at: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let udp = UdpSocket::bind(at).await?;
    let tcp = TcpListener::bind(udp.local_addr()?).await?;
    Ok((udp, tcp))
}

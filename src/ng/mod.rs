//! rtpengine's ng control protocol, so Kamailio's and OpenSIPS's `rtpengine` modules drive
//! tonegate with their configuration unchanged (`docs/ng_control_protocol.md` in
//! sipwise/rtpengine).
//!
//! - [`bencode`], [`message`]: the wire format (`cookie SP dictionary`, bencode or JSON);
//! - [`sdp`]: what an offer/answer says, what is refused, the rewrite to the relay;
//! - [`ReplyCache`]: a retransmitted request (same cookie, same peer) gets the same reply, so a
//!   retransmitted offer never allocates new ports;
//! - [`NgService`]: the commands, over the relay; [`listen`]: the UDP shell.
//!
//! One ng call (Call-ID) is one relay call. The offerer (the first offer's `from-tag`) is the
//! caller whose keys are masked toward the other party; its SDP names the caller leg's remote,
//! the answer names the agent leg's. The ng calls belong to `[ng] owner` (and account), so
//! that client's GlobalPCI sessions link to them by Call-ID (or `tonegate-callguid`).

pub mod bencode;
pub mod message;
pub mod sdp;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bencode::Value;
use message::{error, reply, Format, Request};
use tonegate_dsp::MaskingMode;

use crate::config::{DtmfMasking, NgConfig};
use crate::media::{RemoteRule, Side};
use crate::relay::{Access, NewCall, Relay, RelayError};

/// What one kept reply costs besides its bytes: the map slot, the order entry, the peer and
/// the expiry (an estimate; the bound is on what an attacker controls, the lengths).
const ENTRY_OVERHEAD: usize = 128;

/// Replies to recent requests, by (cookie, peer), for retransmissions. Sans-IO: time comes in.
/// Bounded by count and by bytes (cookies and replies), oldest evicted first, so a flood of
/// requests with fresh cookies cannot grow it past either bound.
#[derive(Debug)]
pub struct ReplyCache {
    ttl: Duration,
    capacity: usize,
    max_bytes: usize,
    /// Bytes kept now, as [`ReplyCache::cost`] counts them.
    bytes: usize,
    replies: HashMap<(Vec<u8>, SocketAddr), Vec<u8>>,
    /// Insertion order with expiry, oldest first.
    order: VecDeque<(Instant, Vec<u8>, SocketAddr)>,
}

impl ReplyCache {
    /// A cache keeping replies for `ttl`, at most `capacity` of them and `max_bytes` in all
    /// (oldest go first).
    pub fn new(ttl: Duration, capacity: usize, max_bytes: usize) -> Self {
        ReplyCache {
            ttl,
            capacity,
            max_bytes,
            bytes: 0,
            replies: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The reply already sent for `cookie` from `peer`, if it is still kept at `now`.
    pub fn get(&mut self, cookie: &[u8], peer: SocketAddr, now: Instant) -> Option<&[u8]> {
        self.expire(now);
        self.replies
            .get(&(cookie.to_vec(), peer))
            .map(|v| v.as_slice())
    }

    /// Remembers the reply to `cookie` from `peer` (the first one, if it is already kept; not
    /// at all if it alone is over the byte bound).
    pub fn put(&mut self, cookie: &[u8], peer: SocketAddr, reply: Vec<u8>, now: Instant) {
        self.expire(now);
        let cost = Self::cost(cookie, &reply);
        let key = (cookie.to_vec(), peer);
        if cost > self.max_bytes || self.replies.contains_key(&key) {
            return;
        }
        while !self.order.is_empty()
            && (self.replies.len() >= self.capacity || self.bytes + cost > self.max_bytes)
        {
            self.evict_oldest();
        }
        if self.replies.len() >= self.capacity {
            return;
        }
        self.replies.insert(key, reply);
        self.bytes += cost;
        self.order
            .push_back((now + self.ttl, cookie.to_vec(), peer));
    }

    /// Replies kept.
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// Bytes kept (cookies, replies and a fixed cost per entry).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What keeping `reply` to `cookie` costs: the cookie twice (map key and order entry).
    fn cost(cookie: &[u8], reply: &[u8]) -> usize {
        2 * cookie.len() + reply.len() + ENTRY_OVERHEAD
    }

    fn evict_oldest(&mut self) {
        if let Some((_, c, p)) = self.order.pop_front() {
            let key = (c, p);
            if let Some(r) = self.replies.remove(&key) {
                self.bytes -= Self::cost(&key.0, &r);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(t, _, _)| *t <= now) {
            self.evict_oldest();
        }
    }
}

/// What the ng listener counts (exported on `/metrics`).
#[derive(Debug, Default)]
pub struct NgCounters {
    /// Requests answered, retransmissions included.
    pub requests: AtomicU64,
    /// Retransmissions answered from the cache.
    pub retransmissions: AtomicU64,
    /// Error replies.
    pub errors: AtomicU64,
    /// Datagrams that were not ng requests (no reply possible without a cookie).
    pub malformed: AtomicU64,
    /// Request keys tonegate does not act on (ignored, as rtpengine ignores unknown keys).
    pub unknown_keys: AtomicU64,
    /// Offers refused because masking could not be guaranteed (SRTP, DTLS, no G.711).
    pub refused_offers: AtomicU64,
    /// Datagrams from sources outside `[ng] allow`, dropped unanswered.
    pub dropped_foreign: AtomicU64,
}

/// Most replies the reply cache keeps, whatever their size.
const MAX_REPLIES: usize = 100_000;

/// The ng call map's size below which ended calls are not swept.
const MIN_SWEEP: usize = 64;

/// Most bytes of call ids a `list` reply carries, so it fits one UDP datagram.
const LIST_BUDGET: usize = 60_000;

/// Keys tonegate reads or knowingly accepts without acting on (anything else is counted).
const KNOWN_KEYS: &[&str] = &[
    "command",
    "call id",
    "from tag",
    "to tag",
    "via branch",
    "sdp",
    "flags",
    "replace",
    "received from",
    "supports",
    "ice",
    "label",
    "from label",
    "to label",
    "set label",
    "dtmf security",
    "delay buffer",
    "trigger",
    "trigger end",
    "end trigger",
    "trigger end time",
    "trigger end digits",
    "address",
    "address family",
    "media address",
    "transport protocol",
    "rtcp mux",
    "sdes",
    "dtls",
    "direction",
    "all",
    "tonegate callguid",
    "delete delay",
    "limit",
    "digit",
    "code",
    "record call",
    "metadata",
    "ptime",
    "codec",
    "dtmf log dest",
    "interface",
    "from interface",
    "to interface",
    "osrtp",
    "t.38",
    "tos",
];

/// The commands [`NgService`] answers, as its metrics label them (anything else: `other`).
const COMMANDS: &[&str] = &[
    "ping",
    "offer",
    "answer",
    "delete",
    "query",
    "list",
    "block dtmf",
    "unblock dtmf",
    "block media",
    "unblock media",
    "statistics",
];

/// A normalised command name as a bounded metric label.
fn command_label(command: &str) -> &'static str {
    COMMANDS
        .iter()
        .find(|c| **c == command)
        .copied()
        .unwrap_or("other")
}

/// One ng call.
#[derive(Debug, Clone)]
struct NgCall {
    relay_id: String,
    /// The first offer's `from-tag`: the caller, whose keys are masked.
    offerer: String,
    /// The other party's tag, once an answer named it.
    answerer: Option<String>,
    /// Labels by tag.
    labels: HashMap<String, String>,
    /// The relay's caller-leg and agent-leg addresses.
    locals: [SocketAddr; 2],
    /// Each side's media host, from its SDP.
    hosts: [Option<IpAddr>; 2],
    /// Each side's media address, from its SDP.
    remotes: [Option<SocketAddr>; 2],
    created: u64,
    last_signal: u64,
}

/// The ng commands over the relay. See the module documentation.
pub struct NgService {
    relay: Relay,
    cfg: NgConfig,
    account: Option<String>,
    policy: DtmfMasking,
    default_mode: MaskingMode,
    calls: Mutex<HashMap<String, NgCall>>,
    /// The size of `calls` at which the next sweep of ended calls runs.
    sweep_at: std::sync::atomic::AtomicUsize,
    /// The peers that may send commands (`[ng] allow`).
    allow: Vec<ipnet::IpNet>,
    cache: Mutex<ReplyCache>,
    counters: NgCounters,
    latency: crate::latency::NgLatency,
    started: Instant,
    /// Wall-clock time (when a call was last signalled).
    clock: Clock,
}

use crate::clock::Clock;

impl NgService {
    /// A service creating calls on `relay` for `cfg.owner`, masked by `policy`.
    pub fn new(
        relay: Relay,
        cfg: NgConfig,
        account: Option<String>,
        policy: DtmfMasking,
        default_mode: MaskingMode,
        clock: Clock,
    ) -> Self {
        let ttl = Duration::from_secs(cfg.reply_cache_s);
        // Validated at load; were it not, nobody is allowed (closed, not open).
        let allow = cfg.allow_nets().unwrap_or_else(|why| {
            tracing::error!(%why, "ng: no peer is allowed");
            Vec::new()
        });
        let cache = ReplyCache::new(ttl, MAX_REPLIES, cfg.reply_cache_bytes);
        NgService {
            relay,
            cfg,
            account,
            policy,
            default_mode,
            calls: Mutex::new(HashMap::new()),
            sweep_at: std::sync::atomic::AtomicUsize::new(MIN_SWEEP),
            allow,
            cache: Mutex::new(cache),
            counters: NgCounters::default(),
            latency: Default::default(),
            started: Instant::now(),
            clock,
        }
    }

    /// The listener's counters.
    pub fn counters(&self) -> &NgCounters {
        &self.counters
    }

    /// Bytes the reply cache keeps now (exported on `/metrics`).
    pub fn reply_cache_bytes(&self) -> usize {
        self.cache.lock().expect("cache lock").bytes()
    }

    /// Whether `ip` may send commands (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn allows(&self, ip: IpAddr) -> bool {
        crate::networks::contains(&self.allow, ip)
    }

    /// Request durations by command and outcome (exported on `/metrics`).
    pub fn latency(&self) -> &crate::latency::NgLatency {
        &self.latency
    }

    /// Answers one datagram from `peer` (`None`: not an ng request at all — nothing to send).
    /// Sources outside `[ng] allow` get nothing, not even an error: the port looks closed.
    pub async fn handle(&self, datagram: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        if !self.allows(peer.ip()) {
            self.counters.dropped_foreign.fetch_add(1, Relaxed);
            return None;
        }
        let now = Instant::now();
        let cookie = match message::split_cookie(datagram) {
            // A reply echoes the cookie and the cache keeps it: an overlong one is not answered.
            Ok((cookie, _)) if cookie.len() <= message::MAX_COOKIE => cookie,
            _ => {
                self.counters.malformed.fetch_add(1, Relaxed);
                return None;
            }
        };
        self.counters.requests.fetch_add(1, Relaxed);
        if let Some(r) = self
            .cache
            .lock()
            .expect("cache lock")
            .get(cookie, peer, now)
        {
            self.counters.retransmissions.fetch_add(1, Relaxed);
            return Some(r.to_vec());
        }
        let (format, answer, command) = match Request::parse(datagram) {
            Ok(req) => {
                let unknown = req
                    .keys()
                    .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
                    .count();
                self.counters
                    .unknown_keys
                    .fetch_add(unknown as u64, Relaxed);
                let command = command_label(&req.command());
                let answer = match req.over_limits() {
                    Some(why) => error(&why),
                    None => self.command(&req).await,
                };
                (req.format, answer, command)
            }
            Err(e) => (Format::Bencode, error(&e.to_string()), "other"),
        };
        let failed = matches!(&answer, Value::Dict(d) if d.iter().any(|(k, v)| k == b"result" && v.as_str() == Some("error")));
        if failed {
            self.counters.errors.fetch_add(1, Relaxed);
        }
        let out = reply(cookie, format, answer);
        self.cache
            .lock()
            .expect("cache lock")
            .put(cookie, peer, out.clone(), now);
        let outcome = if failed { "error" } else { "ok" };
        self.latency.observe(command, outcome, now.elapsed());
        Some(out)
    }

    async fn command(&self, req: &Request) -> Value {
        match req.command().as_str() {
            "ping" => Value::dict([("result", Value::str("pong"))]),
            "offer" => self.offer(req).await.unwrap_or_else(|e| e),
            "answer" => self.answer(req).await.unwrap_or_else(|e| e),
            "delete" => self.delete(req),
            "query" => self.query(req).unwrap_or_else(|e| e),
            "list" => self.list(req),
            "block dtmf" => self.dtmf(req, true).await.unwrap_or_else(|e| e),
            "unblock dtmf" => self.dtmf(req, false).await.unwrap_or_else(|e| e),
            "block media" => self.media(req, true).await.unwrap_or_else(|e| e),
            "unblock media" => self.media(req, false).await.unwrap_or_else(|e| e),
            "statistics" => self.statistics(),
            _ => error("Unrecognized command"),
        }
    }

    fn access(&self) -> Access<'_> {
        Access::Owner(&self.cfg.owner)
    }

    /// The live ng call `call_id` (forgotten if its relay call is gone).
    fn call(&self, call_id: &str) -> Option<NgCall> {
        let mut calls = self.calls.lock().expect("ng calls lock");
        let c = calls.get(call_id)?.clone();
        if self.relay.get(&c.relay_id, self.access()).is_none() {
            calls.remove(call_id);
            return None;
        }
        Some(c)
    }

    fn remember(&self, call_id: &str, c: NgCall) {
        let mut calls = self.calls.lock().expect("ng calls lock");
        calls.insert(call_id.to_string(), c);
        // Calls that ended elsewhere (media timeout, the relay API) with no `delete` are
        // forgotten once the map has doubled since the last sweep: amortised O(1) per call,
        // and the map stays within about twice the live calls.
        if calls.len() >= self.sweep_at.load(Relaxed) {
            self.forget_ended(&mut calls);
            self.sweep_at
                .store((2 * calls.len()).max(MIN_SWEEP), Relaxed);
        }
    }

    /// Drops the ng calls whose relay call is gone.
    fn forget_ended(&self, calls: &mut HashMap<String, NgCall>) {
        calls.retain(|_, c| self.relay.has_call(&c.relay_id));
    }

    async fn offer(&self, req: &Request) -> Result<Value, Value> {
        let call_id = req
            .str("call-id")
            .ok_or_else(|| error("No call-id in message"))?;
        let from = req
            .str("from-tag")
            .ok_or_else(|| error("No from-tag in message"))?;
        let sdp = self.sdp(req)?;
        let stream = sdp.stream().clone();
        let replace_origin = req.strs("replace").iter().any(|r| r == "origin");
        let host = self.media_host(req, &stream);
        if let Some(mut call) = self.call(call_id) {
            // A re-offer (hold, a new address) keeps the call's ports.
            let side = if from == call.offerer {
                Side::Caller
            } else {
                if call.answerer.is_none() {
                    call.answerer = Some(from.to_string());
                }
                Side::Agent
            };
            let port = stream.remote.map(|r| r.port());
            self.update_side(&mut call, side, host, port).await?;
            self.label(&mut call, from, req);
            call.last_signal = self.clock.unix_now();
            let out = sdp.rewrite(call.locals[side.other() as usize], replace_origin);
            self.remember(call_id, call);
            return Ok(ok_sdp(out));
        }
        // Masked as sessions mask theirs, so a card number in a call id is never stored.
        let guid = crate::card::redact::redact_card_numbers(
            req.str("tonegate-callguid").unwrap_or(call_id),
        );
        let info = self
            .relay
            .create_call(NewCall {
                call_guid: guid,
                law: stream.law,
                event_pt: stream.event_pt,
                caller_remote: match (stream.remote, host) {
                    (Some(r), Some(h)) => RemoteRule::Sdp(SocketAddr::new(h, r.port())),
                    (_, Some(h)) => RemoteRule::Host(h),
                    _ => RemoteRule::Any,
                },
                // Nothing may take the agent leg before the answer says who it is.
                agent_remote: RemoteRule::Closed,
                rtcp_mux: false,
                ipv6: host.is_some_and(|h| h.is_ipv6()) || req.str("address-family") == Some("IP6"),
                masking: Some(self.masking_mode(req)),
                owner: self.cfg.owner.clone(),
                account: self.account.clone(),
                policy: self.policy,
            })
            .map_err(|e| self.refusal(req, e))?;
        let now = self.clock.unix_now();
        let mut call = NgCall {
            relay_id: info.id,
            offerer: from.to_string(),
            answerer: None,
            labels: HashMap::new(),
            locals: [info.caller.local, info.agent.local],
            hosts: [host, None],
            remotes: [
                stream
                    .remote
                    .map(|r| SocketAddr::new(host.unwrap_or(r.ip()), r.port())),
                None,
            ],
            created: now,
            last_signal: now,
        };
        self.label(&mut call, from, req);
        let out = sdp.rewrite(call.locals[Side::Agent as usize], replace_origin);
        // Logged masked, as the relay stores it: a call id is caller-controlled text.
        let logged_id = crate::card::redact::redact_card_numbers(call_id);
        tracing::info!(call_id = %logged_id, relay = %call.relay_id, law = ?stream.law, "ng offer: call set up");
        self.remember(call_id, call);
        Ok(ok_sdp(out))
    }

    async fn answer(&self, req: &Request) -> Result<Value, Value> {
        let call_id = req
            .str("call-id")
            .ok_or_else(|| error("No call-id in message"))?;
        let to = req
            .str("to-tag")
            .ok_or_else(|| error("No to-tag in message"))?;
        let mut call = self.call(call_id).ok_or_else(|| error("Unknown call-id"))?;
        let sdp = self.sdp(req)?;
        let replace_origin = req.strs("replace").iter().any(|r| r == "origin");
        let host = self.media_host(req, sdp.stream());
        // The answer's SDP is the to-tag party's.
        let side = if to == call.offerer {
            Side::Caller
        } else {
            if call.answerer.is_none() {
                call.answerer = Some(to.to_string());
            }
            Side::Agent
        };
        let port = sdp.stream().remote.map(|r| r.port());
        self.update_side(&mut call, side, host, port).await?;
        self.label(&mut call, to, req);
        call.last_signal = self.clock.unix_now();
        let out = sdp.rewrite(call.locals[side.other() as usize], replace_origin);
        self.remember(call_id, call);
        Ok(ok_sdp(out))
    }

    /// The SDP of a request, checked (refusals counted).
    fn sdp(&self, req: &Request) -> Result<sdp::Sdp, Value> {
        let body = req
            .str("sdp")
            .ok_or_else(|| error("No SDP body in message"))?;
        sdp::Sdp::parse(body).map_err(|e| {
            if !matches!(e, sdp::SdpError::Malformed(_)) {
                self.counters.refused_offers.fetch_add(1, Relaxed);
            }
            tracing::info!(error = %e, "ng SDP refused");
            error(&e.to_string())
        })
    }

    /// Where the party's media comes from: its SDP's host (`trust-address`, the default), or
    /// the SIP message's source (`SIP-source-address`, from `received-from`).
    fn media_host(&self, req: &Request, stream: &sdp::AudioStream) -> Option<IpAddr> {
        let sip_source = req.flag("SIP-source-address") && !req.flag("trust-address");
        if sip_source {
            if let Some(Value::List(l)) = req.get("received-from") {
                if let Some(ip) = l
                    .get(1)
                    .and_then(|v| v.as_str())
                    .and_then(|s| s.parse().ok())
                {
                    return Some(ip);
                }
            }
        }
        if let Some(ip) = req.str("media-address").and_then(|s| s.parse().ok()) {
            return Some(ip);
        }
        stream.host
    }

    /// A side's SDP named `host` and `port` (None: on hold, or no address): media goes
    /// there, and its leg latches within that host.
    async fn update_side(
        &self,
        call: &mut NgCall,
        side: Side,
        host: Option<IpAddr>,
        port: Option<u16>,
    ) -> Result<(), Value> {
        let (Some(host), Some(port)) = (host, port) else {
            return Ok(());
        };
        let to = SocketAddr::new(host, port);
        if call.remotes[side as usize] == Some(to) {
            return Ok(());
        }
        call.hosts[side as usize] = Some(host);
        call.remotes[side as usize] = Some(to);
        self.relay
            .set_remote(&call.relay_id, side, RemoteRule::Sdp(to))
            .await
            .map_err(|e| error(&e.to_string()))
    }

    fn label(&self, call: &mut NgCall, tag: &str, req: &Request) {
        if let Some(l) = req.str("label").or_else(|| req.str("from-label")) {
            call.labels.insert(tag.to_string(), l.to_string());
        }
    }

    /// `DTMF-security` as a masking mode: `drop` and `silence` mask with silence, the tone
    /// and digit modes with the uniform beep (events are never re-rendered as a key); the
    /// in-band audio is masked whatever the mode says.
    fn masking_mode(&self, req: &Request) -> MaskingMode {
        match req
            .str("DTMF-security")
            .map(|m| m.to_ascii_lowercase())
            .as_deref()
        {
            Some("silence" | "drop") => MaskingMode::Silence,
            Some("tone" | "random" | "zero" | "dtmf") => MaskingMode::Beep,
            _ => self.default_mode,
        }
    }

    /// A relay refusal, as the proxy should see it: `load limit` where it said it supports
    /// that, else the error strings Kamailio fails over on.
    fn refusal(&self, req: &Request, e: RelayError) -> Value {
        match e {
            RelayError::Exhausted(why) => {
                // Draining is rtpengine's max-sessions at 0 (how its nodes are drained): the
                // answer Kamailio's set moves on to another node for. Re-offers of live calls
                // never get here.
                let draining = self.relay.is_draining();
                let reason = if draining || why.contains("call limit") {
                    "Parallel session limit reached"
                } else {
                    "Ran out of ports"
                };
                if draining {
                    tracing::info!("ng offer refused: this node is draining (no new calls)");
                }
                if req.strs("supports").iter().any(|s| s == "load limit") {
                    Value::dict([
                        ("result", Value::str("load limit")),
                        ("message", Value::str(reason)),
                    ])
                } else {
                    error(reason)
                }
            }
            other => error(&other.to_string()),
        }
    }

    fn delete(&self, req: &Request) -> Value {
        let Some(call_id) = req.str("call-id") else {
            return error("No call-id in message");
        };
        let call = self.calls.lock().expect("ng calls lock").remove(call_id);
        match call {
            Some(c) => {
                let _ = self.relay.delete(&c.relay_id, self.access());
                let logged_id = crate::card::redact::redact_card_numbers(call_id);
                tracing::info!(call_id = %logged_id, relay = %c.relay_id, "ng delete: call ended");
                Value::dict([("result", Value::str("ok"))])
            }
            None if req.flag("fatal") => error("Unknown call-id"),
            None => Value::dict([
                ("result", Value::str("ok")),
                ("warning", Value::str("Unknown call-id")),
            ]),
        }
    }

    fn query(&self, req: &Request) -> Result<Value, Value> {
        let call_id = req
            .str("call-id")
            .ok_or_else(|| error("No call-id in message"))?;
        let call = self.call(call_id).ok_or_else(|| error("Unknown call-id"))?;
        let info = self
            .relay
            .get(&call.relay_id, self.access())
            .ok_or_else(|| error("Unknown call-id"))?;
        let c = info.counters;
        let tag = |tag: &str, side: Side, other: Option<&str>| {
            let leg = if side == Side::Caller {
                &info.caller
            } else {
                &info.agent
            };
            let mut d = vec![
                ("tag", Value::str(tag)),
                ("created", Value::Int(call.created as i64)),
                (
                    "label",
                    Value::str(call.labels.get(tag).map(String::as_str).unwrap_or("")),
                ),
                (
                    "medias",
                    Value::List(vec![Value::dict([
                        ("index", Value::Int(1)),
                        ("type", Value::str("audio")),
                        ("protocol", Value::str("RTP/AVP")),
                        (
                            "streams",
                            Value::List(vec![Value::dict([
                                ("local port", Value::Int(leg.local.port() as i64)),
                                ("endpoint", endpoint(leg.remote)),
                            ])]),
                        ),
                    ])]),
                ),
            ];
            if let Some(o) = other {
                d.push(("in dialogue with", Value::str(o)));
            }
            Value::dict(d)
        };
        let answerer = call.answerer.clone().unwrap_or_default();
        let tags = Value::Dict(vec![
            (
                call.offerer.as_bytes().to_vec(),
                tag(&call.offerer, Side::Caller, Some(&answerer)),
            ),
            (
                answerer.as_bytes().to_vec(),
                tag(&answerer, Side::Agent, Some(&call.offerer)),
            ),
        ]);
        let totals = |packets: u64, bytes: u64, errors: u64| {
            Value::dict([
                ("packets", Value::Int(packets as i64)),
                ("bytes", Value::Int(bytes as i64)),
                ("errors", Value::Int(errors as i64)),
            ])
        };
        Ok(Value::dict([
            ("result", Value::str("ok")),
            ("created", Value::Int(call.created as i64)),
            ("last signal", Value::Int(call.last_signal as i64)),
            ("tags", tags),
            (
                "totals",
                Value::dict([
                    (
                        "RTP",
                        totals(c.caller_rtp_in + c.agent_rtp_in, c.bytes_in, c.malformed),
                    ),
                    ("RTCP", totals(c.rtcp, 0, 0)),
                ]),
            ),
        ]))
    }

    fn list(&self, req: &Request) -> Value {
        let limit = req.int("limit").filter(|l| *l > 0).unwrap_or(32) as usize;
        let mut calls = self.calls.lock().expect("ng calls lock");
        self.forget_ended(&mut calls);
        // As many as asked for that fit one datagram (each id: its text and a length prefix).
        let mut budget = LIST_BUDGET;
        let ids = calls
            .keys()
            .take(limit)
            .take_while(|k| {
                let cost = k.len() + 6;
                budget = budget.saturating_sub(cost);
                budget > 0
            })
            .map(|k| Value::str(k))
            .collect();
        Value::dict([("result", Value::str("ok")), ("calls", Value::List(ids))])
    }

    /// The party a `block`/`unblock` names: `Some(side)`, or `None` for the whole call.
    fn party(&self, call: &NgCall, req: &Request) -> Result<Option<Side>, Value> {
        if req.flag("all") || req.str("all") == Some("all") {
            return Ok(None);
        }
        let side_of = |tag: &str| {
            if tag == call.offerer {
                Ok(Some(Side::Caller))
            } else if call.answerer.as_deref() == Some(tag) {
                Ok(Some(Side::Agent))
            } else {
                Err(error("Unknown from-tag"))
            }
        };
        if let Some(label) = req.str("label") {
            let tag = call
                .labels
                .iter()
                .find(|(_, l)| l.as_str() == label)
                .map(|(t, _)| t.clone())
                .ok_or_else(|| error("Unknown label"))?;
            return side_of(&tag);
        }
        if let Some(addr) = req.str("address").and_then(|a| a.parse::<IpAddr>().ok()) {
            return match call.hosts.iter().position(|h| *h == Some(addr)) {
                Some(0) => Ok(Some(Side::Caller)),
                Some(_) => Ok(Some(Side::Agent)),
                None => Err(error("Unknown address")),
            };
        }
        match req.str("from-tag") {
            Some(tag) => side_of(tag),
            None => Ok(None),
        }
    }

    /// `block DTMF` holds secure mode for the caller's keys; `unblock DTMF` releases it, and is
    /// refused with the reason while a capture holds the call, within the hold-off after a
    /// key, or when the account masks the whole call.
    async fn dtmf(&self, req: &Request, block: bool) -> Result<Value, Value> {
        let call_id = req
            .str("call-id")
            .ok_or_else(|| error("No call-id in message"))?;
        let call = self.call(call_id).ok_or_else(|| error("Unknown call-id"))?;
        let party = self.party(&call, req)?;
        let off = req
            .str("DTMF-security")
            .is_some_and(|m| m.eq_ignore_ascii_case("off"));
        let on = block && !off;
        if party == Some(Side::Agent) {
            // The answerer's keys are not card data, and tonegate masks the caller's only.
            return if on {
                Err(error(
                    "tonegate masks the keys of the calling party (the offerer) only; block DTMF \
                     for the caller's from-tag or the whole call",
                ))
            } else {
                Ok(ok())
            };
        }
        self.relay
            .request_secure(&call.relay_id, self.access(), on)
            .await
            .map_err(|e| error(&e.to_string()))?;
        Ok(ok())
    }

    async fn media(&self, req: &Request, block: bool) -> Result<Value, Value> {
        let call_id = req
            .str("call-id")
            .ok_or_else(|| error("No call-id in message"))?;
        let call = self.call(call_id).ok_or_else(|| error("Unknown call-id"))?;
        let sides = match self.party(&call, req)? {
            Some(s) => vec![s],
            None => vec![Side::Caller, Side::Agent],
        };
        for s in sides {
            self.relay
                .block_media(&call.relay_id, s, block)
                .await
                .map_err(|e| error(&e.to_string()))?;
        }
        Ok(ok())
    }

    fn statistics(&self) -> Value {
        let n = {
            let mut calls = self.calls.lock().expect("ng calls lock");
            self.forget_ended(&mut calls);
            calls.len() as i64
        };
        let t = self.relay.totals();
        Value::dict([
            ("result", Value::str("ok")),
            (
                "statistics",
                Value::dict([
                    (
                        "currentstatistics",
                        Value::dict([
                            ("sessionsown", Value::Int(n)),
                            ("sessionsforeign", Value::Int(0)),
                            ("sessionstotal", Value::Int(n)),
                            ("transcodedmedia", Value::Int(0)),
                        ]),
                    ),
                    (
                        "totalstatistics",
                        Value::dict([
                            (
                                "uptime",
                                Value::Int(self.started.elapsed().as_secs() as i64),
                            ),
                            ("managedsessions", Value::Int(t.calls_created as i64)),
                            ("rejectedsessions", Value::Int(t.calls_refused as i64)),
                            ("timeoutsessions", Value::Int(t.calls_timed_out as i64)),
                        ]),
                    ),
                ]),
            ),
        ])
    }
}

fn ok() -> Value {
    Value::dict([("result", Value::str("ok"))])
}

fn ok_sdp(sdp: String) -> Value {
    Value::dict([
        ("result", Value::str("ok")),
        ("sdp", Value::Bytes(sdp.into_bytes())),
    ])
}

fn endpoint(a: Option<SocketAddr>) -> Value {
    match a {
        Some(a) => Value::dict([
            (
                "family",
                Value::str(if a.is_ipv4() { "IPv4" } else { "IPv6" }),
            ),
            ("address", Value::str(&a.ip().to_string())),
            ("port", Value::Int(a.port() as i64)),
        ]),
        None => Value::dict([]),
    }
}

/// Serves ng on `socket` until the task is dropped: one request at a time, in arrival order
/// (each takes well under a millisecond; the relay does the IO).
pub async fn listen(socket: tokio::net::UdpSocket, service: Arc<NgService>) {
    let mut buf = vec![0u8; message::MAX_MESSAGE + 1];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(out) = service.handle(&buf[..n], peer).await {
            if let Err(e) = socket.send_to(&out, peer).await {
                tracing::warn!(%peer, error = %e, "ng reply not sent");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_answers_retransmissions_until_they_expire() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(Duration::from_secs(30), 2, 1 << 20);
        let p: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let q: SocketAddr = "127.0.0.1:5061".parse().unwrap();
        c.put(b"1", p, b"one".to_vec(), t0);
        assert_eq!(
            c.get(b"1", p, t0 + Duration::from_secs(29)),
            Some(&b"one"[..])
        );
        assert_eq!(
            c.get(b"1", q, t0),
            None,
            "another peer's cookie is another request"
        );
        assert_eq!(c.get(b"1", p, t0 + Duration::from_secs(30)), None);
        // Capacity: the oldest goes first.
        c.put(b"a", p, b"A".to_vec(), t0);
        c.put(b"b", p, b"B".to_vec(), t0);
        c.put(b"c", p, b"C".to_vec(), t0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(b"a", p, t0), None);
        assert_eq!(c.get(b"c", p, t0), Some(&b"C"[..]));
    }

    #[test]
    fn the_cache_stays_within_its_byte_bound_evicting_the_oldest() {
        let t0 = Instant::now();
        let p: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let reply = vec![b'r'; 1000];
        let each = ReplyCache::cost(b"c0000", &reply);
        // Room for exactly three entries of this size.
        let mut c = ReplyCache::new(Duration::from_secs(60), 1000, 3 * each);
        for i in 0..100 {
            let cookie = format!("c{i:04}");
            c.put(cookie.as_bytes(), p, reply.clone(), t0);
            assert!(c.bytes() <= 3 * each, "{} > {}", c.bytes(), 3 * each);
        }
        assert_eq!((c.len(), c.bytes()), (3, 3 * each));
        // The newest three are kept; the oldest went first.
        assert!(c.get(b"c0096", p, t0).is_none());
        assert!(c.get(b"c0097", p, t0).is_some() && c.get(b"c0099", p, t0).is_some());
        // One reply bigger than the whole bound is answered but not kept, and evicts nothing.
        c.put(b"huge", p, vec![0; 4 * each], t0);
        assert!(c.get(b"huge", p, t0).is_none());
        assert_eq!(c.len(), 3);
        // A large reply pushes out as many old ones as it needs.
        c.put(b"big", p, vec![0; 2 * each - ENTRY_OVERHEAD - 6], t0);
        assert_eq!(c.len(), 2, "two of the three made room");
        assert!(c.get(b"c0099", p, t0).is_some() && c.get(b"big", p, t0).is_some());
        assert!(c.bytes() <= 3 * each);
        // Expiry gives the bytes back.
        assert_eq!(c.get(b"big", p, t0 + Duration::from_secs(60)), None);
        assert_eq!((c.len(), c.bytes()), (0, 0));
        // A retransmission's reply is kept once: the first stays, the bytes count once.
        c.put(b"x", p, b"first".to_vec(), t0);
        c.put(b"x", p, b"second".to_vec(), t0);
        assert_eq!(c.get(b"x", p, t0), Some(&b"first"[..]));
        assert_eq!(c.bytes(), ReplyCache::cost(b"x", b"first"));
    }

    #[test]
    fn allow_matches_cidrs_and_ipv4_mapped_peers() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let service = |allow: Option<Vec<String>>| {
                let relay = Relay::new(crate::config::RelayConfig {
                    engine: crate::config::RelayEngine::Tokio,
                    ..Default::default()
                })
                .unwrap();
                NgService::new(
                    relay,
                    NgConfig {
                        allow,
                        ..NgConfig::default()
                    },
                    None,
                    DtmfMasking::Call,
                    MaskingMode::Silence,
                    Clock::system(),
                )
            };
            let ip = |s: &str| s.parse::<IpAddr>().unwrap();
            let loopback = service(None);
            for ok in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
                assert!(loopback.allows(ip(ok)), "{ok}");
            }
            for no in ["10.0.0.1", "::ffff:10.0.0.1", "fe80::1", "0.0.0.0"] {
                assert!(!loopback.allows(ip(no)), "{no}");
            }
            let proxies = service(Some(vec!["10.0.0.0/24".into(), "fd00::7".into()]));
            for ok in ["10.0.0.9", "::ffff:10.0.0.9", "fd00::7"] {
                assert!(proxies.allows(ip(ok)), "{ok}");
            }
            for no in ["10.0.1.9", "127.0.0.1", "::1", "fd00::8"] {
                assert!(!proxies.allows(ip(no)), "{no}");
            }
            // A bad list (never past config validation) allows nobody.
            assert!(!service(Some(vec!["nonsense".into()])).allows(ip("127.0.0.1")));
            // Dropped before anything is read: no reply, counted as foreign, not as a request.
            let d = b"c1 d7:command4:pinge";
            assert!(proxies
                .handle(d, "127.0.0.1:5060".parse().unwrap())
                .await
                .is_none());
            assert!(proxies
                .handle(d, "10.0.0.9:5060".parse().unwrap())
                .await
                .is_some());
            let n = proxies.counters();
            assert_eq!(
                (n.dropped_foreign.load(Relaxed), n.requests.load(Relaxed)),
                (1, 1)
            );
        });
    }

    #[test]
    fn unsupported_codecs_and_modes_map_as_documented() {
        let req = |ds: &str| {
            Request::parse(
                format!("c d7:command5:offer13:DTMF-security{}:{ds}e", ds.len()).as_bytes(),
            )
            .unwrap()
        };
        let relay_cfg = crate::config::RelayConfig {
            engine: crate::config::RelayEngine::Tokio,
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let relay = Relay::new(relay_cfg).unwrap();
            let svc = NgService::new(
                relay,
                NgConfig::default(),
                None,
                DtmfMasking::Call,
                MaskingMode::ComfortNoise { level_dbm0: -55.0 },
                Clock::system(),
            );
            assert_eq!(svc.masking_mode(&req("drop")), MaskingMode::Silence);
            assert_eq!(svc.masking_mode(&req("silence")), MaskingMode::Silence);
            assert_eq!(svc.masking_mode(&req("random")), MaskingMode::Beep);
            assert_eq!(svc.masking_mode(&req("DTMF")), MaskingMode::Beep);
            assert!(matches!(
                svc.masking_mode(&req("x")),
                MaskingMode::ComfortNoise { .. }
            ));
        });
    }
}

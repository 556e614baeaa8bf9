//! rtpengine's ng control protocol over the relay, so Kamailio's and OpenSIPS's `rtpengine`
//! modules drive tonegate with their configuration unchanged (`docs/ng_control_protocol.md` in
//! sipwise/rtpengine).
//!
//! The protocol itself (bencode, messages, SDP, typed commands, replies and errors, the call's
//! party rules) is the sans-IO crate `tonegate-ng`; this module is its shell: [`NgService`]
//! carries the commands out on the relay, [`listen`] is the UDP socket.
//!
//! One ng call (Call-ID) is one relay call. The offerer (the first offer's `from-tag`) is the
//! caller whose keys are masked toward the other party; its SDP names the caller leg's remote,
//! the answer names the agent leg's. The ng calls belong to `[ng] owner` (and account), so
//! that client's GlobalPCI sessions link to them by Call-ID (or `tonegate-callguid`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonegate_dsp::MaskingMode;
pub use tonegate_ng::{bencode, message, sdp, ReplyCache};
use tonegate_ng::{
    reply, CallReport, Command, Incoming, Limit, NgCall, NgError, Party, PartyReport, Reply,
    Signal, Statistics, Target,
};

use crate::clock::Clock;
use crate::config::{DtmfMasking, NgConfig};
use crate::media::{RemoteRule, Side};
use crate::relay::{Access, NewCall, Relay, RelayError};

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

/// The ng call map's size below which ended calls are not swept.
const MIN_SWEEP: usize = 64;

/// The relay leg facing a party: the offerer is the caller.
fn side(party: Party) -> Side {
    match party {
        Party::Offerer => Side::Caller,
        Party::Answerer => Side::Agent,
    }
}

/// A relay error as the proxy sees it.
fn relay_error(e: RelayError) -> NgError {
    NgError::Relay(e.to_string())
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
        let cache = ReplyCache::new(ttl, tonegate_ng::MAX_REPLIES, cfg.reply_cache_bytes);
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
        let incoming = Incoming::read(datagram);
        self.counters
            .unknown_keys
            .fetch_add(incoming.unknown_keys as u64, Relaxed);
        let answer = match incoming.command {
            Ok(command) => self.command(command).await,
            Err(e) => Err(e),
        };
        let failed = answer.as_ref().is_err_and(NgError::is_error_reply);
        if failed {
            self.counters.errors.fetch_add(1, Relaxed);
        }
        let out = reply::encode(cookie, incoming.format, &answer);
        self.cache
            .lock()
            .expect("cache lock")
            .put(cookie, peer, out.clone(), now);
        let outcome = if failed { "error" } else { "ok" };
        self.latency.observe(incoming.label, outcome, now.elapsed());
        Some(out)
    }

    async fn command(&self, command: Command) -> Result<Reply, NgError> {
        match command {
            Command::Ping => Ok(Reply::Pong),
            Command::Offer(s) => self.offer(&s).await,
            Command::Answer(s) => self.answer(&s).await,
            Command::Delete { call_id, fatal } => self.delete(&call_id, fatal),
            Command::Query { call_id } => self.query(&call_id),
            Command::List { limit } => Ok(self.list(limit)),
            Command::Dtmf { target, secure } => self.dtmf(&target, secure).await,
            Command::Media { target, block } => self.media(&target, block).await,
            Command::Statistics => Ok(self.statistics()),
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

    async fn offer(&self, offer: &Signal) -> Result<Reply, NgError> {
        let call_id = &offer.call_id;
        let sdp = self.sdp(offer)?;
        let stream = sdp.stream().clone();
        if let Some(call) = self.call(call_id) {
            // A re-offer (hold, a new address) keeps the call's ports.
            return self.signal(call, offer, &sdp).await;
        }
        let host = offer.media_host(&stream);
        // Masked as sessions mask theirs, so a card number in a call id is never stored.
        let guid =
            crate::card::redact::redact_card_numbers(offer.call_guid.as_deref().unwrap_or(call_id));
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
                ipv6: host.is_some_and(|h| h.is_ipv6()) || offer.ipv6,
                masking: Some(offer.masking.unwrap_or(self.default_mode)),
                owner: self.cfg.owner.clone(),
                account: self.account.clone(),
                policy: self.policy,
            })
            .map_err(|e| refusal(offer, e, self.relay.is_draining()))?;
        let call = NgCall::new(
            info.id,
            offer,
            [info.caller.local, info.agent.local],
            host,
            stream.remote,
            self.clock.unix_now(),
        );
        let out = call.offer_sdp(offer, &sdp);
        // Logged masked, as the relay stores it: a call id is caller-controlled text.
        let logged_id = crate::card::redact::redact_card_numbers(call_id);
        tracing::info!(call_id = %logged_id, relay = %call.relay_id, law = ?stream.law, "ng offer: call set up");
        self.remember(call_id, call);
        Ok(Reply::Sdp(out))
    }

    async fn answer(&self, answer: &Signal) -> Result<Reply, NgError> {
        let call = self.call(&answer.call_id).ok_or(NgError::UnknownCallId)?;
        let sdp = self.sdp(answer)?;
        self.signal(call, answer, &sdp).await
    }

    /// An offer or answer on a live call: the party's media moves on the relay (its leg
    /// latches within that host), and the other party gets the SDP.
    async fn signal(&self, mut call: NgCall, s: &Signal, sdp: &sdp::Sdp) -> Result<Reply, NgError> {
        let applied = call.apply(s, sdp, self.clock.unix_now());
        if let Some((party, to)) = applied.moved {
            self.relay
                .set_remote(&call.relay_id, side(party), RemoteRule::Sdp(to))
                .await
                .map_err(relay_error)?;
        }
        self.remember(&s.call_id, call);
        Ok(Reply::Sdp(applied.sdp))
    }

    /// The SDP of an offer or answer, checked (refusals counted).
    fn sdp(&self, s: &Signal) -> Result<sdp::Sdp, NgError> {
        s.sdp().inspect_err(|e| {
            if let NgError::Sdp(e) = e {
                if !matches!(e, sdp::SdpError::Malformed(_)) {
                    self.counters.refused_offers.fetch_add(1, Relaxed);
                }
                tracing::info!(error = %e, "ng SDP refused");
            }
        })
    }

    fn delete(&self, call_id: &str, fatal: bool) -> Result<Reply, NgError> {
        let call = self.calls.lock().expect("ng calls lock").remove(call_id);
        match call {
            Some(c) => {
                let _ = self.relay.delete(&c.relay_id, self.access());
                let logged_id = crate::card::redact::redact_card_numbers(call_id);
                tracing::info!(call_id = %logged_id, relay = %c.relay_id, "ng delete: call ended");
                Ok(Reply::Ok)
            }
            None if fatal => Err(NgError::UnknownCallId),
            None => Ok(Reply::UnknownCallDeleted),
        }
    }

    fn query(&self, call_id: &str) -> Result<Reply, NgError> {
        let call = self.call(call_id).ok_or(NgError::UnknownCallId)?;
        let info = self
            .relay
            .get(&call.relay_id, self.access())
            .ok_or(NgError::UnknownCallId)?;
        let c = info.counters;
        let party = |tag: &str, leg: &crate::relay::LegInfo| PartyReport {
            tag: tag.to_string(),
            label: call.labels.get(tag).cloned().unwrap_or_default(),
            local_port: leg.local.port(),
            endpoint: leg.remote,
        };
        Ok(Reply::Query(CallReport {
            created: call.created,
            last_signal: call.last_signal,
            parties: [
                party(&call.offerer, &info.caller),
                party(call.answerer_tag(), &info.agent),
            ],
            rtp_packets: c.caller_rtp_in + c.agent_rtp_in,
            rtp_bytes: c.bytes_in,
            rtp_errors: c.malformed,
            rtcp_packets: c.rtcp,
        }))
    }

    fn list(&self, limit: usize) -> Reply {
        let mut calls = self.calls.lock().expect("ng calls lock");
        self.forget_ended(&mut calls);
        Reply::list(calls.keys(), limit)
    }

    /// The live call a `block`/`unblock` is about, and the party it names (`None`: all).
    fn target(&self, target: &Target) -> Result<(NgCall, Option<Party>), NgError> {
        let call = self.call(&target.call_id).ok_or(NgError::UnknownCallId)?;
        let party = call.party(&target.party)?;
        Ok((call, party))
    }

    /// `block DTMF` holds secure mode for the caller's keys; `unblock DTMF` releases it, and is
    /// refused with the reason while a capture holds the call, within the hold-off after a
    /// key, or when the account masks the whole call.
    async fn dtmf(&self, target: &Target, on: bool) -> Result<Reply, NgError> {
        let (call, party) = self.target(target)?;
        if party == Some(Party::Answerer) {
            // The answerer's keys are not card data, and tonegate masks the caller's only.
            return if on {
                Err(NgError::AnswererKeys)
            } else {
                Ok(Reply::Ok)
            };
        }
        self.relay
            .request_secure(&call.relay_id, self.access(), on)
            .await
            .map_err(relay_error)?;
        Ok(Reply::Ok)
    }

    async fn media(&self, target: &Target, block: bool) -> Result<Reply, NgError> {
        let (call, party) = self.target(target)?;
        let sides = match party {
            Some(p) => vec![side(p)],
            None => vec![Side::Caller, Side::Agent],
        };
        for s in sides {
            self.relay
                .block_media(&call.relay_id, s, block)
                .await
                .map_err(relay_error)?;
        }
        Ok(Reply::Ok)
    }

    fn statistics(&self) -> Reply {
        let sessions = {
            let mut calls = self.calls.lock().expect("ng calls lock");
            self.forget_ended(&mut calls);
            calls.len() as u64
        };
        let t = self.relay.totals();
        Reply::Statistics(Statistics {
            sessions,
            uptime_s: self.started.elapsed().as_secs(),
            managed: t.calls_created,
            rejected: t.calls_refused,
            timed_out: t.calls_timed_out,
        })
    }
}

/// A relay refusal of a new call, as the proxy should see it: `load limit` where it said it
/// supports that, else the error strings Kamailio fails over on. Draining is rtpengine's
/// max-sessions at 0 (how its nodes are drained): the call limit, which Kamailio's set moves on
/// to another node for. Re-offers of live calls never get here.
fn refusal(offer: &Signal, e: RelayError, draining: bool) -> NgError {
    match e {
        RelayError::Exhausted(why) => {
            if draining {
                tracing::info!("ng offer refused: this node is draining (no new calls)");
            }
            NgError::LoadLimit {
                limit: if draining || why.contains("call limit") {
                    Limit::Calls
                } else {
                    Limit::Ports
                },
                supported: offer.supports_load_limit,
            }
        }
        other => relay_error(other),
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
}

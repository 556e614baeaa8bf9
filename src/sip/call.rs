//! The fallback number's user agent server, sans-IO: [`Endpoint`] takes messages, relay
//! answers and time in, and gives out datagrams to send and relay work to do ([`Output`]). No
//! socket, task or clock: `now` is an argument, and what would be random (tags, branches) comes
//! from a seed the shell passes in.
//!
//! One [`SipCall`] per Call-ID: the INVITE server transaction (100, 180, 200 retransmitted over
//! UDP with T1 doubling to T2 until the ACK, given up after 64×T1), the dialog it makes (BYE from
//! either side, re-INVITE and UPDATE keeping the relay's ports, RFC 4028 session timers refreshed
//! by the caller or by tonegate, see `timer`), CANCEL while ringing (487), and the end tonegate
//! gives the call (BYE, or REFER then BYE; BYE to every call when it stops). Ended calls linger
//! 64×T1 so retransmitted BYEs and CANCELs get the same answer.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tonegate_dsp::G711Law;

use super::message::{self, Message, ParseError, Request, Response};
use super::sdp::{answer_sdp, offer_of, quoted};
use crate::config::dialled_digits as digits;

/// RFC 3261's T1: the round-trip estimate retransmissions start from.
const T1: Duration = Duration::from_millis(500);
/// RFC 3261's T2: the longest gap between retransmissions of a final response.
const T2: Duration = Duration::from_secs(4);
/// 64×T1: how long a transaction (or an ended call's memory of it) lasts.
const T64: Duration = Duration::from_secs(32);
/// Methods a request may name here, answered with `Allow`.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, NOTIFY";
/// Methods SIP knows that the fallback number does not take (405, not 501).
const KNOWN: &[&str] = &[
    "REGISTER",
    "SUBSCRIBE",
    "PUBLISH",
    "MESSAGE",
    "INFO",
    "PRACK",
    "REFER",
];

/// How a message came and goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A UDP datagram: unreliable, so tonegate retransmits.
    Udp,
    /// A TCP connection, by the shell's number for it.
    Tcp(u64),
    /// A TLS connection (`[sip] tls_listen`), by the shell's number for it.
    Tls(u64),
}

/// A peer: its transport and address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// UDP or which TCP connection.
    pub transport: Transport,
    /// The peer's address.
    pub addr: SocketAddr,
}

impl Peer {
    fn reliable(&self) -> bool {
        !matches!(self.transport, Transport::Udp)
    }
}

/// What tonegate does once the payment is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterPayment {
    /// Hang up (BYE).
    Bye,
    /// Transfer the caller back to this URI (REFER), hanging up if the REFER is refused.
    Refer(String),
}

/// The endpoint's settings.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Dialled numbers (digits only, no `+`) to the account they belong to.
    pub numbers: HashMap<String, String>,
    /// How long tonegate rings (180) before it answers; 0 answers at once.
    pub ring: Duration,
    /// Session interval offered when the caller asks for session timers (RFC 4028), seconds.
    pub session_expires_s: u32,
    /// The shortest session interval accepted (Min-SE), seconds.
    pub min_se_s: u32,
    /// New INVITEs one peer may send per second (over that: 503 with Retry-After).
    pub invites_per_second: u32,
    /// What happens after the payment.
    pub after_payment: AfterPayment,
    /// Our address for Contact and Via (`ip:port`).
    pub local: SocketAddr,
    /// Our TLS address, for Contact and Via on calls that came over TLS.
    pub tls_local: Option<SocketAddr>,
}

/// Something for the shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes.
    Send {
        /// Where.
        to: Peer,
        /// The message.
        bytes: Vec<u8>,
    },
    /// Set up a relay call for this INVITE; answer with [`Endpoint::relay_ready`] or
    /// [`Endpoint::relay_refused`].
    CreateCall(NewSipCall),
    /// The caller's media moved (re-INVITE, UPDATE): point the caller leg at it.
    MediaMoved {
        /// The relay call.
        relay: String,
        /// The media host.
        host: Option<IpAddr>,
        /// The media address (`None`: on hold).
        remote: Option<SocketAddr>,
    },
    /// The call is over: end its relay call (its capture, if any, ends with it).
    EndCall {
        /// The relay call.
        relay: String,
    },
}

/// A relay call to set up for an INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSipCall {
    /// The SIP Call-ID (the relay call's CallGuid).
    pub call_id: String,
    /// The account whose number was dialled.
    pub account: String,
    /// The caller's codec.
    pub law: G711Law,
    /// telephone-event's payload type, if offered.
    pub event_pt: Option<u8>,
    /// The caller's media host.
    pub host: Option<IpAddr>,
    /// The caller's media address.
    pub remote: Option<SocketAddr>,
    /// The link id the IVR passed (header or URI parameter), if any.
    pub link_id: Option<String>,
}

/// Why the relay could not take a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Out of capacity (call limit, ports, draining): 503 with Retry-After.
    Busy,
    /// Anything else: 500.
    Failed,
}

/// What the endpoint counts (exported on `/metrics`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Requests received (retransmissions included).
    pub requests: u64,
    /// Calls answered (200 to an INVITE).
    pub answered: u64,
    /// INVITEs refused: unknown number (404).
    pub not_found: u64,
    /// INVITEs refused: media tonegate cannot inspect (488).
    pub not_acceptable: u64,
    /// INVITEs refused: busy or over the per-peer rate (503).
    pub busy: u64,
    /// Messages that could not be read (400, or dropped when unanswerable).
    pub malformed: u64,
    /// Messages over the size limits (513, or dropped).
    pub too_large: u64,
    /// Requests whose method tonegate does not take (405, 501).
    pub bad_method: u64,
    /// Calls tonegate ended (BYE or REFER).
    pub hung_up: u64,
    /// Session refreshes tonegate sent (UPDATE or re-INVITE, RFC 4028 refresher=uas).
    pub refreshes: u64,
    /// Calls ended because their session timer ran out or tonegate's refresh failed.
    pub expired: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// 100 sent; the relay call is being set up.
    SettingUp,
    /// 180 sent; the 200 is due at the ring deadline.
    Ringing,
    /// 200 sent; waiting for the ACK.
    Answered,
    /// ACKed.
    Confirmed,
    /// tonegate sent REFER; waiting for its outcome.
    Referring,
    /// tonegate sent BYE; waiting for its answer.
    Ending,
    /// 487 sent after a CANCEL; waiting for the ACK.
    Cancelled,
    /// Over; kept to answer retransmissions.
    Done,
}

/// A response kept for retransmission until its ACK (INVITE) or for repeats of its request.
#[derive(Debug, Clone)]
struct Retx {
    bytes: Vec<u8>,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

impl Retx {
    /// The bytes to send again if a retransmission is due at `now` (T1 doubling to T2).
    fn resend(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next > now {
            return None;
        }
        // Timers G (responses) and E (requests) alike: doubling up to T2.
        self.interval = (self.interval * 2).min(T2);
        self.next = now + self.interval;
        Some(self.bytes.clone())
    }

    /// Sends `bytes` again at T1, doubling to T2, until 64×T1; over a stream nothing is
    /// resent (the transport does it) and only the 64×T1 deadline stays.
    fn start(bytes: Vec<u8>, now: Instant, reliable: bool) -> Retx {
        Retx {
            bytes,
            next: if reliable { now + T64 } else { now + T1 },
            interval: T1,
            give_up: now + T64,
        }
    }
}

/// One call on the fallback number. See the module documentation.
#[derive(Debug)]
struct SipCall {
    state: State,
    peer: Peer,
    invite: Box<Request>,
    local_tag: String,
    relay: Option<String>,
    answer: Option<String>,
    sdp_version: u64,
    /// The last response to the current INVITE (or re-INVITE), for its retransmissions.
    last_invite_response: Option<(String, Vec<u8>)>,
    /// Retransmitting a final response to an INVITE (UDP) or a request of ours.
    retx: Option<Retx>,
    ring_until: Option<Instant>,
    /// The session timer (RFC 4028), once the call has one.
    session: Option<Session>,
    /// tonegate's own session refresh, while it waits for the answer.
    refresh: Option<Refresh>,
    /// The ACK of tonegate's last re-INVITE (CSeq, bytes), for repeats of its 2xx.
    refresh_ack: Option<(u32, Vec<u8>)>,
    local_cseq: u32,
    /// Answers to non-INVITE requests, by branch, for their retransmissions.
    answered: Vec<(String, Vec<u8>)>,
    /// Hang up once the ACK comes (asked to before it did).
    hang_up_pending: bool,
    /// When a Done call is forgotten; a REFER gives up at this time too.
    until: Option<Instant>,
}

/// The user agent server. See the module documentation.
#[derive(Debug)]
pub struct Endpoint {
    cfg: EndpointConfig,
    calls: HashMap<String, SipCall>,
    by_relay: HashMap<String, String>,
    out: VecDeque<Output>,
    seed: u64,
    ids: u64,
    counts: Counts,
    /// INVITEs per peer address in the current second.
    rate: HashMap<IpAddr, (Instant, u32)>,
    /// The shell is behind: new calls get 503 until it catches up.
    overloaded: bool,
    /// tonegate is stopping: every call was ended, and new ones get 503.
    stopping: bool,
}

impl Endpoint {
    /// An endpoint with `cfg`; `seed` makes its tags and branches unguessable.
    pub fn new(cfg: EndpointConfig, seed: u64) -> Self {
        Endpoint {
            cfg,
            calls: HashMap::new(),
            by_relay: HashMap::new(),
            out: VecDeque::new(),
            seed,
            ids: 0,
            counts: Counts::default(),
            rate: HashMap::new(),
            overloaded: false,
            stopping: false,
        }
    }

    /// Whether the shell is behind on its input: while it is, new calls are refused with 503
    /// (calls already up are served), so a flood sheds load instead of timing every call out.
    pub fn set_overloaded(&mut self, on: bool) {
        self.overloaded = on;
    }

    /// What has been counted so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Calls not yet over.
    pub fn live_calls(&self) -> usize {
        self.calls
            .values()
            .filter(|c| c.state != State::Done)
            .count()
    }

    /// Calls tonegate sent a BYE in and whose answer has not come (nor 64×T1 passed).
    pub fn hanging_up(&self) -> usize {
        self.calls
            .values()
            .filter(|c| c.state == State::Ending)
            .count()
    }

    /// The relay calls of the calls not yet over.
    pub fn relays(&self) -> Vec<String> {
        self.by_relay.keys().cloned().collect()
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.calls
            .values()
            .flat_map(|c| {
                [
                    c.retx.as_ref().map(|r| r.next.min(r.give_up)),
                    c.ring_until,
                    c.session
                        .filter(|_| c.state == State::Confirmed)
                        .map(|s| s.due(c.refresh.is_some())),
                    c.refresh.as_ref().map(|f| f.retx.next.min(f.retx.give_up)),
                    c.until,
                ]
            })
            .flatten()
            .min()
    }

    /// A message of `bytes` came from `peer` at `now`.
    pub fn on_message(&mut self, now: Instant, peer: Peer, bytes: &[u8]) {
        match message::parse(bytes) {
            Ok(Message::KeepAlive) => {
                if peer.reliable() {
                    // RFC 5626 §4.4.1: a double CRLF ping gets a single CRLF pong.
                    self.send(peer, b"\r\n".to_vec());
                }
            }
            Ok(Message::Request(r)) => {
                self.counts.requests += 1;
                self.on_request(now, peer, r);
            }
            Ok(Message::Response(r)) => self.on_response(now, r),
            Err(ParseError::TooLarge(echo)) => {
                self.counts.too_large += 1;
                if let Some(b) = echo.and_then(|e| e.response(513, "Message Too Large")) {
                    self.send(peer, b);
                }
            }
            Err(ParseError::Malformed { reason, echo }) => {
                self.counts.malformed += 1;
                if let Some(b) = echo.and_then(|e| e.response(400, reason)) {
                    self.send(peer, b);
                }
            }
        }
    }

    /// The relay call for `call_id` is up, its caller leg at `local`.
    pub fn relay_ready(&mut self, now: Instant, call_id: &str, relay: String, local: SocketAddr) {
        let ring = self.cfg.ring;
        let contact = self
            .calls
            .get(call_id)
            .map(|c| self.contact(c.peer))
            .unwrap_or_default();
        let media_ip = if local.ip().is_unspecified() {
            self.cfg.local.ip()
        } else {
            local.ip()
        };
        let Some(c) = self.calls.get_mut(call_id) else {
            // The INVITE was cancelled meanwhile.
            self.out.push_back(Output::EndCall { relay });
            return;
        };
        if c.state != State::SettingUp {
            self.out.push_back(Output::EndCall { relay });
            return;
        }
        self.by_relay.insert(relay.clone(), call_id.to_string());
        c.relay = Some(relay);
        c.answer = Some(answer_sdp(
            &offer_of(&c.invite).expect("checked when it came"),
            SocketAddr::new(media_ip, local.port()),
            self.seed,
            c.sdp_version,
        ));
        let ringing = c.invite.response(
            180,
            "Ringing",
            Some(&c.local_tag),
            std::slice::from_ref(&contact),
            None,
        );
        c.last_invite_response = Some((c.invite.branch.clone(), ringing.clone()));
        c.state = State::Ringing;
        let peer = c.peer;
        self.send(peer, ringing);
        if ring.is_zero() {
            self.answer(now, call_id);
        } else if let Some(c) = self.calls.get_mut(call_id) {
            c.ring_until = Some(now + ring);
        }
    }

    /// The relay refused the call for `call_id`.
    pub fn relay_refused(&mut self, now: Instant, call_id: &str, why: Refusal) {
        let Some(c) = self.calls.get_mut(call_id) else {
            return;
        };
        let (code, reason, extra) = match why {
            Refusal::Busy => (503, "Service Unavailable", vec!["Retry-After: 5".into()]),
            Refusal::Failed => (500, "Server Internal Error", Vec::new()),
        };
        if code == 503 {
            self.counts.busy += 1;
        }
        let b = c
            .invite
            .response(code, reason, Some(&c.local_tag.clone()), &extra, None);
        self.final_to_invite(now, call_id, b, State::Cancelled);
    }

    /// The payment on relay call `relay` is over (or it will never start): end the call as
    /// `[sip] after_payment` says.
    pub fn hang_up(&mut self, now: Instant, relay: &str) {
        let Some(id) = self.by_relay.get(relay).cloned() else {
            return;
        };
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        match c.state {
            State::Confirmed => {}
            State::Answered => {
                c.hang_up_pending = true;
                return;
            }
            _ => return,
        }
        self.counts.hung_up += 1;
        match self.cfg.after_payment.clone() {
            AfterPayment::Bye => self.send_bye(now, &id),
            AfterPayment::Refer(to) => self.send_request(
                now,
                &id,
                "REFER",
                &[format!("Refer-To: <{to}>")],
                State::Referring,
            ),
        }
    }

    /// Relay call `relay` ended by itself (media timeout, an operator): hang up, nothing
    /// more to end.
    pub fn relay_gone(&mut self, now: Instant, relay: &str) {
        let Some(id) = self.by_relay.remove(relay) else {
            return;
        };
        if let Some(c) = self.calls.get_mut(&id) {
            c.relay = None;
            if matches!(c.state, State::Confirmed | State::Referring) {
                self.send_bye(now, &id);
            } else if matches!(c.state, State::Answered) {
                c.hang_up_pending = true;
            }
        }
    }

    /// Time has reached `now`: retransmissions, the ring deadline, session expiry, forgetting.
    pub fn handle_timeout(&mut self, now: Instant) {
        let ids: Vec<String> = self.calls.keys().cloned().collect();
        for id in ids {
            let Some(c) = self.calls.get_mut(&id) else {
                continue;
            };
            if c.ring_until.is_some_and(|t| t <= now) {
                c.ring_until = None;
                self.answer(now, &id);
                continue;
            }
            let c = self.calls.get_mut(&id).expect("present");
            if let Some(r) = c.retx.as_mut() {
                if r.give_up <= now {
                    c.retx = None;
                    match c.state {
                        // No ACK for the 200 (64×T1): the dialog is confirmed and ended at
                        // once (RFC 3261 §13.3.1.4).
                        State::Answered => {
                            c.state = State::Confirmed;
                            self.send_bye(now, &id);
                        }
                        State::Ending | State::Cancelled => self.finish(now, &id),
                        State::Referring => self.send_bye(now, &id),
                        _ => {}
                    }
                    continue;
                } else if let Some(bytes) = r.resend(now) {
                    let peer = c.peer;
                    self.send(peer, bytes);
                }
            }
            if self.session_timeout(now, &id) {
                continue;
            }
            let c = self.calls.get_mut(&id).expect("present");
            if c.until.is_some_and(|t| t <= now) {
                match c.state {
                    State::Done => {
                        self.calls.remove(&id);
                    }
                    State::Referring => self.send_bye(now, &id),
                    // Over a stream nothing is retransmitted: the ACK's wait ends here.
                    State::Cancelled => self.finish(now, &id),
                    _ => c.until = None,
                }
            }
        }
        self.rate
            .retain(|_, (start, _)| now < *start + Duration::from_secs(1));
    }

    fn on_request(&mut self, now: Instant, peer: Peer, r: Box<Request>) {
        match r.method.as_str() {
            "INVITE" if r.to_tag.is_none() => self.new_invite(now, peer, r),
            "ACK" => self.ack(now, &r),
            "CANCEL" => self.cancel(now, peer, &r),
            "OPTIONS" => {
                let b = r.response(200, "OK", Some(&self.tag()), &self.capabilities(), None);
                self.send(peer, b);
            }
            _ if KNOWN.contains(&r.method.as_str()) => {
                self.counts.bad_method += 1;
                let b = r.response(
                    405,
                    "Method Not Allowed",
                    None,
                    &[format!("Allow: {ALLOW}")],
                    None,
                );
                self.send(peer, b);
            }
            "INVITE" | "BYE" | "UPDATE" | "NOTIFY" => self.in_dialog(now, peer, r),
            _ => {
                self.counts.bad_method += 1;
                let b = r.response(
                    501,
                    "Not Implemented",
                    None,
                    &[format!("Allow: {ALLOW}")],
                    None,
                );
                self.send(peer, b);
            }
        }
    }

    fn send(&mut self, to: Peer, bytes: Vec<u8>) {
        self.out.push_back(Output::Send { to, bytes });
    }

    /// Our Contact header for a call from `peer`: the TLS address where it came over TLS.
    fn contact(&self, peer: Peer) -> String {
        match (peer.transport, self.cfg.tls_local) {
            (Transport::Tls(_), Some(at)) => format!("Contact: <sip:tonegate@{at};transport=tls>"),
            _ => format!("Contact: <sip:tonegate@{}>", self.cfg.local),
        }
    }

    fn capabilities(&self) -> Vec<String> {
        vec![
            format!("Allow: {ALLOW}"),
            "Accept: application/sdp".into(),
            "Supported: timer".into(),
            format!("Min-SE: {}", self.cfg.min_se_s),
        ]
    }

    fn next_id(&mut self) -> u64 {
        self.ids += 1;
        // splitmix64 of seed + counter: distinct per message, unguessable without the seed.
        let mut z = self
            .seed
            .wrapping_add(self.ids.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn tag(&mut self) -> String {
        format!("tg{:016x}", self.next_id())
    }

    fn branch(&mut self) -> String {
        format!("z9hG4bK{:016x}", self.next_id())
    }
}

mod dialog;
mod invite;
mod timer;

use timer::{Refresh, Session};

#[cfg(test)]
mod tests;

//! One relayed call, sans-IO: two legs (caller, agent), each with an RTP and an RTCP channel
//! (or both on one port with rtcp-mux); symmetric-RTP latching; routing; counters.
//!
//! The call owns its time, str0m-style: the IO shell hands each received datagram to
//! [`CallMedia::on_datagram`] and sends what it says to, runs [`CallMedia::handle_timeout`]
//! when [`CallMedia::poll_timeout`] says, then drains [`CallMedia::poll_transmit`] (masked
//! audio, prompt frames) and [`CallMedia::poll_event`] (keys, latches, silence). The shell
//! owns no timer of its own and copies no state out of the core by hand.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonegate_dsp::{G711Law, MaskingMode};

use super::prompt::{Clip, PromptPlayer, StreamStart};
use super::rtp::{is_rtcp, valid_rtcp, RtpHeader, MAX_DATAGRAM};
use super::secure::{
    CapturedKey, Disposition, EventReplacement, SecureConfig, SecureCounters, SecureStream,
};

/// A leg of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The caller (or IVR) side: the keys come from here.
    Caller,
    /// The agent side: must never hear or see a key in secure mode.
    Agent,
}

impl Side {
    /// The other leg.
    pub fn other(self) -> Side {
        match self {
            Side::Caller => Side::Agent,
            Side::Agent => Side::Caller,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// RTP or RTCP socket of a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Media.
    Rtp,
    /// Control (on the RTP port + 1, or on the RTP port with rtcp-mux).
    Rtcp,
}

/// Whether `ip` can be a media remote: not unspecified (`0.0.0.0/8`, `::`), multicast or
/// broadcast (also as an IPv4-mapped IPv6 address). Linux sends to `0.0.0.0` as to itself, and
/// to a group or broadcast address as to everyone on it: signalling must not aim media there.
pub fn is_unicast_host(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => !(v4.octets()[0] == 0 || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

/// Whether media may go to (or latch from) `a`: a unicast host ([`is_unicast_host`]) and a
/// port above 0.
pub fn is_unicast_remote(a: SocketAddr) -> bool {
    a.port() != 0 && is_unicast_host(a.ip())
}

/// Which source addresses a leg accepts, from what signalling said about the remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteRule {
    /// Nothing may latch yet (signalling has not said where the remote is).
    Closed,
    /// Nothing was said: learn from the first packet, from anywhere.
    Any,
    /// This host, any port: learned from its first packet.
    Host(IpAddr),
    /// This host, a port in `lo..=hi` (RTCP may use `hi + 1`).
    Ports(IpAddr, u16, u16),
    /// Exactly this address (RTCP from the same host).
    Exact(SocketAddr),
    /// Media goes to this address (from SDP) until the first packet arrives from its host;
    /// that packet's address is learned (a NAT may change the port), then held.
    Sdp(SocketAddr),
}

impl RemoteRule {
    /// Whether a packet from `from` may latch (or re-latch) the leg: never a source that is
    /// not a unicast remote ([`is_unicast_remote`]), whatever the rule.
    pub fn allows(&self, from: SocketAddr, rtcp: bool) -> bool {
        if !is_unicast_remote(from) {
            return false;
        }
        match *self {
            RemoteRule::Closed => false,
            RemoteRule::Any => true,
            RemoteRule::Host(ip) => from.ip() == ip,
            RemoteRule::Ports(ip, lo, hi) => {
                let hi = if rtcp { hi.saturating_add(1) } else { hi };
                from.ip() == ip && (lo..=hi).contains(&from.port())
            }
            RemoteRule::Exact(a) => {
                if rtcp {
                    from.ip() == a.ip()
                } else {
                    from == a
                }
            }
            RemoteRule::Sdp(a) => from.ip() == a.ip(),
        }
    }

    /// The remote's address, if signalling gave all of it and media may go there (SDP's
    /// `c=0.0.0.0` hold, a multicast group or port 0 is no destination).
    pub fn known(&self) -> Option<SocketAddr> {
        match *self {
            RemoteRule::Exact(a) | RemoteRule::Sdp(a) => Some(a).filter(|&a| is_unicast_remote(a)),
            _ => None,
        }
    }

    /// The remote's host, if signalling named one.
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            RemoteRule::Closed | RemoteRule::Any => None,
            RemoteRule::Host(ip) | RemoteRule::Ports(ip, ..) => Some(ip),
            RemoteRule::Exact(a) | RemoteRule::Sdp(a) => Some(a.ip()),
        }
    }
}

/// Consecutive packets from a new address, with the stream's own SSRC, before a leg follows it
/// (with re-latching on): one stray or forged packet never moves a leg.
pub const RELATCH_PACKETS: u8 = 5;

/// How a call's media is handled.
#[derive(Debug, Clone, Copy)]
pub struct CallMediaConfig {
    /// Audio codec.
    pub law: G711Law,
    /// telephone-event payload type, if negotiated.
    pub event_pt: Option<u8>,
    /// RTCP shares the RTP port.
    pub rtcp_mux: bool,
    /// Follow a remote that moves (re-latch) instead of dropping its packets.
    pub relatch: bool,
    /// Replacement audio in secure mode.
    pub mode: MaskingMode,
    /// Secure-mode look-ahead, in packets (0-3).
    pub lookahead: usize,
    /// What consumed telephone-events become on the agent leg.
    pub event_replacement: EventReplacement,
    /// Where the prompt stream toward the caller starts (random, from the shell).
    pub prompt_start: StreamStart,
    /// No datagram on either leg for this long ends the call ([`MediaEvent::Silent`]).
    pub media_timeout: Duration,
}

/// Prompt frames go out every 20 ms.
pub const PROMPT_FRAME: Duration = Duration::from_millis(20);

/// How often the call looks for media silence (the timeout's granularity).
pub const SILENCE_CHECK: Duration = Duration::from_secs(1);

/// What the call reports to its shell, in the order it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// A leg learned or followed a remote address: see [`CallMedia::remote`].
    Latched,
    /// A key was captured (in secure mode, or while listening).
    Key(CapturedKey),
    /// No datagram on either leg for the media timeout: the call should end.
    Silent,
}

/// A datagram to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Send from this leg's socket...
    pub from: Side,
    /// ...on this channel...
    pub channel: Channel,
    /// ...to this address.
    pub to: SocketAddr,
    /// Length of the datagram.
    pub len: usize,
}

/// Per-call counters, readable while the call runs (one writer, relaxed atomics; never keys).
#[derive(Debug, Default)]
pub struct CallCounters {
    /// RTP packets received, caller and agent leg.
    pub rtp_in: [AtomicU64; 2],
    /// RTP packets sent towards caller and agent leg.
    pub rtp_out: [AtomicU64; 2],
    /// RTP packets missing from each leg's sequence (gaps; reordered packets are not
    /// counted back).
    pub rtp_lost: [AtomicU64; 2],
    /// Bytes received per leg (RTP and RTCP).
    pub bytes_in: [AtomicU64; 2],
    /// Bytes sent per leg.
    pub bytes_out: [AtomicU64; 2],
    /// RTCP packets relayed.
    pub rtcp: AtomicU64,
    /// Datagrams dropped as malformed (bad RTP or RTCP, oversize).
    pub malformed: AtomicU64,
    /// Datagrams dropped because they came from an address other than the latched one.
    pub foreign_source: AtomicU64,
    /// Datagrams dropped because the other leg's address is not known yet.
    pub no_destination: AtomicU64,
    /// Remote addresses learned (first packet) or followed (re-latch).
    pub latch_events: AtomicU64,
    /// Audio frames replaced by masking.
    pub frames_masked: AtomicU64,
    /// telephone-event packets consumed in secure mode.
    pub events_consumed: AtomicU64,
    /// Packets dropped in secure mode because they could not be inspected.
    pub uninspectable: AtomicU64,
    /// Keys captured (a count only).
    pub keys_captured: AtomicU64,
    /// Keys that arrived both in-band and as events and were delivered once.
    pub duplicate_keys: AtomicU64,
    /// Audio frames the output guard replaced after the masker let them through.
    pub guard_replaced: AtomicU64,
}

impl CallCounters {
    fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
}

#[derive(Debug, Clone, Copy)]
struct Remotes {
    rtp: Option<SocketAddr>,
    rtcp: Option<SocketAddr>,
    rule: RemoteRule,
    /// SSRC of the stream the leg latched to.
    ssrc: Option<u32>,
    /// A new address asking to take the leg over: its SSRC and packets so far.
    candidate: Option<(SocketAddr, u32, u8)>,
}

/// One relayed call. See the module documentation.
pub struct CallMedia {
    cfg: CallMediaConfig,
    remotes: [Remotes; 2],
    secure: SecureStream,
    secure_seen: SecureCounters,
    counters: Arc<CallCounters>,
    prompt: PromptPlayer,
    audio_pt: u8,
    /// Media from this leg is dropped (ng `block media`).
    blocked: [bool; 2],
    /// Each leg's last RTP (SSRC, sequence number), for counting lost packets.
    last_seq: [Option<(u32, u16)>; 2],
    /// When the next prompt frame is due (while one plays).
    prompt_due: Option<Instant>,
    /// A prompt frame is due now: [`poll_transmit`](Self::poll_transmit) writes it.
    prompt_pending: bool,
    /// Time as the shell last told it.
    now: Instant,
    /// The next silence check; datagrams accepted from the legs' remotes so far, and up to
    /// the last check (foreign sources never keep a call alive).
    silence_check: Instant,
    accepted: u64,
    accepted_seen: u64,
    quiet_since: Instant,
    /// Events not yet polled: a remote moved; the call went silent.
    latched: bool,
    silent: bool,
}

impl CallMedia {
    /// A call starting at `now`; `caller` and `agent` are the remote RTP addresses if known
    /// (else learned from the first packet from anywhere).
    pub fn new(
        cfg: CallMediaConfig,
        caller: Option<SocketAddr>,
        agent: Option<SocketAddr>,
        now: Instant,
    ) -> Self {
        let rule = |a: Option<SocketAddr>| a.map_or(RemoteRule::Any, RemoteRule::Exact);
        Self::with_rules(cfg, rule(caller), rule(agent), now)
    }

    /// A call starting at `now` whose legs accept sources as `caller` and `agent` say.
    pub fn with_rules(
        cfg: CallMediaConfig,
        caller: RemoteRule,
        agent: RemoteRule,
        now: Instant,
    ) -> Self {
        let audio_pt = match cfg.law {
            G711Law::Ulaw => 0,
            G711Law::Alaw => 8,
        };
        let remotes = |rule: RemoteRule| Remotes {
            rtp: rule.known(),
            rtcp: None,
            rule,
            ssrc: None,
            candidate: None,
        };
        CallMedia {
            cfg,
            remotes: [remotes(caller), remotes(agent)],
            secure: SecureStream::new(SecureConfig {
                law: cfg.law,
                audio_pt,
                event_pt: cfg.event_pt,
                mode: cfg.mode,
                lookahead: cfg.lookahead,
                event_replacement: cfg.event_replacement,
            }),
            secure_seen: SecureCounters::default(),
            counters: Arc::new(CallCounters::default()),
            prompt: PromptPlayer::new(cfg.law, cfg.prompt_start),
            audio_pt,
            blocked: [false; 2],
            last_seq: [None; 2],
            prompt_due: None,
            prompt_pending: false,
            now,
            silence_check: now + SILENCE_CHECK,
            accepted: 0,
            accepted_seen: 0,
            quiet_since: now,
            latched: false,
            silent: false,
        }
    }

    /// The call's counters (shared; read them any time).
    pub fn counters(&self) -> Arc<CallCounters> {
        self.counters.clone()
    }

    /// Whether secure mode is on.
    pub fn is_secure(&self) -> bool {
        self.secure.is_secure()
    }

    /// Turns secure mode on or off.
    pub fn set_secure(&mut self, on: bool) {
        self.secure.set_secure(on);
        self.sync_secure_counters();
    }

    /// Detects keys outside secure mode too, without masking anything (a call that will key
    /// its session's `dtmfLinkId`).
    pub fn set_listening(&mut self, on: bool) {
        self.secure.set_listening(on);
    }

    /// Signalling said anew where `side`'s remote is (an answer, a re-offer): the leg keeps
    /// its latched address if the new rule allows it, else learns again within the rule.
    pub fn set_remote_rule(&mut self, side: Side, rule: RemoteRule) {
        let r = &mut self.remotes[side.index()];
        r.rule = rule;
        r.candidate = None;
        if let Some(known) = rule.known() {
            if r.rtp != Some(known) {
                r.rtp = Some(known);
                r.ssrc = None;
                r.rtcp = None;
            }
        } else if r.rtp.is_some_and(|a| !rule.allows(a, false)) {
            r.rtp = None;
            r.rtcp = None;
            r.ssrc = None;
        }
    }

    /// Drops (`true`) or forwards again the media `side` sends (RTP and RTCP).
    pub fn set_blocked(&mut self, side: Side, on: bool) {
        self.blocked[side.index()] = on;
    }

    /// Queues a prompt to the caller; its first frame is due at once.
    pub fn play(&mut self, clip: Clip) {
        self.prompt.enqueue(clip);
        if self.prompt_due.is_none() && self.prompt.is_playing() {
            self.prompt_due = Some(self.now);
        }
    }

    /// Stops any prompt.
    pub fn stop_prompt(&mut self) {
        self.prompt.stop();
        self.prompt_due = None;
        self.prompt_pending = false;
    }

    /// Whether a prompt is playing or queued.
    pub fn is_prompting(&self) -> bool {
        self.prompt.is_playing()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next run: the next prompt frame
    /// (every 20 ms while one plays) or the next silence check (every second). Already past
    /// means now.
    pub fn poll_timeout(&self) -> Instant {
        match self.prompt_due {
            Some(p) if p < self.silence_check => p,
            _ => self.silence_check,
        }
    }

    /// Time has reached `now`: a prompt frame falls due (written by
    /// [`poll_transmit`](Self::poll_transmit)), and once a second the call checks whether
    /// either leg accepted anything from its remote since the last check
    /// ([`MediaEvent::Silent`] after the media timeout without).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let now = self.now;
        if let Some(due) = self.prompt_due.filter(|&d| d <= now) {
            self.prompt_pending = true;
            // Late frames push the next one back rather than bunching up (a listener hears a
            // gap, not a burst).
            let next = due + PROMPT_FRAME;
            self.prompt_due = Some(if next <= now {
                now + PROMPT_FRAME
            } else {
                next
            });
        }
        if self.silence_check <= now {
            self.silence_check = now + SILENCE_CHECK;
            if self.accepted != self.accepted_seen {
                self.accepted_seen = self.accepted;
                self.quiet_since = now;
            } else if now.duration_since(self.quiet_since) >= self.cfg.media_timeout {
                self.silent = true;
            }
        }
    }

    /// The next prompt packet for the caller, written into `out`, when one is due.
    fn prompt_frame(&mut self, out: &mut [u8]) -> Option<Transmit> {
        if !self.prompt_pending {
            return None;
        }
        self.prompt_pending = false;
        let len = self.prompt.next_packet(out);
        if !self.prompt.is_playing() {
            self.prompt_due = None;
        }
        let to = self.remotes[Side::Caller.index()].rtp?;
        Some(self.sent(Side::Caller, Channel::Rtp, to, len?, true))
    }

    /// The remote RTP address of a leg, once known.
    pub fn remote(&self, side: Side) -> Option<SocketAddr> {
        self.remotes[side.index()].rtp
    }

    /// A datagram of `len` bytes arrived in `buf` on `side`'s `channel` socket from `from`.
    /// Returns where to send `buf[..n]` (rewritten in place) now, if anywhere; afterwards drain
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn on_datagram(
        &mut self,
        side: Side,
        channel: Channel,
        from: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Option<Transmit> {
        let c = &*self.counters;
        CallCounters::bump(&c.bytes_in[side.index()], len as u64);
        if len > MAX_DATAGRAM || len > buf.len() {
            CallCounters::bump(&c.malformed, 1);
            return None;
        }
        if self.blocked[side.index()] {
            // Still the leg's own remote talking: the call is alive, its media just not wanted.
            let r = &self.remotes[side.index()];
            if r.rtp == Some(from) || r.rtcp == Some(from) {
                self.accepted += 1;
            }
            return None;
        }
        let pkt = &mut buf[..len];
        let rtcp = channel == Channel::Rtcp || (self.cfg.rtcp_mux && is_rtcp(pkt));
        if rtcp {
            return self.on_rtcp(side, channel, from, pkt);
        }
        let Ok(hdr) = RtpHeader::parse(pkt) else {
            CallCounters::bump(&c.malformed, 1);
            return None;
        };
        if !self.latch(side, Channel::Rtp, from, Some(hdr.ssrc)) {
            return None;
        }
        self.accepted += 1;
        CallCounters::bump(&self.counters.rtp_in[side.index()], 1);
        self.count_loss(side, &hdr);
        // The caller's audio goes through the secure path even with nobody to send it to
        // (self-service has no agent leg): that is where keys are heard.
        let disposition = match side {
            Side::Caller => self.secure.push(pkt, &hdr),
            Side::Agent => {
                // A prompt rides in the agent's audio while both play.
                if self.prompt.is_playing() && hdr.payload_type == self.audio_pt {
                    self.prompt
                        .mix_into(&mut pkt[hdr.payload_start..hdr.payload_end]);
                }
                Disposition::ForwardNow
            }
        };
        if side == Side::Caller && self.secure.counters() != self.secure_seen {
            self.sync_secure_counters();
        }
        let Some(to) = self.remotes[side.other().index()].rtp else {
            if matches!(disposition, Disposition::ForwardNow | Disposition::Queued) {
                CallCounters::bump(&self.counters.no_destination, 1);
            }
            return None;
        };
        match disposition {
            Disposition::ForwardNow => Some(self.sent(side.other(), Channel::Rtp, to, len, true)),
            Disposition::Queued | Disposition::Consumed | Disposition::Uninspectable => None,
        }
    }

    /// Counts the packets a sequence gap says went missing. A packet a little behind the
    /// last (late or duplicated) changes nothing; a jump of 3000 or more, or a new SSRC,
    /// starts the count over (a restarted stream, not loss).
    fn count_loss(&mut self, side: Side, hdr: &RtpHeader) {
        const FAR: u16 = 3000;
        let last = &mut self.last_seq[side.index()];
        if let Some((ssrc, seq)) = *last {
            let gap = hdr.seq.wrapping_sub(seq);
            if ssrc == hdr.ssrc {
                if gap == 0 || gap > u16::MAX - FAR {
                    return;
                }
                if gap > 1 && gap < FAR {
                    CallCounters::bump(&self.counters.rtp_lost[side.index()], u64::from(gap - 1));
                }
            }
        }
        *last = Some((hdr.ssrc, hdr.seq));
    }

    /// The next datagram ready to go (a due prompt frame, then what the secure path has
    /// released), copied into `out`.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<Transmit> {
        if let Some(t) = self.prompt_frame(out) {
            return Some(t);
        }
        let len = self.secure.poll_transmit(out)?;
        // With no agent leg the delay line still drains; its packets have nowhere to go.
        let to = self.remotes[Side::Agent.index()].rtp?;
        Some(self.sent(Side::Agent, Channel::Rtp, to, len, true))
    }

    /// The next thing that happened: a latch, then captured keys (in secure mode, or while
    /// listening), then silence. Barge-in is the session's call (it knows whether the key
    /// counted), via [`stop_prompt`](Self::stop_prompt).
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        if std::mem::take(&mut self.latched) {
            return Some(MediaEvent::Latched);
        }
        if let Some(k) = self.secure.poll_key() {
            return Some(MediaEvent::Key(k));
        }
        if std::mem::take(&mut self.silent) {
            return Some(MediaEvent::Silent);
        }
        None
    }

    fn on_rtcp(
        &mut self,
        side: Side,
        channel: Channel,
        from: SocketAddr,
        pkt: &[u8],
    ) -> Option<Transmit> {
        if !valid_rtcp(pkt) {
            CallCounters::bump(&self.counters.malformed, 1);
            return None;
        }
        if !self.latch(side, Channel::Rtcp, from, None) {
            return None;
        }
        self.accepted += 1;
        let other = self.remotes[side.other().index()];
        let to = if self.cfg.rtcp_mux {
            other.rtp
        } else {
            // RFC 3550 §11: RTCP on the next port up, unless the far end told us otherwise.
            other.rtcp.or(other
                .rtp
                .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1))))
        };
        let Some(to) = to else {
            CallCounters::bump(&self.counters.no_destination, 1);
            return None;
        };
        CallCounters::bump(&self.counters.rtcp, 1);
        let out_channel = if self.cfg.rtcp_mux {
            Channel::Rtp
        } else {
            channel
        };
        Some(self.sent(side.other(), out_channel, to, pkt.len(), false))
    }

    /// Checks `from` against the leg's latched address. A leg learns its address only from a
    /// source its [`RemoteRule`] allows; with re-latching on, it follows a new allowed address
    /// only after [`RELATCH_PACKETS`] consecutive RTP packets carrying the stream's own SSRC.
    /// Everything else is dropped and counted as a foreign source.
    fn latch(&mut self, side: Side, channel: Channel, from: SocketAddr, ssrc: Option<u32>) -> bool {
        let relatch = self.cfg.relatch;
        let rtcp_own_port = channel == Channel::Rtcp && !self.cfg.rtcp_mux;
        let r = &mut self.remotes[side.index()];
        // With rtcp-mux, RTCP latches to the RTP address.
        let slot = if rtcp_own_port {
            &mut r.rtcp
        } else {
            &mut r.rtp
        };
        let counters = &*self.counters;
        match slot {
            Some(a) if *a == from => {
                if ssrc.is_some() {
                    r.ssrc = r.ssrc.or(ssrc);
                    r.candidate = None;
                }
                true
            }
            // An address from SDP is where media goes until the remote's first packet says
            // where it really is (within the SDP's host).
            Some(a)
                if matches!(r.rule, RemoteRule::Sdp(_))
                    && r.ssrc.is_none()
                    && ssrc.is_some()
                    && r.rule.allows(from, false) =>
            {
                *a = from;
                r.ssrc = ssrc;
                CallCounters::bump(&counters.latch_events, 1);
                self.latched = true;
                true
            }
            Some(a) => {
                let same_stream = ssrc.is_some() && ssrc == r.ssrc;
                if relatch && same_stream && r.rule.allows(from, false) {
                    let ssrc = ssrc.unwrap_or_default();
                    let n = match r.candidate {
                        Some((c, s, n)) if c == from && s == ssrc => n + 1,
                        _ => 1,
                    };
                    if n >= RELATCH_PACKETS {
                        *a = from;
                        r.candidate = None;
                        CallCounters::bump(&counters.latch_events, 1);
                        self.latched = true;
                        return true;
                    }
                    r.candidate = Some((from, ssrc, n));
                }
                CallCounters::bump(&counters.foreign_source, 1);
                false
            }
            None if r.rule.allows(from, rtcp_own_port) => {
                *slot = Some(from);
                if ssrc.is_some() {
                    r.ssrc = ssrc;
                }
                CallCounters::bump(&counters.latch_events, 1);
                self.latched = true;
                true
            }
            None => {
                CallCounters::bump(&counters.foreign_source, 1);
                false
            }
        }
    }

    fn sent(
        &self,
        to_side: Side,
        channel: Channel,
        to: SocketAddr,
        len: usize,
        rtp: bool,
    ) -> Transmit {
        let c = &*self.counters;
        if rtp {
            CallCounters::bump(&c.rtp_out[to_side.index()], 1);
        }
        CallCounters::bump(&c.bytes_out[to_side.index()], len as u64);
        Transmit {
            from: to_side,
            channel,
            to,
            len,
        }
    }

    fn sync_secure_counters(&mut self) {
        let now = self.secure.counters();
        let was = self.secure_seen;
        let c = &*self.counters;
        CallCounters::bump(&c.frames_masked, now.frames_masked - was.frames_masked);
        CallCounters::bump(
            &c.events_consumed,
            now.events_consumed - was.events_consumed,
        );
        CallCounters::bump(&c.uninspectable, now.uninspectable - was.uninspectable);
        CallCounters::bump(&c.keys_captured, now.keys - was.keys);
        CallCounters::bump(&c.duplicate_keys, now.duplicate_keys - was.duplicate_keys);
        CallCounters::bump(&c.guard_replaced, now.guard_replaced - was.guard_replaced);
        self.secure_seen = now;
    }
}

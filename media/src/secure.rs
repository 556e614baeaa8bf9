//! The caller → agent direction of a call in secure mode: every key out, by audio and by event.
//!
//! - In-band: each audio packet's G.711 payload is decoded and fed to a [`Masker`]; the packet
//!   waits in a short delay line until the masker's verdict on it is known (once `lookahead`
//!   × 20 ms of later audio has been analysed, whatever the packet size), then leaves unchanged
//!   or with its payload replaced by the masking audio.
//! - RFC 4733: telephone-event packets are consumed (their keys go to capture) and never
//!   forwarded; optionally a fixed key takes their place so the agent's equipment sees "a key".
//! - A key that arrives both ways is delivered once.
//! - Sequence numbers are rewritten so the agent sees no holes where packets were consumed;
//!   timestamps, SSRC and marker bits pass untouched.
//!
//! The delay line engages the first time secure mode is turned on and stays for the rest of the
//! call, so switching secure mode on or off never bursts packets or opens a gap. Packets the
//! masker cannot inspect (other payload types, oversize payloads) are dropped while secure.
//!
//! Sans-IO: packets in, packets and keys out; no clocks, sockets or allocation per packet.

use tonegate_dsp::masker::LOOKAHEAD_UNIT;
use tonegate_dsp::{DtmfKey, FrameVerdict, G711Law, Masker, MaskingMode, OutputGuard};

use super::rtp::{set_seq, RtpHeader, TelephoneEvent};

/// Bytes in one delay-line slot: a 60 ms G.711 packet (12 + 480) fits.
const SLOT_BYTES: usize = 512;
/// Delay-line slots beyond the look-ahead, for telephone-event packets in flight.
const SPARE_SLOTS: usize = 8;
/// Lost packets filled with silence for the detector (beyond this, a jump is a new talkspurt).
const MAX_FILL_FRAMES: u32 = 5;
/// How close (in timestamp units, 100 ms) an in-band key and an event must start to be one key.
const DEDUPE_WINDOW: u32 = 800;
const KEY_QUEUE: usize = 32;
const RECENT_KEYS: usize = 8;
const ANCHORS: usize = 64;

/// What replaces a consumed telephone-event packet on the agent leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventReplacement {
    /// Nothing: the packet is dropped (sequence numbers are closed up).
    Drop,
    /// The same event timing, carrying this fixed key whatever was pressed.
    FixedKey(DtmfKey),
}

/// Settings of the secure path of one call.
#[derive(Debug, Clone, Copy)]
pub struct SecureConfig {
    /// The call's audio codec.
    pub law: G711Law,
    /// RTP payload type of the audio (0 for PCMU, 8 for PCMA).
    pub audio_pt: u8,
    /// RTP payload type of telephone-event, if negotiated.
    pub event_pt: Option<u8>,
    /// Replacement audio for masked frames.
    pub mode: MaskingMode,
    /// Look-ahead in 20 ms units of audio (0-3), whatever the packet size.
    pub lookahead: usize,
    /// What consumed events become.
    pub event_replacement: EventReplacement,
}

/// How a key reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// Detected in the audio.
    InBand,
    /// An RFC 4733 telephone-event.
    Rfc4733,
}

/// A key the caller pressed while secure mode was on. Its `Debug` never shows the key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CapturedKey {
    key: DtmfKey,
    /// How it arrived.
    pub source: KeySource,
    /// RTP timestamp of the key's start.
    pub timestamp: u32,
}

impl CapturedKey {
    /// The key itself: for the capture state machine only, never for logs.
    pub fn key(&self) -> DtmfKey {
        self.key
    }
}

impl core::fmt::Debug for CapturedKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CapturedKey")
            .field("key", &"<redacted>")
            .field("source", &self.source)
            .field("timestamp", &self.timestamp)
            .finish()
    }
}

/// What happened to a packet handed to [`SecureStream::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Send the packet now, as it is in the caller's buffer (possibly with a new sequence number).
    ForwardNow,
    /// Held in the delay line; [`SecureStream::poll_transmit`] hands out what is ready.
    Queued,
    /// Consumed (telephone-event in secure mode).
    Consumed,
    /// Dropped: cannot be inspected while secure.
    Uninspectable,
}

/// Counters of the secure path (never key values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecureCounters {
    /// Audio frames the masker replaced.
    pub frames_masked: u64,
    /// Telephone-event packets consumed.
    pub events_consumed: u64,
    /// Packets dropped because they could not be inspected.
    pub uninspectable: u64,
    /// Keys delivered.
    pub keys: u64,
    /// Keys that arrived both ways and were delivered once.
    pub duplicate_keys: u64,
    /// Audio frames the output guard replaced after the masker let them through.
    pub guard_replaced: u64,
}

/// What a delayed packet is, for the masker and the output guard.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DelayedKind {
    /// Audio awaiting (`None`) or holding its verdict; `guarded` if it arrived in secure mode
    /// and must pass the output guard on its way out.
    Audio {
        frame: u64,
        replace: Option<bool>,
        guarded: bool,
    },
    /// Anything else that only keeps its place in the line.
    Other,
}

/// One packet held in the delay line (a slot of the ring, reused).
struct DelayedPacket {
    bytes: [u8; SLOT_BYTES],
    len: usize,
    payload: (usize, usize),
    kind: DelayedKind,
}

impl DelayedPacket {
    /// Audio samples in the payload (one per byte in G.711).
    fn samples(&self) -> usize {
        self.payload.1 - self.payload.0
    }
}

#[derive(Clone, Copy)]
struct RecentKey {
    key: DtmfKey,
    timestamp: u32,
    source: KeySource,
    matched: bool,
}

/// The caller → agent direction of one call. See the module documentation.
pub struct SecureStream {
    cfg: SecureConfig,
    secure: bool,
    /// Boxed: it is taken out and put back around every frame, and moving a pointer is
    /// cheaper than moving the detector's state.
    masker: Option<Box<Masker>>,
    /// The delay line (allocated the first time secure mode is turned on).
    ring: Vec<DelayedPacket>,
    head: usize,
    len: usize,
    /// Audio samples held in the delay line.
    samples_in_ring: u64,
    seq_delta: u16,
    /// Audio frames seen (fillers for lost packets included): each slot's frame id.
    frames: u64,
    /// `frames` when the current masker was made (its frame 0).
    masker_base: u64,
    samples: u64,
    anchors: [(u64, u32); ANCHORS],
    anchor_next: usize,
    next_ts: Option<u32>,
    last_event: Option<u32>,
    recent: [Option<RecentKey>; RECENT_KEYS],
    recent_next: usize,
    keys: [Option<CapturedKey>; KEY_QUEUE],
    key_head: usize,
    key_len: usize,
    /// Scratch for decoded audio and replacement/silence audio (taken and put back, never
    /// reallocated).
    pcm: Vec<i16>,
    fill: Vec<i16>,
    counters: SecureCounters,
    /// Checks secure-mode audio once more as it leaves.
    guard: OutputGuard,
    /// Detects keys outside secure mode (nothing is masked).
    listener: Option<tonegate_dsp::DtmfDetector>,
    listen_samples: u64,
}

impl SecureStream {
    /// A stream that forwards everything until secure mode is first turned on.
    pub fn new(cfg: SecureConfig) -> Self {
        SecureStream {
            cfg,
            secure: false,
            masker: None,
            ring: Vec::new(),
            head: 0,
            len: 0,
            samples_in_ring: 0,
            seq_delta: 0,
            frames: 0,
            masker_base: 0,
            samples: 0,
            anchors: [(0, 0); ANCHORS],
            anchor_next: 0,
            next_ts: None,
            last_event: None,
            recent: [None; RECENT_KEYS],
            recent_next: 0,
            keys: [None; KEY_QUEUE],
            key_head: 0,
            key_len: 0,
            pcm: vec![0; SLOT_BYTES],
            fill: vec![0; SLOT_BYTES],
            counters: SecureCounters::default(),
            guard: OutputGuard::new(),
            listener: None,
            listen_samples: 0,
        }
    }

    /// Whether secure mode is on.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// Counters so far.
    pub fn counters(&self) -> SecureCounters {
        self.counters
    }

    /// Turns secure mode on or off.
    pub fn set_secure(&mut self, on: bool) {
        if on == self.secure {
            return;
        }
        if on {
            if self.ring.is_empty() {
                // Packets of 5 ms and up: the look-ahead holds at most this many of them.
                let slots = self.cfg.lookahead * 4 + 1 + SPARE_SLOTS;
                self.ring = (0..slots)
                    .map(|_| DelayedPacket {
                        bytes: [0; SLOT_BYTES],
                        len: 0,
                        payload: (0, 0),
                        kind: DelayedKind::Other,
                    })
                    .collect();
            }
            // Config was checked when the call was made; a bad look-ahead cannot reach here.
            self.masker = Masker::new(self.cfg.mode, self.cfg.lookahead)
                .ok()
                .map(Box::new);
            self.masker_base = self.frames;
            self.next_ts = None;
            self.last_event = None;
        } else if let Some(mut m) = self.masker.take() {
            // Judge every frame still waiting, so nothing held leaves unjudged.
            m.flush();
            while let Some(v) = m.poll_verdict() {
                self.apply_verdict(&mut m, v);
            }
            self.take_inband_keys(&mut m);
        }
        self.secure = on;
    }

    /// Detects (but does not mask) keys outside secure mode.
    pub fn set_listening(&mut self, on: bool) {
        self.listener = on.then(tonegate_dsp::DtmfDetector::new);
        self.listen_samples = 0;
    }

    /// Outside secure mode while listening: keys from audio and events, nothing changed.
    fn listen(&mut self, buf: &[u8], hdr: &RtpHeader) {
        if Some(hdr.payload_type) == self.cfg.event_pt {
            if let Some(ev) = TelephoneEvent::parse(&buf[hdr.payload_start..hdr.payload_end]) {
                if self.last_event != Some(hdr.timestamp) {
                    self.last_event = Some(hdr.timestamp);
                    if let Some(key) = DtmfKey::from_event_code(ev.code) {
                        self.deliver(key, KeySource::Rfc4733, hdr.timestamp);
                    }
                }
            }
            return;
        }
        let n = hdr.payload_end - hdr.payload_start;
        if hdr.payload_type != self.cfg.audio_pt || n > SLOT_BYTES {
            return;
        }
        let Some(mut det) = self.listener.take() else {
            return;
        };
        let mut pcm = core::mem::take(&mut self.pcm);
        self.cfg
            .law
            .decode_into(&buf[hdr.payload_start..hdr.payload_end], &mut pcm[..n]);
        let base = self.listen_samples;
        det.process(&pcm[..n]);
        self.listen_samples += n as u64;
        while let Some(k) = det.poll_key() {
            let ts = hdr
                .timestamp
                .wrapping_sub(base.saturating_sub(k.start).min(u32::MAX as u64) as u32);
            self.deliver(k.key, KeySource::InBand, ts);
        }
        self.pcm = pcm;
        self.listener = Some(det);
    }

    /// Takes one valid RTP packet from the caller (`buf`, parsed as `hdr`). The packet's
    /// sequence number may be rewritten in place.
    pub fn push(&mut self, buf: &mut [u8], hdr: &RtpHeader) -> Disposition {
        if !self.secure && self.listener.is_some() {
            self.listen(buf, hdr);
        }
        if self.ring.is_empty() {
            // Never secured: a plain forwarder, byte for byte.
            return Disposition::ForwardNow;
        }
        let is_event = Some(hdr.payload_type) == self.cfg.event_pt;
        let is_audio = hdr.payload_type == self.cfg.audio_pt;
        let payload_len = hdr.payload_end - hdr.payload_start;
        if self.secure {
            if is_event {
                return self.consume_event(buf, hdr);
            }
            if !is_audio || buf.len() > SLOT_BYTES || payload_len == 0 {
                self.counters.uninspectable += 1;
                self.seq_delta = self.seq_delta.wrapping_sub(1);
                return Disposition::Uninspectable;
            }
        } else if buf.len() > SLOT_BYTES {
            // Too big for the line: cannot keep its place, and it is not ours to inspect.
            self.seq_delta = self.seq_delta.wrapping_sub(1);
            return Disposition::Uninspectable;
        }
        set_seq(buf, hdr.seq.wrapping_add(self.seq_delta));
        let fillers = if self.secure && is_audio {
            self.lost_frames(hdr)
        } else {
            0
        };
        let kind = if is_audio {
            let frame = self.frames + fillers as u64;
            // Judged by the masker while secure; let through as it is otherwise.
            let replace = if self.secure { None } else { Some(false) };
            if !self.secure {
                self.frames += 1;
            }
            DelayedKind::Audio {
                frame,
                replace,
                guarded: self.secure,
            }
        } else {
            DelayedKind::Other
        };
        self.enqueue(buf, hdr, kind);
        // The slot is in the line before the masker runs: with no look-ahead its verdict comes
        // back at once.
        if self.secure && is_audio {
            self.inspect_audio(buf, hdr, fillers);
        }
        Disposition::Queued
    }

    /// The next packet ready to leave the delay line, copied into `out`; returns its length.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let front = &self.ring[self.head];
        let ready = match front.kind {
            // Audio leaves once judged and once the line holds more than the look-ahead.
            // Audio leaves once judged and once the look-ahead's worth of audio is queued behind
            // it, so the delay stays the same when secure mode goes off.
            DelayedKind::Audio { replace, .. } => {
                let behind = self.samples_in_ring - front.samples() as u64;
                replace.is_some() && behind >= self.cfg.lookahead as u64 * LOOKAHEAD_UNIT
            }
            DelayedKind::Other => true,
        };
        if !ready {
            return None;
        }
        Some(self.pop_front(out))
    }

    /// The next captured key.
    pub fn poll_key(&mut self) -> Option<CapturedKey> {
        if self.key_len == 0 {
            return None;
        }
        let k = self.keys[self.key_head].take();
        self.key_head = (self.key_head + 1) % KEY_QUEUE;
        self.key_len -= 1;
        k
    }

    /// Appends a packet to the delay line.
    fn enqueue(&mut self, buf: &[u8], hdr: &RtpHeader, kind: DelayedKind) {
        if self.len == self.ring.len() {
            // Full (events piling up behind a stalled verdict): the oldest leaves now, masked
            // if it was never judged.
            self.force_front();
        }
        let tail = (self.head + self.len) % self.ring.len();
        let slot = &mut self.ring[tail];
        slot.bytes[..buf.len()].copy_from_slice(buf);
        slot.len = buf.len();
        slot.payload = (hdr.payload_start, hdr.payload_end);
        slot.kind = kind;
        self.len += 1;
        if let DelayedKind::Audio { .. } = kind {
            self.samples_in_ring += slot.samples() as u64;
        }
    }

    fn pop_front(&mut self, out: &mut [u8]) -> usize {
        self.guard_front();
        let slot = &mut self.ring[self.head];
        let n = slot.len;
        out[..n].copy_from_slice(&slot.bytes[..n]);
        if let DelayedKind::Audio { .. } = slot.kind {
            self.samples_in_ring -= slot.samples() as u64;
        }
        self.head = (self.head + 1) % self.ring.len();
        self.len -= 1;
        n
    }

    /// The last line before the agent leg: secure-mode audio leaving the line is checked once
    /// more by the independent [`OutputGuard`] and replaced if anything DTMF-like remains.
    fn guard_front(&mut self) {
        let slot = &mut self.ring[self.head];
        let DelayedKind::Audio {
            replace: Some(replaced),
            guarded: true,
            ..
        } = slot.kind
        else {
            return;
        };
        if replaced {
            self.guard.skip();
            return;
        }
        let (s, e) = slot.payload;
        let pcm = &mut self.pcm[..e - s];
        self.cfg.law.decode_into(&slot.bytes[s..e], pcm);
        if self.guard.check(pcm) {
            match self.masker.as_mut() {
                Some(m) => m.fill_replacement(&mut self.fill[..e - s]),
                None => self.fill[..e - s].fill(0),
            }
            self.cfg
                .law
                .encode_into(&self.fill[..e - s], &mut slot.bytes[s..e]);
            self.counters.frames_masked += 1;
            self.counters.guard_replaced += 1;
        }
    }

    fn force_front(&mut self) {
        let masker = &mut self.masker;
        let fill = &mut self.fill;
        let slot = &mut self.ring[self.head];
        if let DelayedKind::Audio {
            replace: replace @ None,
            ..
        } = &mut slot.kind
        {
            *replace = Some(true);
            let (s, e) = slot.payload;
            if let Some(m) = masker.as_mut() {
                m.fill_replacement(&mut fill[..e - s]);
            }
            self.cfg
                .law
                .encode_into(&fill[..e - s], &mut slot.bytes[s..e]);
            self.counters.frames_masked += 1;
        }
        // Drop it: the caller is not draining, and holding more would grow without bound.
        if let DelayedKind::Audio { .. } = slot.kind {
            self.samples_in_ring -= slot.samples() as u64;
        }
        self.head = (self.head + 1) % self.ring.len();
        self.len -= 1;
    }

    /// Packets lost just before this one, going by its timestamp (0 if none, or if the jump
    /// is too long or irregular to be loss).
    fn lost_frames(&self, hdr: &RtpHeader) -> u32 {
        let n = (hdr.payload_end - hdr.payload_start) as u32;
        match self.next_ts {
            Some(expected) if n > 0 => {
                let jump = hdr.timestamp.wrapping_sub(expected);
                if jump > 0 && jump % n == 0 && jump / n <= MAX_FILL_FRAMES {
                    jump / n
                } else {
                    0
                }
            }
            _ => 0,
        }
    }

    /// Decodes an audio packet and feeds the masker, after `fillers` frames of silence standing
    /// in for lost packets (so the detector's timeline stays the call's).
    fn inspect_audio(&mut self, buf: &[u8], hdr: &RtpHeader, fillers: u32) {
        let Some(mut m) = self.masker.take() else {
            return;
        };
        let n = hdr.payload_end - hdr.payload_start;
        let mut pcm = core::mem::take(&mut self.pcm);
        if fillers > 0 {
            pcm[..n].fill(0);
            for _ in 0..fillers {
                self.feed(&mut m, &pcm[..n], None);
            }
        }
        self.next_ts = Some(hdr.timestamp.wrapping_add(n as u32));
        self.cfg
            .law
            .decode_into(&buf[hdr.payload_start..hdr.payload_end], &mut pcm[..n]);
        self.feed(&mut m, &pcm[..n], Some(hdr.timestamp));
        self.pcm = pcm;
        self.take_inband_keys(&mut m);
        self.masker = Some(m);
    }

    fn feed(&mut self, m: &mut Masker, pcm: &[i16], timestamp: Option<u32>) {
        if let Some(ts) = timestamp {
            self.anchors[self.anchor_next] = (self.samples, ts);
            self.anchor_next = (self.anchor_next + 1) % ANCHORS;
        }
        self.samples += pcm.len() as u64;
        self.frames += 1;
        m.push(pcm);
        while let Some(v) = m.poll_verdict() {
            self.apply_verdict(m, v);
        }
    }

    fn apply_verdict(&mut self, m: &mut Masker, v: FrameVerdict) {
        let cap = self.ring.len();
        for i in 0..self.len {
            let slot = &mut self.ring[(self.head + i) % cap];
            if let DelayedKind::Audio { frame, replace, .. } = &mut slot.kind {
                if *frame == self.masker_base + v.frame && replace.is_none() {
                    *replace = Some(v.replace);
                    if v.replace {
                        let (s, e) = slot.payload;
                        m.fill_replacement(&mut self.fill[..e - s]);
                        self.cfg
                            .law
                            .encode_into(&self.fill[..e - s], &mut slot.bytes[s..e]);
                        self.counters.frames_masked += 1;
                    }
                    return;
                }
            }
        }
    }

    fn consume_event(&mut self, buf: &mut [u8], hdr: &RtpHeader) -> Disposition {
        self.counters.events_consumed += 1;
        let payload = &mut buf[hdr.payload_start..hdr.payload_end];
        if let Some(ev) = TelephoneEvent::parse(payload) {
            if self.last_event != Some(hdr.timestamp) {
                self.last_event = Some(hdr.timestamp);
                if let Some(key) = DtmfKey::from_event_code(ev.code) {
                    self.deliver(key, KeySource::Rfc4733, hdr.timestamp);
                }
            }
            if let EventReplacement::FixedKey(k) = self.cfg.event_replacement {
                if buf.len() <= SLOT_BYTES {
                    TelephoneEvent {
                        code: k.event_code(),
                        ..ev
                    }
                    .write(&mut buf[hdr.payload_start..hdr.payload_end]);
                    set_seq(buf, hdr.seq.wrapping_add(self.seq_delta));
                    self.enqueue(buf, hdr, DelayedKind::Other);
                    return Disposition::Queued;
                }
            }
        }
        self.seq_delta = self.seq_delta.wrapping_sub(1);
        Disposition::Consumed
    }

    fn take_inband_keys(&mut self, m: &mut Masker) {
        while let Some(k) = m.poll_key() {
            let ts = self.timestamp_of(k.start);
            self.deliver(k.key, KeySource::InBand, ts);
        }
    }

    /// RTP timestamp of detector sample `sample`, from the anchor of the frame holding it.
    fn timestamp_of(&self, sample: u64) -> u32 {
        let mut best: Option<(u64, u32)> = None;
        for &(s, ts) in &self.anchors {
            if s <= sample && best.is_none_or(|(bs, _)| s > bs) {
                best = Some((s, ts));
            }
        }
        match best {
            Some((s, ts)) => ts.wrapping_add((sample - s) as u32),
            None => self.anchors[self.anchor_next].1,
        }
    }

    fn deliver(&mut self, key: DtmfKey, source: KeySource, timestamp: u32) {
        // The same key from the other path, close in time and not yet paired: one key.
        for r in self.recent.iter_mut().flatten() {
            let close = timestamp
                .wrapping_sub(r.timestamp)
                .min(r.timestamp.wrapping_sub(timestamp))
                <= DEDUPE_WINDOW;
            if !r.matched && r.key == key && r.source != source && close {
                r.matched = true;
                self.counters.duplicate_keys += 1;
                return;
            }
        }
        self.recent[self.recent_next] = Some(RecentKey {
            key,
            timestamp,
            source,
            matched: false,
        });
        self.recent_next = (self.recent_next + 1) % RECENT_KEYS;
        if self.key_len == KEY_QUEUE {
            // The consumer stopped reading; keep the newest.
            self.key_head = (self.key_head + 1) % KEY_QUEUE;
            self.key_len -= 1;
        }
        self.keys[(self.key_head + self.key_len) % KEY_QUEUE] = Some(CapturedKey {
            key,
            source,
            timestamp,
        });
        self.key_len += 1;
        self.counters.keys += 1;
    }
}

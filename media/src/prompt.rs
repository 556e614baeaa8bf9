//! Prompts to the caller: queued clips (8 kHz PCM) played 20 ms at a time.
//!
//! Each frame either rides in an agent → caller packet (mixed into its audio) or, when the agent
//! leg is silent, goes out as a packet of the player's own RTP stream (its own SSRC, continuous
//! sequence numbers and timestamps across clips). [`PromptPlayer::stop`] empties the queue: a
//! key from the caller interrupts the prompt (barge-in). Sans-IO: the shell calls
//! [`PromptPlayer::next_packet`] every 20 ms.

use std::collections::VecDeque;
use std::sync::Arc;

use tonegate_dsp::{G711Law, FRAME_SAMPLES};

use super::rtp::write_packet;

/// A prompt clip: 8 kHz mono samples.
pub type Clip = Arc<[i16]>;

/// Plays queued clips to the caller.
#[derive(Debug)]
pub struct PromptPlayer {
    law: G711Law,
    pt: u8,
    queue: VecDeque<Clip>,
    pos: usize,
    ssrc: u32,
    seq: u16,
    ts: u32,
    /// A frame already went out mixed into agent audio since the last tick.
    mixed: bool,
    frames_played: u64,
}

/// Where a prompt stream starts: SSRC, first sequence number and timestamp. RFC 3550 wants
/// them random; the shell draws them (this crate takes no randomness of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStart {
    /// Synchronisation source.
    pub ssrc: u32,
    /// First sequence number.
    pub seq: u16,
    /// First timestamp.
    pub ts: u32,
}

impl PromptPlayer {
    /// A player for the call's codec, its stream starting at `start`.
    pub fn new(law: G711Law, start: StreamStart) -> Self {
        PromptPlayer {
            law,
            pt: match law {
                G711Law::Ulaw => 0,
                G711Law::Alaw => 8,
            },
            queue: VecDeque::new(),
            pos: 0,
            ssrc: start.ssrc,
            seq: start.seq,
            ts: start.ts,
            mixed: false,
            frames_played: 0,
        }
    }

    /// Queues a clip after whatever is playing.
    pub fn enqueue(&mut self, clip: Clip) {
        if !clip.is_empty() {
            self.queue.push_back(clip);
        }
    }

    /// Stops at once and forgets the queue (barge-in, or the call moved on).
    pub fn stop(&mut self) {
        self.queue.clear();
        self.pos = 0;
    }

    /// Whether anything is playing or queued.
    pub fn is_playing(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Frames played so far.
    pub fn frames_played(&self) -> u64 {
        self.frames_played
    }

    /// Takes the next frame of samples into `out` (silence-padded at a clip's end).
    fn next_frame(&mut self, out: &mut [i16; FRAME_SAMPLES]) -> bool {
        let Some(clip) = self.queue.front() else {
            return false;
        };
        let n = (clip.len() - self.pos).min(FRAME_SAMPLES);
        out[..n].copy_from_slice(&clip[self.pos..self.pos + n]);
        out[n..].fill(0);
        self.pos += n;
        if self.pos >= clip.len() {
            self.queue.pop_front();
            self.pos = 0;
        }
        self.frames_played += 1;
        true
    }

    /// Mixes the next frame into an agent → caller G.711 payload (20 ms assumed).
    pub fn mix_into(&mut self, payload: &mut [u8]) {
        let mut frame = [0i16; FRAME_SAMPLES];
        if !self.next_frame(&mut frame) {
            return;
        }
        let n = payload.len().min(FRAME_SAMPLES);
        for (p, &s) in payload[..n].iter_mut().zip(&frame[..n]) {
            let mixed = self.law.decode(*p) as i32 + s as i32;
            *p = self
                .law
                .encode(mixed.clamp(i16::MIN as i32, i16::MAX as i32) as i16);
        }
        self.mixed = true;
    }

    /// The 20 ms tick: the next frame as a packet of the player's own stream, written into
    /// `out`, unless a frame already went out mixed since the last tick or nothing plays.
    pub fn next_packet(&mut self, out: &mut [u8]) -> Option<usize> {
        if std::mem::take(&mut self.mixed) {
            return None;
        }
        let mut frame = [0i16; FRAME_SAMPLES];
        let marker = self.pos == 0;
        if !self.next_frame(&mut frame) {
            return None;
        }
        let mut payload = [0u8; FRAME_SAMPLES];
        self.law.encode_into(&frame, &mut payload);
        let n = write_packet(out, self.pt, marker, self.seq, self.ts, self.ssrc, &payload);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(FRAME_SAMPLES as u32);
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::RtpHeader;

    const START: StreamStart = StreamStart {
        ssrc: 0x1234_5678,
        seq: 65_530,
        ts: 4_294_967_000,
    };

    #[test]
    fn plays_clips_in_order_as_one_stream_and_stops_on_barge_in() {
        let mut p = PromptPlayer::new(G711Law::Ulaw, START);
        p.enqueue(
            (0..400)
                .map(|i| (i % 50) as i16 * 100)
                .collect::<Vec<_>>()
                .into(),
        );
        p.enqueue(vec![1000i16; 160].into());
        let mut out = [0u8; 200];
        let mut hdrs = Vec::new();
        while let Some(n) = p.next_packet(&mut out) {
            hdrs.push(RtpHeader::parse(&out[..n]).unwrap());
        }
        // 400 samples → 3 frames (last padded), then 1 frame.
        assert_eq!(hdrs.len(), 4);
        for w in hdrs.windows(2) {
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
            assert_eq!(w[1].timestamp, w[0].timestamp.wrapping_add(160));
            assert_eq!(w[1].ssrc, w[0].ssrc);
        }
        assert!(hdrs[0].marker && hdrs[3].marker && !hdrs[1].marker);
        assert!(!p.is_playing());
        p.enqueue(vec![5i16; 8000].into());
        assert!(p.next_packet(&mut out).is_some());
        p.stop();
        assert!(p.next_packet(&mut out).is_none());
    }

    #[test]
    fn a_mixed_frame_replaces_the_tick_packet() {
        let mut p = PromptPlayer::new(G711Law::Alaw, START);
        p.enqueue(vec![2000i16; 800].into());
        let mut payload = [G711Law::Alaw.silence(); 160];
        p.mix_into(&mut payload);
        assert!(payload.iter().all(|&c| G711Law::Alaw.decode(c) > 1500));
        let mut out = [0u8; 200];
        assert!(
            p.next_packet(&mut out).is_none(),
            "this tick's frame went out mixed"
        );
        assert!(p.next_packet(&mut out).is_some());
    }
}

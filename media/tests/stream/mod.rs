//! Generated caller streams and what an agent hears: shared by the media crate's tests and
//! the gateway's (which include this file by path).

#![allow(dead_code)] // Each including test crate uses part of it.

/// One RTP packet of a generated caller stream, with when it should be sent.
#[derive(Clone, Debug)]
pub struct StreamPacket {
    pub bytes: Vec<u8>,
    /// Packet times (ptime) since the stream began.
    pub tick: u64,
}

/// Options for [`rtp_stream`].
#[derive(Clone, Copy, Debug)]
pub struct StreamOptions {
    pub law: tonegate_dsp::G711Law,
    /// Send each key as RFC 4733 events with this payload type, besides the audio.
    pub events_pt: Option<u8>,
    /// Send only events during a key (no audio), as many phones do.
    pub events_replace_audio: bool,
    pub ssrc: u32,
    pub first_seq: u16,
    pub first_ts: u32,
    /// Samples per audio packet (160 = 20 ms).
    pub ptime_samples: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            law: tonegate_dsp::G711Law::Ulaw,
            events_pt: None,
            events_replace_audio: false,
            ssrc: 0x1234_5678,
            first_seq: 65_000,
            first_ts: 4_294_960_000,
            ptime_samples: 160,
        }
    }
}

/// The RTP packets (PCMU/PCMA, `ptime_samples` each) a caller sends for `signal`, plus RFC 4733
/// events for its keys if asked: one event packet per audio packet while the key lasts, then
/// the end packet three times (RFC 4733 §2.5.1.4).
pub fn rtp_stream(
    signal: &tonegate_dsp::generator::KeyedSignal,
    opt: StreamOptions,
) -> Vec<StreamPacket> {
    use tonegate_media::rtp::{write_packet, TelephoneEvent};
    let pt = match opt.law {
        tonegate_dsp::G711Law::Ulaw => 0,
        tonegate_dsp::G711Law::Alaw => 8,
    };
    let mut out = Vec::new();
    let mut seq = opt.first_seq;
    let n = opt.ptime_samples;
    let frames = signal.samples.len() / n;
    for f in 0..frames {
        let start = f * n;
        let ts = opt.first_ts.wrapping_add(start as u32);
        let key = signal
            .keys
            .iter()
            .find(|k| k.range.start < start + n && k.range.end > start);
        if let (Some(k), Some(ept)) = (key, opt.events_pt) {
            let ev_ts = opt.first_ts.wrapping_add(k.range.start as u32);
            let ends_here = k.range.end <= start + n;
            let duration = (start + n - k.range.start).min(k.range.len()) as u16;
            let ev = TelephoneEvent {
                code: k.key.event_code(),
                end: ends_here,
                volume: 10,
                duration,
            };
            let copies = if ends_here { 3 } else { 1 };
            for _ in 0..copies {
                let mut payload = [0u8; 4];
                ev.write(&mut payload);
                let mut b = vec![0u8; 16];
                write_packet(
                    &mut b,
                    ept,
                    k.range.start >= start,
                    seq,
                    ev_ts,
                    opt.ssrc,
                    &payload,
                );
                seq = seq.wrapping_add(1);
                out.push(StreamPacket {
                    bytes: b,
                    tick: f as u64,
                });
            }
            if opt.events_replace_audio {
                continue;
            }
        }
        let mut payload = vec![0u8; n];
        opt.law
            .encode_into(&signal.samples[start..start + n], &mut payload);
        let mut b = vec![0u8; 12 + n];
        write_packet(&mut b, pt, f == 0, seq, ts, opt.ssrc, &payload);
        seq = seq.wrapping_add(1);
        out.push(StreamPacket {
            bytes: b,
            tick: f as u64,
        });
    }
    out
}

/// Decodes the audio packets an agent received into one signal, each payload placed by its
/// timestamp relative to `first_ts` (gaps stay silent).
pub fn agent_audio(packets: &[Vec<u8>], law: tonegate_dsp::G711Law, first_ts: u32) -> Vec<i16> {
    use tonegate_media::rtp::RtpHeader;
    let audio_pt = match law {
        tonegate_dsp::G711Law::Ulaw => 0,
        tonegate_dsp::G711Law::Alaw => 8,
    };
    let mut out: Vec<i16> = Vec::new();
    for p in packets {
        let h = RtpHeader::parse(p).unwrap();
        if h.payload_type != audio_pt {
            continue;
        }
        let at = h.timestamp.wrapping_sub(first_ts) as usize;
        let payload = &p[h.payload_start..h.payload_end];
        if out.len() < at + payload.len() {
            out.resize(at + payload.len(), 0);
        }
        law.decode_into(payload, &mut out[at..at + payload.len()]);
    }
    out
}

/// Keys `tonegate_dsp`'s detector finds in a signal.
pub fn keys_in(samples: &[i16]) -> String {
    let mut d = tonegate_dsp::DtmfDetector::new();
    let mut s = String::new();
    for c in samples.chunks(160) {
        d.process(c);
        while let Some(k) = d.poll_key() {
            s.push(k.key.as_char());
        }
    }
    d.flush();
    while let Some(k) = d.poll_key() {
        s.push(k.key.as_char());
    }
    s
}

/// A call's media settings for tests: silence masking, events dropped, a fixed prompt stream
/// and a 30 s media timeout.
pub fn call_config(
    law: tonegate_dsp::G711Law,
    event_pt: Option<u8>,
    lookahead: usize,
) -> tonegate_media::CallMediaConfig {
    tonegate_media::CallMediaConfig {
        law,
        event_pt,
        rtcp_mux: false,
        relatch: false,
        mode: tonegate_dsp::MaskingMode::Silence,
        lookahead,
        event_replacement: tonegate_media::EventReplacement::Drop,
        prompt_start: tonegate_media::StreamStart {
            ssrc: 7,
            seq: 0,
            ts: 0,
        },
        media_timeout: std::time::Duration::from_secs(30),
    }
}

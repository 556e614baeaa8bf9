//! The relay's media path without a network: caller packets into `CallMedia`, agent packets
//! out. What the agent gets must hold no key, by audio or by event; capture must get every key
//! once; sequence numbers, timestamps, SSRC and markers must stay coherent.

mod stream;

use std::net::SocketAddr;
use std::time::Instant;

use stream::*;
use tonegate_dsp::generator::human_keying;
use tonegate_dsp::G711Law;
use tonegate_media::rtp::RtpHeader;
use tonegate_media::{
    CallMedia, CallMediaConfig, CapturedKey, Channel, EventReplacement, KeySource, MediaEvent, Side,
};

const CALLER: &str = "127.0.0.1:40000";
const AGENT: &str = "127.0.0.1:50000";

fn config(law: G711Law, event_pt: Option<u8>, lookahead: usize) -> CallMediaConfig {
    call_config(law, event_pt, lookahead)
}

/// Where each test's time starts: the core takes time only as input, so any instant will do.
fn t0() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

/// The next captured key, passing over other events.
fn next_key(m: &mut CallMedia) -> Option<CapturedKey> {
    while let Some(e) = m.poll_event() {
        if let MediaEvent::Key(k) = e {
            return Some(k);
        }
    }
    None
}

struct Run {
    agent: Vec<Vec<u8>>,
    keys: Vec<(char, KeySource)>,
    media: CallMedia,
}

/// Sends `packets` from the caller; `secure_at`: packet index at which secure mode turns on
/// (and optionally off).
fn run(
    cfg: CallMediaConfig,
    packets: &[StreamPacket],
    secure_on: usize,
    secure_off: Option<usize>,
) -> Run {
    let caller: SocketAddr = CALLER.parse().unwrap();
    let agent: SocketAddr = AGENT.parse().unwrap();
    let mut m = CallMedia::new(cfg, Some(caller), Some(agent), t0());
    let mut out = Vec::new();
    let mut keys = Vec::new();
    let mut buf = [0u8; 1500];
    for (i, p) in packets.iter().enumerate() {
        if i == secure_on {
            m.set_secure(true);
        }
        if Some(i) == secure_off {
            m.set_secure(false);
        }
        let mut b = p.bytes.clone();
        let n = b.len();
        if let Some(t) = m.on_datagram(Side::Caller, Channel::Rtp, caller, &mut b, n) {
            assert_eq!((t.from, t.to), (Side::Agent, agent));
            out.push(b[..t.len].to_vec());
        }
        while let Some(t) = m.poll_transmit(&mut buf) {
            out.push(buf[..t.len].to_vec());
        }
        while let Some(k) = next_key(&mut m) {
            keys.push((k.key().as_char(), k.source));
        }
    }
    Run {
        agent: out,
        keys,
        media: m,
    }
}

fn key_string(keys: &[(char, KeySource)]) -> String {
    keys.iter().map(|k| k.0).collect()
}

#[test]
fn secure_mode_masks_every_inband_key_and_captures_it() {
    for law in [G711Law::Ulaw, G711Law::Alaw] {
        for lookahead in [1, 2, 3] {
            let signal = human_keying("4242424242424242#1230#737#", 3, Some(25.0));
            let opts = StreamOptions {
                law,
                ..Default::default()
            };
            let packets = rtp_stream(&signal, opts);
            let r = run(config(law, None, lookahead), &packets, 0, None);
            let heard = agent_audio(&r.agent, law, opts.first_ts);
            assert_eq!(
                keys_in(&heard),
                "",
                "{law:?} lookahead {lookahead}: agent heard keys"
            );
            assert_eq!(
                key_string(&r.keys),
                signal.key_string(),
                "{law:?} lookahead {lookahead}"
            );
            assert!(r.keys.iter().all(|k| k.1 == KeySource::InBand));
            // Everything but the last `lookahead` packets (still in the delay line) went out.
            assert_eq!(r.agent.len(), packets.len() - lookahead);
        }
    }
}

#[test]
fn events_are_consumed_and_keys_sent_both_ways_are_captured_once() {
    let signal = human_keying("5555555555554444#0528#123#", 8, Some(25.0));
    for replace_audio in [false, true] {
        let opts = StreamOptions {
            events_pt: Some(101),
            events_replace_audio: replace_audio,
            ..Default::default()
        };
        let packets = rtp_stream(&signal, opts);
        let r = run(config(G711Law::Ulaw, Some(101), 1), &packets, 0, None);
        // No telephone-event reaches the agent, and no tone.
        for p in &r.agent {
            assert_ne!(RtpHeader::parse(p).unwrap().payload_type, 101);
        }
        assert_eq!(
            keys_in(&agent_audio(&r.agent, G711Law::Ulaw, opts.first_ts)),
            ""
        );
        assert_eq!(
            key_string(&r.keys),
            signal.key_string(),
            "replace_audio {replace_audio}"
        );
        let counters = r.media.counters();
        assert!(
            counters
                .events_consumed
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
        if !replace_audio {
            // Both ways: the in-band copy of each key was recognised as the same key.
            assert_eq!(
                counters
                    .duplicate_keys
                    .load(std::sync::atomic::Ordering::Relaxed),
                signal.keys.len() as u64
            );
        }
    }
}

#[test]
fn fixed_key_replacement_hides_which_key() {
    let signal = human_keying("123#", 2, None);
    let opts = StreamOptions {
        events_pt: Some(101),
        ..Default::default()
    };
    let packets = rtp_stream(&signal, opts);
    let mut cfg = config(G711Law::Ulaw, Some(101), 1);
    cfg.event_replacement = EventReplacement::FixedKey(tonegate_dsp::DtmfKey::A);
    let r = run(cfg, &packets, 0, None);
    let events: Vec<u8> = r
        .agent
        .iter()
        .filter_map(|p| {
            let h = RtpHeader::parse(p).unwrap();
            (h.payload_type == 101).then(|| p[h.payload_start])
        })
        .collect();
    assert!(!events.is_empty());
    assert!(events
        .iter()
        .all(|&c| c == tonegate_dsp::DtmfKey::A.event_code()));
    assert_eq!(key_string(&r.keys), "123#");
}

#[test]
fn agent_sequence_numbers_stay_contiguous_across_drops_and_toggles() {
    let signal = human_keying("9876#5432#", 5, Some(30.0));
    let opts = StreamOptions {
        events_pt: Some(101),
        ..Default::default()
    };
    let packets = rtp_stream(&signal, opts);
    let third = packets.len() / 3;
    let r = run(
        config(G711Law::Ulaw, Some(101), 1),
        &packets,
        third,
        Some(2 * third),
    );
    let hdrs: Vec<RtpHeader> = r
        .agent
        .iter()
        .map(|p| RtpHeader::parse(p).unwrap())
        .collect();
    for w in hdrs.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "sequence gap");
        assert_eq!(w[1].ssrc, opts.ssrc);
    }
    // Audio timestamps advance by one frame each (events carry their start time, RFC 4733).
    let audio: Vec<&RtpHeader> = hdrs.iter().filter(|h| h.payload_type == 0).collect();
    for w in audio.windows(2) {
        assert_eq!(
            w[1].timestamp.wrapping_sub(w[0].timestamp),
            160,
            "audio timestamps"
        );
    }
    assert_eq!(
        hdrs[0].seq, opts.first_seq,
        "starts where the caller started"
    );
    assert!(hdrs[0].marker, "marker bit kept");
    // Some events were dropped during the secure third, none outside it.
    let events_out = hdrs.iter().filter(|h| h.payload_type == 101).count();
    let events_in = packets.iter().filter(|p| p.bytes[1] & 0x7F == 101).count();
    assert!(events_out > 0 && events_out < events_in);
}

#[test]
fn outside_secure_mode_packets_pass_byte_for_byte() {
    let signal = human_keying("4111#", 1, Some(30.0));
    let opts = StreamOptions {
        events_pt: Some(101),
        ..Default::default()
    };
    let packets = rtp_stream(&signal, opts);
    let r = run(
        config(G711Law::Ulaw, Some(101), 1),
        &packets,
        usize::MAX,
        None,
    );
    let sent: Vec<Vec<u8>> = packets.iter().map(|p| p.bytes.clone()).collect();
    assert_eq!(r.agent, sent);
    assert!(r.keys.is_empty(), "no capture outside secure mode");
}

#[test]
fn toggling_never_bursts() {
    // Per packet in, at most one packet out, and after the delay line fills, exactly one.
    let signal = human_keying("12#", 4, None);
    let packets = rtp_stream(&signal, StreamOptions::default());
    let caller: SocketAddr = CALLER.parse().unwrap();
    let mut m = CallMedia::new(
        config(G711Law::Ulaw, None, 2),
        Some(caller),
        Some(AGENT.parse().unwrap()),
        t0(),
    );
    let mut buf = [0u8; 1500];
    for (i, p) in packets.iter().enumerate() {
        if i % 40 == 10 {
            m.set_secure(!m.is_secure());
        }
        let mut b = p.bytes.clone();
        let n = b.len();
        let mut count = m
            .on_datagram(Side::Caller, Channel::Rtp, caller, &mut b, n)
            .is_some() as usize;
        while m.poll_transmit(&mut buf).is_some() {
            count += 1;
        }
        assert!(count <= 1, "packet {i}: {count} out");
        if i > 20 {
            assert_eq!(count, 1, "packet {i}: none out");
        }
    }
}

#[test]
fn latching_and_foreign_sources() {
    let caller: SocketAddr = CALLER.parse().unwrap();
    let stranger: SocketAddr = "127.0.0.1:40999".parse().unwrap();
    let agent: SocketAddr = AGENT.parse().unwrap();
    let mut m = CallMedia::new(config(G711Law::Ulaw, None, 1), None, None, t0());
    let mut p = [0u8; 172];
    let n = tonegate_media::rtp::write_packet(&mut p, 0, false, 1, 160, 9, &[0xFF; 160]);
    // Nowhere to send yet: the agent has not spoken.
    assert!(m
        .on_datagram(Side::Caller, Channel::Rtp, caller, &mut p, n)
        .is_none());
    assert_eq!(m.remote(Side::Caller), Some(caller));
    // The agent's first packet latches the agent and goes to the caller.
    let t = m
        .on_datagram(Side::Agent, Channel::Rtp, agent, &mut p, n)
        .unwrap();
    assert_eq!(t.to, caller);
    // A stranger on the caller's port is dropped and counted.
    assert!(m
        .on_datagram(Side::Caller, Channel::Rtp, stranger, &mut p, n)
        .is_none());
    let c = m.counters();
    assert_eq!(
        c.foreign_source.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Re-latching follows a new address only within the leg's rule, and only after several
    // packets carrying the stream's own SSRC: a forged or stray packet never takes the leg.
    let mut cfg = config(G711Law::Ulaw, None, 1);
    cfg.relatch = true;
    let host = tonegate_media::RemoteRule::Host(caller.ip());
    let mut m = CallMedia::with_rules(cfg, host, tonegate_media::RemoteRule::Exact(agent), t0());
    assert!(m
        .on_datagram(Side::Caller, Channel::Rtp, caller, &mut p, n)
        .is_some());
    let mut other = [0u8; 172];
    let forged = tonegate_media::rtp::write_packet(&mut other, 0, false, 2, 320, 77, &[0xFF; 160]);
    for _ in 0..10 {
        assert!(m
            .on_datagram(Side::Caller, Channel::Rtp, stranger, &mut other, forged)
            .is_none());
    }
    assert_eq!(
        m.remote(Side::Caller),
        Some(caller),
        "another SSRC never re-latches"
    );
    for i in 1..tonegate_media::call::RELATCH_PACKETS {
        assert!(
            m.on_datagram(Side::Caller, Channel::Rtp, stranger, &mut p, n)
                .is_none(),
            "packet {i} of the same stream from a new port is held back"
        );
    }
    assert!(m
        .on_datagram(Side::Caller, Channel::Rtp, stranger, &mut p, n)
        .is_some());
    assert_eq!(m.remote(Side::Caller), Some(stranger));
    // Outside the rule's host nothing latches, first packet or not.
    let mut m = CallMedia::with_rules(
        config(G711Law::Ulaw, None, 1),
        tonegate_media::RemoteRule::Host("127.0.0.2".parse().unwrap()),
        tonegate_media::RemoteRule::Exact(agent),
        t0(),
    );
    assert!(m
        .on_datagram(Side::Caller, Channel::Rtp, caller, &mut p, n)
        .is_none());
    assert_eq!(m.remote(Side::Caller), None);
    assert_eq!(
        m.counters()
            .foreign_source
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// Issue 23, finding 10: a leg never latches to, nor sends to, an address that is not a
/// unicast remote (a forged source of 0.0.0.0, a group, broadcast, port 0; SDP's hold address).
#[test]
fn no_leg_latches_to_or_aims_at_multicast_broadcast_or_unspecified() {
    use tonegate_media::RemoteRule;
    let agent: SocketAddr = AGENT.parse().unwrap();
    let mut p = [0u8; 172];
    let n = tonegate_media::rtp::write_packet(&mut p, 0, false, 1, 160, 9, &[0xFF; 160]);
    let mut m = CallMedia::with_rules(
        config(G711Law::Ulaw, None, 1),
        RemoteRule::Any,
        RemoteRule::Exact(agent),
        t0(),
    );
    for bad in [
        "0.0.0.0:4000",
        "224.0.0.1:4000",
        "255.255.255.255:4000",
        "127.0.0.1:0",
        "[::]:4000",
        "[ff02::1]:4000",
        "[::ffff:239.0.0.1]:4000",
    ] {
        let from: SocketAddr = bad.parse().unwrap();
        assert!(m
            .on_datagram(Side::Caller, Channel::Rtp, from, &mut p, n)
            .is_none());
        assert_eq!(m.remote(Side::Caller), None, "{bad} latched");
    }
    assert_eq!(
        m.counters()
            .foreign_source
            .load(std::sync::atomic::Ordering::Relaxed),
        7
    );
    // Signalling naming such a destination (an SDP hold, a group) gives the leg no destination.
    for bad in ["0.0.0.0:4000", "224.0.0.1:4000", "10.0.0.1:0"] {
        let to: SocketAddr = bad.parse().unwrap();
        let mut m = CallMedia::with_rules(
            config(G711Law::Ulaw, None, 1),
            RemoteRule::Sdp(to),
            RemoteRule::Exact(agent),
            t0(),
        );
        assert_eq!(m.remote(Side::Caller), None, "{bad}");
        m.set_remote_rule(Side::Agent, RemoteRule::Exact(to));
        assert_eq!(m.remote(Side::Agent), None, "{bad}");
        assert!(m
            .on_datagram(
                Side::Caller,
                Channel::Rtp,
                "10.0.0.9:4000".parse().unwrap(),
                &mut p,
                n
            )
            .is_none());
    }
}

#[test]
fn garbage_is_dropped_and_counted() {
    let caller: SocketAddr = CALLER.parse().unwrap();
    let mut m = CallMedia::new(
        config(G711Law::Ulaw, Some(101), 1),
        Some(caller),
        Some(AGENT.parse().unwrap()),
        t0(),
    );
    m.set_secure(true);
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80; 5],
        vec![0x40; 20],
        vec![0x8F; 20],
        vec![0x80; 1600],
        {
            let mut v = vec![0u8; 172];
            tonegate_media::rtp::write_packet(&mut v, 101, false, 1, 1, 1, &[]);
            v.truncate(12);
            v
        },
    ];
    for mut c in cases {
        let n = c.len();
        c.resize(n.max(1), 0);
        let _ = m.on_datagram(Side::Caller, Channel::Rtp, caller, &mut c, n);
    }
    // RTCP garbage on the RTCP port.
    let mut junk = [0xFFu8; 40];
    assert!(m
        .on_datagram(Side::Caller, Channel::Rtcp, caller, &mut junk, 40)
        .is_none());
    let c = m.counters();
    // The five broken RTP datagrams (empty, short, version 1, CSRCs past the end, oversize)
    // and the RTCP junk; the header-only telephone-event is well-formed RTP.
    assert_eq!(c.malformed.load(std::sync::atomic::Ordering::Relaxed), 6);
}

mod packet_path_properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        /// Whatever arrives, on any leg or channel, in or out of secure mode: no panic, and
        /// nothing longer than what came in goes out.
        #[test]
        fn arbitrary_datagrams_never_panic(
            datagrams in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..600), 0u8..4, any::<bool>()), 1..40),
            secure in any::<bool>(),
        ) {
            let caller: SocketAddr = CALLER.parse().unwrap();
            let agent: SocketAddr = AGENT.parse().unwrap();
            let mut m = CallMedia::new(config(G711Law::Ulaw, Some(101), 1), Some(caller), Some(agent), t0());
            m.set_secure(secure);
            let mut out = [0u8; 1500];
            for (mut d, which, rtp_like) in datagrams {
                if rtp_like && d.len() >= 12 {
                    d[0] = 0x80;
                    d[1] = if which % 2 == 0 { 0 } else { 101 };
                }
                let n = d.len();
                d.resize(n.max(1), 0);
                let (side, channel) = match which {
                    0 => (Side::Caller, Channel::Rtp),
                    1 => (Side::Caller, Channel::Rtcp),
                    2 => (Side::Agent, Channel::Rtp),
                    _ => (Side::Agent, Channel::Rtcp),
                };
                if let Some(t) = m.on_datagram(side, channel, if side == Side::Caller { caller } else { agent }, &mut d, n) {
                    prop_assert!(t.len <= n);
                }
                while let Some(t) = m.poll_transmit(&mut out) {
                    prop_assert!(t.len <= 512);
                }
                while next_key(&mut m).is_some() {}
            }
        }
    }
}

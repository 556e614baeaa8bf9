//! One RTP packet through a call's media logic, per packet: `plain` (parse, latch, route) and
//! `secure` (also decode, detect, mask, delay and re-encode).
//!
//!     cargo bench -p tonegate-bench --bench relay_packet

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tonegate_dsp::{G711Law, MaskingMode};

mod fixtures;
use fixtures::{load, ulaw_payloads};

/// One RTP packet through a call's media logic, as the relay's IO shells drive it: parse,
/// latch, route, and in secure mode decode, detect, mask, delay and re-encode. `secure` over
/// `plain` is the media-side cost of masking (the sockets are the relay_load example's).
fn relay_packet(c: &mut Criterion) {
    use tonegate_media::rtp::write_packet;
    use tonegate_media::{CallMedia, CallMediaConfig, Channel, EventReplacement, Side};
    let keys = load("audio/card_entry.wav");
    let payloads = ulaw_payloads(&keys);
    let caller: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let agent: std::net::SocketAddr = "127.0.0.1:40002".parse().unwrap();
    // A bench is a shell: it hands the core its time.
    #[allow(clippy::disallowed_methods)]
    let start = std::time::Instant::now();
    let mut g = c.benchmark_group("relay_packet");
    g.throughput(Throughput::Elements(1));
    for (name, secure) in [("plain", false), ("secure", true)] {
        let mut call = CallMedia::new(
            CallMediaConfig {
                law: G711Law::Ulaw,
                event_pt: Some(101),
                rtcp_mux: false,
                relatch: false,
                mode: MaskingMode::Silence,
                lookahead: 1,
                event_replacement: EventReplacement::Drop,
                prompt_start: tonegate_media::StreamStart {
                    ssrc: 7,
                    seq: 0,
                    ts: 0,
                },
                media_timeout: std::time::Duration::from_secs(30),
            },
            Some(caller),
            Some(agent),
            start,
        );
        call.set_secure(secure);
        let (mut buf, mut out) = ([0u8; 2048], [0u8; 1500]);
        // Sequence number and timestamp wrap together as a real stream's do.
        let mut packet: u32 = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                let p = &payloads[packet as usize % payloads.len()];
                let (seq, ts) = (packet as u16, packet.wrapping_mul(160));
                let n = write_packet(&mut buf, 0, false, seq, ts, 7, p);
                let sent = call.on_datagram(Side::Caller, Channel::Rtp, caller, &mut buf, n);
                black_box(sent);
                while let Some(t) = call.poll_transmit(&mut out) {
                    black_box(t);
                }
                while call.poll_event().is_some() {}
                packet = packet.wrapping_add(1);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, relay_packet);
criterion_main!(benches);

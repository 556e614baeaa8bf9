//! `CallMedia` owns its time: the shell runs `handle_timeout` when `poll_timeout` says, and the
//! core paces prompts and reports silence from the times it is given — no clock, no sleep.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonegate_dsp::G711Law;
use tonegate_media::rtp::write_packet;
use tonegate_media::{CallMedia, CallMediaConfig, Channel, MediaEvent, Side};

mod stream;

const CALLER: &str = "127.0.0.1:40000";
const AGENT: &str = "127.0.0.1:50000";
const MS: Duration = Duration::from_millis(1);

fn call(timeout_s: u64) -> (CallMedia, Instant) {
    // Any instant will do: the core only compares the times it is given.
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    let cfg = CallMediaConfig {
        media_timeout: Duration::from_secs(timeout_s),
        ..stream::call_config(G711Law::Ulaw, Some(101), 1)
    };
    let m = CallMedia::new(
        cfg,
        Some(CALLER.parse().unwrap()),
        Some(AGENT.parse().unwrap()),
        t0,
    );
    (m, t0)
}

fn events(m: &mut CallMedia) -> Vec<MediaEvent> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

/// Runs the call at `now` and returns where the datagrams it sends go.
fn run_at(m: &mut CallMedia, now: Instant) -> Vec<SocketAddr> {
    m.handle_timeout(now);
    let mut out = [0u8; 1500];
    std::iter::from_fn(|| m.poll_transmit(&mut out).map(|t| t.to)).collect()
}

fn caller_packet(m: &mut CallMedia, seq: u16) {
    let mut p = [0u8; 172];
    let n = write_packet(&mut p, 0, false, seq, seq as u32 * 160, 9, &[0xFF; 160]);
    let caller: SocketAddr = CALLER.parse().unwrap();
    let _ = m.on_datagram(Side::Caller, Channel::Rtp, caller, &mut p, n);
}

#[test]
fn silence_is_reported_after_the_media_timeout_and_never_while_media_flows() {
    let (mut m, t0) = call(3);
    assert_eq!(
        m.poll_timeout(),
        t0 + Duration::from_secs(1),
        "checks once a second"
    );
    for s in 1..3 {
        run_at(&mut m, t0 + Duration::from_secs(s));
        assert_eq!(
            events(&mut m),
            [],
            "{s} s of silence is not yet the timeout"
        );
        assert_eq!(m.poll_timeout(), t0 + Duration::from_secs(s + 1));
    }
    run_at(&mut m, t0 + Duration::from_secs(3));
    assert_eq!(events(&mut m), [MediaEvent::Silent]);

    // A packet every second keeps the call up however long it runs; silence counts from the
    // check after the last one.
    let (mut m, t0) = call(3);
    for s in 1..=20u16 {
        caller_packet(&mut m, s);
        run_at(&mut m, t0 + Duration::from_secs(s as u64));
        assert!(!events(&mut m).contains(&MediaEvent::Silent), "second {s}");
    }
    for s in 21..23 {
        run_at(&mut m, t0 + Duration::from_secs(s));
        assert_eq!(events(&mut m), [], "second {s}");
    }
    run_at(&mut m, t0 + Duration::from_secs(23));
    assert_eq!(events(&mut m), [MediaEvent::Silent]);
}

#[test]
fn prompt_frames_are_paced_by_the_time_given_and_never_burst() {
    let (mut m, t0) = call(30);
    let caller: SocketAddr = CALLER.parse().unwrap();
    // 100 ms: five frames.
    m.play(Arc::from(vec![1000i16; 800]));
    assert!(m.poll_timeout() <= t0, "the first frame is due at once");
    assert_eq!(run_at(&mut m, t0), [caller]);
    assert_eq!(m.poll_timeout(), t0 + 20 * MS);
    // Early: nothing.
    assert_eq!(run_at(&mut m, t0 + 19 * MS), []);
    assert_eq!(run_at(&mut m, t0 + 20 * MS), [caller]);
    assert_eq!(m.poll_timeout(), t0 + 40 * MS);
    // 60 ms late: one frame, not three, and the next counts from now.
    assert_eq!(run_at(&mut m, t0 + 100 * MS), [caller]);
    assert_eq!(m.poll_timeout(), t0 + 120 * MS);
    assert_eq!(run_at(&mut m, t0 + 120 * MS), [caller]);
    assert_eq!(run_at(&mut m, t0 + 140 * MS), [caller]);
    assert!(!m.is_prompting(), "five frames played");
    assert_eq!(
        m.poll_timeout(),
        t0 + Duration::from_secs(1),
        "back to the silence check"
    );
    assert_eq!(run_at(&mut m, t0 + 160 * MS), []);

    // Barge-in: stopping the prompt cancels the frame that was due.
    m.play(Arc::from(vec![1000i16; 800]));
    m.stop_prompt();
    assert_eq!(m.poll_timeout(), t0 + Duration::from_secs(1));
    assert_eq!(run_at(&mut m, t0 + 200 * MS), []);
}

#[test]
fn a_leg_learning_its_remote_is_reported_once() {
    let (m, t0) = call(30);
    drop(m);
    let cfg = stream::call_config(G711Law::Ulaw, None, 1);
    let mut m = CallMedia::new(cfg, None, Some(AGENT.parse().unwrap()), t0);
    caller_packet(&mut m, 1);
    assert_eq!(events(&mut m), [MediaEvent::Latched]);
    assert_eq!(m.remote(Side::Caller), Some(CALLER.parse().unwrap()));
    caller_packet(&mut m, 2);
    assert_eq!(events(&mut m), [], "already latched: nothing new");
    // The agent's remote was given: its packets latch nothing.
    let mut p = [0u8; 172];
    let n = write_packet(&mut p, 0, false, 1, 160, 5, &[0xFF; 160]);
    let agent: SocketAddr = AGENT.parse().unwrap();
    let _ = m.on_datagram(Side::Agent, Channel::Rtp, agent, &mut p, n);
    assert_eq!(events(&mut m), []);
}

#[test]
fn lost_packets_are_counted_from_sequence_gaps_not_from_late_or_restarted_ones() {
    use std::sync::atomic::Ordering::Relaxed;
    let (mut m, _) = call(3);
    // Index 0 is the caller's leg.
    let lost = |m: &CallMedia| m.counters().rtp_lost[0].load(Relaxed);
    for seq in [65530, 65531, 65534, 2] {
        caller_packet(&mut m, seq);
    }
    // 65532-65533 and 65535, 0, 1 (across the wrap) are missing.
    assert_eq!(lost(&m), 5);
    // Late and duplicated packets are neither loss nor a new position.
    for seq in [65535, 2, 1] {
        caller_packet(&mut m, seq);
    }
    caller_packet(&mut m, 3);
    assert_eq!(lost(&m), 5);
    // A restarted stream (a jump of thousands) starts counting over.
    caller_packet(&mut m, 30_000);
    caller_packet(&mut m, 30_002);
    assert_eq!(lost(&m), 6);
    assert_eq!(
        m.counters().rtp_in[0].load(Relaxed),
        10,
        "every packet was received"
    );
}

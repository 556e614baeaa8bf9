//! The relay over real UDP on loopback, driven through its HTTP control API (contract 4).

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::gateway::{get, http, post, Gateway};
use common::*;
use serde_json::{json, Value};
use tonegate::media::rtp::{write_packet, RtpHeader};
use tonegate_dsp::generator::{KeyedSignal, PlacedKey};
use tonegate_dsp::{DtmfKey, G711Law};

/// Calls that belong to no account are plain until secure mode is asked for, and secure mode
/// may go off right after a key: the shipped defaults (masked from the first packet, 10 s
/// hold-off) are tested in `tenancy.rs`; these tests are about the media path.
const SESSION_POLICY: &str = "[relay]\ndtmf_masking = \"session\"\nsecure_hold_off_s = 0\n";

/// The card-entry fixture as a signal with its keys.
fn fixture_signal(name: &str) -> KeyedSignal {
    let samples = tonegate::wav::read_pcm8k(&fixture(&format!("audio/{name}.wav"))).unwrap();
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("audio/{name}.json"))).unwrap(),
    )
    .unwrap();
    let keys = truth["digits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| PlacedKey {
            key: DtmfKey::from_char(d["digit"].as_str().unwrap().chars().next().unwrap()).unwrap(),
            range: (d["start_ms"].as_u64().unwrap() as usize * 8)
                ..(d["end_ms"].as_u64().unwrap() as usize * 8),
        })
        .collect();
    KeyedSignal { samples, keys }
}

struct Call {
    id: String,
    caller_local: SocketAddr,
    agent_local: SocketAddr,
}

fn create(gw: &Gateway, token: &str, body: Value) -> Result<Call, (u16, Value)> {
    let (status, v) = post(gw, token, "/relay/v1/calls", &body);
    if status != 201 {
        return Err((status, v));
    }
    Ok(Call {
        id: v["id"].as_str().unwrap().into(),
        caller_local: v["caller"]["local"].as_str().unwrap().parse().unwrap(),
        agent_local: v["agent"]["local"].as_str().unwrap().parse().unwrap(),
    })
}

/// `DELETE /relay/v1/calls/{id}`: the status.
fn delete_call(gw: &Gateway, token: &str, id: &str) -> u16 {
    http()
        .delete(gw.url(&format!("/relay/v1/calls/{id}")))
        .bearer_auth(token)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn get_call(gw: &Gateway, token: &str, id: &str) -> (u16, Value) {
    get(gw, token, &format!("/relay/v1/calls/{id}"))
}

fn set_secure(gw: &Gateway, token: &str, id: &str, on: bool) {
    let r = http()
        .post(gw.url(&format!("/relay/v1/calls/{id}/secure")))
        .bearer_auth(token)
        .json(&json!({ "enabled": on }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn metrics(gw: &Gateway) -> String {
    http()
        .get(gw.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

fn endpoint(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind(format!("{ip}:0")).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    s
}

/// Receives datagrams until none arrives for 400 ms (or 30 s pass).
fn drain(s: &UdpSocket) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        match s.recv_from(&mut buf) {
            Ok((n, _)) => out.push(buf[..n].to_vec()),
            Err(_) => break,
        }
    }
    out
}

/// Sends packets 1 ms apart (faster than real time; the relay does not care about pacing).
fn send_all(from: &UdpSocket, to: SocketAddr, packets: &[Vec<u8>]) {
    for p in packets {
        from.send_to(p, to).unwrap();
        std::thread::sleep(Duration::from_micros(1000));
    }
}

/// Sends `packets` from `from` to `to` while `receiver` collects what arrives; returns that.
fn relay_through(
    from: &UdpSocket,
    to: SocketAddr,
    receiver: &UdpSocket,
    packets: &[Vec<u8>],
) -> Vec<Vec<u8>> {
    let rx = receiver.try_clone().unwrap();
    let t = std::thread::spawn(move || drain(&rx));
    send_all(from, to, packets);
    t.join().unwrap()
}

fn subscribe(gw: &Gateway, id: &str) -> tonegate::relay::KeyStream {
    gw.runtime.block_on(gw.state.relay.key_stream(id)).unwrap()
}

fn captured(keys: &mut tonegate::relay::KeyStream) -> String {
    let mut s = String::new();
    while let Some(k) = keys.try_recv() {
        s.push(k.key().as_char());
    }
    s
}

fn call_body(caller: &UdpSocket, agent: &UdpSocket, codec: &str, event_pt: Option<u8>) -> Value {
    json!({
        "call_guid": format!("guid-{}", caller.local_addr().unwrap().port()),
        "codec": codec,
        "telephone_event_pt": event_pt,
        "caller": { "remote": caller.local_addr().unwrap().to_string() },
        "agent": { "remote": agent.local_addr().unwrap().to_string() },
    })
}

fn plain_forwarding_is_byte_exact_both_ways_with_rtcp() {
    let gw = Gateway::start(SESSION_POLICY);
    let tok = gw.token("relay");
    let (caller, agent) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    let (caller_rtcp, agent_rtcp) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    // RTCP goes to the remote's RTP port + 1: bind the phones' RTCP there if free.
    let _ = (caller_rtcp, agent_rtcp);
    let call = create(&gw, &tok, call_body(&caller, &agent, "PCMU", Some(101))).unwrap();
    let signal = fixture_signal("card_entry");
    let packets: Vec<Vec<u8>> = rtp_stream(
        &signal,
        StreamOptions {
            events_pt: Some(101),
            ..Default::default()
        },
    )
    .into_iter()
    .take(200)
    .map(|p| p.bytes)
    .collect();
    let t = std::thread::spawn({
        let agent = agent.try_clone().unwrap();
        move || drain(&agent)
    });
    send_all(&caller, call.caller_local, &packets);
    assert_eq!(t.join().unwrap(), packets, "caller -> agent byte for byte");
    // And back.
    let t = std::thread::spawn({
        let caller = caller.try_clone().unwrap();
        move || drain(&caller)
    });
    send_all(&agent, call.agent_local, &packets[..50]);
    assert_eq!(
        t.join().unwrap(),
        packets[..50].to_vec(),
        "agent -> caller byte for byte"
    );
    // RTCP from the caller's RTCP port reaches the agent's RTP port + 1.
    let caller_rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let agent_rtcp_addr = SocketAddr::new(
        agent.local_addr().unwrap().ip(),
        agent.local_addr().unwrap().port() + 1,
    );
    let mut rtcp_relayed = 0;
    if let Ok(agent_rtcp) = UdpSocket::bind(agent_rtcp_addr) {
        agent_rtcp
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 7];
        let relay_rtcp = SocketAddr::new(call.caller_local.ip(), call.caller_local.port() + 1);
        caller_rtcp.send_to(&rr, relay_rtcp).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = agent_rtcp.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &rr);
        assert_eq!(
            from.port(),
            call.agent_local.port() + 1,
            "sent from the relay's agent RTCP port"
        );
        rtcp_relayed = 1;
    }
    let (_, info) = get_call(&gw, &tok, &call.id);
    assert_eq!(info["counters"]["caller_rtp_in"], 200);
    assert_eq!(info["counters"]["agent_rtp_out"], 200);
    assert_eq!(info["secure"], false);
    // The engine the test asked for is the one that carried the packets.
    let engine = common::gateway::engine().expect("run under with_engine");
    let metrics = metrics(&gw);
    assert!(
        metrics.contains(&format!(
            "tonegate_relay_engine_info{{engine=\"{engine}\"}} 1"
        )),
        "{metrics}"
    );
    // Every datagram the relay forwarded is in its added-latency histogram, once.
    let h = histogram(&metrics, "tonegate_relay_added_latency_seconds");
    assert_eq!(h.count, 250 + rtcp_relayed, "{metrics}");
    assert_eq!(h.buckets.last(), Some(&("+Inf".to_string(), h.count)));
    assert!(h.buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{h:?}");
    assert!(h.sum > 0.0, "{h:?}");
}

/// One histogram of a Prometheus text exposition.
#[derive(Debug)]
struct Histogram {
    count: u64,
    sum: f64,
    /// `(le, cumulative count)`, in order.
    buckets: Vec<(String, u64)>,
}

fn histogram(text: &str, name: &str) -> Histogram {
    let value = |line: &str| line.rsplit(' ').next().unwrap().to_string();
    let mut h = Histogram {
        count: u64::MAX,
        sum: f64::NAN,
        buckets: Vec::new(),
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{le=\"")) {
            let le = rest.split('"').next().unwrap().to_string();
            h.buckets.push((le, value(line).parse().unwrap()));
        } else if line.starts_with(&format!("{name}_count ")) {
            h.count = value(line).parse().unwrap();
        } else if line.starts_with(&format!("{name}_sum ")) {
            h.sum = value(line).parse().unwrap();
        }
    }
    assert!(
        h.count != u64::MAX && !h.buckets.is_empty(),
        "no {name} in:\n{text}"
    );
    h
}

fn latching_learns_remotes_and_drops_foreign_sources() {
    let gw = Gateway::start(SESSION_POLICY);
    let tok = gw.token("relay");
    let (caller, agent, stranger) = (
        endpoint("127.0.0.1"),
        endpoint("127.0.0.1"),
        endpoint("127.0.0.1"),
    );
    let call = create(
        &gw,
        &tok,
        json!({"call_guid": "latch", "codec": "PCMA", "caller": {"remote": null}, "agent": {"remote": null}}),
    )
    .unwrap();
    let mut p = [0u8; 172];
    let n = write_packet(&mut p, 8, false, 1, 160, 7, &[0xD5; 160]);
    // The agent speaks first: learned, but nothing to forward to yet (the caller is unknown).
    agent.send_to(&p[..n], call.agent_local).unwrap();
    let mut buf = [0u8; 256];
    assert!(caller.recv_from(&mut buf).is_err());
    // The caller's first packet latches the caller and flows to the agent.
    caller.send_to(&p[..n], call.caller_local).unwrap();
    let (m, from) = agent.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..m], &p[..n]);
    assert_eq!(from, call.agent_local);
    // A stranger on the caller's port is dropped and counted.
    for _ in 0..5 {
        stranger.send_to(&p[..n], call.caller_local).unwrap();
    }
    assert!(
        agent.recv_from(&mut buf).is_err(),
        "stranger's packet must not reach the agent"
    );
    let (_, info) = get_call(&gw, &tok, &call.id);
    assert_eq!(info["counters"]["foreign_source"], 5);
    assert_eq!(
        info["caller"]["remote"],
        caller.local_addr().unwrap().to_string()
    );
    assert_eq!(
        info["agent"]["remote"],
        agent.local_addr().unwrap().to_string()
    );
    assert_eq!(info["counters"]["latch_events"], 2);
}

fn ipv6_calls_relay_on_ipv6() {
    let probe = match UdpSocket::bind("[::1]:0") {
        Ok(probe) => probe,
        Err(e) => {
            common::skip("IPv6 relay", &format!("no IPv6 loopback here: {e}"));
            return;
        }
    };
    drop(probe);
    let gw = Gateway::start(SESSION_POLICY);
    let tok = gw.token("relay");
    let (caller, agent) = (endpoint("[::1]"), endpoint("[::1]"));
    let call = create(&gw, &tok, call_body(&caller, &agent, "PCMU", None)).unwrap();
    assert!(call.caller_local.is_ipv6() && call.agent_local.is_ipv6());
    let mut p = [0u8; 172];
    let n = write_packet(&mut p, 0, false, 9, 0, 1, &[0xFF; 160]);
    caller.send_to(&p[..n], call.caller_local).unwrap();
    let mut buf = [0u8; 256];
    let (m, _) = agent.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..m], &p[..n]);
}

fn exhausted_ports_are_503() {
    // Each engine's run has ports of its own (the two run in parallel), below the shipped
    // range every other test gateway draws from (30000-39999) and the kernel's ephemeral ports.
    let base = match common::gateway::engine() {
        Some("tokio") => 29010,
        _ => 29000,
    };
    let gw = Gateway::start(&format!(
        "[relay]\nport_min = {base}\nport_max = {}\ndtmf_masking = \"session\"\n",
        base + 3
    ));
    let tok = gw.token("relay");
    let (caller, agent) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    let call = create(&gw, &tok, call_body(&caller, &agent, "PCMU", None)).unwrap();
    // Two legs × (RTP + RTCP) use all four ports: the next call is refused.
    let mut second = call_body(&caller, &agent, "PCMU", None);
    second["call_guid"] = json!("another-call");
    let (status, body) = create(&gw, &tok, second).err().unwrap();
    assert_eq!(status, 503);
    assert_eq!(body["error"], "relay_exhausted");
    // Deleting the call frees its ports.
    assert_eq!(delete_call(&gw, &tok, &call.id), 204);
    // DELETE answers once the engine has closed the call's sockets: a create right after it
    // gets the ports, every time.
    for round in 0..5 {
        let mut body = call_body(&caller, &agent, "PCMU", None);
        body["call_guid"] = json!(format!("round-{round}"));
        let again = create(&gw, &tok, body).unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(delete_call(&gw, &tok, &again.id), 204);
    }
    let metrics = metrics(&gw);
    assert!(
        metrics.contains("tonegate_relay_calls_refused_total 1"),
        "{metrics}"
    );
}

fn silent_calls_time_out() {
    let gw = Gateway::start("[relay]\nmedia_timeout_s = 1\ndtmf_masking = \"session\"\n");
    let tok = gw.token("relay");
    let (caller, agent) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    let call = create(&gw, &tok, call_body(&caller, &agent, "PCMU", None)).unwrap();
    // No media: after about a second the call is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_call(&gw, &tok, &call.id).0 == 200 {
        assert!(Instant::now() < deadline, "call did not time out");
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = metrics(&gw);
    assert!(
        metrics.contains("tonegate_relay_calls_timed_out_total 1"),
        "{metrics}"
    );
}

/// Issue 23, finding 10: datagrams from sources a leg does not accept counted as activity, so
/// anyone who could reach a call's ports kept it (and them) alive for good.
fn foreign_datagrams_do_not_keep_a_call_alive() {
    let gw = Gateway::start("[relay]\nmedia_timeout_s = 1\ndtmf_masking = \"session\"\n");
    let tok = gw.token("relay");
    let (caller, agent) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    let call = create(&gw, &tok, call_body(&caller, &agent, "PCMU", None)).unwrap();
    let stranger = endpoint("127.0.0.2");
    let mut p = [0u8; 172];
    let n = write_packet(&mut p, 0, false, 1, 160, 7, &[0xFF; 160]);
    // A stranger sends to both legs every 50 ms; the call still times out.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut foreign = 0;
    for _ in 0..400 {
        let (status, info) = get_call(&gw, &tok, &call.id);
        if status != 200 {
            break;
        }
        foreign = info["counters"]["foreign_source"].as_u64().unwrap();
        assert!(
            Instant::now() < deadline,
            "foreign datagrams kept the call alive ({foreign} seen)"
        );
        for to in [call.caller_local, call.agent_local] {
            stranger.send_to(&p[..n], to).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get_call(&gw, &tok, &call.id).0, 404);
    assert!(foreign > 0, "the stranger's datagrams reached the call");
    assert!(drain(&caller).is_empty() && drain(&agent).is_empty());
    assert!(metrics(&gw).contains("tonegate_relay_calls_timed_out_total 1"));
}

/// Streams the fixture through a secure call and returns (agent packets, captured keys).
fn secure_run(
    gw: &Gateway,
    tok: &str,
    law: G711Law,
    events: bool,
    impair: bool,
) -> (Vec<Vec<u8>>, String, StreamOptions) {
    let (caller, agent) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    let codec = if law == G711Law::Ulaw { "PCMU" } else { "PCMA" };
    let call = create(
        gw,
        tok,
        call_body(&caller, &agent, codec, events.then_some(101)),
    )
    .unwrap();
    let mut keys = subscribe(gw, &call.id);
    set_secure(gw, tok, &call.id, true);
    let opts = StreamOptions {
        law,
        events_pt: events.then_some(101),
        ..Default::default()
    };
    let mut packets: Vec<Vec<u8>> = rtp_stream(&fixture_signal("card_entry"), opts)
        .into_iter()
        .map(|p| p.bytes)
        .collect();
    if impair {
        // 1 % loss and 1 % adjacent reordering, deterministic.
        let mut rng = tonegate_dsp::NoiseSource::new(99);
        packets.retain(|_| rng.uniform() > -0.98);
        for i in 1..packets.len() {
            if rng.uniform() > 0.98 {
                packets.swap(i - 1, i);
            }
        }
    }
    let got = relay_through(&caller, call.caller_local, &agent, &packets);
    (got, captured(&mut keys), opts)
}

fn assert_agent_hears_nothing(packets: &[Vec<u8>], law: G711Law, first_ts: u32, label: &str) {
    for p in packets {
        assert_ne!(
            RtpHeader::parse(p).unwrap().payload_type,
            101,
            "{label}: a telephone-event reached the agent"
        );
    }
    let audio = agent_audio(packets, law, first_ts);
    assert!(audio.len() > 8000 * 5, "{label}: too little agent audio");
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("agent.wav");
    tonegate::wav::write_pcm8k(&wav, &audio).unwrap();
    assert_eq!(
        detect_keys(&wav),
        "",
        "{label}: tonegate detect heard keys on the agent leg"
    );
    assert_eq!(
        multimon_keys(&wav),
        "",
        "{label}: multimon-ng heard keys on the agent leg"
    );
}

fn secure_mode_hides_every_key_from_the_agent_pcmu_and_pcma() {
    let gw = Gateway::start(SESSION_POLICY);
    let tok = gw.token("relay");
    let want = truth_keys(&fixture("audio/card_entry.json"));
    for law in [G711Law::Ulaw, G711Law::Alaw] {
        let (got, keys, opts) = secure_run(&gw, &tok, law, false, false);
        assert_agent_hears_nothing(&got, law, opts.first_ts, &format!("{law:?}"));
        assert_eq!(keys, want, "{law:?}: every key reaches capture, in order");
    }
}

fn secure_mode_with_loss_and_reordering() {
    let gw = Gateway::start(SESSION_POLICY);
    let tok = gw.token("relay");
    let want = truth_keys(&fixture("audio/card_entry.json"));
    let (got, keys, opts) = secure_run(&gw, &tok, G711Law::Ulaw, false, true);
    assert_agent_hears_nothing(&got, G711Law::Ulaw, opts.first_ts, "impaired");
    eprintln!(
        "with 1 % loss and reordering, captured {} of {} keys: {}",
        keys.len(),
        want.len(),
        keys == want
    );
    assert!(
        keys.len() + 2 >= want.len(),
        "captured {keys:?}, want {want:?}"
    );
}

fn keys_sent_as_audio_and_rfc4733_are_hidden_and_captured_once() {
    let gw = Gateway::start(SESSION_POLICY);
    let tok = gw.token("relay");
    let want = truth_keys(&fixture("audio/card_entry.json"));
    let (got, keys, opts) = secure_run(&gw, &tok, G711Law::Ulaw, true, false);
    assert_agent_hears_nothing(&got, G711Law::Ulaw, opts.first_ts, "events");
    assert_eq!(keys, want, "each key captured once");
}

/// The card-entry keys at -38, -36 and -10 dBm0 per tone, PCMU and PCMA, with and without
/// telephone-event (sent too when negotiated), 10, 20 and 30 ms packets, all at once over real
/// UDP: the agent leg yields no key from multimon-ng or `tonegate detect`, and capture gets
/// every key from -36 dBm0 up.
fn quiet_and_loud_cards_are_masked_at_every_packet_size() {
    use tonegate_dsp::generator::{add_noise_below, human_keying_at};
    let gw = Gateway::start(SESSION_POLICY);
    let tok = gw.token("relay");
    let card = "4556737586899855#0328#123#";
    struct Prepared {
        label: String,
        law: G711Law,
        level: f32,
        first_ts: u32,
        caller: UdpSocket,
        agent: UdpSocket,
        to: SocketAddr,
        packets: Vec<Vec<u8>>,
        keys: tonegate::relay::KeyStream,
    }
    // Calls are set up here (the gateway handle stays on this thread); the media of all of them
    // then flows at once, four senders in parallel.
    let mut prepared = Vec::new();
    for law in [G711Law::Ulaw, G711Law::Alaw] {
        for events in [false, true] {
            for ptime in [80usize, 160, 240] {
                for level in [-38.0f32, -36.0, -10.0] {
                    let label = format!(
                        "{law:?}, events {events}, {} ms packets, {level} dBm0",
                        ptime / 8
                    );
                    let seed = ptime as u32 + level.abs() as u32;
                    let mut signal = human_keying_at(card, seed, (level - 1.0, level + 1.0));
                    add_noise_below(&mut signal.samples, level, 30.0, seed);
                    let (caller, agent) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
                    let codec = if law == G711Law::Ulaw { "PCMU" } else { "PCMA" };
                    let body = call_body(&caller, &agent, codec, events.then_some(101));
                    let call = create(&gw, &tok, body).unwrap();
                    let keys = subscribe(&gw, &call.id);
                    set_secure(&gw, &tok, &call.id, true);
                    let opts = StreamOptions {
                        law,
                        events_pt: events.then_some(101),
                        ptime_samples: ptime,
                        ..Default::default()
                    };
                    let packets = rtp_stream(&signal, opts)
                        .into_iter()
                        .map(|p| p.bytes)
                        .collect();
                    prepared.push(Prepared {
                        label,
                        law,
                        level,
                        first_ts: opts.first_ts,
                        caller,
                        agent,
                        to: call.caller_local,
                        packets,
                        keys,
                    });
                }
            }
        }
    }
    let received: Vec<Vec<Vec<u8>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = prepared
            .chunks(prepared.len() / 4)
            .map(|runs| {
                scope.spawn(move || {
                    runs.iter()
                        .map(|r| relay_through(&r.caller, r.to, &r.agent, &r.packets))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    for (mut r, got) in prepared.into_iter().zip(received) {
        assert_agent_hears_nothing(&got, r.law, r.first_ts, &r.label);
        if r.level >= -36.0 {
            assert_eq!(captured(&mut r.keys), card, "{}: capture", r.label);
        }
    }
}

fn speech_through_secure_mode_is_barely_masked() {
    let gw = Gateway::start(SESSION_POLICY);
    let tok = gw.token("relay");
    let (mut frames, mut masked) = (0u64, 0u64);
    for name in ["speech_en", "speech_multi"] {
        let (caller, agent) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
        let call = create(&gw, &tok, call_body(&caller, &agent, "PCMU", None)).unwrap();
        set_secure(&gw, &tok, &call.id, true);
        let samples = tonegate::wav::read_pcm8k(&fixture(&format!("speech/{name}.wav"))).unwrap();
        let packets: Vec<Vec<u8>> = rtp_stream(
            &KeyedSignal {
                samples,
                keys: vec![],
            },
            StreamOptions::default(),
        )
        .into_iter()
        .map(|p| p.bytes)
        .collect();
        relay_through(&caller, call.caller_local, &agent, &packets);
        let (_, info) = get_call(&gw, &tok, &call.id);
        frames += info["counters"]["caller_rtp_in"].as_u64().unwrap();
        masked += info["counters"]["frames_masked"].as_u64().unwrap();
    }
    eprintln!(
        "speech frames masked: {masked} of {frames} ({:.2} %)",
        masked as f64 * 100.0 / frames as f64
    );
    assert!(masked * 100 <= frames, "{masked} of {frames}");
}

fn agent_sequence_is_continuous_across_toggles_and_dropped_events() {
    let gw = Gateway::start(SESSION_POLICY);
    let tok = gw.token("relay");
    let (caller, agent) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    let call = create(&gw, &tok, call_body(&caller, &agent, "PCMU", Some(101))).unwrap();
    let opts = StreamOptions {
        events_pt: Some(101),
        ..Default::default()
    };
    let packets: Vec<Vec<u8>> = rtp_stream(&fixture_signal("card_entry"), opts)
        .into_iter()
        .map(|p| p.bytes)
        .collect();
    let t = std::thread::spawn({
        let agent = agent.try_clone().unwrap();
        move || drain(&agent)
    });
    let third = packets.len() / 3;
    send_all(&caller, call.caller_local, &packets[..third]);
    std::thread::sleep(Duration::from_millis(50));
    set_secure(&gw, &tok, &call.id, true);
    send_all(&caller, call.caller_local, &packets[third..2 * third]);
    std::thread::sleep(Duration::from_millis(50));
    set_secure(&gw, &tok, &call.id, false);
    send_all(&caller, call.caller_local, &packets[2 * third..]);
    let got = t.join().unwrap();
    let hdrs: Vec<RtpHeader> = got.iter().map(|p| RtpHeader::parse(p).unwrap()).collect();
    for w in hdrs.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "agent sequence gap");
    }
    let (_, info) = get_call(&gw, &tok, &call.id);
    let consumed = info["counters"]["events_consumed"].as_u64().unwrap();
    assert!(consumed > 0, "{info}");
    // A gap check over nothing (or a few packets) would pass on its own: everything the relay
    // sent arrived, and it sent every packet but the events secure mode consumed and at most
    // the one frame the look-ahead holds.
    let c = &info["counters"];
    assert_eq!(c["caller_rtp_in"], packets.len() as u64, "{info}");
    assert_eq!(c["agent_rtp_out"], hdrs.len() as u64, "{info}");
    let missing = packets.len() as u64 - hdrs.len() as u64 - consumed;
    assert!(missing <= 1, "{missing} packets not forwarded: {info}");
}

fn bad_input_is_dropped_and_counted() {
    let gw = Gateway::start(SESSION_POLICY);
    let tok = gw.token("relay");
    let (caller, agent) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    let call = create(&gw, &tok, call_body(&caller, &agent, "PCMU", Some(101))).unwrap();
    set_secure(&gw, &tok, &call.id, true);
    let mut oversize = vec![0x80u8; 1800];
    oversize[1] = 0;
    let junk: Vec<Vec<u8>> = vec![
        vec![0x80, 0, 1],
        vec![0x40; 40],
        vec![0x9F; 20],
        oversize,
        vec![],
    ];
    for j in &junk {
        caller.send_to(j, call.caller_local).unwrap();
    }
    // RTCP garbage on the RTCP port.
    caller
        .send_to(
            &[0xFF; 30],
            SocketAddr::new(call.caller_local.ip(), call.caller_local.port() + 1),
        )
        .unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        agent.recv_from(&mut buf).is_err(),
        "garbage must not be forwarded"
    );
    let (_, info) = get_call(&gw, &tok, &call.id);
    // Each of the five RTP datagrams (short, version 1, CSRCs past the end, oversize, empty)
    // and the RTCP junk.
    assert_eq!(info["counters"]["malformed"], 6, "{info}");
    // Packets for a deleted call: the ports are closed, nothing crashes, the relay still works.
    assert_eq!(delete_call(&gw, &tok, &call.id), 204);
    caller.send_to(&[0x80; 172], call.caller_local).unwrap();
    assert_eq!(get_call(&gw, &tok, &call.id).0, 404);
    let again = create(&gw, &tok, call_body(&caller, &agent, "PCMU", None));
    assert!(again.is_ok());
}

fn control_api_checks_tokens_and_input() {
    let gw = Gateway::start(SESSION_POLICY);
    let relay_tok = gw.token("relay");
    let other_tok = gw.token("globalpci");
    let body = json!({"call_guid": "x", "codec": "PCMU", "caller": {"remote": null}, "agent": {"remote": null}});
    let post = |tok: Option<&str>, b: &Value| {
        let mut r = http().post(gw.url("/relay/v1/calls")).json(b);
        if let Some(t) = tok {
            r = r.bearer_auth(t);
        }
        r.send().unwrap()
    };
    assert_eq!(post(None, &body).status(), 401);
    assert_eq!(post(Some("tg1.forged.token"), &body).status(), 401);
    assert_eq!(post(Some(&other_tok), &body).status(), 403);
    let bad = post(
        Some(&relay_tok),
        &json!({"call_guid": "x", "codec": "G729", "caller": {"remote": null}, "agent": {"remote": null}}),
    );
    assert_eq!(bad.status(), 400);
    assert!(bad.text().unwrap().contains("PCMU or PCMA"));
    let bad = post(
        Some(&relay_tok),
        &json!({"call_guid": "x", "codec": "PCMU", "caller": {"remote": "nope"}, "agent": {"remote": null}}),
    );
    assert_eq!(bad.status(), 400);
    let r = http()
        .post(gw.url("/relay/v1/calls"))
        .bearer_auth(&relay_tok)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().unwrap()["error"], "bad_request");
    // An account that does not exist is 404, naming the field.
    let mut unknown = body.clone();
    unknown["account"] = json!("no-such-account");
    let r = post(Some(&relay_tok), &unknown);
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().unwrap()["field"], "account");
    // A create retried with its Idempotency-Key answers the same call; another body is 422.
    let keyed = |b: &Value| {
        let r = http()
            .post(gw.url("/relay/v1/calls"))
            .bearer_auth(&relay_tok)
            .header("Idempotency-Key", "call-7")
            .json(b)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let (s, first) = keyed(&body);
    assert_eq!(s, 201, "{first}");
    assert_eq!(keyed(&body), (201, first.clone()));
    let mut other = body.clone();
    other["call_guid"] = json!("y");
    let (s, v) = keyed(&other);
    assert_eq!(
        (s, v["error"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let listed = http()
        .get(gw.url("/relay/v1/calls"))
        .bearer_auth(&relay_tok)
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    assert_eq!(listed["calls"].as_array().unwrap().len(), 1, "{listed}");
    let r = http()
        .post(gw.url("/relay/v1/calls/nope/secure"))
        .bearer_auth(&relay_tok)
        .json(&json!({"enabled": true}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// Polls the metrics until `name` reads `want` (or 10 s pass); returns the last reading.
fn wait_metric(gw: &Gateway, name: &str, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(gw);
        let got = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if got == want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Plain packets through `call` come out byte for byte.
fn assert_relays(call: &Call, caller: &UdpSocket, agent: &UdpSocket, label: &str) {
    let packets: Vec<Vec<u8>> = (0..20u16)
        .map(|i| {
            let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
            p[2..4].copy_from_slice(&i.to_be_bytes());
            p[4..8].copy_from_slice(&(u32::from(i) * 160).to_be_bytes());
            p.extend(std::iter::repeat_n(0xffu8, 160));
            p
        })
        .collect();
    assert_eq!(
        relay_through(caller, call.caller_local, agent, &packets),
        packets,
        "{label}: relayed byte for byte"
    );
}

/// An io_uring worker that fails is replaced, and its calls move with their media state: a
/// secure call keeps masking and capturing across the move, and later calls work.
fn a_failed_worker_moves_its_calls_and_later_calls_work() {
    let gw = Gateway::start(&format!("{SESSION_POLICY}workers = 1\n"));
    let tok = gw.token("relay");
    let (caller, agent) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    let call = create(&gw, &tok, call_body(&caller, &agent, "PCMU", None)).unwrap();
    let mut keys = subscribe(&gw, &call.id);
    set_secure(&gw, &tok, &call.id, true);
    let opts = StreamOptions::default();
    let packets: Vec<Vec<u8>> = rtp_stream(&fixture_signal("card_entry"), opts)
        .into_iter()
        .map(|p| p.bytes)
        .collect();
    let half = packets.len() / 2;
    let mut got = relay_through(&caller, call.caller_local, &agent, &packets[..half]);
    gw.runtime
        .block_on(
            gw.state
                .relay
                .inject_fault(&call.id, tonegate::relay::InjectedFault::FailWorker),
        )
        .unwrap();
    assert_eq!(
        wait_metric(&gw, "tonegate_relay_worker_failures_total", 1),
        1
    );
    let (status, _) = get_call(&gw, &tok, &call.id);
    assert_eq!(status, 200, "the call lives on");
    got.extend(relay_through(
        &caller,
        call.caller_local,
        &agent,
        &packets[half..],
    ));
    assert!(
        got.len() >= packets.len() - 2,
        "{} of {} packets",
        got.len(),
        packets.len()
    );
    assert_agent_hears_nothing(&got, G711Law::Ulaw, opts.first_ts, "across the move");
    assert_eq!(
        captured(&mut keys),
        truth_keys(&fixture("audio/card_entry.json")),
        "every key reaches capture across the move"
    );
    // Later calls are set up and relay on the replacement worker.
    for i in 0..3 {
        let (c, a) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
        let later = create(&gw, &tok, call_body(&c, &a, "PCMU", None))
            .unwrap_or_else(|e| panic!("call {i} after the failure: {e:?}"));
        assert_relays(&later, &c, &a, &format!("later call {i}"));
    }
    assert_eq!(wait_metric(&gw, "tonegate_relay_call_faults_total", 0), 0);
}

/// A panic in one call's media processing stops that call alone; the call beside it (on the
/// same worker) and later calls go on.
fn a_panic_in_one_calls_media_stops_that_call_alone() {
    let gw = Gateway::start(&format!("{SESSION_POLICY}workers = 1\n"));
    let tok = gw.token("relay");
    let (c1, a1) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    let (c2, a2) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    let doomed = create(&gw, &tok, call_body(&c1, &a1, "PCMU", None)).unwrap();
    let other = create(&gw, &tok, call_body(&c2, &a2, "PCMU", None)).unwrap();
    assert_relays(&doomed, &c1, &a1, "before the fault");
    gw.runtime
        .block_on(
            gw.state
                .relay
                .inject_fault(&doomed.id, tonegate::relay::InjectedFault::PanicMedia),
        )
        .unwrap();
    assert_eq!(wait_metric(&gw, "tonegate_relay_call_faults_total", 1), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_call(&gw, &tok, &doomed.id).0 != 404 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        get_call(&gw, &tok, &doomed.id).0,
        404,
        "the faulted call is gone"
    );
    // Nothing more of it is relayed.
    let stray = vec![0x80u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0xff, 0xff];
    assert!(relay_through(&c1, doomed.caller_local, &a1, &[stray]).is_empty());
    assert_relays(&other, &c2, &a2, "the call beside it");
    let (c3, a3) = (endpoint("127.0.0.1"), endpoint("127.0.0.1"));
    let later = create(&gw, &tok, call_body(&c3, &a3, "PCMU", None)).unwrap();
    assert_relays(&later, &c3, &a3, "a later call");
    assert_eq!(
        wait_metric(&gw, "tonegate_relay_worker_failures_total", 0),
        0
    );
}

/// Every relay test runs on both IO engines.
macro_rules! on_engine {
    ($module:ident, $engine:literal: $($name:ident),* $(,)?) => {
        mod $module {
            $(
                #[test]
                fn $name() {
                    super::common::gateway::with_engine($engine, super::$name);
                }
            )*
        }
    };
}

macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        on_engine!(io_uring_engine, "io_uring": $($name),*);
        on_engine!(tokio_engine, "tokio": $($name),*);
    };
}

on_both_engines!(
    plain_forwarding_is_byte_exact_both_ways_with_rtcp,
    latching_learns_remotes_and_drops_foreign_sources,
    ipv6_calls_relay_on_ipv6,
    exhausted_ports_are_503,
    silent_calls_time_out,
    foreign_datagrams_do_not_keep_a_call_alive,
    secure_mode_hides_every_key_from_the_agent_pcmu_and_pcma,
    secure_mode_with_loss_and_reordering,
    keys_sent_as_audio_and_rfc4733_are_hidden_and_captured_once,
    speech_through_secure_mode_is_barely_masked,
    quiet_and_loud_cards_are_masked_at_every_packet_size,
    agent_sequence_is_continuous_across_toggles_and_dropped_events,
    bad_input_is_dropped_and_counted,
    control_api_checks_tokens_and_input,
    a_panic_in_one_calls_media_stops_that_call_alone,
);

on_engine!(io_uring_only, "io_uring": a_failed_worker_moves_its_calls_and_later_calls_work);

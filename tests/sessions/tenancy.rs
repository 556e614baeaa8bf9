//! Secure mode fails closed, and every call and session belongs to its tenant: two tenants in
//! one gateway, over real HTTP and UDP.
//!
//! Each test names the finding it covers (see the closing note of the secure-mode issue).

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::gateway::{get, http, post, wait_state, Gateway};
use common::*;
use serde_json::{json, Value};
use tonegate_dsp::G711Law;

const A: (&str, &str) = ("tenant-a", "tenant-a-secret-0123456789");
const B: (&str, &str) = ("tenant-b", "tenant-b-secret-0123456789");

/// Two tenants (clients A and B, each with its own account), the development client as the
/// operator, and `extra` TOML on top. Account `acct-a` masks per session unless `policy` says.
fn gateway(policy_a: &str, extra: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
[[auth.clients]]
id = "tonegate-dev"
secret = "tonegate-dev-secret"
scopes = ["globalpci", "relay", "admin"]
accounts = ["*"]

[[auth.clients]]
id = "{}"
secret = "{}"
scopes = ["globalpci", "relay"]
accounts = ["acct-a"]

[[auth.clients]]
id = "{}"
secret = "{}"
scopes = ["globalpci", "relay"]
accounts = ["acct-b"]

[[accounts]]
id = "dev-account"
psp = "sandbox"

[[accounts]]
id = "acct-a"
psp = "sandbox"
dtmf_masking = "{policy_a}"

[[accounts]]
id = "acct-b"
psp = "sandbox"
dtmf_masking = "session"

{extra}
"#,
        A.0, A.1, B.0, B.1
    ))
}

/// A self-service session of `account` under CallGuid `ivr-{reference}`: its id and dtmfLinkId.
fn self_service(gw: &Gateway, tok: &str, account: &str, reference: &str) -> (String, String) {
    let (s, v) = post(
        gw,
        tok,
        "/globalpci/v1/selfservicesession",
        &json!({"AccountConfigurationId": account, "CallGuid": format!("ivr-{reference}"),
                "PaymentData": {"amount": "5.00", "merchantTxnRef": reference}}),
    );
    assert_eq!(s, 200, "{v}");
    (
        v["sessionId"].as_str().unwrap().to_string(),
        v["dtmfLinkId"].as_str().unwrap().to_string(),
    )
}

fn endpoint() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    s
}

struct Call {
    id: String,
    caller_local: SocketAddr,
}

fn create_call(gw: &Gateway, tok: &str, guid: &str, caller: &str, agent: &UdpSocket) -> Call {
    let (s, v) = post(
        gw,
        tok,
        "/relay/v1/calls",
        &json!({"call_guid": guid, "codec": "PCMU", "caller": {"remote": caller},
                "agent": {"remote": agent.local_addr().unwrap().to_string()}}),
    );
    assert_eq!(s, 201, "{v}");
    Call {
        id: v["id"].as_str().unwrap().into(),
        caller_local: v["caller"]["local"].as_str().unwrap().parse().unwrap(),
    }
}

fn secure(gw: &Gateway, tok: &str, id: &str, on: bool) -> (u16, Value) {
    post(
        gw,
        tok,
        &format!("/relay/v1/calls/{id}/secure"),
        &json!({ "enabled": on }),
    )
}

fn agent_session(gw: &Gateway, tok: &str, account: &str, guid: &str) -> (u16, Value) {
    post(
        gw,
        tok,
        "/globalpci/v1/agentsession",
        &json!({"AccountConfigurationId": account, "CallGuid": guid,
                "PaymentData": {"amount": "10.00", "merchantTxnRef": guid}}),
    )
}

/// Receives what reaches `agent` while `send` runs (which answers how many audio packets it
/// sent), until 400 ms of silence; panics unless the agent leg carried that audio.
fn heard_while(agent: &UdpSocket, send: impl FnOnce() -> usize) -> Vec<Vec<u8>> {
    let rx = agent.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = rx.recv_from(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    });
    let sent = send();
    let got = t.join().unwrap();
    assert_agent_heard_audio(&got, sent);
    got
}

/// Keys multimon-ng reads in the agent's audio (and that `tonegate detect` agrees).
fn agent_keys(packets: &[Vec<u8>]) -> String {
    let first_ts = tonegate::media::rtp::RtpHeader::parse(&packets[0])
        .unwrap()
        .timestamp;
    let audio = agent_audio(packets, G711Law::Ulaw, first_ts);
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("agent.wav");
    tonegate::wav::write_pcm8k(&wav, &audio).unwrap();
    multimon_keys(&wav)
}

fn metric(gw: &Gateway, name: &str) -> u64 {
    let text = http()
        .get(gw.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// Waits until relay call `id` listens for a link id (the sessions link calls on a task of
/// their own): keys sent before then would be heard by nobody.
fn wait_listening(gw: &Gateway, tok: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) = get(gw, tok, &format!("/relay/v1/calls/{id}"));
        assert_eq!(s, 200, "{v}");
        if v["listening"] == true {
            return;
        }
        assert!(Instant::now() < deadline, "the call never listened: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The call's audit records once every action in `actions` is among them (the audit trail is
/// written by a thread of its own), or as they are after 10 s, for the caller's assertions.
fn audit(gw: &Gateway, call: &str, actions: &[&str]) -> Vec<Value> {
    let tok = gw.token("admin");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) = get(gw, &tok, &format!("/admin/v1/audit/relay?call={call}"));
        assert_eq!(s, 200);
        let records = v["records"].as_array().unwrap().clone();
        let all_there = actions
            .iter()
            .all(|a| records.iter().any(|r| r["action"] == *a));
        if all_there || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Findings 1 and 2: relay calls had no owner; duplicate CallGuids were accepted.
#[test]
fn another_clients_call_does_not_exist_for_it_and_an_operator_read_is_audited() {
    let gw = gateway("session", "");
    let (ta, tb) = (gw.token_for(A, "relay"), gw.token_for(B, "relay"));
    let agent = endpoint();
    let call = create_call(&gw, &ta, "guid-owned", "127.0.0.1:40100", &agent);
    let path = format!("/relay/v1/calls/{}", call.id);
    assert_eq!(get(&gw, &tb, &path).0, 404);
    // B's 404 must mean nothing was done: the owner reads the secure flag B tried to flip,
    // either way.
    let secure_flag = || get(&gw, &ta, &path).1["secure"].clone();
    assert_eq!(secure(&gw, &ta, &call.id, true).0, 200);
    assert_eq!(secure(&gw, &tb, &call.id, false).0, 404);
    assert_eq!(secure_flag(), true, "B turned A's masking off");
    assert_eq!(secure(&gw, &ta, &call.id, false).0, 200);
    assert_eq!(secure(&gw, &tb, &call.id, true).0, 404);
    assert_eq!(secure_flag(), false, "B turned A's masking on");
    let r = http()
        .delete(gw.url(&path))
        .bearer_auth(&tb)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let (_, list) = get(&gw, &tb, "/relay/v1/calls");
    assert_eq!(list["calls"].as_array().unwrap().len(), 0, "{list}");
    let (_, list) = get(&gw, &ta, "/relay/v1/calls");
    assert_eq!(list["calls"][0]["id"], call.id.as_str());
    assert_eq!(list["calls"][0]["account"], "acct-a");
    // The owner cannot relay the same CallGuid twice.
    let (s, v) = post(
        &gw,
        &ta,
        "/relay/v1/calls",
        &json!({"call_guid": "guid-owned", "codec": "PCMU", "caller": {"remote": null}, "agent": {"remote": null}}),
    );
    assert_eq!(s, 409, "{v}");
    // An operator sees every call, and that is in the audit trail.
    let admin = gw.token("admin");
    let (s, v) = get(&gw, &admin, &path);
    assert_eq!((s, v["id"].as_str()), (200, Some(call.id.as_str())));
    let records = audit(&gw, &call.id, &["read", "create"]);
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "read" && r["actor"] == "admin:tonegate-dev"),
        "{records:?}"
    );
    assert!(records
        .iter()
        .any(|r| r["action"] == "create" && r["actor"] == "client:tenant-a"));
}

/// Finding 2: a session was found by CallGuid without a tenant, and a new key subscriber
/// replaced the old one.
#[test]
fn a_session_of_another_client_never_takes_the_keys_of_a_live_capture() {
    let gw = gateway("session", "");
    let (ga, gb) = (gw.token_for(A, "globalpci"), gw.token_for(B, "globalpci"));
    let ra = gw.token_for(A, "relay");
    let (s, v) = agent_session(&gw, &ga, "acct-a", "guid-shared");
    assert_eq!(s, 200, "{v}");
    let id_a = v["sessionId"].as_str().unwrap().to_string();
    let caller = endpoint();
    let agent = endpoint();
    let call = create_call(
        &gw,
        &ra,
        "guid-shared",
        &caller.local_addr().unwrap().to_string(),
        &agent,
    );
    assert_eq!(
        wait_state(&gw, &ga, &id_a, "Capturing")["sessionState"],
        "Capturing"
    );
    // B names A's CallGuid: B's session is B's own (created, linked to nothing), and A's
    // capture is untouched.
    let (s, v) = agent_session(&gw, &gb, "acct-b", "guid-shared");
    assert_eq!(s, 200, "{v}");
    let (_, v) = get(
        &gw,
        &gb,
        &format!("/globalpci/v1/session/{}", v["sessionId"].as_str().unwrap()),
    );
    assert_eq!(v["sessionState"], "Created", "{v}");
    // A second live session of A's for the same call is refused too.
    let (s, _) = agent_session(&gw, &ga, "acct-a", "guid-shared");
    assert_eq!(s, 409);
    // The call's key stream has one subscriber: asking for a second is an error.
    let second = gw.runtime.block_on(gw.state.relay.key_stream(&call.id));
    assert!(matches!(
        second,
        Err(tonegate::relay::RelayError::Conflict(_))
    ));
    // A's capture still gets every key.
    let mut leg = KeyingLeg::new(caller, call.caller_local);
    leg.key("4242424242424242#1230#737#", 5);
    let v = wait_state(&gw, &ga, &id_a, "ReadyToSubmit");
    assert_eq!(v["sessionState"], "ReadyToSubmit", "{v}");
}

/// Finding 3: masking switched off the moment a capture ended, so the caller re-keying after
/// a decline was heard in clear.
#[test]
fn after_a_declined_card_the_caller_keying_again_is_not_heard_until_released() {
    for policy in ["session", "call"] {
        let gw = gateway(
            policy,
            "[relay]\nsecure_hold_off_s = 2\n[server]\nadjustable_clock = true\n",
        );
        let (ga, ra) = (gw.token_for(A, "globalpci"), gw.token_for(A, "relay"));
        let guid = format!("guid-decline-{policy}");
        let (_, v) = agent_session(&gw, &ga, "acct-a", &guid);
        let id = v["sessionId"].as_str().unwrap().to_string();
        let caller = endpoint();
        let agent = endpoint();
        let call = create_call(
            &gw,
            &ra,
            &guid,
            &caller.local_addr().unwrap().to_string(),
            &agent,
        );
        wait_state(&gw, &ga, &id, "Capturing");
        // While the capture is live, nobody may turn masking off.
        let (s, v) = secure(&gw, &ra, &call.id, false);
        assert_eq!(s, 409, "{policy}: {v}");
        let mut leg = KeyingLeg::new(caller, call.caller_local);
        // A card the sandbox declines.
        let heard = heard_while(&agent, || leg.key("4000000000000002#1230#123#", 3));
        assert_eq!(agent_keys(&heard), "", "{policy}: the first card");
        wait_state(&gw, &ga, &id, "ReadyToSubmit");
        let (_, v) = post(
            &gw,
            &ga,
            &format!("/globalpci/v1/session/{id}/submit"),
            &json!({}),
        );
        assert_eq!(v["sessionState"], "Declined", "{policy}: {v}");
        // "Let's try another card": keyed in clear by the caller, never heard by the agent.
        let heard = heard_while(&agent, || leg.key("5555555555554444#0530#456#", 4));
        assert_eq!(agent_keys(&heard), "", "{policy}: keys after the decline");
        // Within the hold-off after the last key, release is refused with the reason.
        let (s, v) = post(
            &gw,
            &ga,
            &format!("/globalpci/v1/session/{id}/release"),
            &json!({}),
        );
        let (s2, v2) = secure(&gw, &ra, &call.id, false);
        if policy == "call" {
            // Nothing turns a "call" policy off.
            assert_eq!(s2, 409, "{v2}");
            assert!(
                v2["message"].as_str().unwrap().contains("whole call"),
                "{v2}"
            );
        } else {
            assert_eq!(s, 409, "{v}");
            assert!(v["message"].as_str().unwrap().contains("s ago"), "{v}");
            assert_eq!(s2, 409, "{v2}");
        }
        // The hold-off runs on the gateway's clock: moved past it, not slept through.
        gw.advance_clock(3);
        let (s, v) = post(
            &gw,
            &ga,
            &format!("/globalpci/v1/session/{id}/release"),
            &json!({}),
        );
        assert_eq!(s, 200, "{policy}: {v}");
        let heard = heard_while(&agent, || leg.key("123", 6));
        let (_, info) = get(&gw, &ra, &format!("/relay/v1/calls/{}", call.id));
        if policy == "session" {
            assert_eq!(info["secure"], false, "{info}");
            assert_eq!(
                agent_keys(&heard),
                "123",
                "released: the agent hears keys again"
            );
        } else {
            assert_eq!(info["secure"], true, "{info}");
            assert_eq!(agent_keys(&heard), "", "policy call: still masked");
        }
        let records = audit(&gw, &call.id, &["secure_off_refused"]);
        assert!(
            records.iter().any(|r| r["action"] == "secure_off_refused"),
            "{records:?}"
        );
        assert!(
            records
                .iter()
                .any(|r| r["action"] == "secure_on"
                    && r["actor"] == format!("session:{id}").as_str())
                || policy == "call"
        );
    }
}

/// Secure mode is a lease: each holder (the owner over the relay API, each session that
/// captured) gives up only its own hold, and the call is masked while any hold is left.
#[test]
fn each_holder_releases_only_its_own_hold_on_secure_mode() {
    let gw = gateway("session", "[relay]\nsecure_hold_off_s = 0\n");
    let (ga, ra) = (gw.token_for(A, "globalpci"), gw.token_for(A, "relay"));
    let (_, v) = agent_session(&gw, &ga, "acct-a", "guid-leases");
    let id = v["sessionId"].as_str().unwrap().to_string();
    let agent = endpoint();
    let call = create_call(&gw, &ra, "guid-leases", "127.0.0.1:40110", &agent);
    wait_state(&gw, &ga, &id, "Capturing");
    assert_eq!(secure(&gw, &ra, &call.id, true).0, 200);
    let path = format!("/globalpci/v1/session/{id}");
    let (s, v) = post(&gw, &ga, &format!("{path}/cancel"), &json!({}));
    assert_eq!(
        (s, v["sessionState"].as_str()),
        (200, Some("Cancelled")),
        "{v}"
    );
    let is_secure = || get(&gw, &ra, &format!("/relay/v1/calls/{}", call.id)).1["secure"].clone();
    // The capture is over, but the session still holds: the owner's "off" is refused, and
    // says whose hold is left and how that holder lets go.
    let (s, v) = secure(&gw, &ra, &call.id, false);
    assert_eq!(s, 409, "{v}");
    let why = v["message"].as_str().unwrap();
    assert!(
        why.contains(&format!("session {id} holds secure mode"))
            && why.contains(&format!("POST /globalpci/v1/session/{id}/release")),
        "{why}"
    );
    assert_eq!(is_secure(), true);
    // The session lets go: the owner's hold is still there.
    let (s, v) = post(&gw, &ga, &format!("{path}/release"), &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(is_secure(), true);
    // Then the owner's: nothing holds it now.
    assert_eq!(secure(&gw, &ra, &call.id, false).0, 200);
    assert_eq!(is_secure(), false);
}

/// The lease and the key stream, as the relay hands them out: one of each per holder, a
/// dropped lease keeps the call masked, a refused release hands the lease back.
#[test]
fn a_lease_is_released_only_by_its_holder_and_a_key_stream_has_one_reader() {
    use tonegate::relay::RelayError;
    let gw = gateway("session", "[relay]\nsecure_hold_off_s = 0\n");
    let ra = gw.token_for(A, "relay");
    let agent = endpoint();
    let call = create_call(&gw, &ra, "guid-lease-types", "127.0.0.1:40111", &agent);
    let relay = gw.state.relay.clone();
    let is_secure = || get(&gw, &ra, &format!("/relay/v1/calls/{}", call.id)).1["secure"].clone();
    let rt = &gw.runtime;
    assert_eq!(is_secure(), false);
    let x = rt.block_on(relay.lease_secure(&call.id, "s-x")).unwrap();
    assert_eq!(is_secure(), true, "on when the lease is handed out");
    assert!(matches!(
        rt.block_on(relay.lease_secure(&call.id, "s-x")),
        Err(RelayError::Conflict(_))
    ));
    assert!(matches!(
        rt.block_on(relay.lease_secure("no-such-call", "s-x")),
        Err(RelayError::UnknownCall)
    ));
    // While its capture is live, even its holder's release is refused: the lease comes back.
    let (x, e) = rt.block_on(x.release()).unwrap_err();
    assert!(e.to_string().contains("still capturing"), "{e}");
    // A second session's lease, released: secure mode stays on while the first holds.
    let y = rt.block_on(relay.lease_secure(&call.id, "s-y")).unwrap();
    y.capture_ended();
    assert!(rt.block_on(y.release()).unwrap());
    assert_eq!(is_secure(), true);
    // Dropped, not released: the call stays masked (fail closed), and says who holds it.
    x.capture_ended();
    drop(x);
    assert_eq!(is_secure(), true);
    let (s, v) = secure(&gw, &ra, &call.id, false);
    assert_eq!(s, 409, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("session s-x"),
        "{v}"
    );
    // A lease on a call that has ended holds nothing: releasing it says so.
    let z = rt.block_on(relay.lease_secure(&call.id, "s-z")).unwrap();
    z.capture_ended();
    let r = http()
        .delete(gw.url(&format!("/relay/v1/calls/{}", call.id)))
        .bearer_auth(&ra)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(!rt.block_on(z.release()).unwrap());

    // One reader of a call's keys at a time; a dropped stream frees the call for the next.
    let call = create_call(&gw, &ra, "guid-key-stream", "127.0.0.1:40112", &agent);
    let first = rt.block_on(relay.key_stream(&call.id)).unwrap();
    assert!(matches!(
        rt.block_on(relay.key_stream(&call.id)),
        Err(RelayError::Conflict(_))
    ));
    drop(first);
    let keys = rt.block_on(relay.key_stream(&call.id)).unwrap();

    // The handle a capture holds joins a lease and a key stream of one call only: another
    // call's lease is refused and comes back whole; given back, the handle frees the call's
    // keys for the next reader and keeps the lease (the call stays masked).
    let other = create_call(&gw, &ra, "guid-handle-other", "127.0.0.1:40113", &agent);
    let wrong = rt.block_on(relay.lease_secure(&other.id, "s-h")).unwrap();
    let (wrong, e) = tonegate::relay::CallHandle::new(wrong, keys).unwrap_err();
    assert!(matches!(e, RelayError::Conflict(_)), "{e}");
    assert_eq!(wrong.call(), other.id);
    let lease = rt.block_on(relay.lease_secure(&call.id, "s-h")).unwrap();
    let keys = rt.block_on(relay.key_stream(&call.id)).unwrap();
    let handle = tonegate::relay::CallHandle::new(lease, keys).unwrap();
    assert_eq!(handle.call(), call.id);
    assert!(matches!(
        rt.block_on(relay.key_stream(&call.id)),
        Err(RelayError::Conflict(_))
    ));
    let lease = handle.into_lease();
    assert!(rt.block_on(relay.key_stream(&call.id)).is_ok());
    let secure_now = get(&gw, &ra, &format!("/relay/v1/calls/{}", call.id)).1["secure"].clone();
    assert_eq!(secure_now, true, "the kept lease still masks the call");
    assert!(rt.block_on(lease.release()).unwrap());
    drop(wrong);
}

/// Policy "call": a call with no session at all never lets a key through.
#[test]
fn a_call_with_policy_call_and_no_session_masks_every_key() {
    let gw = gateway("call", "");
    let ra = gw.token_for(A, "relay");
    let caller = endpoint();
    let agent = endpoint();
    let call = create_call(
        &gw,
        &ra,
        "guid-no-session",
        &caller.local_addr().unwrap().to_string(),
        &agent,
    );
    let (_, info) = get(&gw, &ra, &format!("/relay/v1/calls/{}", call.id));
    assert_eq!(
        (info["secure"].as_bool(), info["dtmf_masking"].as_str()),
        (Some(true), Some("call"))
    );
    let mut leg = KeyingLeg::new(caller, call.caller_local);
    let heard = heard_while(&agent, || {
        let sent = leg.key("4111111111111111#", 1);
        std::thread::sleep(Duration::from_millis(300));
        sent + leg.key("0123456789*#", 2)
    });
    assert_eq!(agent_keys(&heard), "");
    let (s, v) = secure(&gw, &ra, &call.id, false);
    assert_eq!(s, 409, "{v}");
}

/// Finding 4: the 6-digit dtmfLinkId was global across tenants, with unlimited calls.
#[test]
fn link_ids_are_per_tenant_checked_and_limited() {
    let gw = gateway("session", "[link]\ntries_per_session = 2\n");
    let (ga, gb) = (gw.token_for(A, "globalpci"), gw.token_for(B, "globalpci"));
    let ra = gw.token_for(A, "relay");
    let self_service = |tok: &str, account: &str, r: &str| self_service(&gw, tok, account, r);
    let (id_a, link_a) = self_service(&ga, "acct-a", "A-1");
    let (_, link_b) = self_service(&gb, "acct-b", "B-1");
    assert!(tonegate::session::link_id::check_digit_ok(&link_a) && link_a.len() == 8);
    // A call of A's with another CallGuid listens for a link id.
    let call_of_a = |n: u32| {
        let caller = endpoint();
        let agent = endpoint();
        let call = create_call(
            &gw,
            &ra,
            &format!("fallback-{n}"),
            &caller.local_addr().unwrap().to_string(),
            &agent,
        );
        wait_listening(&gw, &ra, &call.id);
        KeyingLeg::new(caller, call.caller_local)
    };
    let wait_metric = |name: &str, want: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(&gw, name) < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(metric(&gw, name), want, "{name}");
    };
    // B's link id keyed on A's call: not found (another tenant's), counted against A's waiting
    // session; then a typo (bad check digit); then a third wrong id: the call stops listening.
    let mut leg = call_of_a(1);
    leg.key(&link_b, 1);
    wait_metric("tonegate_link_attempts_total{result=\"not_found\"}", 1);
    let mut typo = link_a.clone().into_bytes();
    typo[0] = b'0' + (typo[0] - b'0' + 1) % 10;
    leg.key(std::str::from_utf8(&typo).unwrap(), 2);
    wait_metric(
        "tonegate_link_attempts_total{result=\"bad_check_digit\"}",
        1,
    );
    leg.key(
        &tonegate::session::link_id::generate(8, &mut rand::thread_rng()),
        3,
    );
    wait_metric("tonegate_link_calls_limited_total", 1);
    // That was the second failed lookup against A's session (tries_per_session = 2): locked.
    // The right id on a new call no longer links it.
    wait_metric("tonegate_link_sessions_locked_total", 1);
    let mut leg = call_of_a(2);
    leg.key(&link_a, 4);
    wait_metric("tonegate_link_attempts_total{result=\"not_found\"}", 3);
    assert_eq!(
        wait_state(&gw, &ga, &id_a, "Created")["sessionState"],
        "Created"
    );
    assert_eq!(
        metric(&gw, "tonegate_link_attempts_total{result=\"linked\"}"),
        0
    );
}

/// Finding 5: a leg with no remote latched to the first packet from anyone.
#[test]
fn latching_stays_inside_what_signalling_named() {
    let gw = gateway("session", "");
    let ra = gw.token_for(A, "relay");
    let real = endpoint();
    let attacker = UdpSocket::bind("127.0.0.2:0").unwrap();
    let agent = endpoint();
    // Signalling named the caller's host (port unknown): an attacker on another host, sending
    // first, does not take the leg; the real caller does.
    let call = create_call(&gw, &ra, "guid-latch", "127.0.0.1", &agent);
    let mut p = [0u8; 172];
    let n = tonegate::media::rtp::write_packet(&mut p, 0, false, 1, 160, 42, &[0xFF; 160]);
    for _ in 0..5 {
        attacker.send_to(&p[..n], call.caller_local).unwrap();
    }
    let mut buf = [0u8; 256];
    assert!(
        agent.recv_from(&mut buf).is_err(),
        "attacker audio reached the agent"
    );
    real.send_to(&p[..n], call.caller_local).unwrap();
    let (m, _) = agent.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..m], &p[..n]);
    let (_, info) = get(&gw, &ra, &format!("/relay/v1/calls/{}", call.id));
    assert_eq!(
        info["caller"]["remote"],
        real.local_addr().unwrap().to_string()
    );
    assert_eq!(info["counters"]["foreign_source"], 5);
    // A port range: a source outside it on the right host is dropped too.
    let agent2 = endpoint();
    let lo = real.local_addr().unwrap().port();
    let call2 = create_call(
        &gw,
        &ra,
        "guid-range",
        &format!("127.0.0.1:{lo}-{lo}"),
        &agent2,
    );
    let outsider = endpoint();
    outsider.send_to(&p[..n], call2.caller_local).unwrap();
    assert!(agent2.recv_from(&mut buf).is_err());
    real.send_to(&p[..n], call2.caller_local).unwrap();
    assert!(agent2.recv_from(&mut buf).is_ok());
    let (_, info) = get(&gw, &ra, &format!("/relay/v1/calls/{}", call2.id));
    assert_eq!(info["counters"]["foreign_source"], 1);
    // Malformed remotes are clear errors. (A range written high-low is the same range: no
    // schema could refuse it, tests/gateway/schemathesis.rs.)
    for bad in ["127.0.0.1:1-65536", "nonsense", "127.0.0.1:0-5"] {
        let (s, v) = post(
            &gw,
            &ra,
            "/relay/v1/calls",
            &json!({"call_guid": "x", "codec": "PCMU", "caller": {"remote": bad}, "agent": {"remote": null}}),
        );
        assert_eq!(s, 400, "{bad}: {v}");
    }
}

/// Issue 23, finding 6: CallGuids leaked across tenants. B relaying a call under A's CallGuid
/// made A's session for it fail with 409, and the 409 told B that A had such a call.
#[test]
fn a_call_guid_is_each_tenants_own() {
    let gw = gateway("session", "");
    let (ga, gb) = (gw.token_for(A, "globalpci"), gw.token_for(B, "globalpci"));
    let (ra, rb) = (gw.token_for(A, "relay"), gw.token_for(B, "relay"));
    // B relays a call under the CallGuid A's IVR is about to use.
    let b_agent = endpoint();
    let b_call = create_call(&gw, &rb, "ivr-call-7", "127.0.0.1:40200", &b_agent);
    // A's session is created as if B did not exist, and waits for A's own call.
    let (s, v) = agent_session(&gw, &ga, "acct-a", "ivr-call-7");
    assert_eq!(s, 200, "{v}");
    let id_a = v["sessionId"].as_str().unwrap().to_string();
    let (_, v) = get(&gw, &ga, &format!("/globalpci/v1/session/{id_a}"));
    assert_eq!(v["sessionState"], "Created", "{v}");
    let (caller, agent) = (endpoint(), endpoint());
    let a_call = create_call(
        &gw,
        &ra,
        "ivr-call-7",
        &caller.local_addr().unwrap().to_string(),
        &agent,
    );
    assert_eq!(
        wait_state(&gw, &ga, &id_a, "Capturing")["sessionState"],
        "Capturing"
    );
    // It captures on A's call; B's call (masked per session) never got a session's hold.
    let (_, info) = get(&gw, &ra, &format!("/relay/v1/calls/{}", a_call.id));
    assert_eq!(info["secure"], true, "{info}");
    let (_, info) = get(&gw, &rb, &format!("/relay/v1/calls/{}", b_call.id));
    assert_eq!(info["secure"], false, "{info}");
    // B's answers are the same for a CallGuid A uses as for one nobody uses.
    for guid in ["ivr-call-7", "nobody-uses-this"] {
        let (s, v) = agent_session(&gw, &gb, "acct-b", guid);
        assert_eq!(s, 200, "{guid}: {v}");
        let expected = if guid == "ivr-call-7" {
            "Capturing" // B's own call has that CallGuid
        } else {
            "Created"
        };
        assert_eq!(
            wait_state(&gw, &gb, v["sessionId"].as_str().unwrap(), expected)["sessionState"],
            expected,
            "{guid}"
        );
    }
    let (s, v) = post(
        &gw,
        &rb,
        "/relay/v1/calls",
        &json!({"call_guid": "a-only", "codec": "PCMU", "caller": {"remote": null}, "agent": {"remote": null}}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = post(
        &gw,
        &ra,
        "/relay/v1/calls",
        &json!({"call_guid": "a-only", "codec": "PCMU", "caller": {"remote": null}, "agent": {"remote": null}}),
    );
    assert_eq!(s, 201, "A's create does not see B's call either: {v}");
}

/// Issue 23, finding 7: no per-tenant quota; one tenant took every relay port and every other
/// tenant's calls failed. By default a client may hold three quarters of the capacity.
#[test]
fn one_tenant_cannot_take_every_relay_call() {
    // 16 ports: 4 calls of two legs (RTP + RTCP each); a client may hold 3 of them.
    let gw = gateway("session", "[relay]\nport_min = 29300\nport_max = 29315\n");
    let (ra, rb) = (gw.token_for(A, "relay"), gw.token_for(B, "relay"));
    let body = |guid: &str| json!({"call_guid": guid, "codec": "PCMU", "caller": {"remote": null}, "agent": {"remote": null}});
    let mut mine = Vec::new();
    for n in 0..3 {
        let (s, v) = post(&gw, &ra, "/relay/v1/calls", &body(&format!("a-{n}")));
        assert_eq!(s, 201, "{v}");
        mine.push(v["id"].as_str().unwrap().to_string());
    }
    let (s, v) = post(&gw, &ra, "/relay/v1/calls", &body("a-3"));
    assert_eq!((s, v["error"].as_str()), (429, Some("relay_quota")), "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("relay.max_calls_per_client"),
        "{v}"
    );
    // Another tenant still gets a call.
    let (s, v) = post(&gw, &rb, "/relay/v1/calls", &body("b-0"));
    assert_eq!(s, 201, "{v}");
    // The limit is on live calls: one ended, A may create one again.
    let r = http()
        .delete(gw.url(&format!("/relay/v1/calls/{}", mine[0])))
        .bearer_auth(&ra)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, v) = post(&gw, &ra, "/relay/v1/calls", &body("a-4"));
    assert_eq!(s, 201, "{v}");
}

/// Issue 23, finding 10: media could be sent to any address a request named (multicast,
/// broadcast, 0.0.0.0 — which Linux delivers to the host itself — or port 0).
#[test]
fn media_is_never_aimed_at_multicast_broadcast_or_unspecified_addresses() {
    let gw = gateway("session", "");
    let ra = gw.token_for(A, "relay");
    for leg in ["caller", "agent"] {
        for bad in [
            "224.0.0.1:5004",
            "239.1.2.3",
            "255.255.255.255:5004",
            "0.0.0.0:5004",
            "0.0.0.0",
            "0.1.2.3:5004",
            "[::]:5004",
            "[ff02::1]:5004",
            "[::ffff:224.0.0.1]:5004",
            "224.0.0.1:1000-2000",
            "127.0.0.1:0",
        ] {
            let mut body = json!({"call_guid": "aimed", "codec": "PCMU",
                                  "caller": {"remote": null}, "agent": {"remote": null}});
            body[leg]["remote"] = json!(bad);
            let (s, v) = post(&gw, &ra, "/relay/v1/calls", &body);
            assert_eq!(s, 400, "{leg} {bad}: {v}");
            let message = v["message"].as_str().unwrap();
            assert!(message.contains(&format!("{leg}.remote")), "{message}");
            assert!(!message.contains(bad), "the input is not echoed: {message}");
        }
    }
    // A unicast remote is fine.
    let agent = endpoint();
    create_call(&gw, &ra, "aimed", "127.0.0.1:40300", &agent);
}

/// Issue 23, finding 10: the link-id lookup budget was one for the whole gateway, so one
/// tenant's callers keying wrong ids stopped every other tenant's callers from linking.
#[test]
fn one_tenants_wrong_link_ids_never_stop_anothers_caller() {
    let gw = gateway("session", "[link]\ntries_per_minute = 2\n");
    let (ga, gb) = (gw.token_for(A, "globalpci"), gw.token_for(B, "globalpci"));
    let (ra, rb) = (gw.token_for(A, "relay"), gw.token_for(B, "relay"));
    let self_service = |tok: &str, account: &str, r: &str| self_service(&gw, tok, account, r);
    let (id_a, link_a) = self_service(&ga, "acct-a", "A-1");
    // B has a waiting session too, so B's calls listen for link ids.
    let (_, link_b) = self_service(&gb, "acct-b", "B-1");
    let call = |tok: &str, guid: &str| {
        let (caller, agent) = (endpoint(), endpoint());
        let c = create_call(
            &gw,
            tok,
            guid,
            &caller.local_addr().unwrap().to_string(),
            &agent,
        );
        wait_listening(&gw, tok, &c.id);
        KeyingLeg::new(caller, c.caller_local)
    };
    let wait_metric = |name: &str, want: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(&gw, name) < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(metric(&gw, name), want, "{name}");
    };
    // B's caller keys well-formed wrong ids until B's budget for the minute is spent.
    let mut rng = rand::thread_rng();
    let mut b = call(&rb, "b-fallback");
    for n in 0..3 {
        let mut wrong = tonegate::session::link_id::generate(8, &mut rng);
        while wrong == link_b || wrong == link_a {
            wrong = tonegate::session::link_id::generate(8, &mut rng);
        }
        b.key(&wrong, n);
    }
    wait_metric("tonegate_link_attempts_total{result=\"not_found\"}", 2);
    wait_metric("tonegate_link_attempts_total{result=\"rate_limited\"}", 1);
    // A's caller keys A's id: it links.
    let mut a = call(&ra, "a-fallback");
    a.key(&link_a, 7);
    assert_eq!(
        wait_state(&gw, &ga, &id_a, "Capturing")["sessionState"],
        "Capturing"
    );
    assert_eq!(
        metric(&gw, "tonegate_link_attempts_total{result=\"linked\"}"),
        1
    );
}

/// Issue 23, finding 7, over ng: the calls Kamailio offers belong to `[ng] owner`, and that
/// client's limit applies to them as to its HTTP calls; another tenant still gets calls.
#[test]
fn the_ng_owner_is_held_to_its_share_too() {
    use tonegate::ng::bencode::{decode, Value};
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // 16 ports: 4 calls; a client may hold 3.
    let gw = gateway(
        "session",
        &format!(
            "[ng]\nlisten = \"127.0.0.1:{port}\"\nowner = \"{}\"\n\n\
             [relay]\nport_min = 29320\nport_max = 29335\n",
            A.0
        ),
    );
    let ng = UdpSocket::bind("127.0.0.1:0").unwrap();
    ng.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut buf = vec![0u8; 65536];
    let mut ask = |cookie: &str, call: &str, rtp: u16| -> Value {
        let sdp = format!(
            "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {rtp} RTP/AVP 0\r\na=sendrecv\r\n"
        );
        let mut d = format!("{cookie} ").into_bytes();
        d.extend(
            Value::dict([
                ("sdp", Value::str(&sdp)),
                ("call-id", Value::str(call)),
                ("from-tag", Value::str("a")),
                ("command", Value::str("offer")),
            ])
            .encode(),
        );
        // The listener starts with the gateway: retry until it answers (bounded).
        for _ in 0..50 {
            ng.send_to(&d, to).unwrap();
            if let Ok((n, _)) = ng.recv_from(&mut buf) {
                let sp = buf[..n].iter().position(|&b| b == b' ').unwrap();
                return decode(&buf[sp + 1..n]).unwrap();
            }
        }
        panic!("the ng listener did not answer");
    };
    let result = |v: &Value, key: &str| match v {
        Value::Dict(d) => d
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .and_then(|(_, v)| v.as_str())
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    };
    for n in 0..3u16 {
        let v = ask(&format!("c{n}"), &format!("ng-call-{n}"), 16000 + 2 * n);
        assert_eq!(result(&v, "result"), "ok", "{v:?}");
    }
    let v = ask("c3", "ng-call-3", 16006);
    assert_eq!(result(&v, "result"), "error", "{v:?}");
    assert!(
        result(&v, "error-reason").contains("relay.max_calls_per_client"),
        "{v:?}"
    );
    // The ng owner's HTTP calls count too; another tenant's do not.
    let body = json!({"call_guid": "http", "codec": "PCMU", "caller": {"remote": null}, "agent": {"remote": null}});
    let (s, v) = post(&gw, &gw.token_for(A, "relay"), "/relay/v1/calls", &body);
    assert_eq!(s, 429, "{v}");
    let (s, v) = post(&gw, &gw.token_for(B, "relay"), "/relay/v1/calls", &body);
    assert_eq!(s, 201, "{v}");
}

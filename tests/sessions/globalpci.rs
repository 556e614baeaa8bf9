//! The GlobalPCI session API over real HTTP: OAuth2 tokens, the three session kinds with the
//! seed's bodies and field names, state, cancel, submit, restart, isolation, bad input, and a
//! full captured payment whose responses, logs and database hold none of the keyed digits.

use crate::common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::gateway::{get, http, post, wait_state, Gateway, DEV_CLIENT};
use common::*;
use serde_json::{json, Value};
use tonegate::session::model::SessionState;

/// Log lines written by every gateway in this test process (debug level).
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,hyper=info,reqwest=info,h2=info,rustls=info")
            .with_ansi(false)
            .without_time()
            .with_writer(move || LogWriter(b.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn body(name: &str, call_guid: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("globalpci/{name}.json"))).unwrap();
    serde_json::from_str(&text.replace("CALL-GUID-PLACEHOLDER", call_guid)).unwrap()
}

fn token_request(gw: &Gateway, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
    let mut r = http().post(gw.url("/auth/connect/token")).form(form);
    if let Some((u, p)) = basic {
        r = r.basic_auth(u, Some(p));
    }
    let r = r.send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

#[test]
fn oauth2_client_credentials() {
    // Expiry comes from the gateway's clock moved on, not from real time passing: a slow machine
    // must not expire the admin token advance_clock uses.
    let gw = Gateway::start("[auth]\ntoken_lifetime_s = 60\n[server]\nadjustable_clock = true\n");
    let (id, secret) = DEV_CLIENT;
    let cc = ("grant_type", "client_credentials");
    let (s, v) = token_request(
        &gw,
        &[
            cc,
            ("client_id", id),
            ("client_secret", secret),
            ("scope", "globalpci"),
        ],
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(
        (
            v["token_type"].as_str(),
            v["scope"].as_str(),
            v["expires_in"].as_u64()
        ),
        (Some("Bearer"), Some("globalpci"), Some(60))
    );
    // HTTP Basic client authentication (RFC 6749 §2.3.1).
    let (s, v) = token_request(&gw, &[cc, ("scope", "relay admin")], Some((id, secret)));
    assert_eq!((s, v["scope"].as_str()), (200, Some("relay admin")));
    // Errors per §5.2.
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        Option<(&'a str, &'a str)>,
        u16,
        &'a str,
    );
    let cases: [Case; 6] = [
        (
            &[cc, ("client_id", id), ("client_secret", "wrong")],
            None,
            401,
            "invalid_client",
        ),
        (
            &[cc, ("client_id", "nobody"), ("client_secret", secret)],
            None,
            401,
            "invalid_client",
        ),
        (&[cc], Some((id, "wrong")), 401, "invalid_client"),
        (
            &[
                cc,
                ("client_id", id),
                ("client_secret", secret),
                ("scope", "superuser"),
            ],
            None,
            400,
            "invalid_scope",
        ),
        (
            &[("client_id", id), ("client_secret", secret)],
            None,
            400,
            "invalid_request",
        ),
        (
            &[
                ("grant_type", "password"),
                ("client_id", id),
                ("client_secret", secret),
            ],
            None,
            400,
            "unsupported_grant_type",
        ),
    ];
    for (form, basic, status, error) in cases {
        let (s, v) = token_request(&gw, form, basic);
        assert_eq!((s, v["error"].as_str()), (status, Some(error)), "{form:?}");
    }
    // A good token works; forged and expired ones are 401.
    let tok = gw.token("globalpci");
    assert_eq!(get(&gw, &tok, "/globalpci/v1/session/nope").0, 404);
    let mut forged = tok.clone();
    forged.insert(10, 'x');
    assert_eq!(get(&gw, &forged, "/globalpci/v1/session/nope").0, 401);
    assert_eq!(get(&gw, "not-a-token", "/globalpci/v1/session/nope").0, 401);
    gw.advance_clock(61);
    let (s, v) = get(&gw, &tok, "/globalpci/v1/session/nope");
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_token")));
}

#[test]
fn each_session_kind_with_the_seed_bodies() {
    let gw = Gateway::start("");
    let tok = gw.token("globalpci");
    // Self-service: the seed's response fields.
    let (s, v) = post(
        &gw,
        &tok,
        "/globalpci/v1/selfservicesession/",
        &body("selfservicesession", "guid-ss-1"),
    );
    assert_eq!(s, 200, "{v}");
    for k in ["sessionId", "dtmfFallbackNumber", "dtmfLinkId", "Message"] {
        assert!(v[k].is_string(), "{k} missing: {v}");
    }
    let link = v["dtmfLinkId"].as_str().unwrap();
    assert!(
        link.len() == 8 && tonegate::session::link_id::check_digit_ok(link),
        "{link}"
    );
    let ss = v["sessionId"].as_str().unwrap().to_string();
    // Without the trailing slash too.
    let (s, _) = post(
        &gw,
        &tok,
        "/globalpci/v1/selfservicesession",
        &body("selfservicesession", "guid-ss-2"),
    );
    assert_eq!(s, 200);
    // Digital.
    let (s, v) = post(
        &gw,
        &tok,
        "/globalpci/v1/digitalselfservicesession/",
        &body("digitalselfservicesession", ""),
    );
    assert_eq!(s, 200, "{v}");
    assert!(v["sessionId"].is_string() && v["Message"].is_string());
    // Agent-assisted: a session id, a payment-UI URL and credentials.
    let (s, v) = post(
        &gw,
        &tok,
        "/globalpci/v1/agentsession/",
        &body("agentsession", "guid-ag-1"),
    );
    assert_eq!(s, 200, "{v}");
    assert!(v["paymentUiUrl"].as_str().unwrap().contains("/pay/agent/"));
    assert!(
        v["paymentUiCredentials"]["accessCode"]
            .as_str()
            .unwrap()
            .len()
            >= 32
    );
    // GET: state with the seed's name, and the non-sensitive data.
    let (s, v) = get(&gw, &tok, &format!("/globalpci/v1/session/{ss}"));
    assert_eq!(s, 200);
    assert_eq!(v["sessionState"], "Created");
    assert_eq!(v["amount"], "124.99");
    assert_eq!(v["merchantTxnRef"], "INV-1001");
    assert_eq!(
        get(&gw, &tok, &format!("/globalpci/v1/session/{ss}/")).0,
        200
    );
    // Cancel works once.
    let (s, v) = post(
        &gw,
        &tok,
        &format!("/globalpci/v1/session/{ss}/cancel"),
        &json!({}),
    );
    assert_eq!((s, v["sessionState"].as_str()), (200, Some("Cancelled")));
    let (s, v) = post(
        &gw,
        &tok,
        &format!("/globalpci/v1/session/{ss}/cancel"),
        &json!({}),
    );
    assert_eq!((s, v["error"].as_str()), (409, Some("wrong_state")));
    // The audit trail shows who moved it.
    let audit = gw.state.sessions.store().audit(&ss).unwrap();
    assert_eq!(audit.last().unwrap().to, "Cancelled");
    assert!(audit.last().unwrap().actor.starts_with("client:"));
    // Submitting a session that has captured nothing is refused.
    let (s, _) = post(
        &gw,
        &tok,
        &format!("/globalpci/v1/session/{ss}/submit"),
        &json!({}),
    );
    assert_eq!(s, 409);
}

#[test]
fn sessions_survive_a_restart() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let id = {
        let gw = Gateway::start_in(dir.clone(), "");
        let tok = gw.token("globalpci");
        let (_, v) = post(
            &gw,
            &tok,
            "/globalpci/v1/agentsession",
            &body("agentsession", "guid-restart"),
        );
        let id = v["sessionId"].as_str().unwrap().to_string();
        post(
            &gw,
            &tok,
            &format!("/globalpci/v1/session/{id}/cancel"),
            &json!({}),
        );
        id
    };
    let gw = Gateway::start_in(dir, "");
    let tok = gw.token("globalpci");
    let (s, v) = get(&gw, &tok, &format!("/globalpci/v1/session/{id}"));
    assert_eq!(
        (s, v["sessionState"].as_str(), v["merchantTxnRef"].as_str()),
        (200, Some("Cancelled"), Some("INV-3003"))
    );
}

#[test]
fn another_client_cannot_see_a_session() {
    let gw = Gateway::start(
        r#"
[[auth.clients]]
id = "tonegate-dev"
secret = "tonegate-dev-secret"
scopes = ["globalpci", "relay", "admin"]
accounts = ["*"]

[[auth.clients]]
id = "other-crm"
secret = "other-secret-0123456789"
scopes = ["globalpci"]
accounts = ["dev-account"]
"#,
    );
    let mine = gw.token("globalpci");
    let theirs = gw.token_for(("other-crm", "other-secret-0123456789"), "globalpci");
    let (_, v) = post(
        &gw,
        &mine,
        "/globalpci/v1/agentsession",
        &body("agentsession", "guid-iso"),
    );
    let id = v["sessionId"].as_str().unwrap();
    // The session captures on a relay call in secure mode: what the other client tries below
    // would change both, were it done.
    let relay = gw.token("relay");
    let agent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (s, v) = post(
        &gw,
        &relay,
        "/relay/v1/calls",
        &json!({"call_guid": "guid-iso", "codec": "PCMU", "caller": {"remote": null},
                "agent": {"remote": agent.local_addr().unwrap().to_string()}}),
    );
    assert_eq!(s, 201, "{v}");
    let call = format!("/relay/v1/calls/{}", v["id"].as_str().unwrap());
    let v = wait_state(&gw, &mine, id, "Capturing");
    assert_eq!(v["sessionState"], "Capturing", "{v}");
    assert_eq!(get(&gw, &relay, &call).1["secure"], true);
    assert_eq!(
        get(&gw, &theirs, &format!("/globalpci/v1/session/{id}")).0,
        404
    );
    assert_eq!(
        post(
            &gw,
            &theirs,
            &format!("/globalpci/v1/session/{id}/cancel"),
            &json!({})
        )
        .0,
        404
    );
    assert_eq!(
        post(
            &gw,
            &theirs,
            &format!("/globalpci/v1/session/{id}/submit"),
            &json!({})
        )
        .0,
        404
    );
    // Each 404 meant nothing was done: the owner's session still captures, still secure.
    let (s, v) = get(&gw, &mine, &format!("/globalpci/v1/session/{id}"));
    assert_eq!(
        (s, v["sessionState"].as_str()),
        (200, Some("Capturing")),
        "{v}"
    );
    assert_eq!(get(&gw, &relay, &call).1["secure"], true);
    // A relay-only token cannot use the session API.
    assert_eq!(
        get(&gw, &relay, &format!("/globalpci/v1/session/{id}")).0,
        403
    );
}

#[test]
fn bad_input_is_a_clear_error_and_stores_nothing() {
    let gw = Gateway::start("");
    let tok = gw.token("globalpci");
    let url = gw.url("/globalpci/v1/selfservicesession");
    // Every error is RFC 9457 problem details, with the `error` code and the field at fault.
    let send = |b: reqwest::blocking::RequestBuilder| {
        let r = b.bearer_auth(&tok).send().unwrap();
        let status = r.status().as_u16();
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let v = r.json::<Value>().unwrap_or(Value::Null);
        assert_eq!(v["status"], status, "{v}");
        assert_eq!(v["type"], "about:blank", "{v}");
        assert!(v["title"].is_string() && v["detail"] == v["message"], "{v}");
        (status, v)
    };
    let json_post = |v: &Value| send(http().post(&url).json(v));
    let (s, v) = send(
        http()
            .post(&url)
            .header("content-type", "application/json")
            .body("{\"AccountConfigurationId\": "),
    );
    assert_eq!((s, v["error"].as_str()), (400, Some("bad_request")));
    assert!(v["message"].as_str().unwrap().contains("JSON"));
    let (s, v) = send(
        http()
            .post(&url)
            .header("content-type", "application/json")
            .body(format!("{{\"x\":\"{}\"}}", "a".repeat(70 * 1024))),
    );
    assert_eq!((s, v["error"].as_str()), (413, Some("payload_too_large")));
    let (s, v) = send(
        http()
            .post(&url)
            .header("content-type", "text/plain")
            .body("{}"),
    );
    assert_eq!(
        (s, v["error"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let mut b = body("selfservicesession", "g");
    b["PaymentData"].as_object_mut().unwrap().remove("amount");
    let (s, v) = json_post(&b);
    assert_eq!((s, v["error"].as_str()), (400, Some("missing_field")));
    assert!(v["message"].as_str().unwrap().contains("\"amount\""), "{v}");
    assert_eq!(v["field"], "amount");
    // An account that does not exist is not found (one the client may not use is 403:
    // tests/tenancy.rs).
    let mut b = body("selfservicesession", "g");
    b["AccountConfigurationId"] = json!("no-such-account");
    let (s, v) = json_post(&b);
    assert_eq!((s, v["error"].as_str()), (404, Some("unknown_account")));
    assert_eq!(v["field"], "AccountConfigurationId");
    assert_eq!(v["title"], "Not Found");
    let mut b = body("selfservicesession", "g");
    b["PaymentData"]["amount"] = json!("twelve");
    let (s, v) = json_post(&b);
    assert_eq!((s, v["field"].as_str()), (400, Some("amount")), "{v}");
    let (s, v) = json_post(&json!({"AccountConfigurationId": 5}));
    assert_eq!(
        (s, v["field"].as_str()),
        (400, Some("AccountConfigurationId")),
        "{v}"
    );
    let mut b = body("digitalselfservicesession", "");
    b["PaymentData"]["CustomerPhoneNumber"] = json!("07700 900123");
    let (s, v) = send(
        http()
            .post(gw.url("/globalpci/v1/digitalselfservicesession"))
            .json(&b),
    );
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_field")));
    assert_eq!(v["field"], "CustomerPhoneNumber");
    let b = json!({"AccountConfigurationId": "dev-account", "PaymentData": {"amount": "1.00"}});
    let (s, v) = json_post(&b);
    assert_eq!(
        (s, v["message"].as_str().map(|m| m.contains("CallGuid"))),
        (400, Some(true))
    );
    assert_eq!(v["field"], "CallGuid");
    let stored = gw
        .state
        .sessions
        .store()
        .in_states(&SessionState::ALL)
        .unwrap();
    assert!(stored.is_empty(), "nothing stored: {stored:?}");
}

#[test]
fn an_agent_session_captures_over_the_relay_and_leaves_no_digit_behind() {
    let logs = logs();
    let gw = Gateway::start("[log]\nlevel = \"debug\"\n");
    let tok = gw.token("globalpci");
    let relay_tok = gw.token("relay");
    let mut responses = String::new();
    // Agent session for the call, then the call through the relay.
    let (s, v) = post(
        &gw,
        &tok,
        "/globalpci/v1/agentsession",
        &body("agentsession", "guid-full-1"),
    );
    assert_eq!(s, 200);
    responses += &v.to_string();
    let id = v["sessionId"].as_str().unwrap().to_string();
    let caller = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let agent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    agent
        .set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let (s, v) = post(
        &gw,
        &relay_tok,
        "/relay/v1/calls",
        &json!({"call_guid": "guid-full-1", "codec": "PCMU", "telephone_event_pt": 101,
                "caller": {"remote": caller.local_addr().unwrap().to_string()},
                "agent": {"remote": agent.local_addr().unwrap().to_string()}}),
    );
    assert_eq!(s, 201);
    responses += &v.to_string();
    let call_id = v["id"].as_str().unwrap().to_string();
    let relay_caller: std::net::SocketAddr =
        v["caller"]["local"].as_str().unwrap().parse().unwrap();
    // Linking the session turned secure mode on.
    let v = wait_state(&gw, &tok, &id, "Capturing");
    assert_eq!(v["sessionState"], "Capturing");
    let (_, call) = get(&gw, &relay_tok, &format!("/relay/v1/calls/{call_id}"));
    assert_eq!(call["secure"], true);
    // The caller keys the card (audio and RFC 4733 both).
    let signal =
        tonegate_dsp::generator::human_keying("4242424242424242#1230#737#", 11, Some(25.0));
    let packets = rtp_stream(
        &signal,
        StreamOptions {
            events_pt: Some(101),
            ..Default::default()
        },
    );
    let rx = agent.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = rx.recv_from(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    });
    for p in &packets {
        caller.send_to(&p.bytes, relay_caller).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let agent_packets = t.join().unwrap();
    let v = wait_state(&gw, &tok, &id, "ReadyToSubmit");
    assert_eq!(v["sessionState"], "ReadyToSubmit", "{v}");
    // The agent submits; the sandbox PSP approves 4242….
    let (s, v) = post(
        &gw,
        &tok,
        &format!("/globalpci/v1/session/{id}/submit"),
        &json!({}),
    );
    responses += &v.to_string();
    assert_eq!(
        (s, v["sessionState"].as_str()),
        (200, Some("Completed")),
        "{v}"
    );
    assert_eq!(v["maskedPan"], "************4242");
    assert_eq!(v["cardBrand"], "Visa");
    assert!(v["pspTokenReference"].as_str().unwrap().starts_with("pm_"));
    assert!(v["pspTransactionId"].as_str().unwrap().starts_with("pi_"));
    let (_, v) = get(&gw, &tok, &format!("/globalpci/v1/session/{id}"));
    responses += &v.to_string();
    // Secure mode stays on after the payment (fail closed: the account masks the whole call).
    let (_, call) = get(&gw, &relay_tok, &format!("/relay/v1/calls/{call_id}"));
    assert_eq!(call["secure"], true);
    assert_eq!(call["counters"]["keys_captured"], 26);
    responses += &call.to_string();
    let metrics = http()
        .get(gw.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    // The payment and the call's secure mode are counted.
    for line in [
        "tonegate_payments_total{outcome=\"completed\"} 1\n",
        "tonegate_payments_total{outcome=\"failed\"} 0\n",
        "tonegate_relay_calls{mode=\"secure\"} 1\n",
        "tonegate_sessions_live{state=\"Completed\"}",
    ] {
        assert_eq!(
            metrics.contains(line),
            !line.contains("Completed"),
            "{line}: {metrics}"
        );
    }
    responses += &metrics;
    // The agent heard the caller's audio, and no key in it.
    let sent_audio = packets
        .iter()
        .filter(|p| {
            tonegate::media::rtp::RtpHeader::parse(&p.bytes).is_ok_and(|h| h.payload_type == 0)
        })
        .count();
    assert_agent_heard_audio(&agent_packets, sent_audio);
    assert_eq!(
        keys_in(&agent_audio(
            &agent_packets,
            tonegate_dsp::G711Law::Ulaw,
            StreamOptions::default().first_ts
        )),
        ""
    );
    // Nothing anywhere holds the digits: responses, logs, the database and its WAL.
    let dir = gw.dir.clone();
    drop(gw);
    let log_text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    // The capture is shared by every gateway of this test process: only a line naming this
    // test's own session proves that this gateway's logs were read.
    assert!(
        log_text
            .lines()
            .any(|l| l.contains("payment finished") && l.contains(&format!("session={id}"))),
        "this gateway's logs were captured"
    );
    common::assert_no_card_digits("responses", responses.as_bytes());
    common::assert_no_card_digits("logs", log_text.as_bytes());
    let files = database_files(dir.path());
    for (name, bytes) in &files {
        common::assert_no_card_digits(name, bytes);
    }
    let files = files.len();
    assert!(files >= 1, "the database was scanned");
}

/// Fails if `bytes` hold the PAN (whole, its first twelve digits, or grouped), or the expiry or
/// CVV as keyed in the test above standing on their own (not inside a longer word or number,
/// where random ids and timestamps could hold them by chance).
/// Every file of a stopped gateway's database directory, by name. The store closes on a thread
/// of its own: a WAL checkpointed and removed while being listed means its content moved into
/// the database, so the scan starts again (bounded).
fn database_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    'scan: for _ in 0..20 {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            match std::fs::read(entry.path()) {
                Ok(b) => files.push((entry.path().display().to_string(), b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::thread::sleep(Duration::from_millis(100));
                    continue 'scan;
                }
                Err(e) => panic!("{}: {e}", entry.path().display()),
            }
        }
        return files;
    }
    panic!("{}: files kept vanishing while being read", dir.display());
}

#[test]
fn expired_sessions_are_swept() {
    let gw = Gateway::start(
        "[store]\nsweep_interval_s = 1\n[[accounts]]\nid = \"dev-account\"\nmandatory = [\"amount\"]\nsession_ttl_s = 1\n",
    );
    let tok = gw.token("globalpci");
    let (_, v) = post(
        &gw,
        &tok,
        "/globalpci/v1/agentsession",
        &body("agentsession", "guid-exp"),
    );
    let id = v["sessionId"].as_str().unwrap().to_string();
    let v = wait_state(&gw, &tok, &id, "Expired");
    assert_eq!(v["sessionState"], "Expired");
    let audit = gw.state.sessions.store().audit(&id).unwrap();
    assert_eq!(audit.last().unwrap().actor, "gateway:expiry");
}

#[test]
fn transcript_redaction_route() {
    let gw = Gateway::start("");
    let tok = gw.token("globalpci");
    let (s, v) = post(
        &gw,
        &tok,
        "/globalpci/v1/redact",
        &json!({"text": "card 4242 4242 4242 4242, call +44 7911 123456"}),
    );
    assert_eq!(s, 200);
    assert_eq!(v["text"], "card **** **** **** 4242, call +44 7911 123456");
    assert_eq!(
        post(&gw, &tok, "/globalpci/v1/redact", &json!({"txt": 1})).0,
        400
    );
}

/// A complete card the agent does not submit within the account's `card_hold_s` is wiped: the
/// session goes back to Capturing (audited), and "Submit" has nothing to send.
#[test]
fn an_unsubmitted_card_is_wiped_after_the_hold() {
    let gw = Gateway::start(
        "[[accounts]]\nid = \"dev-account\"\nmandatory = [\"amount\"]\ncard_hold_s = 1\n",
    );
    let tok = gw.token("globalpci");
    let relay_tok = gw.token("relay");
    let (s, v) = post(
        &gw,
        &tok,
        "/globalpci/v1/agentsession",
        &body("agentsession", "guid-hold-1"),
    );
    assert_eq!(s, 200, "{v}");
    let id = v["sessionId"].as_str().unwrap().to_string();
    let caller = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let agent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (s, v) = post(
        &gw,
        &relay_tok,
        "/relay/v1/calls",
        &json!({"call_guid": "guid-hold-1", "codec": "PCMU",
                "caller": {"remote": caller.local_addr().unwrap().to_string()},
                "agent": {"remote": agent.local_addr().unwrap().to_string()}}),
    );
    assert_eq!(s, 201, "{v}");
    let relay_caller: std::net::SocketAddr =
        v["caller"]["local"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        wait_state(&gw, &tok, &id, "Capturing")["sessionState"],
        "Capturing"
    );
    let signal = tonegate_dsp::generator::human_keying("4242424242424242#1230#737#", 5, Some(25.0));
    for p in &rtp_stream(&signal, StreamOptions::default()) {
        caller.send_to(&p.bytes, relay_caller).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let v = wait_state(&gw, &tok, &id, "ReadyToSubmit");
    assert_eq!(v["sessionState"], "ReadyToSubmit", "{v}");
    // What the agent UI shows: the card complete, then (the hold passed) every field empty.
    // (the latest capture view in the session's event log, which the UI's stream serves).
    let view = || {
        let events = gw
            .state
            .sessions
            .store()
            .events_after(&id, 0, 10_000)
            .unwrap();
        let last = events
            .iter()
            .rev()
            .map(|(_, body)| serde_json::from_str::<Value>(body).unwrap())
            .find(|v| v.get("capture").is_some())
            .expect("the capture published a view");
        last["capture"].clone()
    };
    let card = view();
    assert_eq!(
        (card["complete"].as_bool(), card["last4"].as_str()),
        (Some(true), Some("4242")),
        "{card}"
    );
    // The hold passes with nobody pressing Submit.
    let v = wait_state(&gw, &tok, &id, "Capturing");
    assert_eq!(v["sessionState"], "Capturing", "{v}");
    // The state is stored before the live view is published: the agent's screen follows within
    // moments, so wait (bounded) for the view that carries the wipe.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut card = view();
    while card["complete"] != json!(false) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        card = view();
    }
    assert_eq!(
        (&card["complete"], &card["last4"], &card["brand"]),
        (&json!(false), &Value::Null, &Value::Null),
        "{card}"
    );
    let fields = card["fields"].as_array().unwrap();
    assert!(
        !fields.is_empty()
            && fields
                .iter()
                .all(|f| f["length"] == 0 && f["status"] == "empty"),
        "{card}"
    );
    let (s, v) = post(
        &gw,
        &tok,
        &format!("/globalpci/v1/session/{id}/submit"),
        &json!({}),
    );
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("wrong_state")),
        "nothing to submit: {v}"
    );
    let audit = gw.state.sessions.store().audit(&id).unwrap();
    let last = audit.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.from.as_deref(), last.to.as_str()),
        ("gateway:card-hold", Some("ReadyToSubmit"), "Capturing"),
        "{audit:?}"
    );
}

/// A CRM that sends a PAN where none belongs — as a JSON number, in a key name, in the
/// merchant reference — gets it masked before anything is stored or answered: the responses,
/// the database and its WAL hold none of it.
#[test]
fn a_pan_sent_in_payment_data_is_never_stored() {
    let gw = Gateway::start("");
    let tok = gw.token("globalpci");
    let (s, v) = post(
        &gw,
        &tok,
        "/globalpci/v1/agentsession",
        &json!({"AccountConfigurationId": "dev-account", "CallGuid": "guid-pan-in-data",
                "PaymentData": {"amount": "12.50", "acct": 4242424242424242u64,
                "card 4242424242424242": "in the key", "note": "4242-4242-4242-4242",
                "merchantTxnRef": "INV 4242 4242 4242 4242"}}),
    );
    assert_eq!(s, 200, "{v}");
    let id = v["sessionId"].as_str().unwrap().to_string();
    let mut responses = v.to_string();
    let (_, v) = get(&gw, &tok, &format!("/globalpci/v1/session/{id}"));
    responses += &v.to_string();
    assert_eq!(v["merchantTxnRef"], "INV **** **** **** 4242", "{v}");
    common::assert_no_card_digits("responses", responses.as_bytes());
    let dir = gw.dir.clone();
    drop(gw);
    let files = database_files(dir.path());
    for (name, bytes) in &files {
        common::assert_no_card_digits(name, bytes);
    }
    assert!(!files.is_empty(), "the database was scanned");
}

/// `text` as a person reads a number in it: spaces (any), tabs, dashes, dots, slashes and
/// underscores dropped (JSON's `\t` escape too), full-width digits read as digits.
fn as_read(text: &str) -> String {
    text.replace("\\t", " ")
        .chars()
        .filter(|&c| !(c.is_whitespace() || "-./_".contains(c)))
        .map(|c| match c as u32 {
            0xFF10..=0xFF19 => char::from(b'0' + (c as u32 - 0xFF10) as u8),
            _ => c,
        })
        .collect()
}

/// A card number written the ways that got past the old redactor — after a `+`, grouped by
/// dots, slashes, underscores, tabs, NBSPs or double spaces, in full-width digits, glued to its
/// expiry — in PaymentData values, key names, the merchant reference and the CallGuid, is
/// masked before anything is stored or answered; a bad `amount` holding one is refused without
/// quoting it.
#[test]
fn card_numbers_in_any_format_are_never_stored() {
    let gw = Gateway::start("");
    let tok = gw.token("globalpci");
    let (s, v) = post(
        &gw,
        &tok,
        "/globalpci/v1/agentsession",
        &json!({"AccountConfigurationId": "dev-account", "CallGuid": "call 4242.4242.4242.4242",
                "PaymentData": {"amount": "12.50",
                "phone": "+4242424242424242", "dots": "4242.4242.4242.4242",
                "slashes": "4242/4242/4242/4242", "underscores": "4242_4242_4242_4242",
                "tabs": "4242\t4242\t4242\t4242", "nbsp": "4242\u{a0}4242\u{a0}4242\u{a0}4242",
                "double": "4242  4242  4242  4242", "wide": "４２４２４２４２４２４２４２４２",
                "glued": "424242424242424212/30", "key 4242_4242_4242_4242": "in the key",
                "merchantTxnRef": "INV+4242424242424242"}}),
    );
    assert_eq!(s, 200, "{v}");
    let id = v["sessionId"].as_str().unwrap().to_string();
    let mut responses = v.to_string();
    let (_, v) = get(&gw, &tok, &format!("/globalpci/v1/session/{id}"));
    responses += &v.to_string();
    assert_eq!(v["merchantTxnRef"], "INV+************4242", "{v}");
    assert_eq!(v["CallGuid"], "call ****.****.****.4242", "{v}");
    // The amount's error names the field, not the value.
    let (s, e) = post(
        &gw,
        &tok,
        "/globalpci/v1/agentsession",
        &json!({"AccountConfigurationId": "dev-account", "CallGuid": "call-amount",
                "PaymentData": {"amount": "4242 4242 4242 4242 exp 12/30"}}),
    );
    assert_eq!(s, 400, "{e}");
    assert!(!e.to_string().contains("4242"), "{e}");
    responses += &e.to_string();
    for pan in ["4242424242424242", "424242424242"] {
        assert!(
            !as_read(&responses).contains(pan),
            "answers hold the PAN: {responses}"
        );
    }
    let dir = gw.dir.clone();
    drop(gw);
    let files = database_files(dir.path());
    for (name, bytes) in &files {
        let text = as_read(&String::from_utf8_lossy(bytes));
        assert!(!text.contains("424242424242"), "{name} holds the PAN");
    }
    assert!(!files.is_empty(), "the database was scanned");
}

/// Personal data goes `store.personal_data_days` after a session closes: a cancelled
/// session's PaymentData and its SMS leave the database file (and its WAL) for good; a live
/// session keeps its data, and the closed one keeps its state and amount.
#[test]
fn personal_data_is_deleted_after_its_retention() {
    let gw = Gateway::start("[store]\npersonal_data_days = 30\n");
    let tok = gw.token("globalpci");
    let digital = |name: &str, phone: &str, reference: &str| {
        let (s, v) = post(
            &gw,
            &tok,
            "/globalpci/v1/digitalselfservicesession",
            &json!({"AccountConfigurationId": "dev-account", "PaymentData": {
                "CustomerPhoneNumber": phone, "cardholderName": name,
                "cardholder Address": format!("{name}'s house"), "amount": "20.00",
                "merchantTxnRef": reference}}),
        );
        assert_eq!(s, 200, "{v}");
        v["sessionId"].as_str().unwrap().to_string()
    };
    let closed = digital("Ada Lovelace", "+447700900111", "RET-1");
    let live = digital("Grace Hopper", "+447700900222", "RET-2");
    let (s, _) = post(
        &gw,
        &tok,
        &format!("/globalpci/v1/session/{closed}/cancel"),
        &json!({}),
    );
    assert_eq!(s, 200);
    let now = tonegate::clock::Clock::system().unix_now();
    let early = gw
        .state
        .sessions
        .forget_personal_data(now + 29 * 86_400)
        .unwrap();
    assert_eq!(early.sessions, 0, "not before its time: {early:?}");
    let gone = gw
        .state
        .sessions
        .forget_personal_data(now + 31 * 86_400)
        .unwrap();
    assert_eq!(gone.sessions, 1, "{gone:?}");
    assert_eq!(gone.messages, 2, "{gone:?}");
    let (_, v) = get(&gw, &tok, &format!("/globalpci/v1/session/{closed}"));
    assert_eq!(v["sessionState"], "Cancelled", "{v}");
    assert_eq!(v["amount"], "20.00", "{v}");
    let (_, v) = get(&gw, &tok, &format!("/globalpci/v1/session/{live}"));
    assert_eq!(v["sessionState"], "Created", "{v}");
    let dir = gw.dir.clone();
    drop(gw);
    let all: Vec<u8> = database_files(dir.path())
        .into_iter()
        .flat_map(|(_, bytes)| bytes)
        .collect();
    let holds = |s: &str| all.windows(s.len()).any(|w| w == s.as_bytes());
    for gone in ["Ada Lovelace", "+447700900111", "Lovelace's house"] {
        assert!(!holds(gone), "the database still holds {gone:?}");
    }
    assert!(holds("Grace Hopper"), "the live session's data was kept");
}

/// Call ids are limited to 128 characters, not bytes: a 128-character id in a two-byte script
/// is accepted for a session and for a relay call, one character more is refused.
#[test]
fn call_ids_are_limited_in_characters() {
    let gw = Gateway::start("");
    let tok = gw.token("globalpci");
    let relay = gw.token("relay");
    for (n, ok) in [(128, true), (129, false)] {
        let guid = "é".repeat(n);
        let (s, v) = post(
            &gw,
            &tok,
            "/globalpci/v1/agentsession",
            &json!({"AccountConfigurationId": "dev-account", "CallGuid": guid,
                    "PaymentData": {"amount": "1.00"}}),
        );
        assert_eq!(
            s,
            if ok { 200 } else { 400 },
            "session, {n} characters: {v}"
        );
        let (s, v) = post(
            &gw,
            &relay,
            "/relay/v1/calls",
            &json!({"call_guid": format!("r{}", &guid[2..]), "codec": "PCMU",
                    "caller": {"remote": null}, "agent": {"remote": null}}),
        );
        assert_eq!(
            s,
            if ok { 201 } else { 400 },
            "relay call, {n} characters: {v}"
        );
    }
}

#[test]
fn only_a_gateway_started_with_an_adjustable_clock_lets_an_admin_move_it() {
    let fixed = Gateway::start("");
    let admin = fixed.token("admin");
    let body = json!({ "advance_s": 5 });
    let (s, _) = post(&fixed, &admin, "/admin/v1/clock", &body);
    assert_eq!(s, 404, "no clock route where the clock is the system's");

    let gw = Gateway::start("[server]\nadjustable_clock = true\n");
    let admin = gw.token("admin");
    let (s, v) = post(&gw, &gw.token("globalpci"), "/admin/v1/clock", &body);
    assert_eq!(s, 403, "{v}");
    for bad in [
        json!({}),
        json!({ "advance_s": -1 }),
        json!({ "advance_s": 1, "x": 1 }),
    ] {
        let (s, v) = post(&gw, &admin, "/admin/v1/clock", &bad);
        assert_eq!(s, 400, "{bad}: {v}");
    }
    let (s, v) = post(&gw, &admin, "/admin/v1/clock", &body);
    assert_eq!((s, v["skew_s"].as_u64()), (200, Some(5)), "{v}");
    let (_, v) = post(&gw, &admin, "/admin/v1/clock", &json!({ "advance_s": 10 }));
    assert_eq!(v["skew_s"], 15);
    let system = tonegate::clock::Clock::system().unix_now();
    let now = v["now"].as_u64().unwrap();
    assert!(
        (system + 15..=system + 16).contains(&now),
        "{now} vs {system}"
    );
}

/// `Idempotency-Key`: a retried create answers the first answer again — the same session,
/// agent URL and access code, and the code still opens the agent's page — while the same key
/// with another body is 422 and no key is a plain second create (409 for the live call). The
/// database never holds the access code in the clear.
#[test]
fn a_create_retried_with_its_idempotency_key_answers_the_same() {
    let gw = Gateway::start("");
    let tok = gw.token("globalpci");
    let create = |b: &Value, key: Option<&str>| {
        let mut r = http()
            .post(gw.url("/globalpci/v1/agentsession/"))
            .bearer_auth(&tok)
            .json(b);
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        let r = r.send().unwrap();
        let replayed = r.headers().contains_key("idempotent-replayed");
        (r.status().as_u16(), replayed, r.json::<Value>().unwrap())
    };
    let b = body("agentsession", "idem-call");
    let (s, replayed, first) = create(&b, Some("order-1001"));
    assert_eq!((s, replayed), (200, false), "{first}");
    let code = first["paymentUiCredentials"]["accessCode"]
        .as_str()
        .unwrap()
        .to_string();
    // The response was lost; the CRM retries.
    let (s, replayed, again) = create(&b, Some("order-1001"));
    assert_eq!((s, replayed), (200, true), "{again}");
    assert_eq!(again, first);
    // The replayed code opens the agent's page (once).
    let page = http()
        .get(format!(
            "{}?code={code}",
            again["paymentUiUrl"].as_str().unwrap()
        ))
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    // Same key, another body: refused, naming the header.
    let mut other = b.clone();
    other["PaymentData"]["merchantTxnRef"] = json!("INV-9999");
    let (s, _, v) = create(&other, Some("order-1001"));
    assert_eq!(
        (s, v["error"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    assert_eq!(v["field"], "Idempotency-Key");
    // Without a key the retry is a second create: the call already has a live session.
    assert_eq!(create(&b, None).0, 409);
    // A key that is no header value a client could mean is refused.
    let (s, _, v) = create(&b, Some(&"k".repeat(256)));
    assert_eq!((s, v["field"].as_str()), (400, Some("Idempotency-Key")));
    let dir = gw.dir.clone();
    drop(gw);
    for (name, bytes) in database_files(dir.path()) {
        assert!(
            !bytes.windows(code.len()).any(|w| w == code.as_bytes()),
            "{name} holds the access code"
        );
        assert!(
            !bytes.windows(10).any(|w| w == b"order-1001"),
            "{name} holds the Idempotency-Key"
        );
    }
}

/// `GET /globalpci/v1/sessions`: a client's sessions, newest first, by CallGuid,
/// merchantTxnRef and state, a page at a time.
#[test]
fn sessions_are_found_by_call_reference_and_state_a_page_at_a_time() {
    let gw = Gateway::start("");
    let tok = gw.token("globalpci");
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut b = body("agentsession", &format!("list-call-{i}"));
        b["PaymentData"]["merchantTxnRef"] = json!(format!("REF-{i}"));
        let (s, v) = post(&gw, &tok, "/globalpci/v1/agentsession/", &b);
        assert_eq!(s, 200, "{v}");
        ids.push(v["sessionId"].as_str().unwrap().to_string());
    }
    let list = |query: &str| {
        let (s, v) = get(&gw, &tok, &format!("/globalpci/v1/sessions{query}"));
        assert_eq!(s, 200, "{query}: {v}");
        let found: Vec<String> = v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["sessionId"].as_str().unwrap().to_string())
            .collect();
        (found, v["nextCursor"].as_str().map(str::to_string))
    };
    assert_eq!(list("?CallGuid=list-call-1"), (vec![ids[1].clone()], None));
    assert_eq!(list("?merchantTxnRef=REF-2"), (vec![ids[2].clone()], None));
    assert_eq!(list("?CallGuid=nobody").0, Vec::<String>::new());
    // Pages of two: every session once, no cursor after the last.
    let (page1, cursor) = list("?limit=2");
    assert_eq!(page1.len(), 2);
    let (page2, end) = list(&format!("?limit=2&cursor={}", cursor.unwrap()));
    assert_eq!((page2.len(), end), (1, None));
    let mut all: Vec<String> = page1.into_iter().chain(page2).collect();
    all.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(all, want);
    // By state.
    let (s, _) = post(
        &gw,
        &tok,
        &format!("/globalpci/v1/session/{}/cancel", ids[0]),
        &json!({}),
    );
    assert_eq!(s, 200);
    assert_eq!(list("?state=Cancelled"), (vec![ids[0].clone()], None));
    assert_eq!(list("?state=Created").0.len(), 2);
    assert_eq!(list("?createdFrom=4102444800").0, Vec::<String>::new());
    // A cursor this API did not give is refused, naming it.
    let (s, v) = get(&gw, &tok, "/globalpci/v1/sessions?cursor=bm9wZQ");
    assert_eq!((s, v["field"].as_str()), (400, Some("cursor")), "{v}");
}

//! The web pages in headless Chromium over WebDriver: the agent payment UI watching a call's
//! keys through the relay, and digital payments from SMS link to result.

use crate::common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::gateway::{http, post, Gateway};
use common::localstripe::LocalStripe;
use common::webdriver::{self, Browser};
use common::*;
use serde_json::{json, Value};

fn artifacts() -> std::path::PathBuf {
    root().join("test-artifacts")
}

fn session(gw: &Gateway, tok: &str, id: &str) -> Value {
    gw.client
        .get(gw.url(&format!("/globalpci/v1/session/{id}")))
        .bearer_auth(tok)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn agent_ui_flow(gw: &Gateway, account: &str, label: &str, chromium_args: &[String]) {
    let tok = gw.token("globalpci");
    let guid = format!("call-ui-{label}");
    // The caller's call through the relay.
    let (id, ui, mut caller, _agent) = agent_call(
        gw,
        &tok,
        account,
        &guid,
        json!({"cardholderName": "Ada Lovelace", "merchantTxnRef": format!("UI-{label}"), "amount": "42.00"}),
    );

    let b = Browser::start_with(chromium_args);
    b.goto(&ui);
    wait_agent_state(&b, "Capturing");
    assert_eq!(
        b.script("return location.protocol"),
        json!(format!("{}:", gw.scheme))
    );
    assert_eq!(content(&b, "#amount"), "£42.00");
    assert_eq!(b.text("#cardholder"), "Ada Lovelace");
    assert_eq!(b.property("#submit", "disabled"), "true");
    // The event stream, read alongside (with the page's own UI token).
    let token = b
        .script("return document.body.dataset.token")
        .as_str()
        .unwrap()
        .to_string();
    let events_url = gw.url(&format!("/pay/agent/{id}/events?token={token}"));
    let client = gw.client.clone();
    let sse = std::thread::spawn(move || {
        let mut r = client
            .get(events_url)
            .timeout(Duration::from_secs(25))
            .send()
            .unwrap();
        let mut all = Vec::new();
        let _ = std::io::Read::read_to_end(&mut r, &mut all);
        String::from_utf8_lossy(&all).into_owned()
    });

    // The PAN: one mask character per key, then the last four once valid.
    caller.key("4242424242424242#", 1);
    let pan = b.wait_text("#f-pan .mask", 10, |t| t.ends_with("4242"));
    assert_eq!(pan.chars().count(), 16, "{pan}");
    assert_eq!(b.text("#f-pan .status"), "Complete");
    caller.key("1230#737", 2);
    wait_agent_state(&b, "ReadyToSubmit");
    assert_eq!(b.text("#f-expiry .mask"), "••••");
    assert_eq!(b.text("#f-cvv .mask"), "•••");
    assert_eq!(b.property("#submit", "disabled"), "false");
    common::assert_no_card_digits("page", b.source().as_bytes());
    // Reset the expiry: it empties, submit is disabled again; the caller keys it again.
    b.click("button[data-reset=expiry]");
    wait_agent_state(&b, "Capturing");
    b.wait_text("#f-expiry .mask", 10, str::is_empty);
    assert_eq!(b.property("#submit", "disabled"), "true");
    caller.key("1230#", 3);
    wait_agent_state(&b, "ReadyToSubmit");
    b.screenshot(&artifacts().join(format!("agent_ui_{label}_ready.png")));
    b.click("#submit");
    let result = b.wait_text("#result", 20, |t| t.starts_with("Payment approved"));
    assert!(result.contains("pi_"), "{result}");
    b.screenshot(&artifacts().join(format!("agent_ui_{label}_approved.png")));
    common::assert_no_card_digits("page", b.source().as_bytes());
    let s = session(gw, &tok, &id);
    assert_eq!(s["sessionState"], "Completed");
    assert_eq!(
        result,
        format!(
            "Payment approved. PSP reference {}.",
            s["pspTransactionId"].as_str().unwrap()
        )
    );
    // The event stream carried lengths and statuses, never a key.
    let events = sse.join().unwrap();
    assert!(
        events.contains("key_masked") && events.contains("Completed"),
        "{events}"
    );
    common::assert_no_card_digits("event stream", events.as_bytes());
    // The one-time code is spent; the UI token cannot use the GlobalPCI API.
    let again = gw.client.get(&ui).send().unwrap();
    assert_eq!(again.status(), 403);
    let r = gw
        .client
        .get(gw.url(&format!("/globalpci/v1/session/{id}")))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn agent_payment_ui_end_to_end_sandbox_and_localstripe() {
    if !webdriver::available() {
        return;
    }
    let ls = LocalStripe::start();
    let gw = Gateway::start(&format!(
        "[[accounts]]\nid = \"dev-account\"\nmandatory = [\"amount\"]\n\n[[accounts]]\nid = \"stripe-account\"\npsp = \"stripe\"\nstripe_base_url = \"{}\"\nstripe_secret_key = \"sk_test_ui\"\n",
        ls.url
    ));
    agent_ui_flow(&gw, "dev-account", "sandbox", &[]);
    agent_ui_flow(&gw, "stripe-account", "localstripe", &[]);
}

/// With `[server.tls]` the same flow runs over HTTPS: the page, its event stream, the submit.
/// Chromium trusts the gateway's self-signed certificate by its key alone, so a page served by
/// anything else would fail to load.
#[test]
fn agent_payment_ui_over_https() {
    if !webdriver::available() {
        return;
    }
    let cert = common::tls::TestCert::new();
    let gw = Gateway::start(&cert.server_toml());
    assert_eq!(gw.scheme, "https");
    let pin = format!("--ignore-certificate-errors-spki-list={}", cert.spki_sha256);
    agent_ui_flow(&gw, "dev-account", "https", &[pin]);
}

/// The payment links texted for a session, oldest first.
fn links_for(gw: &Gateway, session: &str) -> Vec<String> {
    let admin = gw.token("admin");
    let v: Value = http()
        .get(gw.url("/admin/v1/outbox"))
        .bearer_auth(&admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut links: Vec<String> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["sessionId"] == session)
        .map(|m| {
            let body = m["body"].as_str().unwrap();
            let start = body.find("http").unwrap();
            body[start..].split_whitespace().next().unwrap().to_string()
        })
        .collect();
    links.reverse();
    links
}

fn digital(gw: &Gateway, tok: &str, account: &str, reference: &str) -> String {
    let v = post(
        gw,
        tok,
        "/globalpci/v1/digitalselfservicesession",
        &json!({"AccountConfigurationId": account,
        "PaymentData": {"CustomerPhoneNumber": "+447700900123", "cardholderName": "Ada Lovelace", "merchantTxnRef": reference, "amount": "59.00"}}),
    ).1;
    v["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

fn pay_in_browser(b: &Browser, link: &str, pan: &str, expiry: &str, cvc: &str) {
    b.goto(link);
    b.type_into("#number", pan);
    b.type_into("#expiry", expiry);
    b.type_into("#cvc", cvc);
    b.click("#pay");
}

#[test]
fn digital_payment_from_sms_link_to_result() {
    if !webdriver::available() {
        return;
    }
    let gw = Gateway::start("[[accounts]]\nid = \"dev-account\"\nmandatory = [\"amount\"]\n\n[[accounts]]\nid = \"short-links\"\nlink_ttl_s = 1\n\n[server]\nadjustable_clock = true\n");
    let tok = gw.token("globalpci");
    let b = Browser::start();

    // Created → one SMS with a link → the page → paid.
    let id = digital(&gw, &tok, "dev-account", "D-1");
    let links = links_for(&gw, &id);
    assert_eq!(links.len(), 1);
    b.goto(&links[0]);
    for (input, token) in [
        ("#number", "cc-number"),
        ("#expiry", "cc-exp"),
        ("#cvc", "cc-csc"),
    ] {
        assert_eq!(b.property(input, "autocomplete"), token);
    }
    assert_eq!(content(&b, "#amount"), "£59.00");
    // Client-side hints as the number is typed.
    b.type_into("#number", "4242424242424242");
    b.wait_text("#number-hint", 5, |t| t == "Visa");
    assert_eq!(b.property("#number", "value"), "4242 4242 4242 4242");
    b.type_into("#expiry", "1230");
    b.type_into("#cvc", "123");
    b.screenshot(&artifacts().join("hosted_page_filled.png"));
    b.click("#pay");
    b.wait_text("h1", 20, |t| t == "Payment approved");
    assert!(b.text("p").contains("ending 4242"));
    common::assert_no_card_digits("result page", b.source().as_bytes());
    b.screenshot(&artifacts().join("hosted_page_approved.png"));
    assert_eq!(session(&gw, &tok, &id)["sessionState"], "Completed");
    // The link works once.
    b.goto(&links[0]);
    assert_eq!(b.text("h1"), "Link already used");

    // Server-side validation is authoritative, and nothing typed is echoed back.
    let id = digital(&gw, &tok, "dev-account", "D-2");
    let link = links_for(&gw, &id).remove(0);
    pay_in_browser(&b, &link, "4242424242424241", "1230", "123");
    b.wait_text("#number-error", 10, |t| t.contains("not valid"));
    assert!(!b.source().contains("4242424242424241"));
    assert_eq!(session(&gw, &tok, &id)["sessionState"], "Created");
    // A declined card says so on the form, and the link stays open for another try.
    pay_in_browser(&b, &link, "4000000000000341", "1230", "123");
    b.wait_text("#form-error", 20, |t| t.contains("declined"));
    assert_eq!(session(&gw, &tok, &id)["sessionState"], "Capturing");

    // An expired link.
    let id = digital(&gw, &tok, "short-links", "D-3");
    let link = links_for(&gw, &id).remove(0);
    gw.advance_clock(2);
    b.goto(&link);
    assert_eq!(b.text("h1"), "Link expired");

    // Idempotent create: the same merchantTxnRef while live returns the same session, no new SMS.
    let first = digital(&gw, &tok, "dev-account", "D-4");
    let again = digital(&gw, &tok, "dev-account", "D-4");
    assert_eq!(first, again);
    assert_eq!(links_for(&gw, &first).len(), 1);
    // Re-issue: a new link, the old one stops working.
    let v = post(
        &gw,
        &tok,
        &format!("/globalpci/v1/session/{first}/reissue"),
        &json!({}),
    )
    .1;
    assert_eq!(v["Message"], "New payment link sent");
    let links = links_for(&gw, &first);
    assert_eq!(links.len(), 2);
    b.goto(&links[0]);
    assert_eq!(b.text("h1"), "Link replaced");
    b.goto(&links[1]);
    assert_eq!(b.text("h1"), "Pay securely");
    let deadline = Instant::now();
    let _ = deadline;
}

// ------------------------------------------------------------------ issue 27: the agent's
// screen recovers, the caller's page speaks the account's language, both are accessible.

/// Where the layout screenshots go (kept as test artefacts).
fn artefacts() -> std::path::PathBuf {
    root().join("target/test-artefacts")
}

/// An element's text as the DOM holds it (WebDriver's visible text turns no-break spaces
/// into plain ones).
fn content(b: &Browser, css: &str) -> String {
    b.find(css);
    let v = b.script(&format!(
        "return document.querySelector({}).textContent",
        json!(css)
    ));
    v.as_str().unwrap_or_default().to_string()
}

/// A gateway with `config`, a globalpci token, a browser and axe-core (None inside when it
/// is not installed); `None` when there is no Chromium.
fn ui_test(config: &str) -> Option<(Gateway, String, Browser, Option<String>)> {
    if !webdriver::available() {
        return None;
    }
    let axe = common::axe::source();
    let gw = Gateway::start(config);
    let tok = gw.token("globalpci");
    Some((gw, tok, Browser::start(), axe))
}

/// The API's recapture is refused for session `id` with a 409 `code`.
fn assert_recapture_refused(gw: &Gateway, tok: &str, id: &str, code: &str) {
    let (status, v) = post(
        gw,
        tok,
        &format!("/globalpci/v1/session/{id}/recapture"),
        &json!({}),
    );
    assert_eq!((status, v["error"].as_str()), (409, Some(code)), "{v}");
}

/// Waits for the agent screen's session state (kept beside the words it shows).
fn wait_agent_state(b: &Browser, state: &str) {
    b.wait_script(
        "return document.getElementById('state').dataset.state",
        20,
        |t| t == state,
    );
}

/// At 320, 380 (a CRM side panel) and 1280 px the page fits its width (no horizontal scroll),
/// checked from the DOM; a screenshot of each is kept.
fn assert_fits(b: &Browser, name: &str) {
    for width in [320u32, 380, 1280] {
        b.resize(width, 900);
        let inner = b.script("return window.innerWidth").as_u64().unwrap();
        assert_eq!(inner, u64::from(width), "the viewport follows the window");
        let (scroll, client) = (
            b.script("return document.scrollingElement.scrollWidth")
                .as_u64()
                .unwrap(),
            b.script("return document.scrollingElement.clientWidth")
                .as_u64()
                .unwrap(),
        );
        b.screenshot(&artefacts().join(format!("{name}_{width}.png")));
        assert!(
            scroll <= client,
            "{name} at {width} px scrolls sideways: {scroll} > {client}"
        );
        // Nothing is cut off on the right: every button lies inside the viewport.
        let clipped = b.script(
            "return [...document.querySelectorAll('button')].filter(x => x.offsetParent && \
             x.getBoundingClientRect().right > document.documentElement.clientWidth).map(x => x.id || x.textContent)",
        );
        assert_eq!(clipped, json!([]), "{name} at {width} px clips buttons");
    }
    b.resize(420, 900);
}

/// Collects what the agent leg receives until told to stop.
struct AgentLeg {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    got: std::thread::JoinHandle<Vec<Vec<u8>>>,
}

impl AgentLeg {
    fn listen(sock: UdpSocket) -> AgentLeg {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let got = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    got.push(buf[..n].to_vec());
                }
            }
            got
        });
        AgentLeg { stop, got }
    }

    fn packets(self) -> Vec<Vec<u8>> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.got.join().unwrap()
    }
}

/// An agent session for a call through the relay: its id, UI URL, the caller's keying leg and
/// the agent leg's socket.
fn agent_call(
    gw: &Gateway,
    tok: &str,
    account: &str,
    guid: &str,
    data: Value,
) -> (String, String, KeyingLeg, UdpSocket) {
    let v = post(
        gw,
        tok,
        "/globalpci/v1/agentsession",
        &json!({"AccountConfigurationId": account, "CallGuid": guid, "PaymentData": data}),
    )
    .1;
    let id = v["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    let ui = format!(
        "{}?code={}",
        v["paymentUiUrl"].as_str().unwrap(),
        v["paymentUiCredentials"]["accessCode"].as_str().unwrap()
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let agent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let call = post(
        gw,
        &gw.token("relay"),
        "/relay/v1/calls",
        &json!({"call_guid": guid, "codec": "PCMU",
        "caller": {"remote": sock.local_addr().unwrap().to_string()}, "agent": {"remote": agent.local_addr().unwrap().to_string()}}),
    )
    .1;
    let caller = KeyingLeg::new(
        sock,
        call["caller"]["local"].as_str().unwrap().parse().unwrap(),
    );
    (id, ui, caller, agent)
}

#[test]
fn agent_screen_asks_for_the_card_again_after_a_decline_on_the_same_call() {
    let Some((gw, tok, b, axe)) = ui_test(
        "[[accounts]]\nid = \"dev-account\"\nname = \"Acme Energy\"\npayment_attempts = 2\nmandatory = [\"amount\"]\n",
    ) else {
        return;
    };
    let (id, ui, mut caller, agent) = agent_call(
        &gw,
        &tok,
        "dev-account",
        "call-recapture",
        json!({"cardholderName": "Ada Lovelace", "merchantTxnRef": "R-1", "amount": "49.99"}),
    );
    let leg = AgentLeg::listen(agent);
    let mut sent = 0;
    b.goto(&ui);
    wait_agent_state(&b, "Capturing");
    assert_eq!(b.text("#state"), "The caller is keying the card.");
    assert_eq!(b.text("#merchant"), "Acme Energy");
    assert_eq!(content(&b, "#amount"), "£49.99");
    common::axe::assert_clean(&b, axe.as_deref(), "the agent screen, capturing");

    // A card the bank declines (the sandbox's 4000000000000341).
    sent += caller.key("4000000000000341#1230#737", 1);
    wait_agent_state(&b, "ReadyToSubmit");
    assert_eq!(b.text("#f-pan .status"), "Complete");
    common::axe::assert_clean(&b, axe.as_deref(), "the agent screen, card complete");
    assert_fits(&b, "agent_ready");
    b.click("#submit");
    wait_agent_state(&b, "Declined");
    let said = b.wait_text("#result", 10, |t| !t.is_empty());
    assert_eq!(
        said,
        "The bank declined the card. Ask the caller for another card. 1 more card attempt is allowed. (bank code: card_declined)"
    );
    assert_eq!(b.text("#state"), "The bank declined the card.");
    // The badges say what happened to the card: no green "submitted" beside a decline.
    for f in ["pan", "expiry", "cvv"] {
        assert_eq!(b.text(&format!("#f-{f} .status")), "Declined", "{f}");
    }
    assert_eq!(b.property("#recapture", "hidden"), "false");
    assert_eq!(b.property("#submit", "disabled"), "true");
    common::axe::assert_clean(&b, axe.as_deref(), "the agent screen, declined");
    assert_fits(&b, "agent_declined");

    // Asked again on the same call: a new capture, with masking still on.
    b.click("#recapture");
    wait_agent_state(&b, "Capturing");
    b.wait_script(
        "return document.querySelector('#f-pan .mask').textContent",
        10,
        str::is_empty,
    );
    assert_eq!(b.property("#recapture", "hidden"), "true");
    assert_eq!(session(&gw, &tok, &id)["sessionState"], "Capturing");
    // One field reset on the new capture works as before.
    sent += caller.key("4242424242424242#1230#", 2);
    b.wait_text("#f-expiry .mask", 10, |t| t == "••••");
    b.click("button[data-reset=expiry]");
    b.wait_text("#f-expiry .mask", 10, str::is_empty);
    sent += caller.key("1230#737", 3);
    wait_agent_state(&b, "ReadyToSubmit");
    b.click("#submit");
    wait_agent_state(&b, "Completed");
    let said = b.wait_text("#result", 10, |t| !t.is_empty());
    assert!(
        said.starts_with("Payment approved. PSP reference pi_"),
        "{said}"
    );
    assert_eq!(b.text("#f-pan .status"), "Paid");
    assert_eq!(b.property("#recapture", "hidden"), "true");
    common::axe::assert_clean(&b, axe.as_deref(), "the agent screen, approved");
    common::assert_no_card_digits("page", b.source().as_bytes());
    let s = session(&gw, &tok, &id);
    assert_eq!(s["sessionState"], "Completed");
    assert_eq!(s["maskedPan"], "************4242");
    assert!(s.get("failureReason").is_none(), "{s}");
    // Paid: the API refuses to ask again.
    assert_recapture_refused(&gw, &tok, &id, "wrong_state");

    // The agent heard the caller throughout, and no key of either card (multimon-ng).
    let packets = leg.packets();
    common::assert_agent_heard_audio(&packets, sent);
    let first_ts = tonegate::media::rtp::RtpHeader::parse(&packets[0])
        .unwrap()
        .timestamp;
    let audio = agent_audio(&packets, tonegate_dsp::G711Law::Ulaw, first_ts);
    let wav = artefacts().join("agent_leg_recapture.wav");
    std::fs::create_dir_all(artefacts()).unwrap();
    tonegate::wav::write_pcm8k(&wav, &audio).unwrap();
    if common::tool("multimon-ng").is_some() {
        assert_eq!(
            multimon_keys(&wav),
            "",
            "multimon-ng heard keys on the agent leg"
        );
    }
}

#[test]
fn agent_screen_cancels_and_stops_asking_once_attempts_are_used() {
    let Some((gw, tok, b, axe)) = ui_test(
        "[[accounts]]\nid = \"one-try\"\npayment_attempts = 1\n\n[[accounts]]\nid = \"dev-account\"\nmandatory = [\"amount\"]\n",
    ) else {
        return;
    };

    // Cancel from the screen: same effect as the API's.
    let (id, ui, _caller, _agent) = agent_call(
        &gw,
        &tok,
        "dev-account",
        "call-cancel",
        json!({"merchantTxnRef": "C-1", "amount": "10.00"}),
    );
    b.goto(&ui);
    wait_agent_state(&b, "Capturing");
    b.click("#cancel");
    wait_agent_state(&b, "Cancelled");
    assert_eq!(
        b.wait_text("#result", 10, |t| !t.is_empty()),
        "The payment was cancelled. No money was taken."
    );
    assert_eq!(b.property("#cancel", "hidden"), "true");
    assert_eq!(session(&gw, &tok, &id)["sessionState"], "Cancelled");
    common::axe::assert_clean(&b, axe.as_deref(), "the agent screen, cancelled");

    // One attempt only: after the decline the screen says so and offers no retry; the API
    // refuses clearly.
    let (id, ui, mut caller, _agent) = agent_call(
        &gw,
        &tok,
        "one-try",
        "call-one-try",
        json!({"merchantTxnRef": "C-2", "amount": "1000", "currency": "JPY"}),
    );
    b.goto(&ui);
    wait_agent_state(&b, "Capturing");
    assert_eq!(content(&b, "#amount"), "¥1,000");
    caller.key("4000000000000341#1230#737", 4);
    wait_agent_state(&b, "ReadyToSubmit");
    b.click("#submit");
    wait_agent_state(&b, "Declined");
    let said = b.wait_text("#result", 10, |t| !t.is_empty());
    assert!(
        said.contains("All card attempts for this payment are used"),
        "{said}"
    );
    assert_eq!(b.property("#recapture", "hidden"), "true");
    assert_recapture_refused(&gw, &tok, &id, "attempts_exhausted");
    assert_eq!(session(&gw, &tok, &id)["sessionState"], "Declined");

    // Amounts in the currency's own decimals on the agent's screen.
    let (_, ui, _caller, _agent) = agent_call(
        &gw,
        &tok,
        "dev-account",
        "call-kwd",
        json!({"merchantTxnRef": "C-3", "amount": "12.345", "currency": "KWD"}),
    );
    b.goto(&ui);
    assert_eq!(content(&b, "#amount"), "KWD\u{a0}12.345");
}

#[test]
fn hosted_page_speaks_the_accounts_language_and_keeps_errors_by_their_fields() {
    let Some((gw, tok, b, axe)) = ui_test(
        "[[accounts]]\nid = \"de-account\"\nname = \"Stadtwerke Beispiel\"\nlanguage = \"de\"\nfields = [\"pan\", \"expiry\", \"cvv\", \"postcode\"]\nlogo_url = \"/logo.png\"\n\n[[accounts]]\nid = \"dev-account\"\nname = \"Acme Energy\"\nmandatory = [\"amount\"]\n",
    ) else {
        return;
    };
    let link_for = |account: &str, reference: &str, amount: &str, currency: &str| {
        let v = post(
            &gw,
            &tok,
            "/globalpci/v1/digitalselfservicesession",
            &json!({"AccountConfigurationId": account,
            "PaymentData": {"CustomerPhoneNumber": "+447700900123", "cardholderName": "Ada Lovelace",
                "merchantTxnRef": reference, "amount": amount, "currency": currency}}),
        )
        .1;
        let id = v["sessionId"].as_str().unwrap_or_else(|| panic!("{v}"));
        (id.to_string(), links_for(&gw, id).remove(0))
    };

    // German: the words, the amounts, the merchant.
    let (id, link) = link_for("de-account", "DE-1", "1234567.50", "GBP");
    b.goto(&link);
    assert_eq!(b.text("h1"), "Sicher bezahlen");
    assert_eq!(b.script("return document.documentElement.lang"), "de");
    assert_eq!(b.text("#merchant"), "Stadtwerke Beispiel");
    assert_eq!(content(&b, "#amount"), "1.234.567,50\u{a0}£");
    assert_eq!(content(&b, "#pay"), "1.234.567,50\u{a0}£ bezahlen");
    assert_eq!(
        b.script("return document.querySelector('.merchant img').getAttribute('src')"),
        "/logo.png"
    );
    common::axe::assert_clean(&b, axe.as_deref(), "the hosted page in German");
    assert_fits(&b, "hosted_de");
    // A refused card: each error beside its field, named by it, the postcode kept, no card
    // data echoed.
    b.type_into("#number", "4242424242424241");
    b.type_into("#expiry", "1230");
    b.type_into("#cvc", "12");
    b.type_into("#postcode", "10115");
    b.click("#pay");
    let err = b.wait_text("#number-error", 10, |t| !t.is_empty());
    assert_eq!(
        err,
        "Diese Kartennummer ist ungültig. Bitte prüfen Sie sie und geben Sie sie erneut ein."
    );
    assert_eq!(
        b.text("#cvc-error"),
        "Die Prüfnummer hat die falsche Anzahl an Ziffern."
    );
    assert_eq!(
        b.text("#form-error"),
        "Bitte prüfen Sie die markierten Felder."
    );
    for (input, invalid) in [
        ("number", true),
        ("cvc", true),
        ("expiry", false),
        ("postcode", false),
    ] {
        let attr = |a: &str| {
            b.script(&format!(
                "return document.getElementById('{input}').getAttribute('{a}')"
            ))
        };
        assert_eq!(attr("aria-invalid") == "true", invalid, "{input}");
        let described = attr("aria-describedby");
        assert_eq!(
            described
                .as_str()
                .unwrap()
                .contains(&format!("{input}-error")),
            invalid,
            "{input}: {described}"
        );
    }
    assert_eq!(b.property("#postcode", "value"), "10115");
    assert_eq!(b.property("#number", "value"), "");
    assert_eq!(b.property("#cvc", "value"), "");
    assert!(!b.source().contains("4242424242424241"));
    common::axe::assert_clean(&b, axe.as_deref(), "the German form with errors");
    // Paid: the result page in German, the merchant named, the amount localised.
    b.type_into("#number", "4242424242424242");
    b.type_into("#expiry", "1230");
    b.type_into("#cvc", "123");
    b.click("#pay");
    b.wait_text("h1", 20, |t| t == "Zahlung erfolgreich");
    assert!(content(&b, "#message").contains("1.234.567,50\u{a0}£ wurde"));
    assert_eq!(b.text("#merchant"), "Stadtwerke Beispiel");
    common::axe::assert_clean(&b, axe.as_deref(), "the German result page");
    assert_eq!(session(&gw, &tok, &id)["sessionState"], "Completed");
    // The used link's page still names the merchant, in German.
    b.goto(&link);
    assert_eq!(b.text("h1"), "Link bereits verwendet");
    assert_eq!(b.text("#merchant"), "Stadtwerke Beispiel");
    common::axe::assert_clean(&b, axe.as_deref(), "the German used-link page");

    // Each currency with its own decimals, in each language.
    for (account, amount, currency, shown) in [
        ("de-account", "1000", "JPY", "1.000\u{a0}¥"),
        ("de-account", "49.99", "GBP", "49,99\u{a0}£"),
        ("de-account", "12.345", "KWD", "12,345\u{a0}KWD"),
        ("dev-account", "1000", "JPY", "¥1,000"),
        ("dev-account", "49.99", "GBP", "£49.99"),
        ("dev-account", "12.345", "KWD", "KWD\u{a0}12.345"),
    ] {
        let (_, link) = link_for(
            account,
            &format!("A-{account}-{currency}"),
            amount,
            currency,
        );
        b.goto(&link);
        assert_eq!(content(&b, "#amount"), shown, "{account} {currency}");
    }

    // English: a declined card's page in words, the merchant named; axe-clean.
    let (_, link) = link_for("dev-account", "EN-1", "59.00", "GBP");
    b.goto(&link);
    assert_eq!(b.text("#merchant"), "Acme Energy");
    common::axe::assert_clean(&b, axe.as_deref(), "the hosted page in English");
    // A decline that leaves attempts: the form again, the reason in words (no raw code).
    pay_in_browser(&b, &link, "4000000000000341", "1230", "123");
    b.wait_text("#form-error", 20, |t| t.contains("declined"));
    assert!(!b.text("#form-error").contains("card_declined"));
    common::axe::assert_clean(&b, axe.as_deref(), "the form after a decline");
    b.goto(&gw.url("/pay/link/no-such-link"));
    assert_eq!(b.text("h1"), "Link not found");
    common::axe::assert_clean(&b, axe.as_deref(), "the unknown-link page");
}

/// The sandbox's charges for session `id`.
fn charges_for(gw: &Gateway, id: &str) -> usize {
    gw.state
        .sandbox
        .charges_made()
        .iter()
        .filter(|c| c.2 == id)
        .count()
}

/// 3-D Secure on the payment link, in Chromium, against the sandbox's challenge page: the
/// 3DS card passes its challenge and pays; on another link a failed challenge, then a declined
/// card, then a good card pay on the same link, with one charge; a link whose attempts run
/// out is declined for good. Before, the 3DS card ended "declined (authentication_required)"
/// and any decline used the link up.
#[test]
fn three_d_secure_on_the_link_and_trying_again_on_the_same_link() {
    if !webdriver::available() {
        return;
    }
    let gw = Gateway::start(
        "[[accounts]]\nid = \"dev-account\"\nmandatory = [\"amount\"]\n\n[[accounts]]\nid = \"two-tries\"\nlink_attempts = 2\n",
    );
    let tok = gw.token("globalpci");
    let b = Browser::start();
    let axe = common::axe::source();

    // The challenge, passed.
    let id = digital(&gw, &tok, "dev-account", "3DS-1");
    let link = links_for(&gw, &id).remove(0);
    pay_in_browser(&b, &link, "4000002500003155", "1230", "123");
    b.wait_text("h1", 20, |t| t == "Sandbox bank: confirm this payment");
    assert_eq!(b.text("#challenge-amount"), "59.00 GBP");
    assert_eq!(session(&gw, &tok, &id)["sessionState"], "Submitting");
    b.screenshot(&artifacts().join("hosted_page_3ds_challenge.png"));
    common::axe::assert_clean(&b, axe.as_deref(), "the sandbox's challenge page");
    b.click("#approve");
    b.wait_text("h1", 20, |t| t == "Payment approved");
    assert!(b.text("p").contains("ending 3155"), "{}", b.text("p"));
    common::axe::assert_clean(&b, axe.as_deref(), "the result after a challenge");
    common::assert_no_card_digits("result page", b.source().as_bytes());
    let s = session(&gw, &tok, &id);
    assert_eq!(s["sessionState"], "Completed", "{s}");
    assert!(b
        .text("p")
        .contains(s["pspTransactionId"].as_str().unwrap()));
    assert_eq!(charges_for(&gw, &id), 1);
    b.goto(&link);
    assert_eq!(b.text("h1"), "Link already used");

    // A failed challenge, then a declined card, then a good card: the same link throughout.
    let id = digital(&gw, &tok, "dev-account", "3DS-2");
    let link = links_for(&gw, &id).remove(0);
    pay_in_browser(&b, &link, "4000002500003155", "1230", "123");
    b.wait_text("h1", 20, |t| t == "Sandbox bank: confirm this payment");
    b.click("#fail");
    let err = b.wait_text("#form-error", 20, |t| !t.is_empty());
    assert!(
        err.contains("could not confirm") && err.contains("2 attempts left"),
        "{err}"
    );
    assert_eq!(session(&gw, &tok, &id)["sessionState"], "Capturing");
    assert_eq!(charges_for(&gw, &id), 0);
    b.screenshot(&artifacts().join("hosted_page_3ds_failed.png"));
    common::axe::assert_clean(&b, axe.as_deref(), "the form after a failed challenge");
    // The form is there again, on the link's own page.
    b.type_into("#number", "4000000000000341");
    b.type_into("#expiry", "1230");
    b.type_into("#cvc", "123");
    b.click("#pay");
    let err = b.wait_text("#form-error", 20, |t| t.contains("1 attempt left"));
    assert!(err.contains("declined"), "{err}");
    b.type_into("#number", "4242424242424242");
    b.type_into("#expiry", "1230");
    b.type_into("#cvc", "123");
    b.click("#pay");
    b.wait_text("h1", 20, |t| t == "Payment approved");
    assert_eq!(session(&gw, &tok, &id)["sessionState"], "Completed");
    assert_eq!(charges_for(&gw, &id), 1, "one charge for the session");

    // Out of attempts: the second decline ends the session, and the link with it.
    let id = digital(&gw, &tok, "two-tries", "3DS-3");
    let link = links_for(&gw, &id).remove(0);
    pay_in_browser(&b, &link, "4000000000000341", "1230", "123");
    b.wait_text("#form-error", 20, |t| t.contains("1 attempt left"));
    pay_in_browser(&b, &link, "4000002500003155", "1230", "123");
    b.wait_text("h1", 20, |t| t == "Sandbox bank: confirm this payment");
    b.click("#fail");
    b.wait_text("h1", 20, |t| t == "Payment declined");
    assert_eq!(session(&gw, &tok, &id)["sessionState"], "Declined");
    common::axe::assert_clean(&b, axe.as_deref(), "the declined page, out of attempts");
    b.goto(&link);
    assert_eq!(b.text("h1"), "Payment closed");
    common::axe::assert_clean(&b, axe.as_deref(), "the closed link");
    assert_eq!(charges_for(&gw, &id), 0);
}

/// Wallets on the payment link through the sandbox's simulated hosted checkout, in Chromium:
/// the wallet button shows (the browser has the Payment Request API), the checkout is paid
/// with Google Pay, its signed `checkout.session.completed` webhook completes the session, and
/// the same webhook again changes nothing; an account without wallets shows no button.
#[test]
fn a_wallet_payment_on_the_link_completes_by_the_psps_signed_webhook() {
    if !webdriver::available() {
        return;
    }
    let gw = Gateway::start(
        "[[accounts]]\nid = \"dev-account\"\nmandatory = [\"amount\"]\n\n[[accounts]]\nid = \"wallets\"\nname = \"Acme Energy\"\nwallets = [\"apple_pay\", \"google_pay\"]\npsp_webhook_secret = \"whsec_wallet_test\"\n",
    );
    let tok = gw.token("globalpci");
    let b = Browser::start();
    let axe = common::axe::source();

    let id = digital(&gw, &tok, "dev-account", "W-0");
    b.goto(&links_for(&gw, &id).remove(0));
    assert!(b
        .script("return document.getElementById('wallets')")
        .is_null());

    let id = digital(&gw, &tok, "wallets", "W-1");
    let link = links_for(&gw, &id).remove(0);
    b.goto(&link);
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.property("#wallets", "hidden") != "false" {
        assert!(Instant::now() < deadline, "the wallet button stayed hidden");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(b.text("#wallet"), "Pay with Apple Pay or Google Pay");
    b.screenshot(&artifacts().join("hosted_page_wallets.png"));
    common::axe::assert_clean(&b, axe.as_deref(), "the form with the wallet button");
    b.click("#wallet");
    b.wait_text("h1", 20, |t| t == "Sandbox checkout");
    assert_eq!(b.text("#checkout-amount"), "59.00 GBP");
    common::axe::assert_clean(&b, axe.as_deref(), "the sandbox's checkout page");
    assert_eq!(session(&gw, &tok, &id)["sessionState"], "Submitting");
    b.click("#google_pay");
    b.wait_text("h1", 20, |t| t == "Payment approved");
    let s = session(&gw, &tok, &id);
    assert_eq!(s["sessionState"], "Completed", "{s}");
    let pi = s["pspTransactionId"].as_str().unwrap().to_string();
    assert!(pi.starts_with("pi_"), "{s}");
    assert_eq!(charges_for(&gw, &id), 1);

    // The webhook the checkout sent, as Stripe shapes it, verified by the gateway.
    let sent = gw.state.sandbox.webhooks_sent();
    assert_eq!(sent.len(), 1);
    let (account, body, signature) = sent[0].clone();
    assert_eq!(account, "wallets");
    let ev: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ev["object"], "event");
    assert_eq!(ev["type"], "checkout.session.completed");
    assert_eq!(ev["data"]["object"]["object"], "checkout.session");
    assert_eq!(ev["data"]["object"]["metadata"]["sessionId"], id.as_str());
    assert_eq!(ev["data"]["object"]["payment_intent"], pi.as_str());
    assert_eq!(ev["data"]["object"]["amount_total"], 5900);
    assert_eq!(ev["data"]["object"]["currency"], "gbp");
    // The same webhook again (Stripe retries): accepted, nothing changes.
    let r = http()
        .post(gw.url("/psp/v1/webhook/wallets"))
        .header("stripe-signature", &signature)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["changed"], false);
    let again = session(&gw, &tok, &id);
    assert_eq!(again["sessionState"], "Completed");
    assert_eq!(again["pspTransactionId"], pi.as_str());
    assert_eq!(charges_for(&gw, &id), 1);
    b.goto(&link);
    assert_eq!(b.text("h1"), "Link already used");

    // Backing out of the checkout: it is closed at the PSP and the card form is back.
    let id = digital(&gw, &tok, "wallets", "W-2");
    let link = links_for(&gw, &id).remove(0);
    b.goto(&link);
    b.click("#wallet");
    b.wait_text("h1", 20, |t| t == "Sandbox checkout");
    let checkout_url: String = b.script("return location.href").as_str().unwrap().into();
    b.click("#cancel");
    b.wait_text("#form-error", 20, |t| t.contains("not completed"));
    common::axe::assert_clean(&b, axe.as_deref(), "the form after a cancelled checkout");
    assert_eq!(session(&gw, &tok, &id)["sessionState"], "Capturing");
    // The abandoned checkout can no longer be paid.
    b.goto(&checkout_url);
    assert_eq!(b.text("h1"), "Nothing to confirm");
    pay_in_browser(&b, &link, "4242424242424242", "1230", "123");
    b.wait_text("h1", 20, |t| t == "Payment approved");
    assert_eq!(charges_for(&gw, &id), 1);
}

//! Tokenize once, charge with the token: against localstripe (a Stripe-compatible PSP started
//! on loopback) and against the built-in sandbox, through the session service. Also the signed
//! result webhook, with retries.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gateway::{http, Gateway};
use common::localstripe::LocalStripe;
use common::serve::{accounts, dev_token, serve_config, HookReceiver, Serve};
use serde_json::{json, Value};
use tonegate::card::{Card, Cvv, Digits, Expiry, Pan};

/// A loopback proxy in front of localstripe: records PaymentIntent request bodies and can
/// answer the first `fail_first` PaymentIntent requests with a 500 without forwarding them.
struct Proxy {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<String>>>,
    /// While set, a charging request (a PaymentIntent confirm, or a create with `confirm=true`)
    /// is forwarded (the charge happens) but its answer is held back: the gateway waits, as it
    /// would on a slow PSP.
    hold_answers: Arc<std::sync::atomic::AtomicBool>,
    /// Charging requests localstripe has answered.
    charged: Arc<AtomicUsize>,
    /// When set, localstripe's decline answers carry this as their message instead (a PSP
    /// that echoes what it was sent).
    decline_message: Arc<Mutex<Option<String>>>,
    /// When set, PaymentIntent requests are answered 400 with this message, not forwarded.
    reject_message: Arc<Mutex<Option<String>>>,
    _rt: tokio::runtime::Runtime,
}

impl Proxy {
    fn start(upstream: String, fail_first: usize) -> Proxy {
        Self::start_with(upstream, fail_first, Duration::ZERO)
    }

    /// As [`start`](Self::start), holding every request `delay` before forwarding it.
    fn start_with(upstream: String, fail_first: usize, delay: Duration) -> Proxy {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, Method, StatusCode, Uri};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicUsize::new(fail_first));
        let hold_answers = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let charged = Arc::new(AtomicUsize::new(0));
        let decline_message: Arc<Mutex<Option<String>>> = Default::default();
        let reject_message: Arc<Mutex<Option<String>>> = Default::default();
        let (hold, done, decline, reject) = (
            hold_answers.clone(),
            charged.clone(),
            decline_message.clone(),
            reject_message.clone(),
        );
        let client = reqwest::Client::new();
        let b = bodies.clone();
        let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (client, upstream, b, failures, hold, done, decline, reject) = (
                client.clone(),
                upstream.clone(),
                b.clone(),
                failures.clone(),
                hold.clone(),
                done.clone(),
                decline.clone(),
                reject.clone(),
            );
            async move {
                tokio::time::sleep(delay).await;
                let is_pi = method == Method::POST && uri.path() == "/v1/payment_intents";
                // The request that charges: a confirm, or a create that confirms at once.
                let is_charge = method == Method::POST
                    && ((is_pi && String::from_utf8_lossy(&body).contains("confirm=true"))
                        || (uri.path().starts_with("/v1/payment_intents/")
                            && uri.path().ends_with("/confirm")));
                if is_pi {
                    b.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                    let rejection = reject.lock().unwrap().clone();
                    if let Some(text) = rejection {
                        let v =
                            json!({"error": {"type": "invalid_request_error", "message": text}});
                        return (StatusCode::BAD_REQUEST, Bytes::from(v.to_string()));
                    }
                    if failures.load(Ordering::SeqCst) > 0 {
                        failures.fetch_sub(1, Ordering::SeqCst);
                        return (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            Bytes::from_static(b"{\"error\":{\"message\":\"injected\"}}"),
                        );
                    }
                }
                let mut req = client.request(
                    method,
                    format!(
                        "{upstream}{}",
                        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
                    ),
                );
                for (k, v) in headers.iter() {
                    if k != "host" && k != "content-length" {
                        req = req.header(k, v);
                    }
                }
                let r = req.body(body).send().await.unwrap();
                let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
                let mut bytes = r.bytes().await.unwrap();
                let echo = decline.lock().unwrap().clone();
                if let (true, StatusCode::PAYMENT_REQUIRED, Some(text)) =
                    (is_pi || is_charge, status, echo)
                {
                    let mut v: Value = serde_json::from_slice(&bytes).unwrap();
                    v["error"]["message"] = text.into();
                    bytes = Bytes::from(v.to_string());
                }
                if is_charge {
                    done.fetch_add(1, Ordering::SeqCst);
                    while hold.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                (status, bytes)
            }
        };
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            axum::serve(listener, axum::Router::new().fallback(handler))
                .await
                .unwrap();
        });
        Proxy {
            addr,
            bodies,
            hold_answers,
            charged,
            decline_message,
            reject_message,
            _rt: rt,
        }
    }
}

fn card(pan: &str, cvv: &str) -> Card {
    let pan = Pan::parse(pan).unwrap();
    let brand = pan.brand();
    Card {
        pan,
        expiry: Expiry::new(Digits::parse("1230").unwrap(), (2026, 11)).unwrap(),
        cvv: Cvv::new(Digits::parse(cvv).unwrap(), brand).unwrap(),
        postcode: None,
    }
}

/// Creates a digital session on `account` and pays it with `pan`; returns the session JSON.
fn pay(gw: &Gateway, account: &str, pan: &str) -> Value {
    let tok = gw.token("globalpci");
    let r: Value = http()
        .post(gw.url("/globalpci/v1/digitalselfservicesession"))
        .bearer_auth(&tok)
        .json(&json!({"AccountConfigurationId": account, "PaymentData": {
            "CustomerPhoneNumber": "+447700900123", "amount": "12.34",
            "merchantTxnRef": format!("ref-{}", tonegate::auth::random_token())}}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = r["sessionId"].as_str().unwrap().to_string();
    let _ = gw.runtime.block_on(
        gw.state
            .sessions
            .pay_with_card(&id, card(pan, "123"), "test"),
    );
    http()
        .get(gw.url(&format!("/globalpci/v1/session/{id}")))
        .bearer_auth(&tok)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn outcome(v: &Value) -> (String, String) {
    (
        v["sessionState"].as_str().unwrap().to_string(),
        v["failureReason"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn localstripe_scenarios() {
    let ls = LocalStripe::start();
    let proxy = Proxy::start(ls.url.clone(), 0);
    let gw = Gateway::start(&accounts(&format!("http://{}", proxy.addr), None));

    let v = pay(&gw, "stripe-account", "4242424242424242");
    assert_eq!(outcome(&v).0, "Completed", "{v}");
    assert!(v["pspTokenReference"].as_str().unwrap().starts_with("pm_"));
    assert!(v["pspTransactionId"].as_str().unwrap().starts_with("pi_"));
    assert_eq!(v["maskedPan"], "************4242");
    assert_eq!(ls.payment_intents_for(v["sessionId"].as_str().unwrap()), 1);

    let v = pay(&gw, "stripe-account", "4000000000000002");
    assert_eq!(
        outcome(&v),
        ("Declined".into(), "card_declined".into()),
        "declined at tokenization: {v}"
    );
    assert!(
        v.get("pspTransactionId").is_none(),
        "no charge was attempted"
    );
    assert_eq!(ls.payment_intents_for(v["sessionId"].as_str().unwrap()), 0);

    let v = pay(&gw, "stripe-account", "4000000000000341");
    assert_eq!(
        outcome(&v),
        ("Declined".into(), "card_declined".into()),
        "declined at charge: {v}"
    );

    let v = pay(&gw, "stripe-account", "4000002500003155");
    assert_eq!(
        outcome(&v),
        ("Declined".into(), "authentication_required".into()),
        "{v}"
    );
    assert!(v["pspTransactionId"].as_str().unwrap().starts_with("pi_"));

    let v = pay(&gw, "stripe-down", "4242424242424242");
    assert_eq!(outcome(&v).0, "Failed", "PSP down: {v}");
    assert!(outcome(&v).1.contains("unreachable"), "{v}");

    // No PaymentIntent request ever carried the card: only the token.
    let bodies = proxy.bodies.lock().unwrap().clone();
    assert!(bodies.len() >= 3);
    for b in &bodies {
        assert!(b.contains("payment_method=pm_"), "{b}");
        for pan in ["4242424242424242", "4000000000000341", "4000002500003155"] {
            assert!(!b.contains(pan), "PaymentIntent request carried a PAN: {b}");
        }
        // No card field by name (values such as the random merchantTxnRef may hold any letters).
        for key in b.split('&').map(|kv| kv.split('=').next().unwrap_or("")) {
            assert!(!key.contains("cvc") && !key.contains("exp_"), "{b}");
        }
    }
}

#[test]
fn a_500_then_success_charges_exactly_once() {
    let ls = LocalStripe::start();
    let proxy = Proxy::start(ls.url.clone(), 1);
    let gw = Gateway::start(&accounts(&format!("http://{}", proxy.addr), None));
    let v = pay(&gw, "stripe-account", "4242424242424242");
    assert_eq!(outcome(&v).0, "Completed", "{v}");
    let id = v["sessionId"].as_str().unwrap();
    assert_eq!(
        proxy.bodies.lock().unwrap().len(),
        2,
        "one failed try, one retry"
    );
    assert_eq!(
        ls.payment_intents_for(id),
        1,
        "exactly one PaymentIntent for the session"
    );
}

#[test]
fn sandbox_scenarios() {
    let gw = Gateway::start(&accounts("http://127.0.0.1:9", None));
    let v = pay(&gw, "dev-account", "4242424242424242");
    assert_eq!(outcome(&v).0, "Completed", "{v}");
    assert!(v["pspTokenReference"].as_str().unwrap().starts_with("pm_"));
    assert_eq!(
        outcome(&pay(&gw, "dev-account", "4000000000000002")),
        ("Declined".into(), "card_declined".into())
    );
    assert_eq!(
        outcome(&pay(&gw, "dev-account", "4000000000000341")),
        ("Declined".into(), "card_declined".into())
    );
    assert_eq!(
        outcome(&pay(&gw, "dev-account", "4000002500003155")),
        ("Declined".into(), "authentication_required".into())
    );
    // Down: every try fails.
    gw.state
        .sandbox
        .fail_next(4, tonegate::psp::sandbox::InjectedFailure::Unreachable);
    let v = pay(&gw, "dev-account", "4242424242424242");
    assert_eq!(outcome(&v).0, "Failed", "{v}");
    // A 500 once, then success: one charge.
    gw.state
        .sandbox
        .fail_next(1, tonegate::psp::sandbox::InjectedFailure::Server(500));
    let v = pay(&gw, "dev-account", "4242424242424242");
    assert_eq!(outcome(&v).0, "Completed", "{v}");
    let id = v["sessionId"].as_str().unwrap();
    let charges: Vec<_> = gw
        .state
        .sandbox
        .charges_made()
        .into_iter()
        .filter(|c| c.2 == id)
        .collect();
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0].1, 1234);
}

#[test]
fn result_webhook_is_signed_and_retried() {
    use axum::http::{HeaderMap, StatusCode};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let seen: Arc<Mutex<Vec<(String, bool, Value)>>> = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let receiver = move |headers: HeaderMap, body: String| {
        let seen = s2.clone();
        async move {
            let h = |k: &str| {
                headers
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            let ts: u64 = h("x-tonegate-timestamp").parse().unwrap_or(0);
            let valid =
                h("x-tonegate-signature") == tonegate::notify::signature("whsec_test", ts, &body);
            let mut seen = seen.lock().unwrap();
            seen.push((
                h("x-tonegate-event-id"),
                valid,
                serde_json::from_str(&body).unwrap_or(Value::Null),
            ));
            // Refuse the first delivery: the sender must retry.
            if seen.len() == 1 {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }
    };
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    rt.spawn(async move {
        axum::serve(
            listener,
            axum::Router::new().route("/hook", axum::routing::post(receiver)),
        )
        .await
    });
    let gw = Gateway::start(&accounts("http://127.0.0.1:9", Some(&hook)));
    let v = pay(&gw, "dev-account", "4242424242424242");
    assert_eq!(outcome(&v).0, "Completed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "no retry after the 500");
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].0, seen[1].0, "the retry carries the same event id");
    assert!(seen.iter().all(|s| s.1), "signatures verify");
    let ev = &seen[1].2;
    assert_eq!(ev["sessionState"], "Completed");
    assert_eq!(ev["sessionId"], v["sessionId"]);
    assert!(!ev.to_string().contains("4242424242424242"));
}

/// SIGTERM while a payment is at the PSP: the payment finishes (one PaymentIntent, the
/// session Completed) before the gateway exits, and no new payment starts meanwhile.
#[test]
fn a_payment_in_flight_at_shutdown_finishes_and_no_new_one_starts() {
    use tonegate::session::model::SessionState;
    let ls = LocalStripe::start();
    // Each PSP request takes 1.5 s: tokenize and charge, 3 s a payment.
    let proxy = Proxy::start_with(ls.url.clone(), 0, Duration::from_millis(1500));
    let mut gw = Gateway::start(&format!(
        "[server]\ndrain_timeout_s = 1\n{}",
        accounts(&format!("http://{}", proxy.addr), None)
    ));
    let tok = gw.token("globalpci");
    let url = gw.url("/globalpci/v1/digitalselfservicesession");
    let create = |r: &str| -> String {
        let v: Value = http()
            .post(&url)
            .bearer_auth(&tok)
            .json(
                &json!({"AccountConfigurationId": "stripe-account", "PaymentData": {
                "CustomerPhoneNumber": "+447700900123", "amount": "12.34",
                "merchantTxnRef": r}}),
            )
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["sessionId"].as_str().unwrap().to_string()
    };
    let (paying, later) = (create("ref-shutdown-1"), create("ref-shutdown-2"));
    let sessions = gw.state.sessions.clone();
    let id = paying.clone();
    let payment = gw.runtime.spawn(async move {
        sessions
            .pay_with_card(&id, card("4242424242424242", "123"), "test")
            .await
    });
    let store_of = gw.state.sessions.clone();
    let state = move |id: &str| store_of.store().get(id).unwrap().unwrap().state;
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(&paying) != SessionState::Submitting && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(state(&paying), SessionState::Submitting);
    gw.begin_stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.state.sessions.accepting_payments() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let refused = gw.runtime.block_on(gw.state.sessions.pay_with_card(
        &later,
        card("4242424242424242", "123"),
        "test",
    ));
    assert!(
        matches!(refused, Err(tonegate::session::SessionError::ShuttingDown)),
        "{:?}",
        refused.map(|s| s.state)
    );
    assert!(
        gw.wait_stopped(Duration::from_secs(30)),
        "the gateway stopped"
    );
    assert_eq!(
        state(&paying),
        SessionState::Completed,
        "the payment finished"
    );
    assert_eq!(ls.payment_intents_for(&paying), 1);
    assert!(gw.runtime.block_on(payment).unwrap().is_ok());
    assert_eq!(
        state(&later),
        SessionState::Created,
        "the refused session is untouched"
    );
    assert_eq!(ls.payment_intents_for(&later), 0);
}

/// SIGKILL while a charge is at the PSP (it went through there; the answer never reached the
/// gateway). After restart the gateway asks the PSP and settles the session `Completed` with
/// that charge, and the result webhook says so, once.
#[test]
fn a_payment_cut_by_sigkill_is_settled_from_the_psp_after_restart() {
    payment_cut_by_sigkill_then_restart(0);
}

/// As above, on a busy PSP account: more than a page (100) of other payments made before ours
/// and after it, before the gateway is back (Stripe lists the newest first, localstripe the
/// oldest). Reconciliation reads the payment it stored the id of, so it still finds ours (it
/// once read only the first page of the list and recorded a paid session `Failed`).
#[test]
fn reconciliation_finds_the_payment_behind_more_than_a_page_of_others() {
    payment_cut_by_sigkill_then_restart(130);
}

/// `n` successful payments for other sessions, made at localstripe directly.
fn other_payments(ls: &LocalStripe, n: usize) {
    if n == 0 {
        return;
    }
    let pm: Value = http()
        .post(format!("{}/v1/payment_methods", ls.url))
        .basic_auth("sk_test_x", Some(""))
        .form(&[
            ("type", "card"),
            ("card[number]", "4242424242424242"),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2030"),
            ("card[cvc]", "123"),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let pm = pm["id"].as_str().unwrap().to_string();
    for i in 0..n {
        let session = format!("other-{i}-{}", pm);
        let r = http()
            .post(format!("{}/v1/payment_intents", ls.url))
            .basic_auth("sk_test_x", Some(""))
            .form(&[
                ("amount", "100"),
                ("currency", "gbp"),
                ("payment_method", pm.as_str()),
                ("confirm", "true"),
                ("metadata[sessionId]", session.as_str()),
            ])
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().unwrap());
    }
}

/// SIGKILL while a charge is at the PSP, `others` payments for other sessions made at the PSP
/// before it and as many afterwards, restart: the session settles `Completed` from the PSP,
/// once.
fn payment_cut_by_sigkill_then_restart(others: usize) {
    let ls = LocalStripe::start();
    other_payments(&ls, others);
    let proxy = Proxy::start(ls.url.clone(), 0);
    let hook = HookReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let path = serve_config(dir.path(), &format!("http://{}", proxy.addr), &hook.url);

    let gw = Serve::start(&path);
    let tok = dev_token(&gw.1, "globalpci");
    let v: Value = http()
        .post(format!("{}/globalpci/v1/digitalselfservicesession", gw.1))
        .bearer_auth(&tok)
        .json(
            &json!({"AccountConfigurationId": "stripe-account", "PaymentData": {
            "CustomerPhoneNumber": "+447700900123", "amount": "12.34",
            "merchantTxnRef": "ref-sigkill"}}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = v["sessionId"].as_str().unwrap().to_string();
    let link = gw.link_for(&id);
    // The customer pays; the charge reaches the PSP, its answer is held back.
    proxy.hold_answers.store(true, Ordering::SeqCst);
    let paying = std::thread::spawn(move || {
        let _ = http()
            .post(link)
            .form(&[
                ("number", "4242424242424242"),
                ("expiry", "12/30"),
                ("cvc", "123"),
            ])
            .send();
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.charged.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the charge never reached the PSP"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ls.payment_intents_for(&id), 1, "charged at the PSP");
    drop(gw); // SIGKILL, mid-payment.
    proxy.hold_answers.store(false, Ordering::SeqCst);
    let _ = paying.join();
    other_payments(&ls, others);

    let gw = Serve::start(&path);
    let tok = dev_token(&gw.1, "globalpci");
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let v: Value = http()
            .get(format!("{}/globalpci/v1/session/{id}", gw.1))
            .bearer_auth(&tok)
            .send()
            .unwrap()
            .json()
            .unwrap();
        if v["sessionState"] != "Submitting" || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(v["sessionState"], "Completed", "{v}");
    assert!(
        v["pspTransactionId"].as_str().unwrap().starts_with("pi_"),
        "{v}"
    );
    assert_eq!(ls.payment_intents_for(&id), 1, "never charged twice");
    let deadline = Instant::now() + Duration::from_secs(20);
    let for_session = || -> Vec<(String, Value)> {
        hook.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, b)| b["sessionId"] == id.as_str())
            .cloned()
            .collect()
    };
    while for_session().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    gw.wait_webhooks_delivered(&id);
    let got = for_session();
    assert_eq!(got.len(), 1, "one webhook: {got:?}");
    assert_eq!(got[0].1["sessionState"], "Completed", "{got:?}");
}

/// A session left in `Submitting` by a crash, for which the PSP holds no payment, ends
/// `Failed` after the restart, saying why, and the webhook says so.
#[test]
fn an_interrupted_payment_the_psp_never_saw_ends_failed_after_restart() {
    use tonegate::session::model::SessionState;
    let hook = HookReceiver::start();
    let config = accounts("http://127.0.0.1:9", Some(&hook.url));
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let gw = Gateway::start_in(dir.clone(), &config);
    let tok = gw.token("globalpci");
    let v: Value = http()
        .post(gw.url("/globalpci/v1/digitalselfservicesession"))
        .bearer_auth(&tok)
        .json(
            &json!({"AccountConfigurationId": "dev-account", "PaymentData": {
            "CustomerPhoneNumber": "+447700900123", "amount": "12.34",
            "merchantTxnRef": "ref-crash"}}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = v["sessionId"].as_str().unwrap().to_string();
    // As a crash between the state change and the PSP call would leave it.
    let st = gw.state.sessions.store();
    for (from, to) in [
        (SessionState::Created, SessionState::Capturing),
        (SessionState::Capturing, SessionState::ReadyToSubmit),
        (SessionState::ReadyToSubmit, SessionState::Submitting),
    ] {
        assert!(st.transition(&id, from.to(to).unwrap(), "test", 1).unwrap());
    }
    drop(gw);
    let gw = Gateway::start_in(dir, &config);
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        let s = gw.state.sessions.store().get(&id).unwrap().unwrap();
        if s.state != SessionState::Submitting || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(s.state, SessionState::Failed);
    assert!(
        s.result
            .failure_reason
            .as_deref()
            .unwrap_or("")
            .contains("holds no payment"),
        "{:?}",
        s.result
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = hook.seen.lock().unwrap().clone();
        if let Some((_, b)) = seen.iter().find(|(_, b)| b["sessionId"] == id.as_str()) {
            assert_eq!(b["sessionState"], "Failed", "{b}");
            break;
        }
        assert!(Instant::now() < deadline, "no webhook");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The merchant's webhook receiver is down, and tonegate is SIGKILLed and restarted while it
/// is: once the receiver is back the outcome arrives, once, with the event id the first tries
/// carried; meanwhile the operator sees it pending.
#[test]
fn a_webhook_survives_a_receiver_outage_and_a_sigkill() {
    let hook = HookReceiver::start();
    hook.down.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let path = serve_config(dir.path(), "http://127.0.0.1:9", &hook.url);

    let gw = Serve::start(&path);
    let tok = dev_token(&gw.1, "globalpci");
    let v: Value = http()
        .post(format!("{}/globalpci/v1/digitalselfservicesession", gw.1))
        .bearer_auth(&tok)
        .json(
            &json!({"AccountConfigurationId": "dev-account", "PaymentData": {
            "CustomerPhoneNumber": "+447700900123", "amount": "12.34",
            "merchantTxnRef": "ref-outage"}}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = v["sessionId"].as_str().unwrap().to_string();
    let r = http()
        .post(format!("{}/globalpci/v1/session/{id}/cancel", gw.1))
        .bearer_auth(&tok)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let deadline = Instant::now() + Duration::from_secs(20);
    while hook.refused.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "no delivery tried");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pending: Value = http()
        .get(format!("{}/admin/v1/webhooks", gw.1))
        .bearer_auth(dev_token(&gw.1, "admin"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let entry = pending["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["sessionId"] == id.as_str())
        .unwrap_or_else(|| panic!("not listed: {pending}"))
        .clone();
    assert_eq!(entry["state"], "pending", "{entry}");
    assert_eq!(entry["lastError"], "answered 503", "{entry}");
    assert!(
        entry.get("body").is_none(),
        "the listing carries no event body"
    );
    let event_id = entry["eventId"].as_str().unwrap().to_string();
    drop(gw); // SIGKILL while the receiver is down.

    let gw = Serve::start(&path);
    hook.down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    let for_session = || -> Vec<(String, Value)> {
        hook.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, b)| b["sessionId"] == id.as_str())
            .cloned()
            .collect()
    };
    while for_session().is_empty() {
        assert!(Instant::now() < deadline, "the webhook never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    gw.wait_webhooks_delivered(&id);
    let got = for_session();
    assert_eq!(got.len(), 1, "delivered once: {got:?}");
    assert_eq!(got[0].0, event_id, "the same event id as the first tries");
    assert_eq!(got[0].1["sessionState"], "Cancelled");
    let pending: Value = http()
        .get(format!("{}/admin/v1/webhooks", gw.1))
        .bearer_auth(dev_token(&gw.1, "admin"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        !pending["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["sessionId"] == id.as_str()),
        "{pending}"
    );
}

/// Card numbers sent where none belongs — in PaymentData as a JSON number, in a key name, in
/// `merchantTxnRef`, in a `CallGuid` — and typed on the hosted page to a PSP whose decline
/// text echoes them: none of it is in the gateway's answers, its log, its database and WAL, the
/// SMS outbox, the audit trail or the result webhook. A call whose id holds a card number still
/// links to its session (both are masked alike).
#[test]
fn card_numbers_sent_anywhere_are_found_nowhere() {
    let ls = LocalStripe::start();
    let proxy = Proxy::start(ls.url.clone(), 0);
    *proxy.decline_message.lock().unwrap() =
        Some("Your card 4000 0000 0000 0002 (4000000000000002) was declined".into());
    let hook = HookReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let path = serve_config(dir.path(), &format!("http://{}", proxy.addr), &hook.url);
    let gw = Serve::start(&path);
    let tok = dev_token(&gw.1, "globalpci");
    let answers = std::cell::RefCell::new(String::new());
    let call = |method: reqwest::Method, path: &str, token: &str, body: Option<Value>| {
        let mut r = http()
            .request(method, format!("{}{path}", gw.1))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().unwrap();
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        answers.borrow_mut().push_str(&text);
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        )
    };
    let (s, v) = call(
        reqwest::Method::POST,
        "/globalpci/v1/digitalselfservicesession",
        &tok,
        Some(
            json!({"AccountConfigurationId": "stripe-account", "PaymentData": {
            "CustomerPhoneNumber": "+447700900123", "amount": "12.34",
            "acct": 4242424242424242u64, "card 4242424242424242": "in a key",
            "wide": "４２４２４２４２４２４２４２４２", "glued": "424242424242424212/30",
            "tabs": "4242\t4242\t4242\t4242", "nbsp": "4242\u{a0}4242\u{a0}4242\u{a0}4242",
            "merchantTxnRef": "INV 4242 4242 4242 4242"}}),
        ),
    );
    assert_eq!(s, 200, "{v}");
    let digital = v["sessionId"].as_str().unwrap().to_string();
    let (s, v) = call(
        reqwest::Method::POST,
        "/globalpci/v1/agentsession",
        &tok,
        Some(
            json!({"AccountConfigurationId": "dev-account", "CallGuid": "call-4242424242424242",
            "PaymentData": {"amount": "1.00"}}),
        ),
    );
    assert_eq!(s, 200, "{v}");
    let agent = v["sessionId"].as_str().unwrap().to_string();
    let relay = dev_token(&gw.1, "relay");
    let (s, v) = call(
        reqwest::Method::POST,
        "/relay/v1/calls",
        &relay,
        Some(
            json!({"call_guid": "call-4242424242424242", "codec": "PCMU",
            "caller": {"remote": null}, "agent": {"remote": null}}),
        ),
    );
    assert_eq!(s, 201, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = call(
            reqwest::Method::GET,
            &format!("/globalpci/v1/session/{agent}"),
            &tok,
            None,
        );
        if v["sessionState"] == "Capturing" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the masked call id never linked: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The customer types a card the PSP declines, echoing it in its message, until the
    // link's attempts (3) run out: the form again twice, then the declined page.
    let link = gw.link_for(&digital);
    let link_token = link.rsplit('/').next().unwrap().to_string();
    assert!(link_token.len() >= 20, "{link}");
    for attempt in 1..=3 {
        let page = http()
            .post(&link)
            .form(&[
                ("number", "4000000000000002"),
                ("expiry", "12/30"),
                ("cvc", "123"),
            ])
            .send()
            .unwrap()
            .text()
            .unwrap();
        let expected = if attempt < 3 {
            "Your card was declined"
        } else {
            "Payment declined"
        };
        assert!(page.contains(expected), "attempt {attempt}: {page}");
        answers.borrow_mut().push_str(&page);
    }
    let (_, v) = call(
        reqwest::Method::GET,
        &format!("/globalpci/v1/session/{digital}"),
        &tok,
        None,
    );
    assert_eq!(v["sessionState"], "Declined", "{v}");
    assert_eq!(
        v["failureReason"], "card_declined",
        "a decline keeps its code: {v}"
    );

    // A PSP that rejects the request, quoting the card back: its text is kept, masked.
    *proxy.reject_message.lock().unwrap() =
        Some("Invalid card 5555555555554444: expiry 12/30".into());
    let (_, v) = call(
        reqwest::Method::POST,
        "/globalpci/v1/digitalselfservicesession",
        &tok,
        Some(
            json!({"AccountConfigurationId": "stripe-account", "PaymentData": {
            "CustomerPhoneNumber": "+447700900123", "amount": "5.00", "merchantTxnRef": "INV+4242.4242.4242.4242/12/30"}}),
        ),
    );
    let rejected = v["sessionId"].as_str().unwrap().to_string();
    let page = http()
        .post(gw.link_for(&rejected))
        .form(&[
            ("number", "5555555555554444"),
            ("expiry", "12/30"),
            ("cvc", "123"),
        ])
        .send()
        .unwrap()
        .text()
        .unwrap();
    answers.borrow_mut().push_str(&page);
    let (_, v) = call(
        reqwest::Method::GET,
        &format!("/globalpci/v1/session/{rejected}"),
        &tok,
        None,
    );
    assert_eq!(v["sessionState"], "Failed", "{v}");
    let reason = v["failureReason"].as_str().unwrap();
    assert!(
        reason.contains("Invalid card") && reason.contains("4444"),
        "the PSP's text is kept, masked: {v}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in [&digital, &rejected] {
        while !hook
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|(_, b)| b["sessionId"] == id.as_str())
        {
            assert!(Instant::now() < deadline, "no webhook for {id}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let admin = dev_token(&gw.1, "admin");
    for route in [
        "/admin/v1/outbox",
        "/admin/v1/webhooks",
        "/admin/v1/audit/relay",
    ] {
        let (s, v) = call(reqwest::Method::GET, route, &admin, None);
        assert_eq!(s, 200, "{route}: {v}");
    }
    let webhooks = format!("{:?}", hook.seen.lock().unwrap());
    let logged = gw.2.clone();
    drop(gw);
    // The reader thread takes what was left in the pipe, then ends (dropping its handle on the
    // lines) at the pipe's end.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Arc::strong_count(&logged) > 1 {
        assert!(
            Instant::now() < deadline,
            "the log reader never saw the pipe end"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let logs = logged.lock().unwrap().join("\n");
    let scan = |what: &str, bytes: &[u8]| {
        for needle in [
            &b"4242424242424242"[..],
            b"424242424242",
            b"4242 4242 4242",
            b"4000000000000002",
            b"400000000000",
            b"4000 0000 0000",
            b"5555555555554444",
            b"555555555555",
        ] {
            if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
                let around =
                    &bytes[at.saturating_sub(200)..(at + needle.len() + 80).min(bytes.len())];
                panic!(
                    "{what} hold {:?}: …{}…",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(around)
                );
            }
        }
        // Read as a person reads a number: separators (and JSON's `\t`) dropped, full-width
        // digits as digits.
        let read: String = String::from_utf8_lossy(bytes)
            .replace("\\t", "")
            .chars()
            .filter(|&c| !(c.is_whitespace() || "-./_".contains(c)))
            .map(|c| match c as u32 {
                0xFF10..=0xFF19 => char::from(b'0' + (c as u32 - 0xFF10) as u8),
                _ => c,
            })
            .collect();
        for needle in ["424242424242", "400000000000", "555555555555"] {
            if let Some(at) = read.find(needle) {
                let before: String = read[..at].chars().rev().take(200).collect();
                let after: String = read[at..].chars().take(80).collect();
                panic!(
                    "{what} hold {needle:?}, written some other way: …{}{after}…",
                    before.chars().rev().collect::<String>()
                );
            }
        }
    };
    scan("answers", answers.borrow().as_bytes());
    scan("webhooks", webhooks.as_bytes());
    scan("logs", logs.as_bytes());
    assert!(logs.contains("payment link sent"), "the log was read");
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if entry.path() != path {
            let bytes = std::fs::read(entry.path()).unwrap();
            let what = entry.path().display().to_string();
            scan(&what, &bytes);
            // The outbox keeps its messages with the link token redacted.
            assert!(
                !bytes
                    .windows(link_token.len())
                    .any(|w| w == link_token.as_bytes()),
                "{what} holds a live payment-link token"
            );
            files += 1;
        }
    }
    assert!(files >= 1, "the database was scanned");
}

/// `/metrics` carries latency histograms: PSP calls by operation and outcome, HTTP requests by
/// route template (never the raw path with its session id).
#[test]
fn metrics_show_psp_and_http_latency_histograms() {
    let gw = Gateway::start(&accounts("http://127.0.0.1:9", None));
    let v = pay(&gw, "dev-account", "4242424242424242");
    assert_eq!(outcome(&v).0, "Completed", "{v}");
    let declined = pay(&gw, "dev-account", "4000000000000002");
    assert_eq!(outcome(&declined).0, "Declined", "{declined}");
    let text = http()
        .get(gw.url("/metrics"))
        .bearer_auth(gw.token("admin"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let count = |prefix: &str, labels: &[&str]| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
            .unwrap_or_else(|| panic!("no {prefix} {labels:?} in:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let psp = "tonegate_psp_call_duration_seconds_count{";
    // 4000000000000002 is declined at tokenization (the PSP's card check): no charge.
    assert_eq!(count(psp, &["operation=\"tokenize\"", "outcome=\"ok\""]), 1);
    assert_eq!(
        count(psp, &["operation=\"tokenize\"", "outcome=\"declined\""]),
        1
    );
    assert_eq!(count(psp, &["operation=\"charge\"", "outcome=\"ok\""]), 1);
    let http_count = "tonegate_http_request_duration_seconds_count{";
    let route = "route=\"/globalpci/v1/session/{id}\"";
    assert_eq!(
        count(http_count, &[route, "method=\"GET\"", "status=\"200\""]),
        2
    );
    assert!(
        !text.contains(v["sessionId"].as_str().unwrap()),
        "a raw path was recorded"
    );
    assert!(text.contains("# TYPE tonegate_http_request_duration_seconds histogram"));
}

/// The HTML of `url` (a payment page), fetched as a browser would, without a token.
fn page_html(url: &str) -> String {
    let r = http().get(url).send().unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.text().unwrap()
}

/// The text of the element with id `id` in server-rendered `html`.
fn element_text(html: &str, id: &str) -> String {
    let open = format!("id=\"{id}\">");
    let start = html
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in {html}"))
        + open.len();
    html[start..].split('<').next().unwrap().to_string()
}

/// Amounts reach the PSP in each currency's own ISO 4217 minor units (JPY has none, KWD
/// three), the API, the SMS, the hosted page and the agent page show them as the currency
/// writes them, and decimals a currency does not have are refused naming the field. Before,
/// every amount was multiplied by 100: JPY 1000 went to the PSP as 100000.
#[test]
fn each_currency_reaches_the_psp_in_its_own_minor_units() {
    let ls = LocalStripe::start();
    let proxy = Proxy::start(ls.url.clone(), 0);
    let gw = Gateway::start(&accounts(&format!("http://{}", proxy.addr), None));
    let tok = gw.token("globalpci");
    let admin = gw.token("admin");
    // (amount, currency, minor units at the PSP, in the SMS, on the English hosted page)
    let cases = [
        ("1000", "JPY", 1000, "1000", "¥1,000"),
        ("49.99", "gbp", 4999, "49.99", "£49.99"),
        ("12.345", "KWD", 12345, "12.345", "KWD\u{a0}12.345"),
    ];
    for (amount, currency, minor, shown, on_page) in cases {
        let code = currency.to_ascii_uppercase();
        let shown_with_code = format!("{shown} {code}");
        for account in ["stripe-account", "dev-account"] {
            let r = http()
                .post(gw.url("/globalpci/v1/digitalselfservicesession"))
                .bearer_auth(&tok)
                .json(&json!({"AccountConfigurationId": account, "PaymentData": {
                    "CustomerPhoneNumber": "+447700900123", "amount": amount, "currency": currency,
                    "merchantTxnRef": format!("ref-{}", tonegate::auth::random_token())}}))
                .send()
                .unwrap();
            assert_eq!(r.status(), 200);
            let id = r.json::<Value>().unwrap()["sessionId"]
                .as_str()
                .unwrap()
                .to_string();
            // The texted link and the hosted page it opens.
            let outbox: Value = http()
                .get(gw.url("/admin/v1/outbox"))
                .bearer_auth(&admin)
                .send()
                .unwrap()
                .json()
                .unwrap();
            let sms = outbox["messages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["sessionId"] == id.as_str())
                .unwrap()["body"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(
                sms.contains(&format!("pay {shown_with_code} securely")),
                "{sms}"
            );
            let link = sms[sms.find("http").unwrap()..]
                .split_whitespace()
                .next()
                .unwrap();
            let hosted = page_html(link);
            assert_eq!(element_text(&hosted, "amount"), on_page);
            assert_eq!(element_text(&hosted, "pay"), format!("Pay {on_page}"));

            let _ = gw.runtime.block_on(gw.state.sessions.pay_with_card(
                &id,
                card("4242424242424242", "123"),
                "test",
            ));
            let v: Value = http()
                .get(gw.url(&format!("/globalpci/v1/session/{id}")))
                .bearer_auth(&tok)
                .send()
                .unwrap()
                .json()
                .unwrap();
            assert_eq!(outcome(&v).0, "Completed", "{v}");
            assert_eq!(
                (v["amount"].as_str(), v["currency"].as_str()),
                (Some(shown), Some(code.as_str()))
            );
            let charged = if account == "dev-account" {
                let made = gw.state.sandbox.charges_made();
                made.iter().find(|c| c.2 == id).unwrap().1
            } else {
                let pi: Value = http()
                    .get(format!(
                        "{}/v1/payment_intents/{}",
                        ls.url,
                        v["pspTransactionId"].as_str().unwrap()
                    ))
                    .basic_auth("sk_test_x", Some(""))
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                assert_eq!(pi["currency"], code.to_ascii_lowercase(), "{pi}");
                pi["amount"].as_i64().unwrap()
            };
            assert_eq!(
                charged, minor,
                "{account} charged {charged} for {shown_with_code}"
            );
        }
        // The agent's payment screen shows it the same way.
        let v: Value = http()
            .post(gw.url("/globalpci/v1/agentsession"))
            .bearer_auth(&tok)
            .json(&json!({"AccountConfigurationId": "dev-account",
                "CallGuid": format!("guid-{}", tonegate::auth::random_token()),
                "PaymentData": {"amount": amount, "currency": currency}}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let ui = format!(
            "{}?code={}",
            v["paymentUiUrl"].as_str().unwrap(),
            v["paymentUiCredentials"]["accessCode"].as_str().unwrap()
        );
        assert_eq!(element_text(&page_html(&ui), "amount"), on_page);
    }
    // Decimals the currency does not have, and codes that are no currency: 400 naming the
    // field, without repeating what was sent.
    for (amount, currency, field) in [
        ("1000.5", "JPY", "amount"),
        ("49.999", "GBP", "amount"),
        ("12.3456", "KWD", "amount"),
        ("10", "DOLLARS", "currency"),
        ("10", "XAU", "currency"),
    ] {
        let r = http()
            .post(gw.url("/globalpci/v1/digitalselfservicesession"))
            .bearer_auth(&tok)
            .json(
                &json!({"AccountConfigurationId": "dev-account", "PaymentData": {
                "CustomerPhoneNumber": "+447700900123", "amount": amount, "currency": currency}}),
            )
            .send()
            .unwrap();
        assert_eq!(r.status(), 400, "{amount} {currency}");
        let text = r.text().unwrap();
        assert!(text.contains(field), "{amount} {currency}: {text}");
        assert!(
            !text.contains(amount) || amount == "10",
            "{text} repeats {amount}"
        );
    }
}

/// A digital session on `account` for `amount`, and the payment link texted for it.
fn digital_with_link(
    gw: &Gateway,
    account: &str,
    amount: &str,
    reference: &str,
) -> (String, String) {
    let v: Value = http()
        .post(gw.url("/globalpci/v1/digitalselfservicesession"))
        .bearer_auth(gw.token("globalpci"))
        .json(&json!({"AccountConfigurationId": account, "PaymentData": {
            "CustomerPhoneNumber": "+447700900123", "amount": amount, "merchantTxnRef": reference}}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = v["sessionId"].as_str().unwrap().to_string();
    let outbox: Value = http()
        .get(gw.url("/admin/v1/outbox"))
        .bearer_auth(gw.token("admin"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let sms = outbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["sessionId"] == id.as_str())
        .unwrap()["body"]
        .as_str()
        .unwrap()
        .to_string();
    let link = sms[sms.find("http").unwrap()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    (id, link)
}

/// The PSP webhook endpoint under attack, on a running gateway: a wallet payment made through
/// the sandbox's simulated checkout completes by its signed webhook; the same webhook replayed
/// changes nothing; forged (another secret, or a body changed under a good signature),
/// unsigned, stale, malformed and oversized requests are refused and change nothing; an
/// account without a PSP webhook secret has no endpoint. Nothing is charged twice.
#[test]
fn psp_webhooks_are_verified_and_replays_change_nothing() {
    let gw = Gateway::start(
        "[[accounts]]\nid = \"wallets\"\nwallets = [\"google_pay\"]\npsp_webhook_secret = \"whsec_attack_test\"\n\n[[accounts]]\nid = \"dev-account\"\n",
    );
    let tok = gw.token("globalpci");
    let state_of = |id: &str| -> Value {
        http()
            .get(gw.url(&format!("/globalpci/v1/session/{id}")))
            .bearer_auth(&tok)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let post_hook = |account: &str, body: &str, sig: Option<&str>| {
        let mut r = http()
            .post(gw.url(&format!("/psp/v1/webhook/{account}")))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(s) = sig {
            r = r.header("stripe-signature", s);
        }
        let r = r.send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };

    // A session waiting on its wallet checkout.
    let (id, link) = digital_with_link(&gw, "wallets", "20.00", "W-ATTACK-1");
    let page = http()
        .post(format!("{link}/wallet"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let start = page
        .find("/sandbox/checkout/")
        .expect("continues to the checkout");
    let checkout = page[start..].split('"').next().unwrap().to_string();
    let cs = checkout.rsplit('/').next().unwrap().to_string();
    assert!(cs.starts_with("cs_test_"), "{cs}");
    assert_eq!(state_of(&id)["sessionState"], "Submitting");

    // Forged events naming that checkout, before the real one: refused, nothing changes.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forged =
        json!({"id": "evt_forged", "object": "event", "type": "checkout.session.completed",
        "created": now, "data": {"object": {"id": cs, "object": "checkout.session",
        "amount_total": 2000, "currency": "gbp", "payment_status": "paid", "status": "complete",
        "payment_intent": "pi_forged", "metadata": {"sessionId": id}}}})
        .to_string();
    let sign = tonegate::psp::webhook::sign;
    for (what, sig) in [
        ("unsigned", None),
        (
            "another secret",
            Some(sign("whsec_guess", now, forged.as_bytes())),
        ),
        (
            "stale",
            Some(sign("whsec_attack_test", now - 3600, forged.as_bytes())),
        ),
        ("malformed", Some("t=now,v1=zz".to_string())),
        ("v0 only", Some(format!("t={now},v0=00"))),
    ] {
        let (status, text) = post_hook("wallets", &forged, sig.as_deref());
        assert_eq!(status, 400, "{what}: {text}");
        assert_eq!(state_of(&id)["sessionState"], "Submitting", "{what}");
    }
    // A good signature over a different body.
    let good = sign("whsec_attack_test", now, forged.as_bytes());
    let (status, _) = post_hook("wallets", &forged.replace("2000", "1"), Some(&good));
    assert_eq!(status, 400);
    // Oversized, and an account with no PSP webhook secret.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(100 * 1024));
    let big_sig = sign("whsec_attack_test", now, big.as_bytes());
    assert_eq!(post_hook("wallets", &big, Some(&big_sig)).0, 413);
    assert_eq!(post_hook("dev-account", &forged, Some(&good)).0, 404);
    assert_eq!(post_hook("no-such-account", &forged, Some(&good)).0, 404);
    assert_eq!(state_of(&id)["sessionState"], "Submitting");
    assert!(gw.state.sandbox.charges_made().iter().all(|c| c.2 != id));

    // The customer pays with the wallet; the sandbox posts the signed webhook; the browser
    // comes back to the link (the redirect is followed).
    let r = http()
        .post(gw.url(&checkout))
        .form(&[("action", "google_pay")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("Payment approved"));
    let s = state_of(&id);
    assert_eq!(s["sessionState"], "Completed", "{s}");
    let sent = gw.state.sandbox.webhooks_sent();
    assert_eq!(sent.len(), 1);
    let (_, body, sig) = &sent[0];
    // Replayed: accepted (Stripe retries), nothing changes.
    for _ in 0..2 {
        let (status, text) = post_hook("wallets", body, Some(sig));
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"changed\":false"), "{text}");
    }
    // Replayed to another account's endpoint: not that account's secret.
    assert_eq!(post_hook("dev-account", body, Some(sig)).0, 404);
    let again = state_of(&id);
    assert_eq!(again["pspTransactionId"], s["pspTransactionId"]);
    assert_eq!(
        gw.state
            .sandbox
            .charges_made()
            .iter()
            .filter(|c| c.2 == id)
            .count(),
        1
    );
    // The checkout cannot be paid twice.
    let r = http()
        .post(gw.url(&checkout))
        .form(&[("action", "google_pay")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// The Stripe adapter against localstripe on a payment link: localstripe has no redirect-based
/// 3-D Secure (its challenge exists only inside its own Stripe.js stand-in), so the 3DS card
/// is answered `authentication_required` and, the link's attempts remaining, a good card then
/// pays on the same link: one successful PaymentIntent for the session.
#[test]
fn localstripe_3ds_card_then_a_good_card_on_the_same_link() {
    let ls = LocalStripe::start();
    let proxy = Proxy::start(ls.url.clone(), 0);
    let gw = Gateway::start(&accounts(&format!("http://{}", proxy.addr), None));
    let tok = gw.token("globalpci");
    let (id, link) = digital_with_link(&gw, "stripe-account", "12.34", "LS-3DS-1");
    let pay = |pan: &str| {
        http()
            .post(&link)
            .form(&[("number", pan), ("expiry", "12/30"), ("cvc", "123")])
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let page = pay("4000002500003155");
    assert!(page.contains("could not confirm"), "{page}");
    assert!(page.contains("2 attempts left"), "{page}");
    let page = pay("4242424242424242");
    assert!(page.contains("Payment approved"), "{page}");
    let s: Value = http()
        .get(gw.url(&format!("/globalpci/v1/session/{id}")))
        .bearer_auth(&tok)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(s["sessionState"], "Completed", "{s}");
    let pi: Value = http()
        .get(format!(
            "{}/v1/payment_intents/{}",
            ls.url,
            s["pspTransactionId"].as_str().unwrap()
        ))
        .basic_auth("sk_test_x", Some(""))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(pi["status"], "succeeded");
    assert_eq!(pi["amount"], 1234);
    assert_eq!(
        ls.payment_intents_for(&id),
        2,
        "the 3DS attempt's and the paid one"
    );
}

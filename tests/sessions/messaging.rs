//! Digital sessions inside messaging: Genesys button message and Apple Messages for Business
//! payment request payloads, and a ConnectorPaymentResponse that changes nothing until the PSP
//! confirms the payment.

use crate::common;

use common::gateway::{http, post, Gateway};
use serde_json::json;

#[test]
fn payloads_and_psp_checked_wallet_response() {
    let gw = Gateway::start("");
    let tok = gw.token("globalpci");
    let (_, v) = post(
        &gw,
        &tok,
        "/globalpci/v1/digitalselfservicesession",
        &json!({"AccountConfigurationId": "dev-account",
        "PaymentData": {"CustomerPhoneNumber": "+447700900123", "merchantTxnRef": "CHAT-1", "amount": "25.00"}}),
    );
    let id = v["sessionId"].as_str().unwrap().to_string();

    let (s, m) = post(
        &gw,
        &tok,
        &format!("/globalpci/v1/session/{id}/messaging"),
        &json!({"conversationId": "conv-1"}),
    );
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["genesys"]["conversationId"], "conv-1");
    let button = &m["genesys"]["body"]["attachments"][0];
    assert_eq!(button["type"], "button");
    let url = button["url"].as_str().unwrap();
    assert_eq!(url, m["paymentUrl"]);
    assert_eq!(
        http().get(url).send().unwrap().status(),
        200,
        "the button opens the payment page"
    );
    let apple = &m["appleBusinessChat"];
    assert_eq!(apple[0]["type"], "BusinessChatMessage");
    assert_eq!(apple[1]["type"], "ConnectorPaymentRequest");
    assert_eq!(apple[1]["requestIdentifier"], id.as_str());
    let pr = &apple[1]["apple"]["data"]["payment"]["paymentRequest"];
    assert_eq!(
        (pr["total"]["amount"].as_str(), pr["currencyCode"].as_str()),
        (Some("25.00"), Some("GBP"))
    );

    let resp = |status: bool| json!({"type": "ConnectorPaymentResponse", "status": status, "requestIdentifier": id});
    // "status": false changes nothing.
    let (s, v) = post(&gw, &tok, "/globalpci/v1/applepay/response", &resp(false));
    assert_eq!((s, v["sessionState"].as_str()), (200, Some("Created")));
    // "status": true without a payment at the PSP is refused.
    let (s, v) = post(&gw, &tok, "/globalpci/v1/applepay/response", &resp(true));
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_field")),
        "{v}"
    );
    // A payment of the wrong amount is refused too.
    gw.state.sandbox.record_external_payment(&id, 100);
    let (s, _) = post(&gw, &tok, "/globalpci/v1/applepay/response", &resp(true));
    assert_eq!(s, 400);
    assert_eq!(
        gw.state.sessions.get_any(&id).unwrap().state.as_str(),
        "Created"
    );
    // Confirmed by the PSP: completed, with its transaction id.
    let (_, v2) = post(
        &gw,
        &tok,
        "/globalpci/v1/digitalselfservicesession",
        &json!({"AccountConfigurationId": "dev-account",
        "PaymentData": {"CustomerPhoneNumber": "+447700900124", "merchantTxnRef": "CHAT-2", "amount": "25.00"}}),
    );
    let id2 = v2["sessionId"].as_str().unwrap().to_string();
    let pi = gw.state.sandbox.record_external_payment(&id2, 2500);
    let (s, v) = post(
        &gw,
        &tok,
        "/globalpci/v1/applepay/response",
        &json!({"type": "ConnectorPaymentResponse", "status": true, "requestIdentifier": id2}),
    );
    assert_eq!(
        (
            s,
            v["sessionState"].as_str(),
            v["pspTransactionId"].as_str()
        ),
        (200, Some("Completed"), Some(pi.as_str())),
        "{v}"
    );
    // Wrong type, unknown session.
    assert_eq!(
        post(
            &gw,
            &tok,
            "/globalpci/v1/applepay/response",
            &json!({"type": "Other", "status": true, "requestIdentifier": id})
        )
        .0,
        400
    );
    assert_eq!(post(&gw, &tok, "/globalpci/v1/applepay/response", &json!({"type": "ConnectorPaymentResponse", "status": true, "requestIdentifier": "nope"})).0, 404);
}

/// Re-issuing the link of a digital session that is past its expiry (the sweep has not marked
/// it yet) is refused, and no SMS promises a link for longer than the session lives (it once
/// texted "valid for 307445734561825861 minutes").
#[test]
fn a_link_is_not_reissued_for_an_expired_session() {
    let gw =
        Gateway::start("[server]\nadjustable_clock = true\n[store]\nsweep_interval_s = 3600\n");
    let tok = gw.token("globalpci");
    let (s, v) = post(
        &gw,
        &tok,
        "/globalpci/v1/digitalselfservicesession",
        &json!({"AccountConfigurationId": "dev-account",
        "PaymentData": {"CustomerPhoneNumber": "+447700900125", "merchantTxnRef": "LATE-1", "amount": "5.00"}}),
    );
    assert_eq!(s, 200, "{v}");
    let id = v["sessionId"].as_str().unwrap().to_string();
    let (_, shown) = common::gateway::get(&gw, &tok, &format!("/globalpci/v1/session/{id}"));
    let lives_s = shown["expiresAt"].as_u64().unwrap() - shown["createdAt"].as_u64().unwrap();
    gw.advance_clock(lives_s + 60);
    let (s, v) = post(
        &gw,
        &tok,
        &format!("/globalpci/v1/session/{id}/reissue"),
        &json!({}),
    );
    assert_eq!(s, 409, "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("Expired"),
        "{v}"
    );
    let (_, outbox) = common::gateway::get(&gw, &gw.token("admin"), "/admin/v1/outbox");
    let texts: Vec<&str> = outbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["sessionId"] == id.as_str())
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 1, "only the first link was texted: {texts:?}");
    for t in texts {
        let minutes: u64 = t
            .split("valid for ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("{t}"));
        assert!(minutes * 60 <= lives_s + 59, "{t}");
    }
}

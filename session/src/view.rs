//! A session as the outside world sees it: one [`SessionView`] that the API answer, the result
//! webhook and the agent UI's stream all serialize, so they agree field for field, and
//! [`Amount`], the one way an amount is written on the wire.
//!
//! What each adds around the view is its own small struct with the view `#[serde(flatten)]`ed
//! in: [`WebhookEvent`] here; the API's answers beside their handlers.

use serde::{Serialize, Serializer};
use tonegate_card::money::Money;
use utoipa::ToSchema;

use crate::model::{PaymentResult, Session, SessionKind, SessionState};

/// An amount on the wire: decimal text with exactly its currency's ISO 4217 decimals
/// (`Money::decimal`: JPY 1000 → `"1000"`, USD 1234 minor → `"12.34"`, KWD → `"12.345"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount(pub Money);

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0.decimal())
    }
}

/// A session's identity, state, amount and, once finished, its result (references and last
/// four only: no card data exists in a `Session` to show).
// Owned (a few short strings cloned per answer, off the hot path): handlers return it, or an
// answer holding it, by value.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    /// `sessionId`.
    pub session_id: String,
    /// Where the session is in its life.
    pub session_state: SessionState,
    /// How it takes the card.
    pub session_type: SessionKind,
    /// ISO 4217 code.
    pub currency: String,
    /// Major units, with exactly the currency's ISO 4217 decimals (JPY 1000, GBP 49.99, KWD
    /// 12.345)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub amount: Option<Amount>,
    /// The integrator's reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub merchant_txn_ref: Option<String>,
    /// The payment's outcome (empty until there is one).
    #[serde(flatten)]
    pub result: PaymentResult,
}

impl SessionView {
    /// The view of `s` as it stands.
    pub fn of(s: &Session) -> SessionView {
        SessionView::at(s, s.state, s.result.clone())
    }

    /// The view of `s` as it was at one point of its log: in `state`, with `result` (what
    /// else a view shows does not change over a session's life).
    pub fn at(s: &Session, state: SessionState, result: PaymentResult) -> SessionView {
        SessionView {
            session_id: s.id.clone(),
            session_state: state,
            session_type: s.kind,
            currency: s.currency.clone(),
            amount: s.amount().map(Amount),
            merchant_txn_ref: s.merchant_txn_ref.clone(),
            result,
        }
    }
}

/// The result webhook's body (`Session::webhook_event`): the event's id, type and time, then
/// the session.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent<'a> {
    /// The same on every try of one event: receivers deduplicate on it.
    pub event_id: &'a str,
    /// `session.<state in lower case>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds when the event was made (not the session's creation).
    pub created_at: u64,
    /// The session.
    #[serde(flatten)]
    pub session: SessionView,
}

impl<'a> WebhookEvent<'a> {
    /// The event `event_id`, made at `now`, for `s` as it stands.
    pub fn of(s: &Session, event_id: &'a str, now: u64) -> WebhookEvent<'a> {
        WebhookEvent {
            event_id,
            kind: format!("session.{}", s.state.as_str().to_ascii_lowercase()),
            created_at: now,
            session: SessionView::of(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SessionKind;
    use serde_json::{json, Value};

    fn session(currency: &str, minor: i64) -> Session {
        Session {
            id: "s-1".into(),
            kind: SessionKind::Agent,
            client_id: "c".into(),
            account_id: "acct".into(),
            call_guid: Some("call-1".into()),
            dtmf_link_id: None,
            state: SessionState::Completed,
            amount_minor: Some(minor),
            currency: currency.into(),
            merchant_txn_ref: Some("order-9".into()),
            payment_data: Default::default(),
            created_at: 100,
            updated_at: 150,
            expires_at: 1000,
            result: PaymentResult {
                masked_pan: Some("************4242".into()),
                card_brand: Some("visa".into()),
                psp_token_reference: Some("tok_1".into()),
                psp_transaction_id: Some("pi_1".into()),
                failure_reason: None,
            },
            ui_secret_hash: None,
        }
    }

    #[test]
    fn amounts_have_exactly_the_currencys_decimals() {
        for (currency, minor, text) in [
            ("JPY", 1000, "1000"),
            ("USD", 1234, "12.34"),
            ("GBP", 5, "0.05"),
            ("KWD", 12345, "12.345"),
        ] {
            let v = serde_json::to_value(SessionView::of(&session(currency, minor))).unwrap();
            assert_eq!(v["amount"], text, "{currency} {minor}");
        }
        // No amount (or a currency this build does not know): no `amount` at all.
        let mut s = session("USD", 1);
        s.amount_minor = None;
        let v = serde_json::to_value(SessionView::of(&s)).unwrap();
        assert!(v.get("amount").is_none(), "{v}");
    }

    #[test]
    fn the_view_flattens_the_result_and_leaves_out_what_is_absent() {
        let mut s = session("GBP", 4999);
        s.merchant_txn_ref = None;
        s.result = PaymentResult {
            failure_reason: Some("card_declined".into()),
            ..Default::default()
        };
        s.state = SessionState::Declined;
        let v = serde_json::to_value(SessionView::of(&s)).unwrap();
        assert_eq!(
            v,
            json!({
                "sessionId": "s-1",
                "sessionState": "Declined",
                "sessionType": "Agent",
                "currency": "GBP",
                "amount": "49.99",
                "failureReason": "card_declined",
            })
        );
    }

    #[test]
    fn the_webhook_body_is_the_view_with_the_event_around_it() {
        let s = session("JPY", 1000);
        let v = serde_json::to_value(WebhookEvent::of(&s, "ev-1", 500)).unwrap();
        let Value::Object(mut body) = v else {
            panic!("an object")
        };
        assert_eq!(body.remove("eventId"), Some(json!("ev-1")));
        assert_eq!(body.remove("type"), Some(json!("session.completed")));
        // The event's time, not the session's creation.
        assert_eq!(body.remove("createdAt"), Some(json!(500)));
        assert_eq!(
            Value::Object(body),
            serde_json::to_value(SessionView::of(&s)).unwrap()
        );
    }
}

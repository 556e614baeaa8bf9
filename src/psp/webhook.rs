//! The PSP's signed webhooks (Stripe's scheme): how a wallet payment made on the PSP's hosted
//! checkout reaches the gateway.
//!
//! `Stripe-Signature: t=<unix seconds>,v1=<hex>` where `v1` is the HMAC-SHA256 of
//! `"{t}.{raw body}"` under the endpoint's secret (`whsec_…`); several `v1` may be present
//! (secret rotation). A request is accepted only if one of them matches, compared in constant
//! time, and `t` is within [`TOLERANCE_S`] of now (a replayed old request fails). The event
//! is Stripe's `event` object; `checkout.session.completed` (and
//! `checkout.session.async_payment_succeeded`) with `payment_status = "paid"` pays a session
//! named by the checkout's `metadata.sessionId`.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use thiserror::Error;

use super::stripe_amount;

/// How far a signature's timestamp may be from now, seconds (Stripe's libraries' default).
pub const TOLERANCE_S: u64 = 300;
/// The largest webhook body read, bytes (a checkout event is a few KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WebhookError {
    /// No `Stripe-Signature` header.
    #[error("the request is not signed")]
    Unsigned,
    /// The header is not `t=…,v1=…`.
    #[error("the signature header is malformed")]
    Malformed,
    /// The timestamp is outside the tolerance.
    #[error("the signature timestamp is too old or in the future")]
    Stale,
    /// No `v1` matches.
    #[error("no signature matches")]
    Mismatch,
    /// Signed, but not an event this gateway can read.
    #[error("the event cannot be read")]
    BadEvent,
}

/// A checkout the customer paid, as the event describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutPaid {
    /// The event's id (`evt_…`).
    pub event_id: String,
    /// The checkout's id (`cs_…`).
    pub checkout_id: String,
    /// Our session id, from the checkout's metadata.
    pub session_id: String,
    /// The PaymentIntent that paid it.
    pub payment_intent: String,
    /// Amount in ISO 4217 minor units.
    pub amount_minor: i64,
    /// ISO 4217 currency, upper case.
    pub currency: String,
}

/// A verified event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PspEvent {
    /// A hosted checkout was paid.
    CheckoutPaid(CheckoutPaid),
    /// Any other event type (acknowledged, nothing changes).
    Other(String),
}

fn mac(secret: &str, t: u64, payload: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(payload);
    m
}

/// The `Stripe-Signature` value for `payload` sent at `t` (the sandbox's webhooks).
pub fn sign(secret: &str, t: u64, payload: &[u8]) -> String {
    let sig = mac(secret, t, payload).finalize().into_bytes();
    let hex: String = sig.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Checks `header` (the `Stripe-Signature` value) over the raw `payload` at `now`.
pub fn verify(
    secret: &str,
    header: Option<&str>,
    payload: &[u8],
    now: u64,
) -> Result<(), WebhookError> {
    let header = header.ok_or(WebhookError::Unsigned)?;
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',').take(16) {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<u64>().map_err(|_| WebhookError::Malformed)?),
            Some(("v1", v)) => sigs.push(unhex(v).ok_or(WebhookError::Malformed)?),
            // Other schemes (v0: Stripe's test-mode scheme) are not accepted.
            _ => {}
        }
    }
    let t = t.ok_or(WebhookError::Malformed)?;
    if sigs.is_empty() {
        return Err(WebhookError::Malformed);
    }
    if now.abs_diff(t) > TOLERANCE_S {
        return Err(WebhookError::Stale);
    }
    // `verify_slice` compares in constant time.
    if sigs
        .iter()
        .any(|s| mac(secret, t, payload).verify_slice(s).is_ok())
    {
        Ok(())
    } else {
        Err(WebhookError::Mismatch)
    }
}

/// Reads a verified event's body.
pub fn parse_event(payload: &[u8]) -> Result<PspEvent, WebhookError> {
    let v: Value = serde_json::from_slice(payload).map_err(|_| WebhookError::BadEvent)?;
    if v["object"] != "event" {
        return Err(WebhookError::BadEvent);
    }
    let kind = v["type"].as_str().ok_or(WebhookError::BadEvent)?;
    if !matches!(
        kind,
        "checkout.session.completed" | "checkout.session.async_payment_succeeded"
    ) {
        return Ok(PspEvent::Other(kind.to_string()));
    }
    let o = &v["data"]["object"];
    if o["object"] != "checkout.session" || o["payment_status"] != "paid" {
        return Ok(PspEvent::Other(kind.to_string()));
    }
    let s = |x: &Value| x.as_str().map(str::to_string).ok_or(WebhookError::BadEvent);
    let currency = s(&o["currency"])?.to_ascii_uppercase();
    let amount_minor = o["amount_total"]
        .as_i64()
        .and_then(|a| stripe_amount::from_stripe(a, &currency))
        .ok_or(WebhookError::BadEvent)?;
    let session_id = o["metadata"]["sessionId"]
        .as_str()
        .or(o["client_reference_id"].as_str())
        .ok_or(WebhookError::BadEvent)?
        .to_string();
    Ok(PspEvent::CheckoutPaid(CheckoutPaid {
        event_id: s(&v["id"])?,
        checkout_id: s(&o["id"])?,
        session_id,
        payment_intent: s(&o["payment_intent"])?,
        amount_minor,
        currency,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_stripes_scheme() {
        // Reference: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_x
        let h = sign("whsec_x", 1_700_000_000, br#"{"a":1}"#);
        assert!(h.starts_with("t=1700000000,v1="), "{h}");
        assert_eq!(
            verify("whsec_x", Some(&h), br#"{"a":1}"#, 1_700_000_100),
            Ok(())
        );
    }

    #[test]
    fn forged_unsigned_stale_and_malformed_are_refused() {
        let body = br#"{"a":1}"#;
        let good = sign("whsec_x", 1_700_000_000, body);
        let now = 1_700_000_010;
        assert_eq!(
            verify("whsec_x", None, body, now),
            Err(WebhookError::Unsigned)
        );
        assert_eq!(
            verify("whsec_other", Some(&good), body, now),
            Err(WebhookError::Mismatch)
        );
        assert_eq!(
            verify("whsec_x", Some(&good), br#"{"a":2}"#, now),
            Err(WebhookError::Mismatch)
        );
        assert_eq!(
            verify("whsec_x", Some(&good), body, now + TOLERANCE_S + 1),
            Err(WebhookError::Stale)
        );
        for h in [
            "",
            "t=1700000000",
            "v1=00",
            "t=x,v1=00",
            "t=1700000000,v1=zz",
        ] {
            assert_eq!(
                verify("whsec_x", Some(h), body, now),
                Err(WebhookError::Malformed),
                "{h}"
            );
        }
        // A second, rotated signature beside a wrong one still verifies.
        let rotated = format!("{good},v1={}", "0".repeat(64));
        assert_eq!(verify("whsec_x", Some(&rotated), body, now), Ok(()));
    }
}

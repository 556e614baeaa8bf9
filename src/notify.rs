//! Result notifications: a session's outcome (never card data) POSTed to the account's webhook,
//! signed. Events wait in the database (`webhooks` table) and are retried with back-off until a
//! 2xx or `store.webhook_retry_s`, across restarts (the worker is in `session`).
//!
//! Headers: `X-Tonegate-Event-Id` (receivers deduplicate on it: retries carry the same id),
//! `X-Tonegate-Timestamp` (Unix seconds) and `X-Tonegate-Signature: v1=<hex>`, the HMAC-SHA256
//! of `"{timestamp}.{body}"` under the account's `webhook_secret`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long after a failed try the next one goes: 1 s doubling to an hour at most.
pub fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(12)).min(Duration::from_secs(3600))
}

/// A new event id (receivers deduplicate on it).
pub fn new_event_id() -> String {
    format!("evt_{}", &crate::auth::random_token()[..22])
}

/// Signs `body` sent at `timestamp` with `secret`: the `X-Tonegate-Signature` value.
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let bytes = mac.finalize().into_bytes();
    format!(
        "v1={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Sends webhook events.
#[derive(Clone)]
pub struct Webhooks {
    http: reqwest::Client,
}

impl Default for Webhooks {
    fn default() -> Self {
        Self::new()
    }
}

impl Webhooks {
    /// A sender with a 10 s timeout per try, no redirects.
    pub fn new() -> Self {
        Webhooks {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("reqwest client"),
        }
    }

    /// One try: POSTs `body` as event `event_id`, signed with `secret` and stamped `now`
    /// (Unix seconds). `Err` says why it was not delivered (a status or a transport error, never the receiver's body).
    pub async fn deliver(
        &self,
        url: &str,
        secret: &str,
        event_id: &str,
        body: &str,
        now: u64,
    ) -> Result<(), String> {
        let r = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("X-Tonegate-Event-Id", event_id)
            .header("X-Tonegate-Timestamp", now.to_string())
            .header("X-Tonegate-Signature", signature(secret, now, body))
            .body(body.to_string())
            .send()
            .await;
        match r {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("answered {}", resp.status().as_u16())),
            Err(e) if e.is_timeout() => Err("timed out".into()),
            Err(_) => Err("unreachable".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn retries_back_off_doubling_to_an_hour() {
        use std::time::Duration;
        assert_eq!(super::retry_delay(0), Duration::from_secs(1));
        assert_eq!(super::retry_delay(3), Duration::from_secs(8));
        assert_eq!(super::retry_delay(30), Duration::from_secs(3600));
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Reference: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            super::signature("secret", 1_700_000_000, "{\"a\":1}"),
            "v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}

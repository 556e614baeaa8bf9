//! SMS for digital payment links: the sender interface and a Twilio-compatible HTTP API. The
//! embedded default, an outbox in the session database (`session::outbox`), implements the
//! same interface.
//!
//! Logs name the recipient's last digits and the session, never the link (its token is a
//! bearer credential for the payment page).

use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::psp::BoxFuture;

/// SMS settings (`[sms]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// `outbox` (stored, not sent) or `twilio`.
    pub provider: String,
    /// Twilio-compatible API base URL.
    pub twilio_base_url: String,
    /// Account SID.
    pub twilio_account_sid: String,
    /// Auth token (never logged).
    pub twilio_auth_token: String,
    /// Sender number or id.
    pub from: String,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            provider: "outbox".into(),
            twilio_base_url: "https://api.twilio.com".into(),
            twilio_account_sid: String::new(),
            twilio_auth_token: String::new(),
            from: "tonegate".into(),
        }
    }
}

/// Why a message was not sent.
#[derive(Debug, Error)]
pub enum SmsError {
    /// The provider could not be reached or said no.
    #[error("SMS provider: {0}")]
    Provider(String),
    /// The outbox could not store it.
    #[error("outbox: {0}")]
    Outbox(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Sends text messages.
pub trait SmsSender: Send + Sync {
    /// Sends `body` to `to` (E.164) about session `session_id`.
    fn send<'a>(
        &'a self,
        session_id: &'a str,
        to: &'a str,
        body: &'a str,
    ) -> BoxFuture<'a, Result<(), SmsError>>;
}

/// `body` with the token of every payment link (`/pay/link/TOKEN`) replaced by `[redacted]`.
pub fn redact_link_tokens(body: &str) -> String {
    const LINK: &str = "/pay/link/";
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(i) = rest.find(LINK) {
        let (head, tail) = rest.split_at(i + LINK.len());
        out.push_str(head);
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(tail.len());
        if end > 0 {
            out.push_str("[redacted]");
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A Twilio-compatible Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`).
pub struct Twilio {
    cfg: SmsConfig,
    http: reqwest::Client,
}

impl Twilio {
    /// A client for the configured API.
    pub fn new(cfg: SmsConfig) -> Self {
        Twilio {
            cfg,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("reqwest client"),
        }
    }
}

impl SmsSender for Twilio {
    fn send<'a>(
        &'a self,
        _session_id: &'a str,
        to: &'a str,
        body: &'a str,
    ) -> BoxFuture<'a, Result<(), SmsError>> {
        Box::pin(async move {
            let url = format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                self.cfg.twilio_base_url.trim_end_matches('/'),
                self.cfg.twilio_account_sid
            );
            let r = self
                .http
                .post(url)
                .basic_auth(
                    &self.cfg.twilio_account_sid,
                    Some(&self.cfg.twilio_auth_token),
                )
                .form(&[("To", to), ("From", self.cfg.from.as_str()), ("Body", body)])
                .send()
                .await
                .map_err(|e| {
                    SmsError::Provider(if e.is_timeout() {
                        "timed out".into()
                    } else {
                        "unreachable".into()
                    })
                })?;
            if r.status().is_success() {
                Ok(())
            } else {
                Err(SmsError::Provider(format!("HTTP {}", r.status().as_u16())))
            }
        })
    }
}

/// The last three digits of a phone number, for logs.
pub fn phone_tail(to: &str) -> String {
    let digits: String = to.chars().filter(char::is_ascii_digit).collect();
    format!("…{}", &digits[digits.len().saturating_sub(3)..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_tokens_are_redacted_and_the_rest_kept() {
        for (sent, stored) in [
            (
                "Shop: pay 5.00 GBP securely at https://pay.example.com/pay/link/Ab-9_zQ (link valid for 15 minutes)",
                "Shop: pay 5.00 GBP securely at https://pay.example.com/pay/link/[redacted] (link valid for 15 minutes)",
            ),
            ("/pay/link/a /pay/link/b.", "/pay/link/[redacted] /pay/link/[redacted]."),
            ("no link here", "no link here"),
            ("/pay/link/", "/pay/link/"),
            ("ends /pay/link/tok", "ends /pay/link/[redacted]"),
        ] {
            assert_eq!(redact_link_tokens(sent), stored);
        }
    }
}

//! SMS for digital payment links: an outbox in the session database (the embedded default,
//! listed at `GET /admin/v1/outbox`) or a Twilio-compatible HTTP API.
//!
//! Logs name the recipient's last digits and the session, never the link (its token is a
//! bearer credential for the payment page).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::psp::BoxFuture;
use crate::session::store::SessionStore;

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
    #[error(transparent)]
    Store(#[from] crate::session::store::StoreError),
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

/// Stores messages in the session database instead of sending them.
pub struct Outbox {
    store: Arc<dyn SessionStore>,
}

impl Outbox {
    /// An outbox in `store`.
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        Outbox { store }
    }
}

impl SmsSender for Outbox {
    fn send<'a>(
        &'a self,
        session_id: &'a str,
        to: &'a str,
        body: &'a str,
    ) -> BoxFuture<'a, Result<(), SmsError>> {
        Box::pin(async move {
            self.store
                .outbox_add(Some(session_id), to, body, crate::api::unix_now())?;
            Ok(())
        })
    }
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

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
///
/// The database keeps each message with its payment-link token redacted (the token opens the
/// payment page). In development the messages as sent are also held in memory, bounded, so
/// `GET /admin/v1/outbox` can show working links on a machine with no SMS provider; in
/// production it shows the redacted text only.
pub struct Outbox {
    store: Arc<dyn SessionStore>,
    /// Messages as sent, newest last (development only).
    sent: Option<std::sync::Mutex<std::collections::VecDeque<SentMessage>>>,
}

/// A message as sent, held in memory for the outbox listing.
struct SentMessage {
    seq: i64,
    at: u64,
    body: String,
}

impl Outbox {
    /// Most messages held as sent.
    pub const HELD: usize = 1000;
    /// How long a message is held as sent, seconds (payment links expire sooner).
    pub const HELD_S: u64 = 24 * 3600;

    /// An outbox in `store`; `show_links` holds messages as sent for the listing.
    pub fn new(store: Arc<dyn SessionStore>, show_links: bool) -> Self {
        Outbox {
            store,
            sent: show_links.then(Default::default),
        }
    }

    /// Message `seq` as it was sent, while it is held (development only).
    pub fn as_sent(&self, seq: i64, now: u64) -> Option<String> {
        let sent = self.sent.as_ref()?.lock().expect("outbox lock");
        sent.iter()
            .find(|m| m.seq == seq && now.saturating_sub(m.at) < Self::HELD_S)
            .map(|m| m.body.clone())
    }
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

impl SmsSender for Outbox {
    fn send<'a>(
        &'a self,
        session_id: &'a str,
        to: &'a str,
        body: &'a str,
    ) -> BoxFuture<'a, Result<(), SmsError>> {
        Box::pin(async move {
            let now = crate::api::unix_now();
            let seq =
                self.store
                    .outbox_add(Some(session_id), to, &redact_link_tokens(body), now)?;
            if let Some(sent) = &self.sent {
                let mut sent = sent.lock().expect("outbox lock");
                if sent.len() >= Self::HELD {
                    sent.pop_front();
                }
                sent.push_back(SentMessage {
                    seq,
                    at: now,
                    body: body.to_string(),
                });
            }
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

    fn store() -> (tempfile::TempDir, Arc<dyn SessionStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::session::store::SqliteStore::open(&dir.path().join("o.db")).unwrap();
        (dir, Arc::new(store))
    }

    fn send(outbox: &Outbox, body: &str) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(outbox.send("s1", "+447700900123", body))
            .unwrap();
    }

    #[test]
    fn the_store_never_holds_the_token_and_only_development_shows_it() {
        let body = "pay at http://x/pay/link/SECRET123 now";
        for show_links in [true, false] {
            let (_dir, store) = store();
            let outbox = Outbox::new(store.clone(), show_links);
            send(&outbox, body);
            let stored = store.outbox(10).unwrap();
            assert_eq!(stored[0].body, "pay at http://x/pay/link/[redacted] now");
            let shown = outbox.as_sent(stored[0].seq, crate::api::unix_now());
            assert_eq!(shown.as_deref(), show_links.then_some(body));
            // Not after the holding time.
            let later = crate::api::unix_now() + Outbox::HELD_S;
            assert_eq!(outbox.as_sent(stored[0].seq, later), None);
        }
    }

    #[test]
    fn at_most_held_messages_are_kept_as_sent() {
        let (_dir, store) = store();
        let outbox = Outbox::new(store.clone(), true);
        for i in 0..Outbox::HELD + 5 {
            send(&outbox, &format!("m{i} /pay/link/t{i}"));
        }
        let all = store.outbox(Outbox::HELD + 5).unwrap();
        let now = crate::api::unix_now();
        let shown = all
            .iter()
            .filter(|m| outbox.as_sent(m.seq, now).is_some())
            .count();
        assert_eq!(shown, Outbox::HELD);
        // The oldest went first.
        assert_eq!(outbox.as_sent(all.last().unwrap().seq, now), None);
    }
}

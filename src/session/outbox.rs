//! The embedded SMS sender: messages are stored in the session database (listed at
//! `GET /admin/v1/outbox`), not sent.

use std::sync::Arc;

use super::store::SessionStore;
use crate::clock::Clock;
use crate::psp::BoxFuture;
use crate::sms::{redact_link_tokens, SmsError, SmsSender};

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
    clock: Clock,
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
    pub fn new(store: Arc<dyn SessionStore>, show_links: bool, clock: Clock) -> Self {
        Outbox {
            store,
            sent: show_links.then(Default::default),
            clock,
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

impl SmsSender for Outbox {
    fn send<'a>(
        &'a self,
        session_id: &'a str,
        to: &'a str,
        body: &'a str,
    ) -> BoxFuture<'a, Result<(), SmsError>> {
        Box::pin(async move {
            let now = self.clock.unix_now();
            let seq = self
                .store
                .outbox_add(Some(session_id), to, &redact_link_tokens(body), now)
                .map_err(|e| SmsError::Outbox(Box::new(e)))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<dyn SessionStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::store::SqliteStore::open(&dir.path().join("o.db")).unwrap();
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
            let outbox = Outbox::new(store.clone(), show_links, Clock::system());
            send(&outbox, body);
            let stored = store.outbox(10).unwrap();
            assert_eq!(stored[0].body, "pay at http://x/pay/link/[redacted] now");
            let shown = outbox.as_sent(stored[0].seq, Clock::system().unix_now());
            assert_eq!(shown.as_deref(), show_links.then_some(body));
            // Not after the holding time.
            let later = Clock::system().unix_now() + Outbox::HELD_S;
            assert_eq!(outbox.as_sent(stored[0].seq, later), None);
        }
    }

    #[test]
    fn at_most_held_messages_are_kept_as_sent() {
        let (_dir, store) = store();
        let outbox = Outbox::new(store.clone(), true, Clock::system());
        for i in 0..Outbox::HELD + 5 {
            send(&outbox, &format!("m{i} /pay/link/t{i}"));
        }
        let all = store.outbox(Outbox::HELD + 5).unwrap();
        let now = Clock::system().unix_now();
        let shown = all
            .iter()
            .filter(|m| outbox.as_sent(m.seq, now).is_some())
            .count();
        assert_eq!(shown, Outbox::HELD);
        // The oldest went first.
        assert_eq!(outbox.as_sent(all.last().unwrap().seq, now), None);
    }
}

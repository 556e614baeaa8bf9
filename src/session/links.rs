//! Payment links: issuing, texting, opening and using the hosted page's one-time links, and the
//! attempts a link allows.

use super::*;

impl Sessions {
    /// Issues a new payment link for a live digital session (the old one stops working) and
    /// texts it to the customer.
    pub async fn reissue_link(&self, client_id: &str, id: &str) -> Result<Session, SessionError> {
        let s = self.get(client_id, id)?;
        if s.kind != SessionKind::Digital
            || !matches!(s.state, SessionState::Created | SessionState::Capturing)
        {
            return Err(SessionError::WrongState {
                from: s.state.as_str(),
                action: "re-issue a payment link (only live digital sessions have one)",
            });
        }
        let account = self.account(&s.account_id)?.clone();
        // A re-issued link gives the customer a fresh TTL, within the session's own lifetime.
        self.send_link(&s, &account).await?;
        Ok(s)
    }

    /// The session a payment-link token opens, and why it cannot be used if it cannot.
    pub fn open_link(&self, token: &str) -> Result<Session, LinkProblem> {
        let rec = self
            .inner
            .store
            .link(&token_hash(token))
            .map_err(|_| LinkProblem::Unknown)?
            .ok_or(LinkProblem::Unknown)?;
        if rec.revoked {
            return Err(LinkProblem::Replaced);
        }
        if rec.used_at.is_some() {
            return Err(LinkProblem::Used);
        }
        let s = self
            .get_any(&rec.session_id)
            .map_err(|_| LinkProblem::Unknown)?;
        if rec.expires_at <= self.inner.clock.unix_now() || s.state == SessionState::Expired {
            return Err(LinkProblem::Expired);
        }
        if s.state.is_terminal()
            || !matches!(s.state, SessionState::Created | SessionState::Capturing)
        {
            return Err(LinkProblem::Finished(s.state));
        }
        Ok(s)
    }

    /// Cards the session may still try after this one (agent sessions: captures left once
    /// the current one ends; see [`Sessions::recapture`]).
    pub fn attempts_left(&self, s: &Session) -> Result<u32, SessionError> {
        let limit = self.account(&s.account_id)?.payment_attempts as usize;
        Ok(limit.saturating_sub(self.attempts_used(&s.id)?) as u32)
    }

    /// Captures this session has started: the first, and one per recapture.
    pub(super) fn attempts_used(&self, id: &str) -> Result<usize, SessionError> {
        let again = self
            .inner
            .store
            .audit(id)?
            .iter()
            .filter(|e| e.to == SessionState::Created.as_str() && is_outcome(e.from.as_deref()))
            .count();
        Ok(1 + again)
    }

    /// Uses up a link (a card was submitted with it); false if it was used meanwhile.
    pub fn use_link(&self, token: &str) -> Result<bool, SessionError> {
        Ok(self
            .inner
            .store
            .use_link(&token_hash(token), self.inner.clock.unix_now())?)
    }

    /// A new payment link for a live digital session (earlier links stop working): its URL.
    pub fn new_link(&self, client_id: &str, id: &str) -> Result<(Session, String), SessionError> {
        let s = self.get(client_id, id)?;
        if s.kind != SessionKind::Digital
            || !matches!(s.state, SessionState::Created | SessionState::Capturing)
        {
            return Err(SessionError::WrongState {
                from: s.state.as_str(),
                action: "make a payment link (only live digital sessions have one)",
            });
        }
        let account = self.account(&s.account_id)?.clone();
        let (url, _) = self.issue_link(&s, &account)?;
        Ok((s, url))
    }

    pub(super) fn issue_link(
        &self,
        s: &Session,
        account: &AccountConfig,
    ) -> Result<(String, u64), SessionError> {
        let now = self.inner.clock.unix_now();
        // Past its expiry the session only waits for the sweep to mark it: no link for it (and
        // no "valid for" computed from a time already gone).
        if s.expires_at <= now {
            return Err(SessionError::WrongState {
                from: SessionState::Expired.as_str(),
                action: "make a payment link",
            });
        }
        let token = crate::auth::random_token();
        let expires = now.saturating_add(account.link_ttl_s).min(s.expires_at);
        self.inner
            .store
            .insert_link(&token_hash(&token), &s.id, now, expires)?;
        Ok((
            format!("{}/pay/link/{token}", self.inner.config.public_url()),
            expires,
        ))
    }

    pub(super) async fn send_link(
        &self,
        s: &Session,
        account: &AccountConfig,
    ) -> Result<(), SessionError> {
        let now = self.inner.clock.unix_now();
        let (url, expires) = self.issue_link(s, account)?;
        let phone = s
            .payment_data
            .get("CustomerPhoneNumber")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let amount = s.amount().map(|a| format!(" {a}")).unwrap_or_default();
        let name = if account.name.is_empty() {
            "Secure payment".to_string()
        } else {
            crate::card::redact::redact_card_numbers(&account.name)
        };
        let body = format!(
            "{name}: pay{amount} securely at {url} (link valid for {} minutes)",
            expires.saturating_sub(now).div_ceil(60).max(1)
        );
        match self.inner.sms.send(&s.id, &phone, &body).await {
            Ok(()) => {
                tracing::info!(session = %s.id, to = %crate::sms::phone_tail(&phone), "payment link sent")
            }
            // The session stands; the client can re-issue the link.
            Err(e) => tracing::error!(session = %s.id, error = %e, "payment link SMS failed"),
        }
        Ok(())
    }
}

/// Whether a stored state name is an outcome a session may be captured again after.
pub(super) fn is_outcome(state: Option<&str>) -> bool {
    state
        .and_then(SessionState::parse)
        .is_some_and(SessionState::may_recapture)
}

/// Why a payment link does not open the payment page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkProblem {
    /// No such link.
    Unknown,
    /// Past its time.
    Expired,
    /// Already used to pay.
    Used,
    /// A newer link replaced it.
    Replaced,
    /// The session is over.
    Finished(SessionState),
}

/// SHA-256 of a bearer token, hex: what is stored instead of the token.
pub fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

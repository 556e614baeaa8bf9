//! The GlobalPCI payment session: kinds, the state machine, and what is stored (never card data).
//!
//! ```text
//!            ┌──────────────────────────────┐
//! Created ──▶ Capturing ──▶ ReadyToSubmit ──▶ Submitting ──▶ Completed | Declined | Failed
//!    │            │  ▲            │
//!    │            │  └────────────┘ (a field is reset)
//!    │            └──▶ Failed (attempts exhausted)
//!    └────────────┴──────────────────┴──▶ Cancelled | Expired
//!
//! Declined | Failed ──▶ Created   (agent sessions: the agent asks for the card again on the
//!                                  same call, while the account's payment attempts last)
//! ```
//!
//! On a payment link, Submitting goes back to Capturing when an attempt is declined or its
//! 3-D Secure challenge fails with attempts left, or the customer backs out of a wallet
//! checkout.

use serde::{Deserialize, Serialize};
use thiserror::Error;
use utoipa::ToSchema;

/// How the session takes the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum SessionKind {
    /// IVR self-service: keys on a call, no agent.
    SelfService,
    /// Digital: an SMS link to the hosted payment page.
    Digital,
    /// Agent-assisted: keys on a call while the agent watches the masked payment UI.
    Agent,
}

impl SessionKind {
    /// Name on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::SelfService => "SelfService",
            SessionKind::Digital => "Digital",
            SessionKind::Agent => "Agent",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<SessionKind> {
        match s {
            "SelfService" => Some(SessionKind::SelfService),
            "Digital" => Some(SessionKind::Digital),
            "Agent" => Some(SessionKind::Agent),
            _ => None,
        }
    }
}

/// Where a session is in its life. See the module documentation for the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[schema(description = "Where a session is in its life")]
pub enum SessionState {
    /// Made; waiting for the call (or the customer's link) to start capture.
    Created,
    /// Keys are being collected.
    Capturing,
    /// Every field is valid; the card waits in memory for submission.
    ReadyToSubmit,
    /// The card is with the PSP.
    Submitting,
    /// Paid.
    Completed,
    /// The PSP declined.
    Declined,
    /// Capture or payment failed.
    Failed,
    /// Timed out.
    Expired,
    /// Cancelled by the API client.
    Cancelled,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("a session cannot go from {from:?} to {to:?}")]
pub struct IllegalTransition {
    /// The state it was in.
    pub from: SessionState,
    /// The state asked for.
    pub to: SessionState,
}

impl SessionState {
    /// Every state.
    pub const ALL: [SessionState; 9] = [
        SessionState::Created,
        SessionState::Capturing,
        SessionState::ReadyToSubmit,
        SessionState::Submitting,
        SessionState::Completed,
        SessionState::Declined,
        SessionState::Failed,
        SessionState::Expired,
        SessionState::Cancelled,
    ];

    /// Name on the wire (`sessionState`) and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Created => "Created",
            SessionState::Capturing => "Capturing",
            SessionState::ReadyToSubmit => "ReadyToSubmit",
            SessionState::Submitting => "Submitting",
            SessionState::Completed => "Completed",
            SessionState::Declined => "Declined",
            SessionState::Failed => "Failed",
            SessionState::Expired => "Expired",
            SessionState::Cancelled => "Cancelled",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<SessionState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Finished: nothing more happens on its own (a Declined or Failed agent session may still
    /// be started again by [`SessionState::may_recapture`]).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SessionState::Completed
                | SessionState::Declined
                | SessionState::Failed
                | SessionState::Expired
                | SessionState::Cancelled
        )
    }

    /// An outcome that took no money, after which an agent may ask for the card again.
    pub fn may_recapture(self) -> bool {
        matches!(self, SessionState::Declined | SessionState::Failed)
    }

    /// Checks a transition: the only way to make a [`Transition`], which is all the store
    /// accepts.
    pub fn to(self, to: SessionState) -> Result<Transition, IllegalTransition> {
        use SessionState::*;
        let ok = match (self, to) {
            (Created, Capturing) => true,
            (Capturing, ReadyToSubmit | Failed) => true,
            (ReadyToSubmit, Capturing | Submitting) => true,
            (Submitting, Completed | Declined | Failed) => true,
            // A payment link: a decline or a failed 3-D Secure challenge with attempts left,
            // or a wallet checkout the customer backed out of, lets the customer try again.
            (Submitting, Capturing) => true,
            // A capture interrupted by a restart starts over when the call comes back.
            (Capturing | ReadyToSubmit, Created) => true,
            (Created | Capturing | ReadyToSubmit, Cancelled | Expired) => true,
            // A new capture after an outcome that took no money (see `Sessions::recapture`).
            (Declined | Failed, Created) => true,
            _ => false,
        };
        if ok {
            Ok(Transition { from: self, to })
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }
}

/// A state change the state machine allows. Made only by [`SessionState::to`], so a store
/// given one never has to wonder whether the move is legal; the store itself then moves a
/// session only if it is still in `from` (and its SQL trigger refuses any other move).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    from: SessionState,
    to: SessionState,
}

impl Transition {
    /// The state it leaves.
    pub fn from(self) -> SessionState {
        self.from
    }

    /// The state it goes to.
    pub fn to(self) -> SessionState {
        self.to
    }
}

/// The outcome of a submitted payment: references only, never card data.
// Its schema (in /openapi.json, flattened into a session) has each field a string: a field is
// left out, never null, when there is no value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentResult {
    /// PAN masked to its last four (`************4242`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub masked_pan: Option<String>,
    /// Card brand.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub card_brand: Option<String>,
    /// The PSP's reference for the tokenized card.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub psp_token_reference: Option<String>,
    /// The PSP's transaction (payment) id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub psp_transaction_id: Option<String>,
    /// Why it did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub failure_reason: Option<String>,
}

/// A stored session. Holds no card data by construction: the card lives only in the capture.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// `sessionId`.
    pub id: String,
    /// Kind.
    pub kind: SessionKind,
    /// The API client that made it (only it may see it).
    pub client_id: String,
    /// `AccountConfigurationId`.
    pub account_id: String,
    /// The call's `CallGuid`, for voice sessions.
    pub call_guid: Option<String>,
    /// Short numeric id an IVR can key to find the session (self-service).
    pub dtmf_link_id: Option<String>,
    /// State.
    pub state: SessionState,
    /// Amount in the currency's ISO 4217 minor units (JPY: yen, GBP: pence, KWD: fils);
    /// read it as [`Session::amount`].
    pub amount_minor: Option<i64>,
    /// ISO 4217 currency.
    pub currency: String,
    /// `merchantTxnRef`.
    pub merchant_txn_ref: Option<String>,
    /// The non-sensitive `PaymentData` as posted (card-number-like text redacted), unknown keys
    /// included as metadata.
    pub payment_data: serde_json::Map<String, serde_json::Value>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub updated_at: u64,
    /// Unix seconds after which the session expires.
    pub expires_at: u64,
    /// The payment outcome, once there is one.
    pub result: PaymentResult,
    /// argon2 hash of the agent payment UI's one-time credential (agent sessions).
    pub ui_secret_hash: Option<String>,
}

impl Session {
    /// The amount with its currency, for showing and sending on (None when the session has
    /// none, or was stored under a code this build does not know).
    pub fn amount(&self) -> Option<tonegate_card::money::Money> {
        let currency = tonegate_card::money::Currency::from_code(&self.currency).ok()?;
        Some(tonegate_card::money::Money::from_minor(
            self.amount_minor?,
            currency,
        ))
    }

    /// The webhook event this session's outcome becomes, as its JSON body
    /// ([`crate::view::WebhookEvent`]).
    pub fn webhook_event(&self, event_id: &str, now: u64) -> String {
        serde_json::to_string(&crate::view::WebhookEvent::of(self, event_id, now))
            .expect("a webhook event serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::SessionState::{self, *};

    #[test]
    fn only_an_outcome_without_money_starts_again() {
        for from in SessionState::ALL {
            let again = from.to(Created).is_ok();
            let expected = matches!(from, Capturing | ReadyToSubmit | Declined | Failed);
            assert_eq!(again, expected, "{from:?} -> Created");
            assert_eq!(from.may_recapture(), matches!(from, Declined | Failed));
        }
        // Paid, cancelled and expired sessions stay finished.
        for from in [Completed, Cancelled, Expired] {
            for to in SessionState::ALL {
                assert!(from.to(to).is_err(), "{from:?} -> {to:?}");
            }
        }
        // A recapture goes through Created: never straight back to the card or the PSP.
        for to in [Capturing, ReadyToSubmit, Submitting, Completed] {
            assert!(Declined.to(to).is_err() && Failed.to(to).is_err(), "{to:?}");
        }
    }

    #[test]
    fn a_declined_agent_session_can_be_captured_and_paid_again() {
        let path = [
            Created,
            Capturing,
            ReadyToSubmit,
            Submitting,
            Declined,
            Created,
            Capturing,
            ReadyToSubmit,
            Submitting,
            Failed,
            Created,
            Capturing,
            ReadyToSubmit,
            Submitting,
            Completed,
        ];
        for w in path.windows(2) {
            assert!(w[0].to(w[1]).is_ok(), "{:?} -> {:?}", w[0], w[1]);
        }
    }
}

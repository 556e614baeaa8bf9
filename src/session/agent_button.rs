//! The agent's buttons as words that cross nodes: what a node asks the node holding a capture
//! ([`Ask`], stored in a command row) and why a submit was refused ([`SubmitAction`], carried
//! back in the answer). Shared by the capture (`capture.rs`) and the cluster (`cluster.rs`),
//! so neither depends on the other.

use super::*;

/// Why a submit was refused: the `action` of its [`SessionError::WrongState`], one set for the
/// node holding the capture and a node asking it over the store (whose answer carries the
/// words back as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SubmitAction {
    /// The card is not all keyed.
    NotComplete,
    /// The card is at the PSP already.
    Paying,
    /// No node runs a capture for the session.
    NoCapture,
}

impl SubmitAction {
    /// Every refusal, for reading one back from its words.
    pub(super) const ALL: [SubmitAction; 3] = [
        SubmitAction::NotComplete,
        SubmitAction::Paying,
        SubmitAction::NoCapture,
    ];

    /// The words the API answers with.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            SubmitAction::NotComplete => "submit (capture is not complete)",
            SubmitAction::Paying => "submit (a payment is under way)",
            SubmitAction::NoCapture => "submit (no capture in progress)",
        }
    }

    /// The refusal these words name.
    pub(super) fn parse(words: &str) -> Option<SubmitAction> {
        Self::ALL.into_iter().find(|a| a.as_str() == words)
    }

    /// The refusal, as the error the API maps.
    pub(super) fn refused(self, from: SessionState) -> SessionError {
        SessionError::WrongState {
            from: from.as_str(),
            action: self.as_str(),
        }
    }
}

/// What a node asks the node holding a capture to do: an agent's button pressed elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ask<'a> {
    /// "Submit", by this actor.
    Submit(&'a str),
    /// "Reset field".
    Reset(Field),
}

impl<'a> Ask<'a> {
    /// As stored in a command row (`NodeCommand::command`).
    pub(super) fn command(self) -> String {
        match self {
            Ask::Submit(actor) => format!("submit:{actor}"),
            Ask::Reset(field) => format!("reset:{}", field.as_str()),
        }
    }

    /// A command row's ask; `None` for one this node does not know.
    pub(super) fn parse(command: &'a str) -> Option<Ask<'a>> {
        match command.split_once(':')? {
            ("submit", actor) => Some(Ask::Submit(actor)),
            ("reset", field) => serde_json::from_value(field.into()).ok().map(Ask::Reset),
            _ => None,
        }
    }
}

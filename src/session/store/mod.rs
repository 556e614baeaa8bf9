//! Session storage: role traits (sessions, audit, links, SMS outbox, webhook queue,
//! idempotency, retention) that a backend implements one by one; SQLite (bundled) is the
//! embedded default.
//!
//! Stored: session metadata, state, non-sensitive payment data, results (references, last four,
//! brand) and an audit trail of transitions. Never a PAN, expiry or CVV: the types that hold
//! those cannot be serialised, and nothing here takes them. Link tokens and `Idempotency-Key`s
//! only as hashes.

mod postgres;
mod schema;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use thiserror::Error;

use super::model::{PaymentResult, Session, SessionKind, SessionState, Transition};

/// A storage failure.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database said no.
    #[error("session store: {0}")]
    Db(#[from] rusqlite::Error),
    /// A stored row does not decode.
    #[error("session store: corrupt row: {0}")]
    Corrupt(String),
    /// The schema could not be brought up to date (e.g. a database from a newer tonegate).
    #[error("migrating the schema: {0}")]
    Schema(String),
    /// PostgreSQL said no.
    #[error("session store: {0}")]
    Pg(#[from] tokio_postgres::Error),
    /// Another live session of the client holds this `dtmfLinkId` (two creates raced, on one
    /// node or two): the database keeps live link ids unique per client.
    #[error("session store: the dtmfLinkId is already live")]
    LinkIdTaken,
    /// No connection to the database could be had in time.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// Opening or migrating failed.
    #[error("session store {path}: {message}")]
    Open {
        /// The database file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// One audited transition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEvent {
    /// Unix seconds.
    pub at: u64,
    /// Who caused it (`client:<id>`, `agent-ui`, `caller`, `gateway`).
    pub actor: String,
    /// From state (`None` at creation).
    pub from: Option<String>,
    /// To state.
    pub to: String,
}

/// Where a result webhook stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum WebhookState {
    /// Not delivered yet; tried again at `next_at`.
    Pending,
    /// A 2xx came back.
    Delivered,
    /// Given up after the retry period.
    Failed,
}

impl WebhookState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WebhookState::Pending => "pending",
            WebhookState::Delivered => "delivered",
            WebhookState::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> WebhookState {
        match s {
            "delivered" => WebhookState::Delivered,
            "failed" => WebhookState::Failed,
            _ => WebhookState::Pending,
        }
    }
}

/// A queued result webhook: the event (never card data) and its delivery state. The signing
/// secret is not stored; it is read from the account's config at each try.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    /// Receivers deduplicate on it; every try carries the same one.
    pub event_id: String,
    /// The session it reports.
    pub session_id: String,
    /// The account whose webhook it goes to.
    pub account_id: String,
    /// Where it goes.
    pub url: String,
    /// The JSON event.
    #[serde(skip)]
    pub body: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Tries so far.
    pub attempts: u32,
    /// The next try, Unix seconds.
    pub next_at: u64,
    /// Where it stands.
    pub state: WebhookState,
    /// Why the last try failed (status or transport error; never a body).
    pub last_error: Option<String>,
}

/// One audited control event of a relay call (who changed secure mode, read or ended it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayAuditRecord {
    /// Unix seconds.
    pub at: u64,
    /// Relay call id.
    pub call_id: String,
    /// The platform's call id.
    pub call_guid: String,
    /// The client that owns the call.
    pub owner: String,
    /// Who: `client:<id>`, `admin:<id>`, `session:<id>`.
    pub actor: String,
    /// `create`, `secure_on`, `secure_off`, `secure_off_refused`, `delete`, `read`, `list`.
    pub action: String,
    /// Why.
    pub reason: String,
}

/// Which of a client's sessions [`SessionStore::list`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// Only this `CallGuid` (as stored: card-number-like runs masked).
    pub call_guid: Option<String>,
    /// Only this `merchantTxnRef` (as stored).
    pub merchant_txn_ref: Option<String>,
    /// Only sessions in this state.
    pub state: Option<SessionState>,
    /// Created at or after (Unix seconds).
    pub created_from: Option<u64>,
    /// Created before (Unix seconds).
    pub created_to: Option<u64>,
    /// Only sessions after this one in the order (creation time and id, newest first): the
    /// last of the previous page.
    pub after: Option<(u64, String)>,
    /// At most this many.
    pub limit: usize,
}

/// A create's answer kept for its `Idempotency-Key`: the key only as a hash, the answer
/// sealed (it holds the agent's access code; see `api/idempotency.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentAnswer {
    /// SHA-256 of the client, the route and the key.
    pub key_hash: String,
    /// SHA-256 of the request body, canonical JSON.
    pub request_hash: String,
    /// The session (or relay call) the create made or returned.
    pub session_id: String,
    /// The answer, sealed with a key only the gateway and the key's holder can derive.
    pub sealed: String,
    /// Unix seconds.
    pub created_at: u64,
}

/// A payment link's record (the token itself is never stored, only its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRecord {
    /// The session it pays.
    pub session_id: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// When it was used, if it was.
    pub used_at: Option<u64>,
    /// Replaced by a re-issued link.
    pub revoked: bool,
}

/// What a retention run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Closed sessions whose PaymentData (names, addresses, phone numbers) was deleted.
    pub sessions: usize,
    /// SMS messages deleted (recipient and text).
    pub messages: usize,
    /// Payment-link records deleted.
    pub links: usize,
    /// Delivered or abandoned webhooks deleted.
    pub webhooks: usize,
    /// Agent-UI events deleted (those of sessions closed before the cutoff).
    pub events: usize,
}

/// A message in the SMS outbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxMessage {
    /// Order.
    pub seq: i64,
    /// Unix seconds.
    pub at: u64,
    /// The session it is about.
    pub session_id: Option<String>,
    /// E.164 recipient.
    pub to: String,
    /// Message text.
    pub body: String,
}

/// Sessions: their rows, state changes (each audited in the same transaction) and lookups.
pub trait SessionRecords: Send + Sync {
    /// Stores a new session (and its creation in the audit trail).
    fn insert(&self, s: &Session, actor: &str) -> Result<(), StoreError>;
    /// A session by id.
    fn get(&self, id: &str) -> Result<Option<Session>, StoreError>;
    /// Writes a state change, with its audit event, if the stored state is still the one `t`
    /// leaves. Returns false when someone else changed it first.
    fn transition(
        &self,
        id: &str,
        t: Transition,
        actor: &str,
        now: u64,
    ) -> Result<bool, StoreError>;
    /// Ends a session: records `result` (if given), moves it from `from` to `to` (audited)
    /// and queues the webhook `webhook` makes of the ended session, all in one transaction, so
    /// no outcome is ever stored without its webhook. False, and nothing written, if the
    /// session was no longer in the state `t` leaves.
    fn settle(
        &self,
        id: &str,
        t: Transition,
        actor: &str,
        now: u64,
        result: Option<&PaymentResult>,
        webhook: &(dyn Fn(&Session) -> Option<WebhookDelivery> + Sync),
    ) -> Result<bool, StoreError>;
    /// Records the payment result.
    fn set_result(&self, id: &str, result: &PaymentResult, now: u64) -> Result<(), StoreError>;
    /// Forgets a session's payment-UI credential (it is single-use); false if already gone.
    fn take_ui_secret(&self, id: &str) -> Result<bool, StoreError>;
    /// Live (non-terminal) sessions whose expiry has passed.
    fn expired(&self, now: u64) -> Result<Vec<Session>, StoreError>;
    /// Sessions in any of `states`.
    fn in_states(&self, states: &[SessionState]) -> Result<Vec<Session>, StoreError>;
    /// The live session with this `dtmfLinkId`.
    fn live_by_link_id(
        &self,
        client_id: &str,
        link_id: &str,
    ) -> Result<Option<Session>, StoreError>;
    /// Whether `client_id` has a session of `kind` in `state` (an index lookup, no rows read).
    fn any_in_state(
        &self,
        client_id: &str,
        kind: SessionKind,
        state: SessionState,
    ) -> Result<bool, StoreError>;
    /// The live voice session for a call.
    fn live_by_call_guid(
        &self,
        client_id: &str,
        call_guid: &str,
    ) -> Result<Option<Session>, StoreError>;
    /// The live session of a kind for a client, account and `merchantTxnRef` (idempotent create).
    fn live_by_merchant_ref(
        &self,
        client: &str,
        account: &str,
        kind: SessionKind,
        merchant_ref: &str,
    ) -> Result<Option<Session>, StoreError>;
    /// A client's sessions that match `filter`, newest first (at most `filter.limit`).
    fn list(&self, client_id: &str, filter: &SessionFilter) -> Result<Vec<Session>, StoreError>;
    /// Live sessions by state (every live state, zeros included), for `/metrics`.
    fn live_counts(&self) -> Result<Vec<(SessionState, u64)>, StoreError>;
    /// Terminal sessions changed since `since` that have no webhook queued (a crash between
    /// the state change and queueing it).
    fn terminal_without_webhook(&self, since: u64) -> Result<Vec<Session>, StoreError>;
}

/// The audit trails: sessions' transitions and relay calls' control events.
pub trait AuditTrail: Send + Sync {
    /// The audit trail of a session, oldest first.
    fn audit(&self, id: &str) -> Result<Vec<AuditEvent>, StoreError>;
    /// Appends a relay call's control event to the audit trail.
    fn relay_audit_add(&self, e: &RelayAuditRecord) -> Result<(), StoreError>;
    /// Relay audit records, newest first, of one call or of all.
    fn relay_audit(
        &self,
        call_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RelayAuditRecord>, StoreError>;
}

/// Payment links, stored by their token's hash only.
pub trait PaymentLinks: Send + Sync {
    /// Stores a new payment link and revokes the session's earlier ones.
    fn insert_link(
        &self,
        token_hash: &str,
        session_id: &str,
        now: u64,
        expires_at: u64,
    ) -> Result<(), StoreError>;
    /// A link by its token's hash.
    fn link(&self, token_hash: &str) -> Result<Option<LinkRecord>, StoreError>;
    /// Marks a link used; false if it already was (or was revoked).
    fn use_link(&self, token_hash: &str, now: u64) -> Result<bool, StoreError>;
}

/// The SMS outbox.
pub trait SmsOutbox: Send + Sync {
    /// Adds a message to the SMS outbox; returns its `seq`.
    fn outbox_add(
        &self,
        session_id: Option<&str>,
        to: &str,
        body: &str,
        now: u64,
    ) -> Result<i64, StoreError>;
    /// The outbox, newest first (at most `limit`).
    fn outbox(&self, limit: usize) -> Result<Vec<OutboxMessage>, StoreError>;
}

/// The durable result-webhook queue.
pub trait WebhookQueue: Send + Sync {
    /// Queues a result webhook (once per event id).
    fn webhook_add(&self, w: &WebhookDelivery) -> Result<(), StoreError>;
    /// Pending webhooks due at `now`, oldest first (at most `limit`).
    fn webhooks_due(&self, now: u64, limit: usize) -> Result<Vec<WebhookDelivery>, StoreError>;
    /// Takes up to `limit` pending webhooks due at `now`, oldest first, and holds them until
    /// `until` (they are not due again before then), atomically: two claimers, in this process
    /// or on another node, never get the same delivery. A claimer that dies mid-try leaves it
    /// to be claimed again at `until` (receivers deduplicate on the event id).
    fn webhooks_claim(
        &self,
        now: u64,
        until: u64,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>, StoreError>;
    /// Records a try's outcome: delivered, to retry at `next_at`, or given up.
    fn webhook_tried(
        &self,
        event_id: &str,
        state: WebhookState,
        next_at: u64,
        error: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Webhooks not delivered (pending or given up), newest first (at most `limit`).
    fn webhooks_undelivered(&self, limit: usize) -> Result<Vec<WebhookDelivery>, StoreError>;
    /// Pending webhooks: how many, and when the oldest was queued (Unix seconds).
    fn webhook_backlog(&self) -> Result<(u64, Option<u64>), StoreError>;
}

/// Create answers remembered under their `Idempotency-Key`.
pub trait IdempotencyKeys: Send + Sync {
    /// The answer remembered for an `Idempotency-Key` (by its hash), if stored at `since` or
    /// later.
    fn idempotent_get(
        &self,
        key_hash: &str,
        since: u64,
    ) -> Result<Option<IdempotentAnswer>, StoreError>;
    /// Remembers a create's answer under its key's hash (a first answer stays), and forgets
    /// those stored before `before`.
    fn idempotent_put(&self, a: &IdempotentAnswer, before: u64) -> Result<(), StoreError>;
}

/// Deleting personal data once it is no longer needed.
pub trait Retention: Send + Sync {
    /// Deletes personal data older than `before` (Unix seconds): the PaymentData of sessions
    /// that ended before it, SMS messages, expired links and settled webhooks, so that
    /// the backend no longer holds them (SQLite: its WAL is checkpointed).
    fn forget_personal_data(&self, before: u64) -> Result<Forgotten, StoreError>;
}

/// What wakes a node: something it may want to read from the store changed. A bell may be
/// lost (a dropped connection, a lagging reader); readers then re-read, so a bell only ever
/// shortens a wait (`Resync` says "re-read everything").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bell {
    /// New agent-UI events for this session; `local`: written by this process.
    Event {
        /// The session.
        session: String,
        /// Written by this process (nothing to learn from it).
        local: bool,
    },
    /// A session was created (a node holding its call may link it).
    Session {
        /// The session.
        session: String,
        /// Created by this process.
        local: bool,
    },
    /// Commands are waiting for this node.
    Command(String),
    /// The command with this id has its answer.
    Answer(i64),
    /// Bells may have been missed (the listening connection was re-made).
    Resync,
}

impl Bell {
    /// The bell a PostgreSQL notification's payload rings (`origin`: this process's mark).
    pub(crate) fn parse(payload: &str, origin: &str) -> Option<Bell> {
        let (kind, rest) = payload.split_once(':')?;
        let from = |rest: &str| {
            rest.split_once(':')
                .map(|(o, id)| (id.to_string(), o == origin))
        };
        Some(match kind {
            "e" => from(rest).map(|(session, local)| Bell::Event { session, local })?,
            "s" => from(rest).map(|(session, local)| Bell::Session { session, local })?,
            "c" => Bell::Command(rest.to_string()),
            "a" => Bell::Answer(rest.parse().ok()?),
            _ => return None,
        })
    }
}

/// An agent-UI event on its way to the store (see [`ClusterState::events_add`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    /// The session whose log it joins.
    pub session_id: String,
    /// The event's JSON (masked: never a key).
    pub body: String,
    /// Unix seconds.
    pub at: u64,
}

/// `events` grouped by session (sessions in id order, so concurrent writers lock session rows
/// in one order), each session's events in their given order.
pub(crate) fn by_session(events: &[PendingEvent]) -> Vec<(&str, Vec<&PendingEvent>)> {
    let mut groups: std::collections::BTreeMap<&str, Vec<&PendingEvent>> = Default::default();
    for e in events {
        groups.entry(&e.session_id).or_default().push(e);
    }
    groups.into_iter().collect()
}

/// A command for the node running a session's capture (the agent pressed a button on another
/// node). Never card data: a verb, a field name, an actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCommand {
    /// Its id (the answer is written under it).
    pub id: i64,
    /// The session whose capture it acts on.
    pub session_id: String,
    /// `submit:<actor>` or `reset:<field>`.
    pub command: String,
}

/// The agent-UI event log and what several nodes share besides sessions: which node runs a
/// capture, commands between nodes, heartbeats, and the doorbell that wakes readers.
///
/// Each session's events are numbered 1, 2, … in commit order (the number is taken under the
/// session row's lock), so a reader that resumes after number n misses none and repeats none.
/// Events hold what the agent UI is shown: states, masked lengths, statuses, the brand and
/// last four once valid, the stored result; never a key.
pub trait ClusterState: Send + Sync {
    /// Whether other processes share this store (PostgreSQL): commands, heartbeats and the
    /// dead-node sweep only run then.
    fn shared(&self) -> bool {
        false
    }
    /// Bells from now on.
    fn doorbell(&self) -> tokio::sync::broadcast::Receiver<Bell>;
    /// Appends an event (JSON) to a session's log; its sequence number.
    fn event_add(&self, session_id: &str, body: &str, now: u64) -> Result<i64, StoreError>;
    /// Appends `events` to their sessions' logs in one transaction, each session's in the
    /// order given (numbered after whatever it already has), and rings each session's bell
    /// once. Events of a session that no longer exists are skipped (retention deleted it
    /// meanwhile). How many were written.
    fn events_add(&self, events: &[PendingEvent]) -> Result<usize, StoreError>;
    /// A session's events numbered after `after`, in order (at most `limit`).
    fn events_after(
        &self,
        session_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError>;
    /// Records the node that runs (or is about to run) the session's capture.
    fn set_capture_node(&self, session_id: &str, node: &str) -> Result<(), StoreError>;
    /// The node that runs the session's capture, if one was recorded.
    fn capture_node(&self, session_id: &str) -> Result<Option<String>, StoreError>;
    /// Sessions in any of `states` whose capture node is `node`.
    fn in_states_on(&self, states: &[SessionState], node: &str)
        -> Result<Vec<Session>, StoreError>;
    /// Queues a command for `node` (and rings it); its id. Single-node stores have no other
    /// node to ask.
    fn command_add(
        &self,
        _node: &str,
        _session_id: &str,
        _command: &str,
        _now: u64,
    ) -> Result<i64, StoreError> {
        Err(StoreError::Unavailable(
            "no other node shares this store".into(),
        ))
    }
    /// Takes `node`'s commands queued at `since` or later (older ones were given up by
    /// whoever asked), each once.
    fn commands_take(&self, _node: &str, _since: u64) -> Result<Vec<NodeCommand>, StoreError> {
        Ok(Vec::new())
    }
    /// Records a command's answer (and rings the asker).
    fn command_done(&self, _id: i64, _answer: &str) -> Result<(), StoreError> {
        Ok(())
    }
    /// A command's answer, once written.
    fn command_answer(&self, _id: i64) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    /// Deletes a command (answered, or given up: a node that has not taken it yet never will).
    fn command_drop(&self, _id: i64) -> Result<(), StoreError> {
        Ok(())
    }
    /// This node is alive at `now`.
    fn heartbeat(&self, _node: &str, _now: u64) -> Result<(), StoreError> {
        Ok(())
    }
    /// Nodes, other than `me`, whose last heartbeat is older than `before`.
    fn stale_nodes(&self, _me: &str, _before: u64) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    /// Forgets a dead node's heartbeat, unless it beat again at `before` or later.
    fn forget_node(&self, _node: &str, _before: u64) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Where sessions live: every role, as one object the service holds. A backend implements the
/// roles one by one; this trait comes with them.
pub trait SessionStore:
    SessionRecords
    + AuditTrail
    + PaymentLinks
    + SmsOutbox
    + WebhookQueue
    + IdempotencyKeys
    + Retention
    + ClusterState
{
}

impl<T> SessionStore for T where
    T: SessionRecords
        + AuditTrail
        + PaymentLinks
        + SmsOutbox
        + WebhookQueue
        + IdempotencyKeys
        + Retention
        + ClusterState
{
}

/// The event a stored state change adds to the session's log: as the agent UI's stream has
/// always sent it (`sessionState` and the stored `result`, references and last four only).
pub(crate) fn state_event(state: &str, result_json: &str) -> String {
    format!("{{\"sessionState\":\"{state}\",\"result\":{result_json}}}")
}

/// Looks a session up and fails politely if the row vanished.
pub fn must_get(store: &dyn SessionStore, id: &str) -> Result<Session, StoreError> {
    store
        .get(id)?
        .ok_or_else(|| StoreError::Corrupt(format!("session {id} vanished")))
}

#[allow(dead_code)]
fn _assert_object_safe(_: &dyn SessionStore) {}

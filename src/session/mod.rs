//! GlobalPCI payment sessions: the model and state machine ([`model`]), storage ([`store`]),
//! and [`Sessions`], which creates them, links voice sessions to relay calls, runs their card
//! capture, submits to the PSP and sweeps expiries.

mod agent_button;
mod capture;
mod cluster;
mod events;
mod lifecycle;
mod link_pay;
mod linking;
mod links;
pub mod outbox;
mod payment;
pub mod store;
mod webhooks;

pub use tonegate_session::{link_id, model, voice};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::capture::{CaptureRules, Field};
use crate::card::Card;
use crate::clock::Clock;
use crate::config::{AccountConfig, Config};
use crate::psp::{with_retries, ChargeOutcome, ChargeRequest, Psp, PspError};
use crate::relay::{CallHandle, Relay, SecureLease};
use model::{PaymentResult, Session, SessionKind, SessionState, Transition};
use store::{SessionStore, StoreError};
use voice::{SubmitRefused, VoiceOutput, VoiceSession};

pub use link_pay::{LinkUrls, PayStep};
pub use links::{token_hash, LinkProblem};
pub use tonegate_session::payment_data::PaymentData;
pub use voice::LiveEvent;

/// Why a session request failed.
#[derive(Debug, Error)]
pub enum SessionError {
    /// `AccountConfigurationId` names no account.
    #[error("unknown AccountConfigurationId {0:?}")]
    UnknownAccount(String),
    /// The client may not use that account.
    #[error("this client may not use AccountConfigurationId {0:?}")]
    AccountNotAllowed(String),
    /// A key the account requires is missing or empty.
    #[error("missing mandatory field {0:?}")]
    MissingField(String),
    /// A field has a bad value.
    #[error("invalid field {0:?}: {1}")]
    InvalidField(String, String),
    /// No such session (or not this client's).
    #[error("no such session")]
    NotFound,
    /// The state machine does not allow it now.
    #[error("session is {from}, cannot {action}")]
    WrongState {
        /// Current state.
        from: &'static str,
        /// What was asked.
        action: &'static str,
    },
    /// The request conflicts with another live session or with the call's secure mode.
    #[error("{0}")]
    Conflict(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A move the state machine does not allow (a gateway bug if the code named it).
    #[error(transparent)]
    Illegal(#[from] model::IllegalTransition),
    /// The gateway is shutting down: no new payment starts.
    #[error("the gateway is shutting down; try again shortly")]
    ShuttingDown,
    /// The node running the session's capture did not answer in time (it may be down: its
    /// sessions end once its heartbeat is stale).
    #[error("the node running this capture ({0}) did not answer; try again shortly")]
    NodeUnavailable(String),
    /// Every card attempt the account allows a session has been used.
    #[error("all {limit} card attempts for this session are used; start a new session")]
    AttemptsExhausted {
        /// The account's `payment_attempts`.
        limit: u32,
    },
}

impl From<tonegate_session::payment_data::PaymentDataError> for SessionError {
    fn from(e: tonegate_session::payment_data::PaymentDataError) -> Self {
        use tonegate_session::payment_data::PaymentDataError as E;
        match e {
            E::MissingField(k) => SessionError::MissingField(k),
            E::InvalidField(k, why) => SessionError::InvalidField(k, why),
        }
    }
}

/// What the agent (or shutdown) asks of a running capture task.
enum CaptureCommand {
    ResetField(Field, oneshot::Sender<bool>),
    Submit(String, oneshot::Sender<Result<Session, SessionError>>),
    /// The session ended (cancel, expiry): stop, and answer once the lease is parked, so a
    /// release that follows finds it.
    Stop(oneshot::Sender<()>),
    /// The gateway is stopping: end the capture, wiping what was keyed.
    Shutdown,
}

/// Payments running now, and whether new ones may start (not once shutdown has begun).
#[derive(Default)]
struct PaymentGate {
    running: std::sync::atomic::AtomicUsize,
    closed: std::sync::atomic::AtomicBool,
    /// Shutdown is done with the sessions: the runtime may stop under any task now.
    stopped: std::sync::atomic::AtomicBool,
}

impl PaymentGate {
    fn closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether a task should end rather than wait on a timer. A task inside a blocking store
    /// call when the runtime stops runs on after its timers are gone, and polling one then
    /// panics ("A Tokio 1.x context was found, but it is being shutdown"): every loop of
    /// the session tasks asks this before it waits.
    fn stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// What shutdown did with the work in hand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Captures ended (their sessions back to Created, the keys wiped).
    pub captures_stopped: usize,
    /// Payments that were running when shutdown began.
    pub payments_running: usize,
    /// Payments still running at the deadline (a restart marks them Failed, to be checked).
    pub payments_unfinished: usize,
}

struct Live {
    commands: mpsc::Sender<CaptureCommand>,
}

/// What every workflow of the session service shares: the store, the relay, the PSPs, the live
/// captures and the workers' wake-ups. `Sessions` is the facade over it.
struct SessionShared {
    store: Arc<dyn SessionStore>,
    /// This node's name (`[cluster] node`): recorded on the sessions it captures.
    node: String,
    config: Arc<Config>,
    relay: Relay,
    psps: HashMap<String, Arc<dyn Psp>>,
    live: Mutex<HashMap<String, Live>>,
    webhooks: crate::notify::Webhooks,
    sms: Arc<dyn crate::sms::SmsSender>,
    prompts: Arc<crate::prompts::Prompts>,
    link_guard: Mutex<link_id::LinkGuard>,
    link_counters: link_id::LinkCounters,
    outcomes: Outcomes,
    payments: PaymentGate,
    /// Stores the captures' agent-UI updates, off their tasks.
    events: events::EventWriter,
    /// Wakes the webhook worker when an event is queued.
    webhook_due: tokio::sync::Notify,
    /// When the sweep last deleted old personal data (Unix seconds; 0: not yet).
    retention_ran_at: std::sync::atomic::AtomicU64,
    /// PSP call durations go here.
    latency: Arc<crate::latency::Latency>,
    /// Wall-clock time (expiries, audit times).
    clock: Clock,
    /// Secure-mode leases of sessions whose capture has ended, by session id: they hold the
    /// call masked until the session's release (or the call's end).
    held: Mutex<HashMap<String, Vec<SecureLease>>>,
    /// Who hears that a call's self-service part is over (the SIP endpoint hangs up then).
    flow_watchers: Mutex<Vec<mpsc::UnboundedSender<CallFlowOver>>>,
    /// Link ids passed with a call before it was set up, by (owner, CallGuid): the call links
    /// to that session at once instead of listening for keys.
    expected_links: Mutex<HashMap<(String, String), String>>,
}

/// A relay call's self-service part is over: its capture ended (paid, declined, failed, or
/// cut off), or it never linked (wrong ids, no key in time, no session waiting). Prompts may
/// still be playing.
#[derive(Debug, Clone)]
pub struct CallFlowOver {
    /// The relay call.
    pub call_id: String,
}

/// Sessions' outcomes counted in this process since start (for `/metrics`).
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Payments the PSP completed.
    pub payments_completed: AtomicU64,
    /// Payments the PSP declined.
    pub payments_declined: AtomicU64,
    /// Payments that failed at or after submission (PSP error, or settled as failed).
    pub payments_failed: AtomicU64,
    /// Result webhooks delivered (a 2xx came back).
    pub webhooks_delivered: AtomicU64,
    /// Result webhooks given up after the retry period.
    pub webhooks_given_up: AtomicU64,
}

impl Outcomes {
    /// Counts a session's end: a payment outcome when it leaves `Submitting`.
    fn ended(&self, t: Transition) {
        if t.from() != SessionState::Submitting {
            return;
        }
        let counter = match t.to() {
            SessionState::Completed => &self.payments_completed,
            SessionState::Declined => &self.payments_declined,
            _ => &self.payments_failed,
        };
        counter.fetch_add(1, Relaxed);
    }
}

/// The session service. Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<SessionShared>,
}

/// A session just created, with the one-time secrets only its creator ever sees.
pub struct Created {
    /// The session.
    pub session: Session,
    /// One-time credential for the agent payment UI (agent sessions).
    pub ui_secret: Option<String>,
    /// True when an existing live session was returned instead (idempotent create).
    pub existing: bool,
}

/// What [`Sessions`] works with besides its store and configuration.
pub struct SessionServices {
    /// Voice sessions link to calls on this relay.
    pub relay: Relay,
    /// The PSP of each account, by account id.
    pub psps: HashMap<String, Arc<dyn Psp>>,
    /// Texts payment links.
    pub sms: Arc<dyn crate::sms::SmsSender>,
    /// IVR prompts.
    pub prompts: Arc<crate::prompts::Prompts>,
    /// PSP call durations go here.
    pub latency: Arc<crate::latency::Latency>,
    /// Wall-clock time.
    pub clock: Clock,
}

impl Sessions {
    /// A service over `store`, with the gateway's other parts in `services`.
    pub fn new(
        store: Arc<dyn SessionStore>,
        config: Arc<Config>,
        services: SessionServices,
    ) -> Self {
        let SessionServices {
            relay,
            psps,
            sms,
            prompts,
            latency,
            clock,
        } = services;
        let config_link = config.link.clone();
        // No session waits longer than the longest session lifetime: its failure counts need
        // not outlive that.
        let link_ttl_s = config
            .accounts
            .iter()
            .map(|a| a.session_ttl_s)
            .max()
            .unwrap_or(0)
            .max(3600);
        Sessions {
            inner: Arc::new(SessionShared {
                store,
                node: config.cluster.node.clone(),
                config,
                relay,
                psps,
                live: Mutex::new(HashMap::new()),
                held: Mutex::new(HashMap::new()),
                flow_watchers: Mutex::new(Vec::new()),
                expected_links: Mutex::new(HashMap::new()),
                webhooks: crate::notify::Webhooks::new(),
                sms,
                prompts,
                link_guard: Mutex::new(link_id::LinkGuard::new(config_link, link_ttl_s)),
                link_counters: link_id::LinkCounters::default(),
                outcomes: Outcomes::default(),
                payments: PaymentGate::default(),
                events: events::EventWriter::new(),
                webhook_due: tokio::sync::Notify::new(),
                retention_ran_at: Default::default(),
                latency,
                clock,
            }),
        }
    }

    /// Link-id tries by outcome (for `/metrics`).
    pub fn link_counters(&self) -> &link_id::LinkCounters {
        &self.inner.link_counters
    }

    /// The agent-UI event writer's counts (for `/metrics`).
    pub fn event_writer(&self) -> &events::EventWriter {
        &self.inner.events
    }

    /// Payment and webhook outcomes since start (for `/metrics`).
    pub fn outcomes(&self) -> &Outcomes {
        &self.inner.outcomes
    }

    /// The store (read-only uses: tests, audit).
    pub fn store(&self) -> &dyn SessionStore {
        &*self.inner.store
    }

    /// Whether new payments may start (false once shutdown has begun).
    pub fn accepting_payments(&self) -> bool {
        !self.inner.payments.closed()
    }

    /// Recovers sessions a restart interrupted, then starts linking new calls and sweeping
    /// expiries. Call once, inside the runtime.
    pub fn start(&self) -> Result<(), SessionError> {
        events::EventWriter::start(&self.inner);
        let now = self.inner.clock.unix_now();
        let st = &self.inner.store;
        // On a shared store, only this node's captures died with its last run; other nodes'
        // are live (a dead node's are ended by the others' heartbeat sweep).
        let mine = |states: &[SessionState]| match st.shared() {
            true => st.in_states_on(states, &self.inner.node),
            false => st.in_states(states),
        };
        for s in mine(&[SessionState::Capturing, SessionState::ReadyToSubmit])? {
            // The card was in memory only: capture starts over when the call comes back.
            st.transition(
                &s.id,
                s.state.to(SessionState::Created)?,
                "gateway:restart",
                now,
            )?;
        }
        // Outcomes whose webhook a crash kept from being queued (the last day's), then the
        // worker that delivers the queue, now and whenever it is woken or a second passes.
        for s in st.terminal_without_webhook(now.saturating_sub(86_400))? {
            self.inner.queue_webhook(&s);
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            while !inner.payments.stopped() {
                inner.deliver_webhooks().await;
                if inner.payments.stopped() {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), inner.webhook_due.notified())
                    .await;
            }
        });
        // Payments a restart interrupted: the PSP says how they ended.
        let interrupted = mine(&[SessionState::Submitting])?;
        if !interrupted.is_empty() {
            let me = self.clone();
            tokio::spawn(async move {
                for s in interrupted {
                    me.reconcile(&s, "gateway:restart").await;
                }
            });
        }
        self.start_cluster();
        let me = self.clone();
        let mut notices = self.inner.relay.watch_calls();
        tokio::spawn(async move {
            while let Some(n) = notices.recv().await {
                // Each link on its own task: one slow capture start holds up no other call.
                let me = me.clone();
                tokio::spawn(async move { me.link_call(&n.owner, &n.call_guid, &n.id).await });
            }
        });
        let me = self.clone();
        let every = Duration::from_secs(self.inner.config.store.sweep_interval_s.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            while !me.inner.payments.stopped() {
                tick.tick().await;
                if let Err(e) = me.sweep(me.inner.clock.unix_now()).await {
                    tracing::error!(error = %e, "session sweep failed");
                }
            }
        });
        Ok(())
    }

    fn account(&self, id: &str) -> Result<&AccountConfig, SessionError> {
        self.inner
            .config
            .account(id)
            .ok_or_else(|| SessionError::UnknownAccount(id.to_string()))
    }

    /// Creates a session for `client`. Digital sessions with a `merchantTxnRef` that has a
    /// live session already return that one.
    pub async fn create(
        &self,
        kind: SessionKind,
        client: &crate::auth::Client,
        account_id: &str,
        call_guid: Option<String>,
        data: PaymentData,
    ) -> Result<Created, SessionError> {
        // A card number keyed into a call id is masked where it enters, as the relay masks
        // its calls' ids, so linking still matches and nothing stores the digits.
        let call_guid = call_guid.map(|g| crate::card::redact::redact_card_numbers(&g));
        let account = self.account(account_id)?.clone();
        if !client.may_use_account(account_id) {
            return Err(SessionError::AccountNotAllowed(account_id.to_string()));
        }
        data.check_mandatory(&account.mandatory)?;
        if kind == SessionKind::Digital {
            data.customer_phone()?;
        }
        let currency = match data.currency()? {
            Some(c) => c,
            // Checked when the config was loaded.
            None => crate::card::money::Currency::from_code(&account.currency).map_err(|e| {
                SessionError::InvalidField("currency".into(), format!("the account's {e}"))
            })?,
        };
        let amount_minor = data.amount(currency)?.map(|m| m.minor());
        let merchant_ref = data.merchant_txn_ref();
        if let (SessionKind::Digital, Some(r)) = (kind, &merchant_ref) {
            if let Some(s) = self
                .inner
                .store
                .live_by_merchant_ref(&client.id, account_id, kind, r)?
            {
                return Ok(Created {
                    session: s,
                    ui_secret: None,
                    existing: true,
                });
            }
        }
        if let (SessionKind::Agent | SessionKind::SelfService, Some(guid)) = (kind, &call_guid) {
            // CallGuids are each client's own namespace: another client's calls and sessions
            // with the same string are neither looked at nor mentioned (a session links only
            // to its own client's call, see `link_call`).
            if let Some(other) = self.inner.store.live_by_call_guid(&client.id, guid)? {
                return Err(SessionError::Conflict(format!(
                    "session {} is already live for this CallGuid; cancel it first",
                    other.id
                )));
            }
        }
        let now = self.inner.clock.unix_now();
        let ui_secret = (kind == SessionKind::Agent).then(crate::auth::random_token);
        let session = Session {
            id: new_session_id(),
            kind,
            client_id: client.id.clone(),
            account_id: account_id.to_string(),
            call_guid,
            dtmf_link_id: (kind == SessionKind::SelfService)
                .then(|| self.new_link_id(&client.id))
                .transpose()?,
            state: SessionState::Created,
            amount_minor,
            currency: currency.code().to_string(),
            merchant_txn_ref: merchant_ref,
            payment_data: data.into_stored(),
            created_at: now,
            updated_at: now,
            expires_at: now + account.session_ttl_s,
            result: PaymentResult::default(),
            // SHA-256, not argon2: the code is 32 random bytes, so a slow hash adds nothing but
            // cost per session.
            ui_secret_hash: ui_secret.as_deref().map(token_hash),
        };
        let mut session = session;
        let actor = format!("client:{}", client.id);
        // A link id drawn free can be taken by a create that raced this one (here or on
        // another node); the database refuses the second, which draws again.
        let mut draws = 1;
        loop {
            match self.inner.store.insert(&session, &actor) {
                Err(StoreError::LinkIdTaken) if draws < 5 => {
                    session.dtmf_link_id = Some(self.new_link_id(&client.id)?);
                    draws += 1;
                }
                r => break r?,
            }
        }
        tracing::info!(session = %session.id, kind = session.kind.as_str(), account = %account_id, "session created");
        if let Some(guid) = session.call_guid.clone() {
            if let Some(call) = self.inner.relay.find_by_call_guid(&client.id, &guid) {
                self.link_call(&client.id, &guid, &call).await;
            }
        }
        if kind == SessionKind::Digital {
            self.send_link(&session, &account).await?;
        }
        let session = store::must_get(&*self.inner.store, &session.id)?;
        Ok(Created {
            session,
            ui_secret,
            existing: false,
        })
    }

    /// A session, if `client` owns it.
    pub fn get(&self, client_id: &str, id: &str) -> Result<Session, SessionError> {
        match self.inner.store.get(id)? {
            Some(s) if s.client_id == client_id => Ok(s),
            _ => Err(SessionError::NotFound),
        }
    }

    /// A session by id, for routes authorised some other way (payment UI credentials).
    pub fn get_any(&self, id: &str) -> Result<Session, SessionError> {
        self.inner.store.get(id)?.ok_or(SessionError::NotFound)
    }

    /// Cancels a live session.
    pub async fn cancel(&self, client_id: &str, id: &str) -> Result<Session, SessionError> {
        let s = self.get(client_id, id)?;
        self.end(
            &s,
            SessionState::Cancelled,
            &format!("client:{client_id}"),
            None,
        )
        .await?;
        store::must_get(&*self.inner.store, id).map_err(Into::into)
    }

    /// Submits the captured card to the PSP (agent sessions; self-service submits itself).
    /// Releases the session's hold on its call's secure mode (once its capture is over): keys
    /// reach the agent again where nothing else holds it (policy `session`). 409 while the
    /// capture is live or within the hold-off after the last key.
    pub async fn release(&self, client_id: &str, id: &str) -> Result<Vec<String>, SessionError> {
        let s = self.get(client_id, id)?;
        if self
            .inner
            .live
            .lock()
            .expect("live lock")
            .contains_key(&s.id)
        {
            return Err(SessionError::Conflict(
                "the session is capturing; cancel it or let it finish first".into(),
            ));
        }
        let leases = self
            .inner
            .held
            .lock()
            .expect("held lock")
            .remove(&s.id)
            .unwrap_or_default();
        let (mut released, mut refused) = (Vec::new(), None);
        for lease in leases {
            let call = lease.call().to_string();
            match lease.release().await {
                Ok(true) => released.push(call),
                Ok(false) => {}
                Err((lease, e)) => {
                    self.inner.park(lease);
                    refused.get_or_insert(e);
                }
            }
        }
        match refused {
            Some(e) => Err(SessionError::Conflict(e.to_string())),
            None => Ok(released),
        }
    }
}

fn new_session_id() -> String {
    // A UUID-shaped random id (GlobalPCI session ids are GUIDs).
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Today's (year, month) in UTC, for expiry checks.
pub fn today_utc(unix: u64) -> (u16, u8) {
    // Civil-from-days (Howard Hinnant's algorithm).
    let days = (unix / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year as u16, month as u8)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::today_utc(0), (1970, 1));
        assert_eq!(super::today_utc(1_795_376_476), (2026, 11));
        assert_eq!(super::today_utc(951_782_400), (2000, 2)); // 2000-02-29
        assert_eq!(super::today_utc(978_307_199), (2000, 12)); // 2000-12-31T23:59:59
    }
}

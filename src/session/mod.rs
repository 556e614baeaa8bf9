//! GlobalPCI payment sessions: the model and state machine ([`model`]), storage ([`store`]),
//! and [`Sessions`], which creates them, links voice sessions to relay calls, runs their card
//! capture, submits to the PSP and sweeps expiries.

pub mod link_id;
mod link_pay;
pub mod model;
pub mod outbox;
mod payment_data;
pub mod store;
pub mod voice;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::capture::{CaptureRules, Field};
use crate::card::Card;
use crate::clock::Clock;
use crate::config::{AccountConfig, Config};
use crate::psp::{with_retries, ChargeOutcome, ChargeRequest, Psp, PspError};
use crate::relay::{KeyStream, Relay, SecureLease};
use model::{PaymentResult, Session, SessionKind, SessionState, Transition};
use store::{SessionStore, StoreError};
use voice::{SubmitRefused, VoiceOutput, VoiceSession};

pub use link_pay::{LinkUrls, PayStep};
pub use payment_data::PaymentData;
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
    /// Every card attempt the account allows a session has been used.
    #[error("all {limit} card attempts for this session are used; start a new session")]
    AttemptsExhausted {
        /// The account's `payment_attempts`.
        limit: u32,
    },
}

enum Command {
    ResetField(Field, oneshot::Sender<bool>),
    Submit(String, oneshot::Sender<Result<Session, SessionError>>),
    Stop,
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

/// Holds a place among the running payments until dropped (a panic included).
struct PaymentTicket(Arc<Inner>);

impl PaymentTicket {
    /// A place, unless shutdown has begun. Counted first and checked second, so shutdown,
    /// which closes first and counts second, never misses a payment that got in.
    fn take(inner: &Arc<Inner>) -> Option<PaymentTicket> {
        use std::sync::atomic::Ordering::SeqCst;
        inner.payments.running.fetch_add(1, SeqCst);
        let ticket = PaymentTicket(inner.clone());
        (!inner.payments.closed()).then_some(ticket)
    }
}

impl Drop for PaymentTicket {
    fn drop(&mut self) {
        self.0
            .payments
            .running
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
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
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<LiveEvent>,
    last: Arc<Mutex<LiveEvent>>,
}

struct Inner {
    store: Arc<dyn SessionStore>,
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
}

impl Inner {
    /// Keeps a lease whose capture has ended until its session is released; forgets those
    /// whose call has ended (they hold nothing any more).
    fn park(&self, lease: SecureLease) {
        let mut held = self.held.lock().expect("held lock");
        held.retain(|_, leases| {
            leases.retain(|l| self.relay.has_call(l.call()));
            !leases.is_empty()
        });
        held.entry(lease.session().to_string())
            .or_default()
            .push(lease);
    }

    /// The parked lease session `session` holds on call `call`, taken back for a new capture.
    fn unpark(&self, session: &str, call: &str) -> Option<SecureLease> {
        let mut held = self.held.lock().expect("held lock");
        let leases = held.get_mut(session)?;
        let i = leases.iter().position(|l| l.call() == call)?;
        let lease = leases.swap_remove(i);
        if leases.is_empty() {
            held.remove(session);
        }
        Some(lease)
    }
    /// The result webhook for an ended session, if its account has one.
    fn webhook_for(&self, s: &Session) -> Option<store::WebhookDelivery> {
        let account = self.config.account(&s.account_id)?;
        let (Some(url), Some(_)) = (&account.webhook_url, &account.webhook_secret) else {
            return None;
        };
        let now = self.clock.unix_now();
        let event_id = crate::notify::new_event_id();
        Some(store::WebhookDelivery {
            body: s.webhook_event(&event_id, now).to_string(),
            event_id,
            session_id: s.id.clone(),
            account_id: s.account_id.clone(),
            url: url.clone(),
            created_at: now,
            attempts: 0,
            next_at: now,
            state: store::WebhookState::Pending,
            last_error: None,
        })
    }

    /// Ends a session and queues its result webhook in the same transaction (see
    /// [`SessionStore::settle`]), then wakes the webhook worker.
    fn settle(
        &self,
        id: &str,
        t: Transition,
        actor: &str,
        result: Option<&PaymentResult>,
    ) -> Result<bool, StoreError> {
        let ended = self
            .store
            .settle(id, t, actor, self.clock.unix_now(), result, &|s| {
                self.webhook_for(s)
            })?;
        if ended {
            self.webhook_due.notify_one();
            self.outcomes.ended(t);
        }
        Ok(ended)
    }

    /// Queues the webhook of a session that ended without one (a crash before this change
    /// made the two one transaction).
    fn queue_webhook(&self, s: &Session) {
        let Some(w) = self.webhook_for(s) else {
            return;
        };
        match self.store.webhook_add(&w) {
            Ok(()) => self.webhook_due.notify_one(),
            Err(e) => {
                tracing::error!(session = %s.id, error = %e, "could not queue the result webhook")
            }
        }
    }

    /// Delivers the webhooks that are due, a batch at a time; reschedules or gives up on
    /// those that fail.
    async fn deliver_webhooks(self: &Arc<Self>) {
        let retry_for = self.config.store.webhook_retry_s;
        loop {
            let now = self.clock.unix_now();
            // Claimed, not just read: another worker (another node on a shared store) does not
            // try the same ones while these are under way.
            let due = match self
                .store
                .webhooks_claim(now, now + WEBHOOK_HOLD_S, WEBHOOK_BATCH)
            {
                Ok(d) if !d.is_empty() => d,
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(error = %e, "reading the webhook queue failed");
                    return;
                }
            };
            let batch = due.len();
            let mut tries = tokio::task::JoinSet::new();
            for w in due {
                let me = self.clone();
                tries.spawn(async move {
                    let secret = me
                        .config
                        .account(&w.account_id)
                        .and_then(|a| a.webhook_secret.clone());
                    let r = match secret {
                        Some(secret) => {
                            me.webhooks
                                .deliver(&w.url, &secret, &w.event_id, &w.body, me.clock.unix_now())
                                .await
                        }
                        None => Err("the account has no webhook secret now".into()),
                    };
                    let now = me.clock.unix_now();
                    let (state, next_at, err) = match r {
                        Ok(()) => {
                            me.outcomes.webhooks_delivered.fetch_add(1, Relaxed);
                            tracing::info!(session = %w.session_id, event = %w.event_id, attempt = w.attempts + 1, "webhook delivered");
                            (store::WebhookState::Delivered, now, None)
                        }
                        Err(e) if now.saturating_sub(w.created_at) >= retry_for => {
                            me.outcomes.webhooks_given_up.fetch_add(1, Relaxed);
                            tracing::error!(session = %w.session_id, event = %w.event_id, error = %e, "webhook given up after the retry period");
                            (store::WebhookState::Failed, now, Some(e))
                        }
                        Err(e) => {
                            let next = now + crate::notify::retry_delay(w.attempts).as_secs();
                            tracing::warn!(session = %w.session_id, event = %w.event_id, error = %e, attempt = w.attempts + 1, "webhook not delivered; will retry");
                            (store::WebhookState::Pending, next, Some(e))
                        }
                    };
                    if let Err(e) = me.store.webhook_tried(&w.event_id, state, next_at, err.as_deref()) {
                        tracing::error!(event = %w.event_id, error = %e, "recording a webhook try failed");
                    }
                });
            }
            while tries.join_next().await.is_some() {}
            // A short batch was all that was due: the next wake-up takes what comes after
            // (and a try whose outcome could not be recorded is not retried in a tight loop).
            if batch < WEBHOOK_BATCH {
                return;
            }
        }
    }
}

/// Webhooks tried at once.
const WEBHOOK_BATCH: usize = 32;

/// How long a claimed webhook is held by its worker: well over one try (10 s timeout), after
/// which a worker that died mid-try leaves it to another.
const WEBHOOK_HOLD_S: u64 = 120;

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
    inner: Arc<Inner>,
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
            inner: Arc::new(Inner {
                store,
                config,
                relay,
                psps,
                live: Mutex::new(HashMap::new()),
                held: Mutex::new(HashMap::new()),
                webhooks: crate::notify::Webhooks::new(),
                sms,
                prompts,
                link_guard: Mutex::new(link_id::LinkGuard::new(config_link, link_ttl_s)),
                link_counters: link_id::LinkCounters::default(),
                outcomes: Outcomes::default(),
                payments: PaymentGate::default(),
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

    /// Shutdown: refuses new payments, ends every capture (what was keyed is wiped and the
    /// session goes back to Created, as a restart would leave it) and waits up to `wait` for
    /// payments already at the PSP to finish, so none is cut in half while there is time.
    pub async fn shut_down(&self, wait: Duration) -> ShutdownReport {
        use std::sync::atomic::Ordering::SeqCst;
        let payments = &self.inner.payments;
        payments.closed.store(true, SeqCst);
        let mut report = ShutdownReport {
            payments_running: payments.running.load(SeqCst),
            ..Default::default()
        };
        let captures: Vec<mpsc::Sender<Command>> = self
            .inner
            .live
            .lock()
            .expect("live lock")
            .values()
            .map(|l| l.commands.clone())
            .collect();
        for c in &captures {
            // A full queue means a capture busy paying: it ends when the payment does.
            let _ = c.try_send(Command::Shutdown);
        }
        report.captures_stopped = captures.len();
        let deadline = tokio::time::Instant::now() + wait;
        // Polled, not notified: this runs once, at exit.
        while tokio::time::Instant::now() < deadline
            && (payments.running.load(SeqCst) > 0
                || !self.inner.live.lock().expect("live lock").is_empty())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        report.payments_unfinished = payments.running.load(SeqCst);
        payments.stopped.store(true, SeqCst);
        report
    }

    /// Recovers sessions a restart interrupted, then starts linking new calls and sweeping
    /// expiries. Call once, inside the runtime.
    pub fn start(&self) -> Result<(), SessionError> {
        let now = self.inner.clock.unix_now();
        let st = &self.inner.store;
        for s in st.in_states(&[SessionState::Capturing, SessionState::ReadyToSubmit])? {
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
        let interrupted = st.in_states(&[SessionState::Submitting])?;
        if !interrupted.is_empty() {
            let me = self.clone();
            tokio::spawn(async move {
                for s in interrupted {
                    me.reconcile(&s, "gateway:restart").await;
                }
            });
        }
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

    pub async fn submit(&self, id: &str, actor: &str) -> Result<Session, SessionError> {
        let s = self.get_any(id)?;
        if s.state != SessionState::ReadyToSubmit {
            return Err(SessionError::WrongState {
                from: s.state.as_str(),
                action: "submit (capture is not complete)",
            });
        }
        let commands = self.live_commands(id).ok_or(SessionError::WrongState {
            from: s.state.as_str(),
            action: "submit (no capture in progress)",
        })?;
        let (tx, rx) = oneshot::channel();
        commands
            .send(Command::Submit(actor.to_string(), tx))
            .await
            .map_err(|_| SessionError::NotFound)?;
        rx.await.map_err(|_| SessionError::NotFound)?
    }

    /// The agent asks for the card again after a decline or a failure, on the same call: the
    /// session goes back to Created with its result cleared, and a new capture starts at once
    /// if its call is still on the relay (secure mode was never let go), else when the call
    /// comes back. Refused for other kinds and states, past the session's expiry, while
    /// another session is live for the call, and once the account's `payment_attempts`
    /// captures have been used.
    pub async fn recapture(
        &self,
        client_id: &str,
        id: &str,
        actor: &str,
    ) -> Result<Session, SessionError> {
        let s = self.get(client_id, id)?;
        if s.kind != SessionKind::Agent || !s.state.may_recapture() {
            return Err(SessionError::WrongState {
                from: s.state.as_str(),
                action: "ask for the card again (only a declined or failed agent session can)",
            });
        }
        let limit = self.account(&s.account_id)?.payment_attempts;
        let st = &self.inner.store;
        let used = self.attempts_used(id)?;
        if used >= limit as usize {
            return Err(SessionError::AttemptsExhausted { limit });
        }
        let now = self.inner.clock.unix_now();
        if s.expires_at <= now {
            return Err(SessionError::WrongState {
                from: s.state.as_str(),
                action: "ask for the card again (the session has expired; start a new one)",
            });
        }
        if let Some(guid) = &s.call_guid {
            if let Some(other) = st.live_by_call_guid(client_id, guid)? {
                return Err(SessionError::Conflict(format!(
                    "session {} is live for this CallGuid",
                    other.id
                )));
            }
        }
        if !st.transition(id, s.state.to(SessionState::Created)?, actor, now)? {
            return Err(SessionError::WrongState {
                from: s.state.as_str(),
                action: "ask for the card again (it changed meanwhile)",
            });
        }
        // The last outcome went out in its webhook; the new attempt starts with none.
        st.set_result(id, &PaymentResult::default(), now)?;
        tracing::info!(session = %id, attempt = used + 1, limit, "card asked for again");
        let fresh = store::must_get(&**st, id)?;
        if let Some(call) = fresh
            .call_guid
            .as_deref()
            .and_then(|g| self.inner.relay.find_by_call_guid(client_id, g))
        {
            self.start_capture(&fresh, &call).await?;
        }
        store::must_get(&**st, id).map_err(Into::into)
    }

    /// The agent's "Reset field".
    pub async fn reset_field(&self, id: &str, field: Field) -> Result<bool, SessionError> {
        let commands = self.live_commands(id).ok_or(SessionError::NotFound)?;
        let (tx, rx) = oneshot::channel();
        commands
            .send(Command::ResetField(field, tx))
            .await
            .map_err(|_| SessionError::NotFound)?;
        rx.await.map_err(|_| SessionError::NotFound)
    }

    /// The latest live state and a stream of updates (agent UI). `None` if nothing is live.
    pub fn subscribe(&self, id: &str) -> Option<(LiveEvent, broadcast::Receiver<LiveEvent>)> {
        let live = self.inner.live.lock().expect("live lock");
        live.get(id).map(|l| {
            (
                l.last.lock().expect("last lock").clone(),
                l.events.subscribe(),
            )
        })
    }

    /// Pays a digital session with a card from the hosted payment page: tokenize, charge,
    /// record. Returns the session afterwards.
    pub async fn pay_with_card(
        &self,
        id: &str,
        card: Card,
        actor: &str,
    ) -> Result<Session, SessionError> {
        if self.inner.payments.closed() {
            return Err(SessionError::ShuttingDown);
        }
        let s = self.get_any(id)?;
        let st = &self.inner.store;
        let now = self.inner.clock.unix_now();
        if s.state == SessionState::Created {
            st.transition(
                id,
                SessionState::Created.to(SessionState::Capturing)?,
                actor,
                now,
            )?;
        }
        let s = store::must_get(&**st, id)?;
        if s.state != SessionState::Capturing {
            return Err(SessionError::WrongState {
                from: s.state.as_str(),
                action: "take a card",
            });
        }
        st.transition(
            id,
            SessionState::Capturing.to(SessionState::ReadyToSubmit)?,
            actor,
            now,
        )?;
        pay_to_the_end(&self.inner, &s, card, actor, "digital", None).await?;
        store::must_get(&**st, id).map_err(Into::into)
    }

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
    fn attempts_used(&self, id: &str) -> Result<usize, SessionError> {
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

    /// A wallet paid the PSP directly (Apple Pay in Messages): completes the session if, and
    /// only if, the PSP confirms a successful payment for it of the right amount.
    pub async fn confirm_external_payment(
        &self,
        id: &str,
        actor: &str,
    ) -> Result<Session, SessionError> {
        let s = self.get_any(id)?;
        if !matches!(s.state, SessionState::Created | SessionState::Capturing) {
            return Err(SessionError::WrongState {
                from: s.state.as_str(),
                action: "take a wallet payment",
            });
        }
        let psp = self
            .inner
            .psps
            .get(&s.account_id)
            .cloned()
            .ok_or(SessionError::NotFound)?;
        let found = psp_call(&self.inner.latency, "find_payment", || {
            psp.find_payment(&s.id, None)
        })
        .await
        .map_err(|e| {
            SessionError::InvalidField("requestIdentifier".into(), format!("PSP check failed: {e}"))
        })?;
        let Some((txn, amount)) = found else {
            return Err(SessionError::InvalidField(
                "requestIdentifier".into(),
                "the PSP holds no successful payment for this session".into(),
            ));
        };
        if Some(amount) != s.amount_minor {
            return Err(SessionError::InvalidField(
                "requestIdentifier".into(),
                "the PSP's payment amount does not match the session".into(),
            ));
        }
        let st = &self.inner.store;
        let now = self.inner.clock.unix_now();
        let mut state = s.state;
        for to in [
            SessionState::Capturing,
            SessionState::ReadyToSubmit,
            SessionState::Submitting,
        ] {
            if let Ok(t) = state.to(to) {
                if st.transition(id, t, actor, now)? {
                    state = to;
                }
            }
        }
        let result = PaymentResult {
            psp_transaction_id: Some(txn),
            ..Default::default()
        };
        self.inner.settle(
            id,
            SessionState::Submitting.to(SessionState::Completed)?,
            "psp",
            Some(&result),
        )?;
        store::must_get(&**st, id).map_err(Into::into)
    }

    fn issue_link(
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

    async fn send_link(&self, s: &Session, account: &AccountConfig) -> Result<(), SessionError> {
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

    fn live_commands(&self, id: &str) -> Option<mpsc::Sender<Command>> {
        self.inner
            .live
            .lock()
            .expect("live lock")
            .get(id)
            .map(|l| l.commands.clone())
    }

    fn new_link_id(&self, client_id: &str) -> Result<String, SessionError> {
        let digits = self.inner.config.link.digits;
        for _ in 0..100 {
            let id = link_id::generate(digits, &mut rand::thread_rng());
            if self.inner.store.live_by_link_id(client_id, &id)?.is_none() {
                return Ok(id);
            }
        }
        Err(SessionError::InvalidField(
            "dtmfLinkId".into(),
            "no free link id".into(),
        ))
    }

    /// `owner` created relay call `call_id` with `call_guid`: start capture for `owner`'s live
    /// voice session on it, if there is one (another client's sessions never link to it).
    pub async fn link_call(&self, owner: &str, call_guid: &str, call_id: &str) {
        let Ok(Some(s)) = self.inner.store.live_by_call_guid(owner, call_guid) else {
            // No session names this call: listen for a session's dtmfLinkId keyed on it.
            self.listen_for_link_id(owner, call_id).await;
            return;
        };
        if let Err(e) = self.start_capture(&s, call_id).await {
            tracing::warn!(session = %s.id, error = %e, "could not start capture");
        }
    }

    /// Collects keys on an unlinked call; an id that is one of the call owner's waiting
    /// self-service sessions' `dtmfLinkId` starts that session's capture on this call. Wrong
    /// ids, within the limits of [`link_id`], get "invalid entry"; the call stops listening
    /// after `link.tries_per_call` of them or two minutes. (Under policy `call` the keys are
    /// masked from the agent all along; under `session` a link id is not card data.)
    async fn listen_for_link_id(&self, owner: &str, call_id: &str) {
        // Only while some self-service session of the call's owner is still waiting for its call.
        let waiting = self
            .inner
            .store
            .any_in_state(owner, SessionKind::SelfService, SessionState::Created)
            .unwrap_or(false);
        if !waiting {
            return;
        }
        let relay = self.inner.relay.clone();
        let Ok(mut keys) = relay.key_stream(call_id).await else {
            return;
        };
        if relay.listen(call_id, true).await.is_err() {
            return;
        }
        let me = self.clone();
        let call_id = call_id.to_string();
        let owner = owner.to_string();
        let digits_wanted = self.inner.config.link.digits;
        tokio::spawn(async move {
            let mut digits = String::new();
            let mut wrong = 0;
            let tries = me
                .inner
                .link_guard
                .lock()
                .expect("link lock")
                .tries_per_call();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while !me.inner.payments.stopped() {
                let Ok(Some(k)) = tokio::time::timeout_at(deadline, keys.recv()).await else {
                    break;
                };
                match k.key().digit() {
                    Some(d) => digits.push((b'0' + d) as char),
                    None => {
                        digits.clear();
                        continue;
                    }
                }
                if digits.len() < digits_wanted {
                    continue;
                }
                let keyed = std::mem::take(&mut digits);
                match me.try_link_id(&owner, &keyed) {
                    Some(s) => {
                        tracing::info!(session = %s.id, call = %call_id, "call linked by dtmfLinkId");
                        // The capture becomes the call's one key subscriber.
                        drop(keys);
                        if let Err(e) = me.start_capture(&s, &call_id).await {
                            tracing::warn!(session = %s.id, error = %e, "could not start capture");
                        }
                        return;
                    }
                    None => {
                        wrong += 1;
                        if let Some(c) = me.inner.prompts.get("en", "invalid_entry") {
                            let _ = relay.play(&call_id, vec![c]).await;
                        }
                        if wrong >= tries {
                            me.inner
                                .link_counters
                                .call_limit
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
            let _ = relay.listen(&call_id, false).await;
        });
    }

    /// The waiting self-service session of `owner` whose link id is `id`, if the limits let
    /// the try through and the session is not locked; counts the outcome.
    fn try_link_id(&self, owner: &str, id: &str) -> Option<Session> {
        use link_id::Admission;
        let counters = &self.inner.link_counters;
        let now = self.inner.clock.unix_now();
        let admitted = self
            .inner
            .link_guard
            .lock()
            .expect("link lock")
            .admit(owner, id, now, counters);
        if admitted != Admission::Lookup {
            return None;
        }
        let found = self
            .inner
            .store
            .live_by_link_id(owner, id)
            .ok()
            .flatten()
            .filter(|s| s.kind == SessionKind::SelfService && s.state == SessionState::Created);
        let mut guard = self.inner.link_guard.lock().expect("link lock");
        match found {
            Some(s) if !guard.locked(&s.id) => {
                guard.forget(&s.id);
                counters
                    .linked
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some(s)
            }
            _ => {
                let waiting: Vec<String> = self
                    .inner
                    .store
                    .in_states(&[SessionState::Created])
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|s| s.kind == SessionKind::SelfService && s.client_id == owner)
                    .map(|s| s.id)
                    .collect();
                guard.failed(owner, waiting.iter().map(String::as_str), now, counters);
                None
            }
        }
    }

    /// Starts capture for voice session `s` on relay call `call_id`.
    pub async fn start_capture(&self, s: &Session, call_id: &str) -> Result<(), SessionError> {
        if s.kind == SessionKind::Digital || s.state != SessionState::Created {
            return Ok(());
        }
        if self
            .inner
            .live
            .lock()
            .expect("live lock")
            .contains_key(&s.id)
        {
            return Ok(());
        }
        let account = self.account(&s.account_id)?.clone();
        let relay = &self.inner.relay;
        let Ok(keys) = relay.key_stream(call_id).await else {
            return Ok(());
        };
        // Secure mode held before the session captures, let alone prompts: from here no key
        // reaches the agent until the session is released or the call ends. Where it cannot
        // be held, the capture does not start (fail closed). A session capturing again on the
        // call (after a decline) takes back the lease its last capture kept.
        let _ = relay.listen(call_id, false).await;
        let lease = match self.inner.unpark(&s.id, call_id) {
            Some(lease) => {
                lease.capture_resumed();
                lease
            }
            None => relay.lease_secure(call_id, &s.id).await.map_err(|e| {
                SessionError::Conflict(format!("secure mode could not be held on the call: {e}"))
            })?,
        };
        let moved = self.inner.store.transition(
            &s.id,
            SessionState::Created.to(SessionState::Capturing)?,
            "gateway",
            self.inner.clock.unix_now(),
        );
        if !matches!(moved, Ok(true)) {
            // The session changed meanwhile (cancelled, expired): it captures nothing, so its
            // lease is given up at once where the hold-off lets it, else kept for its release.
            lease.capture_ended();
            if let Err((lease, _)) = lease.release().await {
                self.inner.park(lease);
            }
            return moved.map(|_| ()).map_err(Into::into);
        }
        let (commands, commands_rx) = mpsc::channel(16);
        let (events, _) = broadcast::channel(128);
        let first = LiveEvent {
            session_state: SessionState::Capturing,
            capture_event: None,
            capture: None,
            result: None,
        };
        let last = Arc::new(Mutex::new(first));
        self.inner.live.lock().expect("live lock").insert(
            s.id.clone(),
            Live {
                commands,
                events: events.clone(),
                last: last.clone(),
            },
        );
        let task = CaptureTask {
            inner: self.inner.clone(),
            session: store::must_get(&*self.inner.store, &s.id)?,
            account,
            call_id: call_id.to_string(),
            lease,
            keys,
            commands: commands_rx,
            events,
            last,
        };
        tracing::info!(session = %s.id, call = %call_id, "capture started");
        tokio::spawn(task.run());
        Ok(())
    }

    async fn sweep(&self, now: u64) -> Result<(), SessionError> {
        use std::sync::atomic::Ordering;
        let ran = self.inner.retention_ran_at.load(Ordering::Relaxed);
        if now >= ran + RETENTION_EVERY_S {
            self.inner.retention_ran_at.store(now, Ordering::Relaxed);
            if let Err(e) = self.forget_personal_data(now) {
                tracing::error!(error = %e, "deleting personal data past its retention failed; the next hour tries again");
            }
        }
        for s in self.inner.store.expired(now)? {
            if self.inner.payments.stopped() {
                return Ok(());
            }
            self.end(&s, SessionState::Expired, "gateway:expiry", None)
                .await?;
            tracing::info!(session = %s.id, "session expired");
        }
        // A payment is never in Submitting this long (PSP calls time out and retry within a
        // minute or two): one that is, lost its outcome (a database error after the charge).
        for s in self.inner.store.in_states(&[SessionState::Submitting])? {
            if self.inner.payments.stopped() {
                return Ok(());
            }
            if s.updated_at + STUCK_SUBMITTING_S <= now {
                self.reconcile(&s, "gateway:reconcile").await;
            }
        }
        Ok(())
    }

    /// Deletes the personal data of sessions closed `store.personal_data_days` before `now`
    /// (the sweep runs this hourly).
    pub fn forget_personal_data(&self, now: u64) -> Result<store::Forgotten, SessionError> {
        let days = self.inner.config.store.personal_data_days;
        let before = now.saturating_sub(days.saturating_mul(86_400));
        let gone = self.inner.store.forget_personal_data(before)?;
        if gone != store::Forgotten::default() {
            tracing::info!(
                sessions = gone.sessions,
                messages = gone.messages,
                links = gone.links,
                webhooks = gone.webhooks,
                days,
                "personal data past its retention deleted"
            );
        }
        Ok(gone)
    }

    /// Settles a session whose payment's outcome was lost (a restart or a failed write
    /// mid-payment) from what the PSP holds for it: `Completed` with its transaction if the PSP
    /// has a successful payment for the session, else `Failed`; the result webhook follows.
    /// Left in `Submitting`, to be tried again by the sweep, when the PSP cannot be asked.
    async fn reconcile(&self, s: &Session, actor: &str) {
        let found = match self.inner.psps.get(&s.account_id) {
            Some(psp) => {
                // A challenge or hosted checkout still open is closed first, so that nothing
                // can be paid once the session has ended; one paid meanwhile is the answer.
                let mut settled = None;
                if let Some(id) = s.result.psp_transaction_id.as_deref() {
                    match psp_call(&self.inner.latency, "abandon", || psp.abandon(id)).await {
                        Ok(crate::psp::PaymentStatus::Succeeded {
                            transaction_id,
                            amount_minor,
                            ..
                        }) => settled = Some(Ok(Some((transaction_id, amount_minor)))),
                        Ok(_) => {}
                        // A checkout that cannot be closed might still be paid: wait.
                        Err(e) if id.starts_with("cs_") => settled = Some(Err(e)),
                        Err(_) => {}
                    }
                }
                match settled {
                    Some(r) => r,
                    None => {
                        psp_call(&self.inner.latency, "find_payment", || {
                            psp.find_payment(&s.id, s.result.psp_transaction_id.as_deref())
                        })
                        .await
                    }
                }
            }
            None => Ok(None),
        };
        let (to, result) = match found {
            Ok(Some((txn, amount))) if Some(amount) == s.amount_minor => (
                SessionState::Completed,
                PaymentResult {
                    psp_transaction_id: Some(txn),
                    failure_reason: None,
                    ..s.result.clone()
                },
            ),
            Ok(Some((txn, _))) => (
                SessionState::Failed,
                PaymentResult {
                    psp_transaction_id: Some(txn),
                    failure_reason: Some(
                        "interrupted while submitting; the PSP's payment amount does not match the session"
                            .into(),
                    ),
                    ..s.result.clone()
                },
            ),
            Ok(None) => (
                SessionState::Failed,
                PaymentResult {
                    failure_reason: Some(
                        "interrupted while submitting; the PSP holds no payment for this session"
                            .into(),
                    ),
                    ..s.result.clone()
                },
            ),
            Err(e) => {
                tracing::warn!(session = %s.id, error = %e, "cannot reconcile an interrupted payment yet; the sweep tries again");
                return;
            }
        };
        let settled = match SessionState::Submitting.to(to) {
            Ok(t) => self
                .inner
                .settle(&s.id, t, actor, Some(&result))
                .map_err(SessionError::from),
            Err(e) => Err(e.into()),
        };
        match settled {
            Ok(true) => {
                tracing::info!(session = %s.id, state = to.as_str(), "interrupted payment reconciled with the PSP");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(session = %s.id, error = %e, "reconciling an interrupted payment failed")
            }
        }
    }

    /// Moves a live session to a terminal state and stops its capture.
    async fn end(
        &self,
        s: &Session,
        to: SessionState,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<(), SessionError> {
        let t = s.state.to(to).map_err(|_| SessionError::WrongState {
            from: s.state.as_str(),
            action: if to == SessionState::Cancelled {
                "cancel"
            } else {
                "end"
            },
        })?;
        let result = reason.map(|r| PaymentResult {
            failure_reason: Some(r.to_string()),
            ..s.result.clone()
        });
        if !self.inner.settle(&s.id, t, actor, result.as_ref())? {
            return Err(SessionError::WrongState {
                from: s.state.as_str(),
                action: "change state (it changed meanwhile)",
            });
        }
        let live = self.inner.live.lock().expect("live lock").remove(&s.id);
        if let Some(l) = live {
            let _ = l.commands.send(Command::Stop).await;
            let _ = l.events.send(LiveEvent {
                session_state: to,
                capture_event: None,
                capture: None,
                result: None,
            });
        }
        Ok(())
    }
}

/// Whether a stored state name is an outcome a session may be captured again after.
fn is_outcome(state: Option<&str>) -> bool {
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

/// The thin async driver of one linked voice session's [`VoiceSession`], which owns the
/// capture (and so the card) until it is paid, failed or stopped.
struct CaptureTask {
    inner: Arc<Inner>,
    session: Session,
    account: AccountConfig,
    call_id: String,
    /// Secure mode on the call, held for as long as the session may hear keys.
    lease: SecureLease,
    keys: KeyStream,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<LiveEvent>,
    last: Arc<Mutex<LiveEvent>>,
}

impl CaptureTask {
    /// Drives the [`VoiceSession`]: keys, commands and its deadlines in; its outputs carried
    /// out against the relay, the store and the live subscribers.
    async fn run(mut self) {
        let start = tokio::time::Instant::now();
        let ms = move || start.elapsed().as_millis() as u64;
        let rules = CaptureRules {
            fields: self.account.fields.clone(),
            max_attempts: self.account.max_attempts,
            inter_digit_timeout_ms: self.account.inter_digit_timeout_s * 1000,
            first_key_timeout_ms: self.account.first_key_timeout_s * 1000,
            ready_hold_ms: self.account.card_hold_s * 1000,
            today: today_utc(self.inner.clock.unix_now()),
        };
        let mut voice = VoiceSession::new(self.session.kind, rules, ms());
        // Who ends a capture that is not over: the call, or the gateway stopping.
        let mut ended_by = "gateway:call-ended";
        loop {
            self.carry_out(&mut voice).await;
            if voice.is_over() {
                break;
            }
            if self.inner.payments.stopped() {
                ended_by = "gateway:shutdown";
                break;
            }
            let deadline = voice
                .poll_timeout()
                .map(|d| start + Duration::from_millis(d));
            tokio::select! {
                k = self.keys.recv() => match k {
                    Some(k) => voice.key(k.key(), ms()),
                    // The call ended: the session stays, waiting for a new call.
                    None => break,
                },
                c = self.commands.recv() => match c {
                    Some(Command::ResetField(f, ack)) => {
                        let _ = ack.send(voice.reset_field(f, ms()));
                    }
                    Some(Command::Submit(actor, ack)) => {
                        let r = self.submit(&mut voice, &actor).await;
                        let _ = ack.send(r);
                        if voice.is_over() {
                            break;
                        }
                    }
                    Some(Command::Shutdown) => {
                        ended_by = "gateway:shutdown";
                        break;
                    }
                    Some(Command::Stop) | None => break,
                },
                _ = sleep_until_opt(deadline) => voice.handle_timeout(ms()),
            }
        }
        let state = voice.state();
        // The card keyed so far goes with `voice`, before the session is put back.
        drop(voice);
        self.finish(state, ended_by).await;
    }

    /// An agent's (or the API's) submit, answered with the stored session once paid.
    async fn submit(
        &mut self,
        voice: &mut VoiceSession,
        actor: &str,
    ) -> Result<Session, SessionError> {
        if self.inner.payments.closed() {
            return Err(SessionError::ShuttingDown);
        }
        if let Err(e) = voice.submit(actor) {
            let action = match e {
                SubmitRefused::NotComplete => "submit (capture is not complete)",
                SubmitRefused::Paying => "submit (a payment is under way)",
            };
            let from = voice.state().as_str();
            return Err(SessionError::WrongState { from, action });
        }
        // The card comes out as `Pay` in this very drain; should it ever not, say so rather
        // than take down the task that holds the capture.
        self.carry_out(voice).await.unwrap_or_else(|| {
            Err(SessionError::Conflict(
                "the payment did not start; check the session".into(),
            ))
        })
    }

    /// Does what `voice` asks until it has nothing more; the payment's answer, if one ran.
    async fn carry_out(
        &mut self,
        voice: &mut VoiceSession,
    ) -> Option<Result<Session, SessionError>> {
        let mut paid = None;
        while let Some(out) = voice.poll_output() {
            match out {
                VoiceOutput::StopPrompt => {
                    let _ = self.inner.relay.stop_prompt(&self.call_id).await;
                }
                VoiceOutput::Say(names) => self.say(names).await,
                VoiceOutput::Transition { transition, actor } => {
                    let moved = self.inner.store.transition(
                        &self.session.id,
                        transition,
                        actor,
                        self.inner.clock.unix_now(),
                    );
                    voice.transitioned(matches!(moved, Ok(true)));
                }
                VoiceOutput::Failed(reason) => {
                    let result = PaymentResult {
                        failure_reason: Some(reason),
                        ..Default::default()
                    };
                    let _ = self.inner.store.set_result(
                        &self.session.id,
                        &result,
                        self.inner.clock.unix_now(),
                    );
                }
                VoiceOutput::Publish(e) => self.publish(e),
                VoiceOutput::Pay { card, actor } => {
                    let r = pay_to_the_end(&self.inner, &self.session, card, &actor, "voice", None)
                        .await;
                    if let Err(SessionError::ShuttingDown) = r {
                        // Refused before it began (the card went with it): nothing to announce.
                        voice.abandon();
                        return Some(Err(SessionError::ShuttingDown));
                    }
                    match store::must_get(&*self.inner.store, &self.session.id) {
                        Ok(s) => {
                            voice.paid(s.state, s.result.clone());
                            paid = Some(r.map(|_| s));
                        }
                        Err(e) => {
                            // How the payment ended is unknown here: the sweep reconciles it.
                            tracing::error!(session = %self.session.id, error = %e, "session unreadable after payment");
                            voice.abandon();
                            return Some(Err(e.into()));
                        }
                    }
                }
                VoiceOutput::Over => break,
            }
        }
        paid
    }

    /// Plays prompts to the caller.
    async fn say(&self, names: &[&str]) {
        let clips: Vec<_> = names
            .iter()
            .filter_map(|n| self.inner.prompts.get(&self.account.prompts, n))
            .collect();
        if !clips.is_empty() {
            let _ = self.inner.relay.play(&self.call_id, clips).await;
        }
    }

    fn publish(&self, e: LiveEvent) {
        *self.last.lock().expect("last lock") = e.clone();
        let _ = self.events.send(e);
    }

    async fn finish(self, state: SessionState, ended_by: &str) {
        // Secure mode stays on: the next thing a caller does after a decline is key another
        // card. Only an explicit release (or the call's end) lets keys through again.
        self.lease.capture_ended();
        self.inner.park(self.lease);
        self.inner
            .live
            .lock()
            .expect("live lock")
            .remove(&self.session.id);
        // The call went away (or the gateway is stopping) mid-capture: back to Created, to
        // start over on a new call. An outcome stays as it is: only the agent's recapture
        // starts a declined or failed session again.
        let mid_capture = matches!(state, SessionState::Capturing | SessionState::ReadyToSubmit);
        if let Some(t) = state.to(SessionState::Created).ok().filter(|_| mid_capture) {
            let _ = self.inner.store.transition(
                &self.session.id,
                t,
                ended_by,
                self.inner.clock.unix_now(),
            );
        }
        tracing::info!(session = %self.session.id, state = state.as_str(), "capture ended");
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A PSP call with its retries, timed into the `psp_call_duration_seconds` histogram.
async fn psp_call<T, F, Fut>(
    latency: &crate::latency::Latency,
    operation: &'static str,
    op: F,
) -> Result<T, PspError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PspError>>,
{
    let started = std::time::Instant::now();
    let r = with_retries(op).await;
    latency.observe_psp(
        operation,
        crate::latency::psp_outcome(&r),
        started.elapsed(),
    );
    r
}

/// How often the sweep deletes personal data past its retention, seconds.
const RETENTION_EVERY_S: u64 = 3600;

/// Seconds in `Submitting` after which the sweep asks the PSP how the payment ended.
const STUCK_SUBMITTING_S: u64 = 600;

/// [`pay`] on a task of its own, counted among the running payments: a caller that goes away
/// (a closed browser tab, a cut connection) cannot stop a payment half-way, and shutdown waits
/// for it. Refused once shutdown has begun.
async fn pay_to_the_end(
    inner: &Arc<Inner>,
    s: &Session,
    card: Card,
    actor: &str,
    channel: &'static str,
    link: Option<link_pay::LinkTry>,
) -> Result<PayStep, SessionError> {
    let Some(ticket) = PaymentTicket::take(inner) else {
        return Err(SessionError::ShuttingDown);
    };
    let (s, actor) = (s.clone(), actor.to_string());
    tokio::spawn(async move {
        let r = pay(&ticket.0, &s, card, &actor, channel, link.as_ref()).await;
        drop(ticket);
        r
    })
    .await
    .unwrap_or_else(|e| {
        tracing::error!(error = %e, "payment task failed");
        Err(SessionError::Conflict(
            "the payment failed unexpectedly; check the session".into(),
        ))
    })
}

/// Tokenize (once), wipe the card, charge with the token (retried under one idempotency key),
/// store the result and the final state. The session must be ReadyToSubmit.
///
/// On a payment link (`link`), a challenge the bank asks for leaves the session in
/// Submitting for the customer's browser to complete ([`PayStep::Challenge`]), and a decline
/// that leaves attempts puts it back to Capturing ([`PayStep::TryAgain`]). Each attempt has its
/// own idempotency keys, so a new card is a new request; only one is ever in flight, as only
/// one can hold Submitting.
async fn pay(
    inner: &Inner,
    s: &Session,
    card: Card,
    actor: &str,
    channel: &str,
    link: Option<&link_pay::LinkTry>,
) -> Result<PayStep, SessionError> {
    let st = &inner.store;
    if !st.transition(
        &s.id,
        SessionState::ReadyToSubmit.to(SessionState::Submitting)?,
        actor,
        inner.clock.unix_now(),
    )? {
        return Err(SessionError::WrongState {
            from: "not ReadyToSubmit",
            action: "submit",
        });
    }
    let attempt = link_pay::attempts_made(&**st, &s.id)?;
    // The first attempt keeps the keys it always had (payments in flight across an upgrade).
    let suffix = if attempt <= 1 {
        String::new()
    } else {
        format!("-{attempt}")
    };
    let psp = inner.psps.get(&s.account_id).cloned();
    let mut result = PaymentResult {
        masked_pan: Some(card.pan.masked()),
        card_brand: Some(card.pan.brand().name().to_string()),
        ..Default::default()
    };
    let outcome: Result<ChargeOutcome, PspError> = match &psp {
        None => Err(PspError::Rejected(
            "no PSP configured for this account".into(),
        )),
        Some(psp) => {
            let tok_key = format!("tok-{}{suffix}", s.id);
            let token =
                psp_call(&inner.latency, "tokenize", || psp.tokenize(&card, &tok_key)).await;
            // The token exists (or never will): the card goes now.
            drop(card);
            match token {
                Err(e) => Err(e),
                Ok(token) => {
                    result.psp_token_reference = Some(token.token_ref.clone());
                    let pay_key = format!("pay-{}{suffix}", s.id);
                    let req = ChargeRequest {
                        token: &token,
                        amount_minor: s.amount_minor.unwrap_or(0),
                        currency: &s.currency,
                        merchant_txn_ref: s.merchant_txn_ref.as_deref(),
                        session_id: &s.id,
                        channel,
                        idempotency_key: &pay_key,
                        payment_id: None,
                        return_url: link.map(|l| l.return_url.as_str()),
                    };
                    // The payment's id is stored before it is charged: if the charge's answer
                    // is lost, reconciliation reads that payment, not a list of recent ones.
                    let created = psp_call(&inner.latency, "create_payment", || {
                        psp.create_payment(req.clone())
                    })
                    .await;
                    match created {
                        Err(e) => Err(e),
                        Ok(payment_id) => {
                            if let Some(id) = &payment_id {
                                result.psp_transaction_id = Some(id.clone());
                                st.set_result(&s.id, &result, inner.clock.unix_now())?;
                            }
                            let req = ChargeRequest {
                                payment_id: payment_id.as_deref(),
                                ..req
                            };
                            psp_call(&inner.latency, "charge", || psp.charge(req.clone())).await
                        }
                    }
                }
            }
        }
    };
    let to = match outcome {
        Ok(ChargeOutcome::Approved { transaction_id }) => {
            result.psp_transaction_id = Some(transaction_id);
            SessionState::Completed
        }
        Ok(ChargeOutcome::Declined {
            transaction_id,
            code,
        }) => {
            result.psp_transaction_id = transaction_id;
            result.failure_reason = Some(crate::card::redact::redact_card_numbers(&code));
            SessionState::Declined
        }
        Ok(ChargeOutcome::RequiresAction {
            transaction_id,
            redirect_url,
        }) => {
            result.psp_transaction_id = Some(transaction_id);
            if let (Some(url), Some(_)) = (redirect_url, link) {
                // The session waits in Submitting, holding the payment's id, for the browser
                // to come back from the challenge.
                st.set_result(&s.id, &result, inner.clock.unix_now())?;
                tracing::info!(session = %s.id, "payment waits for 3-D Secure");
                return Ok(PayStep::Challenge(url));
            }
            // No challenge can run: the payment is cancelled at the PSP (best effort; it can
            // only be paid through a challenge nobody has) before the session moves on.
            if let (Some(psp), Some(pi)) = (&psp, &result.psp_transaction_id) {
                if let Err(e) = psp.abandon(pi).await {
                    tracing::info!(session = %s.id, error = %e, "an unauthenticated payment could not be cancelled");
                }
            }
            result.failure_reason = Some("authentication_required".into());
            SessionState::Declined
        }
        Err(PspError::Declined { code }) => {
            result.failure_reason = Some(crate::card::redact::redact_card_numbers(&code));
            SessionState::Declined
        }
        Err(e) => {
            // A PSP's message may echo what it was sent: stored and forwarded masked.
            result.failure_reason = Some(crate::card::redact::redact_card_numbers(&e.to_string()));
            SessionState::Failed
        }
    };
    let left = link.map_or(0, |l| l.max_attempts.saturating_sub(attempt));
    link_pay::finish_attempt(inner, &s.id, to, &result, left)
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

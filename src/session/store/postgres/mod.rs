//! The PostgreSQL store: the shared state of several nodes (`[store] postgres_url`).
//!
//! Why an async client behind the sync role traits: the traits are called from the session
//! service's synchronous code (state machines, under locks), as SQLite's are. tokio-postgres
//! (maintained, pipelined, no C library) with deadpool's pool does the network IO on a small
//! runtime of the store's own, so the connections make progress whoever waits on them. A caller
//! on a multi-threaded tokio worker waits inside `block_in_place`, which first hands that
//! worker's other tasks to another thread: a slow query holds up its caller only, never the
//! calls and requests queued behind it (the same rule as SQLite's disk IO). Outside a runtime
//! the caller blocks plainly; on a current-thread runtime (tests) the wait runs on a scoped
//! thread, since that runtime's only thread may not block inside it.
//!
//! Claims (`webhooks_claim`) use `FOR UPDATE SKIP LOCKED`, so nodes racing for the same queue
//! each get different rows. The schema's version lives in `tonegate_schema`; migrations run
//! under an advisory lock (nodes starting together migrate once) and a database from a newer
//! tonegate is refused, untouched.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::super::model::{PaymentResult, Session, SessionKind, SessionState, Transition};
use super::*;

mod audit;
mod cluster;
mod idempotency;
mod links;
mod migrate;
mod outbox;
mod retention;
mod sessions;
mod webhooks;

const LIVE: &str = "state IN ('Created','Capturing','ReadyToSubmit','Submitting')";
const TERMINAL: &str = "state IN ('Completed','Declined','Failed','Cancelled','Expired')";
const COLUMNS: &str =
    "id, kind, client_id, account_id, call_guid, dtmf_link_id, state, amount_minor, currency, \
    merchant_txn_ref, payment_data, created_at, updated_at, expires_at, result, ui_secret_hash";
const WEBHOOK_COLUMNS: &str = "event_id, session_id, account_id, url, body, created_at, attempts, \
    next_at, state, last_error";

type Param<'a> = &'a (dyn ToSql + Sync);

/// PostgreSQL-backed store, shared by every node pointed at the same database.
pub struct PgStore {
    pool: Pool,
    /// Bells from the listening connection (other nodes' writes and this one's).
    bell: tokio::sync::broadcast::Sender<Bell>,
    /// Marks this process's notifications, so it can tell its own.
    origin: String,
    /// Drives the pool's connections; shut down in the background on drop (a runtime may not
    /// be dropped inside another).
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl PgStore {
    /// Connects to `url` (`postgresql://user:password@host:port/db`) and migrates the schema.
    /// The error never repeats the URL (it may hold a password).
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let err = |m: String| StoreError::Open {
            path: "postgresql".into(),
            message: m,
        };
        let pg = tokio_postgres::Config::from_str(url)
            .map_err(|e| err(format!("postgres_url does not parse: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tonegate-pg")
            .enable_all()
            .build()
            .map_err(|e| err(e.to_string()))?;
        let pool = {
            // The pool's timers belong to the runtime that drives it.
            let _in = rt.enter();
            let mgr = Manager::from_config(
                pg.clone(),
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(mgr)
                .max_size(16)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(Duration::from_secs(10)))
                .create_timeout(Some(Duration::from_secs(10)))
                .build()
                .map_err(|e| err(e.to_string()))?
        };
        let bell = tokio::sync::broadcast::channel(1024).0;
        let origin = crate::auth::random_token()[..12].to_string();
        rt.spawn(cluster::listen(pg, bell.clone(), origin.clone()));
        let store = PgStore {
            pool,
            bell,
            origin,
            rt: Some(rt),
        };
        store.run(store.migrate())?;
        Ok(store)
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Waits for `f`, run on the store's runtime, without stalling the caller's runtime (see
    /// the module's comment).
    fn run<T: Send>(
        &self,
        f: impl Future<Output = Result<T, StoreError>> + Send,
    ) -> Result<T, StoreError> {
        let rt = self.rt.as_ref().expect("runtime lives until drop").handle();
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| rt.block_on(f))
            }
            Ok(_) => std::thread::scope(|s| {
                s.spawn(|| rt.block_on(f))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            }),
            Err(_) => rt.block_on(f),
        }
    }

    fn sessions(&self, clause: &str, args: &[Param<'_>]) -> Result<Vec<Session>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(&format!("SELECT {COLUMNS} FROM sessions WHERE {clause}"))
                .await?;
            c.query(&stmt, args)
                .await?
                .iter()
                .map(row_to_session)
                .collect()
        })
    }

    fn webhooks(
        &self,
        clause: &str,
        args: &[Param<'_>],
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE {clause}"
                ))
                .await?;
            Ok(c.query(&stmt, args)
                .await?
                .iter()
                .map(row_to_webhook)
                .collect())
        })
    }

    fn exec(&self, sql: &str, args: &[Param<'_>]) -> Result<u64, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            let stmt = c.prepare_cached(sql).await?;
            Ok(c.execute(&stmt, args).await?)
        })
    }
}

fn row_to_session(r: &Row) -> Result<Session, StoreError> {
    let kind: String = r.try_get(1)?;
    let state: String = r.try_get(6)?;
    let payment_data: String = r.try_get(10)?;
    let result: String = r.try_get(14)?;
    Ok(Session {
        id: r.try_get(0)?,
        kind: SessionKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("kind {kind}")))?,
        client_id: r.try_get(2)?,
        account_id: r.try_get(3)?,
        call_guid: r.try_get(4)?,
        dtmf_link_id: r.try_get(5)?,
        state: SessionState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?,
        amount_minor: r.try_get(7)?,
        currency: r.try_get(8)?,
        merchant_txn_ref: r.try_get(9)?,
        payment_data: serde_json::from_str(&payment_data)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        created_at: r.try_get::<_, i64>(11)? as u64,
        updated_at: r.try_get::<_, i64>(12)? as u64,
        expires_at: r.try_get::<_, i64>(13)? as u64,
        result: serde_json::from_str(&result).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        ui_secret_hash: r.try_get(15)?,
    })
}

fn row_to_webhook(r: &Row) -> WebhookDelivery {
    WebhookDelivery {
        event_id: r.get(0),
        session_id: r.get(1),
        account_id: r.get(2),
        url: r.get(3),
        body: r.get(4),
        created_at: r.get::<_, i64>(5) as u64,
        attempts: r.get::<_, i32>(6) as u32,
        next_at: r.get::<_, i64>(7) as u64,
        state: WebhookState::parse(r.get(8)),
        last_error: r.get(9),
    }
}

fn json(r: &PaymentResult) -> String {
    serde_json::to_string(r).expect("result serialises")
}

/// Writes an audit line inside `tx`.
async fn audit_line(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
    at: u64,
    actor: &str,
    from: Option<&str>,
    to: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit (session_id, at, actor, from_state, to_state) VALUES ($1, $2, $3, $4, $5)",
        &[&id, &(at as i64), &actor, &from, &to],
    )
    .await?;
    Ok(())
}

/// Queues a webhook inside `c` (a second queueing of the same event id is ignored).
async fn insert_webhook(
    c: &impl deadpool_postgres::GenericClient,
    w: &WebhookDelivery,
) -> Result<(), StoreError> {
    c.execute(
        &format!(
            "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (event_id) DO NOTHING"
        ),
        &[
            &w.event_id,
            &w.session_id,
            &w.account_id,
            &w.url,
            &w.body,
            &(w.created_at as i64),
            &(w.attempts as i32),
            &(w.next_at as i64),
            &w.state.as_str(),
            &w.last_error,
        ],
    )
    .await?;
    Ok(())
}

impl PgStore {
    /// Appends an event to a session's log inside `tx` and rings the nodes (delivered at
    /// commit). The number is taken by updating the session row, whose lock `tx` then holds
    /// until commit: a session's events commit in the order of their numbers, so a reader
    /// resuming after n never skips one that commits late.
    async fn event_line(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        id: &str,
        now: u64,
        body: &str,
    ) -> Result<i64, StoreError> {
        let seq: i64 = tx
            .query_one(
                "UPDATE sessions SET event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq",
                &[&id],
            )
            .await?
            .get(0);
        tx.execute(
            "INSERT INTO events (session_id, seq, at, body) VALUES ($1, $2, $3, $4)",
            &[&id, &seq, &(now as i64), &body],
        )
        .await?;
        notify(tx, &format!("e:{}:{id}", self.origin)).await?;
        Ok(seq)
    }
}

/// Rings every node listening (at commit, when `c` is a transaction).
async fn notify(
    c: &impl deadpool_postgres::GenericClient,
    payload: &str,
) -> Result<(), StoreError> {
    c.execute("SELECT pg_notify('tonegate', $1)", &[&payload])
        .await?;
    Ok(())
}

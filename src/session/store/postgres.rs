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

/// The advisory lock migrations run under (any constant both nodes agree on).
const MIGRATION_LOCK: i64 = 0x746f_6e65_6761_7465; // "tonegate"

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
        rt.spawn(listen(pg, bell.clone(), origin.clone()));
        let store = PgStore {
            pool,
            bell,
            origin,
            rt: Some(rt),
        };
        store.run(store.migrate())?;
        Ok(store)
    }

    /// Brings the schema up to date, or refuses a newer one without touching it.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS tonegate_schema (version INTEGER NOT NULL);
             INSERT INTO tonegate_schema SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM tonegate_schema);",
        )
        .await?;
        let version: i32 = tx
            .query_one("SELECT version FROM tonegate_schema", &[])
            .await?
            .get(0);
        let latest = schema::POSTGRES.len() as i32;
        if version > latest {
            return Err(StoreError::Schema(format!(
                "the database's schema is version {version}, from a newer tonegate (this one knows {latest}); refused, left as it is"
            )));
        }
        for m in &schema::POSTGRES[version as usize..] {
            tx.batch_execute(m)
                .await
                .map_err(|e| StoreError::Schema(e.to_string()))?;
        }
        tx.execute("UPDATE tonegate_schema SET version = $1", &[&latest])
            .await?;
        tx.commit().await?;
        Ok(())
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

impl SessionRecords for PgStore {
    fn insert(&self, s: &Session, actor: &str) -> Result<(), StoreError> {
        let payment_data = serde_json::Value::Object(s.payment_data.clone()).to_string();
        let result = json(&s.result);
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            tx.execute(
                &format!(
                    "INSERT INTO sessions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
                ),
                &[
                    &s.id,
                    &s.kind.as_str(),
                    &s.client_id,
                    &s.account_id,
                    &s.call_guid,
                    &s.dtmf_link_id,
                    &s.state.as_str(),
                    &s.amount_minor,
                    &s.currency,
                    &s.merchant_txn_ref,
                    &payment_data,
                    &(s.created_at as i64),
                    &(s.updated_at as i64),
                    &(s.expires_at as i64),
                    &result,
                    &s.ui_secret_hash,
                ],
            )
            .await
            .map_err(|e| match e.as_db_error() {
                Some(d) if d.constraint() == Some("sessions_live_link") => StoreError::LinkIdTaken,
                _ => StoreError::Pg(e),
            })?;
            audit_line(&tx, &s.id, s.created_at, actor, None, s.state.as_str()).await?;
            self.event_line(&tx, &s.id, s.created_at, &state_event(s.state.as_str(), &result))
                .await?;
            if s.call_guid.is_some() {
                // A node that holds the call already links it (the session came late).
                notify(&tx, &format!("s:{}:{}", self.origin, s.id)).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn get(&self, id: &str) -> Result<Option<Session>, StoreError> {
        Ok(self.sessions("id = $1", &[&id])?.pop())
    }

    fn transition(
        &self,
        id: &str,
        t: Transition,
        actor: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let (from, to) = (t.from().as_str(), t.to().as_str());
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let moved = tx
                .query_opt(
                    "UPDATE sessions SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4 RETURNING result",
                    &[&to, &(now as i64), &id, &from],
                )
                .await?;
            if let Some(row) = &moved {
                audit_line(&tx, id, now, actor, Some(from), to).await?;
                let result: String = row.get(0);
                self.event_line(&tx, id, now, &state_event(to, &result)).await?;
            }
            tx.commit().await?;
            Ok(moved.is_some())
        })
    }

    fn settle(
        &self,
        id: &str,
        t: Transition,
        actor: &str,
        now: u64,
        result: Option<&PaymentResult>,
        webhook: &(dyn Fn(&Session) -> Option<WebhookDelivery> + Sync),
    ) -> Result<bool, StoreError> {
        let (from, to) = (t.from().as_str(), t.to().as_str());
        let result = result.map(json);
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            // The row lock taken here holds off every other node's change until commit.
            let n = tx
                .execute(
                    "UPDATE sessions SET state = $1, updated_at = $2, result = COALESCE($3, result) \
                     WHERE id = $4 AND state = $5",
                    &[&to, &(now as i64), &result, &id, &from],
                )
                .await?;
            if n != 1 {
                return Ok(false); // dropped: rolled back
            }
            audit_line(&tx, id, now, actor, Some(from), to).await?;
            let row = tx
                .query_one(&format!("SELECT {COLUMNS} FROM sessions WHERE id = $1"), &[&id])
                .await?;
            let ended = row_to_session(&row)?;
            if let Some(w) = webhook(&ended) {
                insert_webhook(&tx, &w).await?;
            }
            self.event_line(&tx, id, now, &state_event(to, &json(&ended.result)))
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    fn set_result(&self, id: &str, result: &PaymentResult, now: u64) -> Result<(), StoreError> {
        let result = json(result);
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let row = tx
                .query_opt(
                    "UPDATE sessions SET result = $1, updated_at = $2 WHERE id = $3 RETURNING state",
                    &[&result, &(now as i64), &id],
                )
                .await?;
            if let Some(row) = row {
                let state: String = row.get(0);
                self.event_line(&tx, id, now, &state_event(&state, &result))
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn take_ui_secret(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.exec(
            "UPDATE sessions SET ui_secret_hash = NULL WHERE id = $1 AND ui_secret_hash IS NOT NULL",
            &[&id],
        )? == 1)
    }

    fn expired(&self, now: u64) -> Result<Vec<Session>, StoreError> {
        self.sessions(
            &format!("{LIVE} AND state != 'Submitting' AND expires_at <= $1"),
            &[&(now as i64)],
        )
    }

    fn in_states(&self, states: &[SessionState]) -> Result<Vec<Session>, StoreError> {
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        self.sessions("state = ANY($1)", &[&names])
    }

    fn live_by_link_id(
        &self,
        client_id: &str,
        link_id: &str,
    ) -> Result<Option<Session>, StoreError> {
        Ok(self
            .sessions(
                &format!("client_id = $1 AND dtmf_link_id = $2 AND {LIVE}"),
                &[&client_id, &link_id],
            )?
            .pop())
    }

    fn any_in_state(
        &self,
        client_id: &str,
        kind: SessionKind,
        state: SessionState,
    ) -> Result<bool, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM sessions WHERE state = $1 AND client_id = $2 AND kind = $3)",
                )
                .await?;
            Ok(c.query_one(&stmt, &[&state.as_str(), &client_id, &kind.as_str()])
                .await?
                .get(0))
        })
    }

    fn live_by_call_guid(
        &self,
        client_id: &str,
        call_guid: &str,
    ) -> Result<Option<Session>, StoreError> {
        Ok(self
            .sessions(
                &format!(
                    "client_id = $1 AND call_guid = $2 AND {LIVE} ORDER BY created_at DESC LIMIT 1"
                ),
                &[&client_id, &call_guid],
            )?
            .pop())
    }

    fn live_by_merchant_ref(
        &self,
        client: &str,
        account: &str,
        kind: SessionKind,
        merchant_ref: &str,
    ) -> Result<Option<Session>, StoreError> {
        Ok(self
            .sessions(
                &format!("client_id = $1 AND account_id = $2 AND kind = $3 AND merchant_txn_ref = $4 AND {LIVE}"),
                &[&client, &account, &kind.as_str(), &merchant_ref],
            )?
            .pop())
    }

    fn list(&self, client_id: &str, f: &SessionFilter) -> Result<Vec<Session>, StoreError> {
        // Every filter is always bound; a NULL one matches everything.
        let state = f.state.map(|s| s.as_str());
        let from = f.created_from.map(|t| t as i64);
        let to = f.created_to.map(|t| t as i64);
        let after_t = f.after.as_ref().map(|(t, _)| *t as i64);
        let after_id = f.after.as_ref().map(|(_, id)| id.as_str());
        self.sessions(
            "client_id = $1 AND ($2::TEXT IS NULL OR call_guid = $2) \
             AND ($3::TEXT IS NULL OR merchant_txn_ref = $3) AND ($4::TEXT IS NULL OR state = $4) \
             AND ($5::BIGINT IS NULL OR created_at >= $5) AND ($6::BIGINT IS NULL OR created_at < $6) \
             AND ($7::BIGINT IS NULL OR created_at < $7 OR (created_at = $7 AND id < $8)) \
             ORDER BY created_at DESC, id DESC LIMIT $9",
            &[
                &client_id,
                &f.call_guid,
                &f.merchant_txn_ref,
                &state,
                &from,
                &to,
                &after_t,
                &after_id,
                &(f.limit as i64),
            ],
        )
    }

    fn live_counts(&self) -> Result<Vec<(SessionState, u64)>, StoreError> {
        let counted = self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT state, count(*) FROM sessions WHERE {LIVE} GROUP BY state"
                ))
                .await?;
            Ok(c.query(&stmt, &[])
                .await?
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
                .collect::<Vec<_>>())
        })?;
        Ok(SessionState::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .map(|s| {
                let n = counted
                    .iter()
                    .find(|(name, _)| name == s.as_str())
                    .map_or(0, |c| c.1);
                (s, n)
            })
            .collect())
    }

    fn terminal_without_webhook(&self, since: u64) -> Result<Vec<Session>, StoreError> {
        self.sessions(
            &format!(
                "{TERMINAL} AND updated_at >= $1 \
                 AND NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.session_id = sessions.id)"
            ),
            &[&(since as i64)],
        )
    }
}

impl AuditTrail for PgStore {
    fn audit(&self, id: &str) -> Result<Vec<AuditEvent>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT at, actor, from_state, to_state FROM audit WHERE session_id = $1 ORDER BY seq",
                )
                .await?;
            Ok(c.query(&stmt, &[&id])
                .await?
                .iter()
                .map(|r| AuditEvent {
                    at: r.get::<_, i64>(0) as u64,
                    actor: r.get(1),
                    from: r.get(2),
                    to: r.get(3),
                })
                .collect())
        })
    }

    fn relay_audit_add(&self, e: &RelayAuditRecord) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO relay_audit (at, call_id, call_guid, owner, actor, action, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &(e.at as i64),
                &e.call_id,
                &e.call_guid,
                &e.owner,
                &e.actor,
                &e.action,
                &e.reason,
            ],
        )?;
        Ok(())
    }

    fn relay_audit(
        &self,
        call_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RelayAuditRecord>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT at, call_id, call_guid, owner, actor, action, reason FROM relay_audit \
                     WHERE $1::TEXT IS NULL OR call_id = $1 ORDER BY seq DESC LIMIT $2",
                )
                .await?;
            Ok(c.query(&stmt, &[&call_id, &(limit as i64)])
                .await?
                .iter()
                .map(|r| RelayAuditRecord {
                    at: r.get::<_, i64>(0) as u64,
                    call_id: r.get(1),
                    call_guid: r.get(2),
                    owner: r.get(3),
                    actor: r.get(4),
                    action: r.get(5),
                    reason: r.get(6),
                })
                .collect())
        })
    }
}

impl PaymentLinks for PgStore {
    fn insert_link(
        &self,
        token_hash: &str,
        session_id: &str,
        now: u64,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            tx.execute("UPDATE links SET revoked = TRUE WHERE session_id = $1", &[&session_id])
                .await?;
            tx.execute(
                "INSERT INTO links (token_hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                &[&token_hash, &session_id, &(now as i64), &(expires_at as i64)],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn link(&self, token_hash: &str) -> Result<Option<LinkRecord>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT session_id, expires_at, used_at, revoked FROM links WHERE token_hash = $1",
                )
                .await?;
            Ok(c.query_opt(&stmt, &[&token_hash]).await?.map(|r| LinkRecord {
                session_id: r.get(0),
                expires_at: r.get::<_, i64>(1) as u64,
                used_at: r.get::<_, Option<i64>>(2).map(|v| v as u64),
                revoked: r.get(3),
            }))
        })
    }

    fn use_link(&self, token_hash: &str, now: u64) -> Result<bool, StoreError> {
        Ok(self.exec(
            "UPDATE links SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND NOT revoked",
            &[&(now as i64), &token_hash],
        )? == 1)
    }
}

impl SmsOutbox for PgStore {
    fn outbox_add(
        &self,
        session_id: Option<&str>,
        to: &str,
        body: &str,
        now: u64,
    ) -> Result<i64, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            Ok(c.query_one(
                "INSERT INTO outbox (at, session_id, recipient, body) VALUES ($1, $2, $3, $4) RETURNING seq",
                &[&(now as i64), &session_id, &to, &body],
            )
            .await?
            .get(0))
        })
    }

    fn outbox(&self, limit: usize) -> Result<Vec<OutboxMessage>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT seq, at, session_id, recipient, body FROM outbox ORDER BY seq DESC LIMIT $1",
                )
                .await?;
            Ok(c.query(&stmt, &[&(limit as i64)])
                .await?
                .iter()
                .map(|r| OutboxMessage {
                    seq: r.get(0),
                    at: r.get::<_, i64>(1) as u64,
                    session_id: r.get(2),
                    to: r.get(3),
                    body: r.get(4),
                })
                .collect())
        })
    }
}

impl WebhookQueue for PgStore {
    fn webhook_add(&self, w: &WebhookDelivery) -> Result<(), StoreError> {
        self.run(async { insert_webhook(&self.conn().await?, w).await })
    }

    fn webhooks_due(&self, now: u64, limit: usize) -> Result<Vec<WebhookDelivery>, StoreError> {
        self.webhooks(
            "state = 'pending' AND next_at <= $1 ORDER BY next_at, created_at LIMIT $2",
            &[&(now as i64), &(limit as i64)],
        )
    }

    fn webhooks_claim(
        &self,
        now: u64,
        until: u64,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        // One statement: rows another node is claiming right now are skipped, not waited for;
        // those taken are held (not due again) until `until`, which RETURNING shows as their
        // `next_at`.
        self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(&format!(
                    "UPDATE webhooks SET next_at = $3 WHERE event_id IN (\
                     SELECT event_id FROM webhooks WHERE state = 'pending' AND next_at <= $1 \
                     ORDER BY next_at, created_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING {WEBHOOK_COLUMNS}"
                ))
                .await?;
            let mut rows: Vec<WebhookDelivery> = c
                .query(&stmt, &[&(now as i64), &(limit as i64), &(until as i64)])
                .await?
                .iter()
                .map(row_to_webhook)
                .collect();
            rows.sort_by_key(|w| w.created_at);
            Ok(rows)
        })
    }

    fn webhook_tried(
        &self,
        event_id: &str,
        state: WebhookState,
        next_at: u64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.exec(
            "UPDATE webhooks SET attempts = attempts + 1, state = $1, next_at = $2, last_error = $3 WHERE event_id = $4",
            &[&state.as_str(), &(next_at as i64), &error, &event_id],
        )?;
        Ok(())
    }

    fn webhooks_undelivered(&self, limit: usize) -> Result<Vec<WebhookDelivery>, StoreError> {
        self.webhooks(
            "state != 'delivered' ORDER BY created_at DESC LIMIT $1",
            &[&(limit as i64)],
        )
    }

    fn webhook_backlog(&self) -> Result<(u64, Option<u64>), StoreError> {
        self.run(async {
            let c = self.conn().await?;
            let r = c
                .query_one(
                    "SELECT count(*), min(created_at) FROM webhooks WHERE state = 'pending'",
                    &[],
                )
                .await?;
            Ok((
                r.get::<_, i64>(0) as u64,
                r.get::<_, Option<i64>>(1).map(|t| t as u64),
            ))
        })
    }
}

impl IdempotencyKeys for PgStore {
    fn idempotent_get(
        &self,
        key_hash: &str,
        since: u64,
    ) -> Result<Option<IdempotentAnswer>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT key_hash, request_hash, session_id, sealed, created_at FROM idempotency \
                     WHERE key_hash = $1 AND created_at >= $2",
                )
                .await?;
            Ok(c.query_opt(&stmt, &[&key_hash, &(since as i64)])
                .await?
                .map(|r| IdempotentAnswer {
                    key_hash: r.get(0),
                    request_hash: r.get(1),
                    session_id: r.get(2),
                    sealed: r.get(3),
                    created_at: r.get::<_, i64>(4) as u64,
                }))
        })
    }

    fn idempotent_put(&self, a: &IdempotentAnswer, before: u64) -> Result<(), StoreError> {
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            tx.execute(
                "DELETE FROM idempotency WHERE created_at < $1",
                &[&(before as i64)],
            )
            .await?;
            tx.execute(
                "INSERT INTO idempotency (key_hash, request_hash, session_id, sealed, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_hash) DO NOTHING",
                &[
                    &a.key_hash,
                    &a.request_hash,
                    &a.session_id,
                    &a.sealed,
                    &(a.created_at as i64),
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

impl Retention for PgStore {
    fn forget_personal_data(&self, before: u64) -> Result<Forgotten, StoreError> {
        let before = before as i64;
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let sessions = tx
                .execute(
                    &format!(
                        "UPDATE sessions SET payment_data = '{{}}' WHERE {TERMINAL} AND updated_at < $1 AND payment_data != '{{}}'"
                    ),
                    &[&before],
                )
                .await? as usize;
            let messages = tx.execute("DELETE FROM outbox WHERE at < $1", &[&before]).await? as usize;
            let links = tx
                .execute("DELETE FROM links WHERE expires_at < $1", &[&before])
                .await? as usize;
            let webhooks = tx
                .execute(
                    "DELETE FROM webhooks WHERE state != 'pending' AND created_at < $1",
                    &[&before],
                )
                .await? as usize;
            let events = tx
                .execute(
                    &format!(
                        "DELETE FROM events WHERE session_id IN (SELECT id FROM sessions WHERE {TERMINAL} AND updated_at < $1)"
                    ),
                    &[&before],
                )
                .await? as usize;
            // Commands are answered within seconds; any left this old were given up.
            tx.execute("DELETE FROM commands WHERE created_at < $1", &[&before])
                .await?;
            tx.commit().await?;
            if sessions + messages + links + webhooks + events > 0 {
                // Old row versions stay in the table's pages until a vacuum reclaims them.
                c.batch_execute("VACUUM sessions, outbox, links, webhooks, events")
                    .await?;
            }
            Ok(Forgotten {
                sessions,
                messages,
                links,
                webhooks,
                events,
            })
        })
    }
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

/// The doorbell: a dedicated connection (not the pool's: LISTEN belongs to one session) that
/// hears every node's notifications and rings `bell`. It reconnects after a failure and then
/// rings `Resync`, since whatever was notified meanwhile is lost.
async fn listen(
    pg: tokio_postgres::Config,
    bell: tokio::sync::broadcast::Sender<Bell>,
    origin: String,
) {
    use tokio_postgres::AsyncMessage;
    loop {
        if let Ok((client, mut conn)) = pg.connect(NoTls).await {
            let ring = bell.clone();
            let origin = origin.clone();
            let driver = tokio::spawn(async move {
                while let Some(m) = futures_util::future::poll_fn(|cx| conn.poll_message(cx)).await
                {
                    match m {
                        Ok(AsyncMessage::Notification(n)) => {
                            if let Some(b) = Bell::parse(n.payload(), &origin) {
                                let _ = ring.send(b);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
            if client.batch_execute("LISTEN tonegate").await.is_ok() {
                let _ = bell.send(Bell::Resync);
            } else {
                driver.abort();
            }
            let _ = driver.await;
            tracing::warn!("the store's notification connection closed; reconnecting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl ClusterState for PgStore {
    fn shared(&self) -> bool {
        true
    }

    fn doorbell(&self) -> tokio::sync::broadcast::Receiver<Bell> {
        self.bell.subscribe()
    }

    fn event_add(&self, session_id: &str, body: &str, now: u64) -> Result<i64, StoreError> {
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let seq = self.event_line(&tx, session_id, now, body).await?;
            tx.commit().await?;
            Ok(seq)
        })
    }

    fn events_add(&self, events: &[PendingEvent]) -> Result<usize, StoreError> {
        let groups = by_session(events);
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let (mut ids, mut seqs, mut ats, mut bodies) = (vec![], vec![], vec![], vec![]);
            for (id, group) in &groups {
                // The numbers are taken under the session row's lock, as `event_line` does.
                let Some(row) = tx
                    .query_opt(
                        "UPDATE sessions SET event_seq = event_seq + $1 WHERE id = $2 RETURNING event_seq",
                        &[&(group.len() as i64), id],
                    )
                    .await?
                else {
                    continue;
                };
                let last: i64 = row.get(0);
                for (seq, e) in (last - group.len() as i64 + 1..).zip(group) {
                    ids.push(*id);
                    seqs.push(seq);
                    ats.push(e.at as i64);
                    bodies.push(e.body.as_str());
                }
                notify(&tx, &format!("e:{}:{id}", self.origin)).await?;
            }
            // One statement for the whole batch.
            if !ids.is_empty() {
                tx.execute(
                "INSERT INTO events (session_id, seq, at, body) \
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[])",
                &[&ids, &seqs, &ats, &bodies],
            )
            .await?;
            }
            tx.commit().await?;
            Ok(ids.len())
        })
    }

    fn events_after(
        &self,
        session_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT seq, body FROM events WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                )
                .await?;
            Ok(c.query(&stmt, &[&session_id, &after, &(limit as i64)])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    fn set_capture_node(&self, session_id: &str, node: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE sessions SET capture_node = $1 WHERE id = $2",
            &[&node, &session_id],
        )?;
        Ok(())
    }

    fn capture_node(&self, session_id: &str) -> Result<Option<String>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            Ok(c.query_opt(
                "SELECT capture_node FROM sessions WHERE id = $1",
                &[&session_id],
            )
            .await?
            .and_then(|r| r.get(0)))
        })
    }

    fn in_states_on(
        &self,
        states: &[SessionState],
        node: &str,
    ) -> Result<Vec<Session>, StoreError> {
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        self.sessions("state = ANY($1) AND capture_node = $2", &[&names, &node])
    }

    fn command_add(
        &self,
        node: &str,
        session_id: &str,
        command: &str,
        now: u64,
    ) -> Result<i64, StoreError> {
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let id: i64 = tx
                .query_one(
                    "INSERT INTO commands (node, session_id, command, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
                    &[&node, &session_id, &command, &(now as i64)],
                )
                .await?
                .get(0);
            notify(&tx, &format!("c:{node}")).await?;
            tx.commit().await?;
            Ok(id)
        })
    }

    fn commands_take(&self, node: &str, since: u64) -> Result<Vec<NodeCommand>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(
                    "UPDATE commands SET taken = TRUE WHERE id IN (SELECT id FROM commands \
                     WHERE node = $1 AND NOT taken AND created_at >= $2 FOR UPDATE SKIP LOCKED) \
                     RETURNING id, session_id, command",
                )
                .await?;
            let mut taken: Vec<NodeCommand> = c
                .query(&stmt, &[&node, &(since as i64)])
                .await?
                .iter()
                .map(|r| NodeCommand {
                    id: r.get(0),
                    session_id: r.get(1),
                    command: r.get(2),
                })
                .collect();
            taken.sort_by_key(|c| c.id);
            Ok(taken)
        })
    }

    fn command_done(&self, id: i64, answer: &str) -> Result<(), StoreError> {
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            tx.execute(
                "UPDATE commands SET answer = $1 WHERE id = $2",
                &[&answer, &id],
            )
            .await?;
            notify(&tx, &format!("a:{id}")).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn command_answer(&self, id: i64) -> Result<Option<String>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            Ok(
                c.query_opt("SELECT answer FROM commands WHERE id = $1", &[&id])
                    .await?
                    .and_then(|r| r.get(0)),
            )
        })
    }

    fn command_drop(&self, id: i64) -> Result<(), StoreError> {
        self.exec("DELETE FROM commands WHERE id = $1", &[&id])?;
        Ok(())
    }

    fn heartbeat(&self, node: &str, now: u64) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO nodes (name, beat_at) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET beat_at = GREATEST(nodes.beat_at, EXCLUDED.beat_at)",
            &[&node, &(now as i64)],
        )?;
        Ok(())
    }

    fn stale_nodes(&self, me: &str, before: u64) -> Result<Vec<String>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            Ok(c.query(
                "SELECT name FROM nodes WHERE name != $1 AND beat_at < $2 ORDER BY name",
                &[&me, &(before as i64)],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn forget_node(&self, node: &str, before: u64) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM nodes WHERE name = $1 AND beat_at < $2",
            &[&node, &(before as i64)],
        )?;
        Ok(())
    }
}

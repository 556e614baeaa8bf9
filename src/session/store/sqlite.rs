//! The SQLite store: one connection behind a mutex, the embedded single-node default.

use std::path::Path;
use std::sync::Mutex;

use super::super::model::{PaymentResult, Session, SessionKind, SessionState, Transition};
use super::*;
use rusqlite::{params, Connection, OptionalExtension};

/// SQLite-backed store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// The in-process doorbell: one process is the only writer.
    bell: tokio::sync::broadcast::Sender<Bell>,
}

const LIVE: &str = "state IN ('Created','Capturing','ReadyToSubmit','Submitting')";
const COLUMNS: &str =
    "id, kind, client_id, account_id, call_guid, dtmf_link_id, state, amount_minor, currency, \
    merchant_txn_ref, payment_data, created_at, updated_at, expires_at, result, ui_secret_hash";

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let err = |m: String| StoreError::Open {
            path: path.display().to_string(),
            message: m,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        restrict_to_owner(path).map_err(|e| err(e.to_string()))?;
        let conn = Connection::open(path).map_err(|e| err(e.to_string()))?;
        Self::init(conn).map_err(|e| err(e.to_string()))
    }

    /// An in-memory store (tests).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit (a payment's state, its result) is on disk before the call returns,
        // power loss included. Writes are a few per session; the cost is an fsync each.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Deleted rows (personal data after retention) are overwritten, not left in free pages.
        conn.pragma_update(None, "secure_delete", "ON")?;
        let mut conn = conn;
        // Each migration runs in its own transaction with `user_version` bumped in it, as our
        // hand-written loop did; a database from a newer tonegate is refused, not touched.
        rusqlite_migration::Migrations::new(
            schema::SQLITE
                .iter()
                .map(|m| rusqlite_migration::M::up(m))
                .collect(),
        )
        .to_latest(&mut conn)
        .map_err(|e| StoreError::Schema(e.to_string()))?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            bell: tokio::sync::broadcast::channel(1024).0,
        })
    }

    fn query(
        &self,
        where_clause: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Session>, StoreError> {
        self.blocking(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM sessions WHERE {where_clause}"
            ))?;
            let rows = stmt.query_map(args, row_to_session)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r??);
            }
            Ok(out)
        })
    }
}

fn row_to_session(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Session, StoreError>> {
    let kind: String = r.get(1)?;
    let state: String = r.get(6)?;
    let payment_data: String = r.get(10)?;
    let result: String = r.get(14)?;
    Ok((|| {
        Ok(Session {
            id: r.get(0)?,
            kind: SessionKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("kind {kind}")))?,
            client_id: r.get(2)?,
            account_id: r.get(3)?,
            call_guid: r.get(4)?,
            dtmf_link_id: r.get(5)?,
            state: SessionState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?,
            amount_minor: r.get(7)?,
            currency: r.get(8)?,
            merchant_txn_ref: r.get(9)?,
            payment_data: serde_json::from_str(&payment_data)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            created_at: r.get::<_, i64>(11)? as u64,
            updated_at: r.get::<_, i64>(12)? as u64,
            expires_at: r.get::<_, i64>(13)? as u64,
            result: serde_json::from_str(&result)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ui_secret_hash: r.get(15)?,
        })
    })())
}

impl SessionRecords for SqliteStore {
    fn insert(&self, s: &Session, actor: &str) -> Result<(), StoreError> {
        self.blocking(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                &format!("INSERT INTO sessions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"),
                params![
                    s.id,
                    s.kind.as_str(),
                    s.client_id,
                    s.account_id,
                    s.call_guid,
                    s.dtmf_link_id,
                    s.state.as_str(),
                    s.amount_minor,
                    s.currency,
                    s.merchant_txn_ref,
                    serde_json::Value::Object(s.payment_data.clone()).to_string(),
                    s.created_at as i64,
                    s.updated_at as i64,
                    s.expires_at as i64,
                    serde_json::to_string(&s.result).expect("result serialises"),
                    s.ui_secret_hash,
                ],
            )
            .map_err(|e| match &e {
                rusqlite::Error::SqliteFailure(f, Some(m))
                    if f.code == rusqlite::ErrorCode::ConstraintViolation
                        && m.contains("dtmf_link_id") =>
                {
                    StoreError::LinkIdTaken
                }
                _ => StoreError::Db(e),
            })?;
            tx.execute(
                "INSERT INTO audit (session_id, at, actor, from_state, to_state) VALUES (?1, ?2, ?3, NULL, ?4)",
                params![s.id, s.created_at as i64, actor, s.state.as_str()],
            )?;
            let body = state_event(
                s.state.as_str(),
                &serde_json::to_string(&s.result).expect("result serialises"),
            );
            event_line(&tx, &s.id, s.created_at, &body)?;
            tx.commit()?;
            Ok::<_, StoreError>(())
        })?;
        self.ring_event(&s.id);
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<Session>, StoreError> {
        Ok(self.query("id = ?1", &[&id])?.pop())
    }

    fn transition(
        &self,
        id: &str,
        t: Transition,
        actor: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let (from, to) = (t.from(), t.to());
        let moved = self.blocking(|conn| {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "UPDATE sessions SET state = ?1, updated_at = ?2 WHERE id = ?3 AND state = ?4",
                params![to.as_str(), now as i64, id, from.as_str()],
            )?;
            if n == 1 {
                tx.execute(
                    "INSERT INTO audit (session_id, at, actor, from_state, to_state) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, now as i64, actor, from.as_str(), to.as_str()],
                )?;
                let result: String =
                    tx.query_row("SELECT result FROM sessions WHERE id = ?1", [id], |r| {
                        r.get(0)
                    })?;
                event_line(&tx, id, now, &state_event(to.as_str(), &result))?;
            }
            tx.commit()?;
            Ok::<_, StoreError>(n == 1)
        })?;
        if moved {
            self.ring_event(id);
        }
        Ok(moved)
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
        let (from, to) = (t.from(), t.to());
        let settled = self.blocking(|conn| {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "UPDATE sessions SET state = ?1, updated_at = ?2 WHERE id = ?3 AND state = ?4",
                params![to.as_str(), now as i64, id, from.as_str()],
            )?;
            if n != 1 {
                return Ok::<_, StoreError>(false); // dropped: rolled back
            }
            if let Some(r) = result {
                tx.execute(
                    "UPDATE sessions SET result = ?1 WHERE id = ?2",
                    params![serde_json::to_string(r).expect("result serialises"), id],
                )?;
            }
            tx.execute(
                "INSERT INTO audit (session_id, at, actor, from_state, to_state) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, now as i64, actor, from.as_str(), to.as_str()],
            )?;
            let ended = tx.query_row(
                &format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1"),
                [id],
                row_to_session,
            )??;
            if let Some(w) = webhook(&ended) {
                insert_webhook(&tx, &w)?;
            }
            let result = serde_json::to_string(&ended.result).expect("result serialises");
            event_line(&tx, id, now, &state_event(to.as_str(), &result))?;
            tx.commit()?;
            Ok(true)
        })?;
        if settled {
            self.ring_event(id);
        }
        Ok(settled)
    }

    fn set_result(&self, id: &str, result: &PaymentResult, now: u64) -> Result<(), StoreError> {
        let result = serde_json::to_string(result).expect("result serialises");
        let changed = self.blocking(|conn| {
            let tx = conn.transaction()?;
            let state: Option<String> = tx
                .query_row(
                    "UPDATE sessions SET result = ?1, updated_at = ?2 WHERE id = ?3 RETURNING state",
                    params![result, now as i64, id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(state) = &state {
                event_line(&tx, id, now, &state_event(state, &result))?;
            }
            tx.commit()?;
            Ok::<_, StoreError>(state.is_some())
        })?;
        if changed {
            self.ring_event(id);
        }
        Ok(())
    }

    fn take_ui_secret(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.exec("UPDATE sessions SET ui_secret_hash = NULL WHERE id = ?1 AND ui_secret_hash IS NOT NULL", &[&id])? == 1)
    }

    fn expired(&self, now: u64) -> Result<Vec<Session>, StoreError> {
        self.query(
            &format!("{LIVE} AND state != 'Submitting' AND expires_at <= ?1"),
            &[&(now as i64)],
        )
    }

    fn in_states(&self, states: &[SessionState]) -> Result<Vec<Session>, StoreError> {
        let list: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
        self.query(&format!("state IN ({})", list.join(",")), &[])
    }

    fn live_by_link_id(
        &self,
        client_id: &str,
        link_id: &str,
    ) -> Result<Option<Session>, StoreError> {
        Ok(self
            .query(
                &format!("client_id = ?1 AND dtmf_link_id = ?2 AND {LIVE}"),
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
        self.blocking(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM sessions WHERE state = ?1 AND client_id = ?2 AND kind = ?3)",
                )?
                .query_row(params![state.as_str(), client_id, kind.as_str()], |r| {
                    r.get::<_, bool>(0)
                })?)
        })
    }

    fn live_by_call_guid(
        &self,
        client_id: &str,
        call_guid: &str,
    ) -> Result<Option<Session>, StoreError> {
        Ok(self
            .query(
                &format!("client_id = ?1 AND call_guid = ?2 AND {LIVE} ORDER BY created_at DESC"),
                &[&client_id, &call_guid],
            )?
            .into_iter()
            .next())
    }

    fn live_by_merchant_ref(
        &self,
        client: &str,
        account: &str,
        kind: SessionKind,
        merchant_ref: &str,
    ) -> Result<Option<Session>, StoreError> {
        Ok(self
            .query(
                &format!("client_id = ?1 AND account_id = ?2 AND kind = ?3 AND merchant_txn_ref = ?4 AND {LIVE}"),
                &[&client, &account, &kind.as_str(), &merchant_ref],
            )?
            .pop())
    }

    fn list(&self, client_id: &str, f: &SessionFilter) -> Result<Vec<Session>, StoreError> {
        let mut clause = String::from("client_id = ?1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(client_id.to_string())];
        let mut add = |sql: &str, v: Box<dyn rusqlite::ToSql>| {
            args.push(v);
            clause.push_str(&sql.replace('?', &format!("?{}", args.len())));
        };
        if let Some(g) = &f.call_guid {
            add(" AND call_guid = ?", Box::new(g.clone()));
        }
        if let Some(r) = &f.merchant_txn_ref {
            add(" AND merchant_txn_ref = ?", Box::new(r.clone()));
        }
        if let Some(s) = f.state {
            add(" AND state = ?", Box::new(s.as_str()));
        }
        if let Some(t) = f.created_from {
            add(" AND created_at >= ?", Box::new(t as i64));
        }
        if let Some(t) = f.created_to {
            add(" AND created_at < ?", Box::new(t as i64));
        }
        if let Some((t, id)) = &f.after {
            add(" AND (created_at < ?", Box::new(*t as i64));
            add(" OR (created_at = ?", Box::new(*t as i64));
            add(" AND id < ?))", Box::new(id.clone()));
        }
        add(
            " ORDER BY created_at DESC, id DESC LIMIT ?",
            Box::new(f.limit as i64),
        );
        let refs: Vec<&dyn rusqlite::ToSql> = args.iter().map(|a| &**a).collect();
        self.query(&clause, &refs)
    }

    fn live_counts(&self) -> Result<Vec<(SessionState, u64)>, StoreError> {
        self.blocking(|conn| {
            // The state index answers this without reading the sessions' rows.
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT state, count(*) FROM sessions WHERE {LIVE} GROUP BY state"
            ))?;
            let mut out: Vec<(SessionState, u64)> = SessionState::ALL
                .into_iter()
                .filter(|s| !s.is_terminal())
                .map(|s| (s, 0))
                .collect();
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let state = r.get::<_, String>(0)?;
                let n = r.get::<_, i64>(1)? as u64;
                if let Some(slot) = out.iter_mut().find(|(s, _)| s.as_str() == state) {
                    slot.1 = n;
                }
            }
            Ok(out)
        })
    }

    fn terminal_without_webhook(&self, since: u64) -> Result<Vec<Session>, StoreError> {
        self.query(
            "state IN ('Completed','Declined','Failed','Cancelled','Expired') AND updated_at >= ?1 \
             AND NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.session_id = sessions.id)",
            &[&(since as i64)],
        )
    }
}

impl AuditTrail for SqliteStore {
    fn audit(&self, id: &str) -> Result<Vec<AuditEvent>, StoreError> {
        self.blocking(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT at, actor, from_state, to_state FROM audit WHERE session_id = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([id], |r| {
                Ok(AuditEvent {
                    at: r.get::<_, i64>(0)? as u64,
                    actor: r.get(1)?,
                    from: r.get(2)?,
                    to: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn relay_audit_add(&self, e: &RelayAuditRecord) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO relay_audit (at, call_id, call_guid, owner, actor, action, reason) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
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
        self.blocking(|conn| {
            let mut stmt = conn.prepare(
                "SELECT at, call_id, call_guid, owner, actor, action, reason FROM relay_audit \
                 WHERE ?1 IS NULL OR call_id = ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(rusqlite::params![call_id, limit as i64], |r| {
                Ok(RelayAuditRecord {
                    at: r.get::<_, i64>(0)? as u64,
                    call_id: r.get(1)?,
                    call_guid: r.get(2)?,
                    owner: r.get(3)?,
                    actor: r.get(4)?,
                    action: r.get(5)?,
                    reason: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

impl PaymentLinks for SqliteStore {
    fn insert_link(
        &self,
        token_hash: &str,
        session_id: &str,
        now: u64,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        self.blocking(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "UPDATE links SET revoked = 1 WHERE session_id = ?1",
                params![session_id],
            )?;
            tx.execute(
                "INSERT INTO links (token_hash, session_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![token_hash, session_id, now as i64, expires_at as i64],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn link(&self, token_hash: &str) -> Result<Option<LinkRecord>, StoreError> {
        self.blocking(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT session_id, expires_at, used_at, revoked FROM links WHERE token_hash = ?1",
            )?;
            let mut rows = stmt.query_map([token_hash], |r| {
                Ok(LinkRecord {
                    session_id: r.get(0)?,
                    expires_at: r.get::<_, i64>(1)? as u64,
                    used_at: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                    revoked: r.get::<_, i64>(3)? != 0,
                })
            })?;
            Ok(rows.next().transpose()?)
        })
    }

    fn use_link(&self, token_hash: &str, now: u64) -> Result<bool, StoreError> {
        let n = self.exec(
            "UPDATE links SET used_at = ?1 WHERE token_hash = ?2 AND used_at IS NULL AND revoked = 0",
            &[&(now as i64), &token_hash],
        )?;
        Ok(n == 1)
    }
}

impl SmsOutbox for SqliteStore {
    fn outbox_add(
        &self,
        session_id: Option<&str>,
        to: &str,
        body: &str,
        now: u64,
    ) -> Result<i64, StoreError> {
        self.blocking(|conn| {
            conn.execute(
                "INSERT INTO outbox (at, session_id, recipient, body) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![now as i64, session_id, to, body],
            )?;
            Ok(conn.last_insert_rowid())
        })
    }

    fn outbox(&self, limit: usize) -> Result<Vec<OutboxMessage>, StoreError> {
        self.blocking(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, at, session_id, recipient, body FROM outbox ORDER BY seq DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |r| {
                Ok(OutboxMessage {
                    seq: r.get(0)?,
                    at: r.get::<_, i64>(1)? as u64,
                    session_id: r.get(2)?,
                    to: r.get(3)?,
                    body: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

impl WebhookQueue for SqliteStore {
    fn webhook_add(&self, w: &WebhookDelivery) -> Result<(), StoreError> {
        self.blocking(|conn| insert_webhook(conn, w))
    }

    fn webhooks_due(&self, now: u64, limit: usize) -> Result<Vec<WebhookDelivery>, StoreError> {
        self.webhooks_where(
            "state = 'pending' AND next_at <= ?1 ORDER BY next_at, created_at LIMIT ?2",
            &[&(now as i64), &(limit as i64)],
        )
    }

    fn webhooks_claim(
        &self,
        now: u64,
        until: u64,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        // The select and the hold in one write transaction: no other claimer (this
        // connection is behind a mutex; another process waits for the lock) runs in between.
        self.blocking(|conn| {
            // IMMEDIATE: the write lock first, so a second process on the same file waits
            // (busy timeout) rather than failing to upgrade its read.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let due = select_webhooks(
                &tx,
                "state = 'pending' AND next_at <= ?1 ORDER BY next_at, created_at LIMIT ?2",
                &[&(now as i64), &(limit as i64)],
            )?;
            let mut due = due;
            for w in &mut due {
                tx.execute(
                    "UPDATE webhooks SET next_at = ?1 WHERE event_id = ?2",
                    params![until as i64, w.event_id],
                )?;
                w.next_at = until;
            }
            tx.commit()?;
            Ok(due)
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
            "UPDATE webhooks SET attempts = attempts + 1, state = ?1, next_at = ?2, last_error = ?3 WHERE event_id = ?4",
            &[&state.as_str(), &(next_at as i64), &error, &event_id],
        )?;
        Ok(())
    }

    fn webhooks_undelivered(&self, limit: usize) -> Result<Vec<WebhookDelivery>, StoreError> {
        self.webhooks_where(
            "state != 'delivered' ORDER BY created_at DESC LIMIT ?1",
            &[&(limit as i64)],
        )
    }

    fn webhook_backlog(&self) -> Result<(u64, Option<u64>), StoreError> {
        self.blocking(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT count(*), min(created_at) FROM webhooks WHERE state = 'pending'",
                )?
                .query_row([], |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, Option<i64>>(1)?.map(|t| t as u64),
                    ))
                })?)
        })
    }
}

impl IdempotencyKeys for SqliteStore {
    fn idempotent_get(
        &self,
        key_hash: &str,
        since: u64,
    ) -> Result<Option<IdempotentAnswer>, StoreError> {
        self.blocking(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key_hash, request_hash, session_id, sealed, created_at FROM idempotency \
                 WHERE key_hash = ?1 AND created_at >= ?2",
            )?;
            let mut rows = stmt.query(params![key_hash, since as i64])?;
            Ok(match rows.next()? {
                Some(r) => Some(IdempotentAnswer {
                    key_hash: r.get(0)?,
                    request_hash: r.get(1)?,
                    session_id: r.get(2)?,
                    sealed: r.get(3)?,
                    created_at: r.get::<_, i64>(4)? as u64,
                }),
                None => None,
            })
        })
    }

    fn idempotent_put(&self, a: &IdempotentAnswer, before: u64) -> Result<(), StoreError> {
        self.blocking(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "DELETE FROM idempotency WHERE created_at < ?1",
                params![before as i64],
            )?;
            tx.execute(
                "INSERT OR IGNORE INTO idempotency (key_hash, request_hash, session_id, sealed, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![a.key_hash, a.request_hash, a.session_id, a.sealed, a.created_at as i64],
            )?;
            tx.commit()?;
            Ok(())
        })
    }
}

impl Retention for SqliteStore {
    fn forget_personal_data(&self, before: u64) -> Result<Forgotten, StoreError> {
        let before = before as i64;
        let terminal: Vec<String> = [
            SessionState::Completed,
            SessionState::Declined,
            SessionState::Failed,
            SessionState::Expired,
            SessionState::Cancelled,
        ]
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
        self.blocking(|conn| {
            let tx = conn.transaction()?;
            let sessions = tx.execute(
                &format!(
                    "UPDATE sessions SET payment_data = '{{}}' WHERE state IN ({}) AND updated_at < ?1 AND payment_data != '{{}}'",
                    terminal.join(",")
                ),
                [before],
            )?;
            let messages = tx.execute("DELETE FROM outbox WHERE at < ?1", [before])?;
            let links = tx.execute("DELETE FROM links WHERE expires_at < ?1", [before])?;
            let webhooks = tx.execute(
                "DELETE FROM webhooks WHERE state != 'pending' AND created_at < ?1",
                [before],
            )?;
            let events = tx.execute(
                &format!(
                    "DELETE FROM events WHERE session_id IN (SELECT id FROM sessions WHERE state IN ({}) AND updated_at < ?1)",
                    terminal.join(",")
                ),
                [before],
            )?;
            tx.commit()?;
            if sessions + messages + links + webhooks + events > 0 {
                // Old row versions would otherwise wait in the WAL until the next checkpoint.
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
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

impl ClusterState for SqliteStore {
    fn doorbell(&self) -> tokio::sync::broadcast::Receiver<Bell> {
        self.bell.subscribe()
    }

    fn event_add(&self, session_id: &str, body: &str, now: u64) -> Result<i64, StoreError> {
        let seq = self.blocking(|conn| {
            let tx = conn.transaction()?;
            let seq = event_line(&tx, session_id, now, body)?;
            tx.commit()?;
            Ok::<_, StoreError>(seq)
        })?;
        self.ring_event(session_id);
        Ok(seq)
    }

    fn events_add(&self, events: &[PendingEvent]) -> Result<usize, StoreError> {
        let groups = by_session(events);
        let written = self.blocking(|conn| {
            let tx = conn.transaction()?;
            let mut written = Vec::new();
            for (id, group) in &groups {
                let last: Option<i64> = tx
                    .query_row(
                        "UPDATE sessions SET event_seq = event_seq + ?1 WHERE id = ?2 RETURNING event_seq",
                        params![group.len() as i64, id],
                        |r| r.get(0),
                    )
                    .optional()?;
                let Some(last) = last else { continue };
                let mut insert = tx.prepare_cached(
                    "INSERT INTO events (session_id, seq, at, body) VALUES (?1, ?2, ?3, ?4)",
                )?;
                let first = last - group.len() as i64 + 1;
                for (seq, e) in (first..).zip(group) {
                    insert.execute(params![id, seq, e.at as i64, e.body])?;
                }
                written.push((*id, group.len()));
            }
            tx.commit()?;
            Ok::<_, StoreError>(written)
        })?;
        for (id, _) in &written {
            self.ring_event(id);
        }
        Ok(written.iter().map(|(_, n)| n).sum())
    }

    fn events_after(
        &self,
        session_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.blocking(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, body FROM events WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![session_id, after, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn set_capture_node(&self, session_id: &str, node: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE sessions SET capture_node = ?1 WHERE id = ?2",
            &[&node, &session_id],
        )?;
        Ok(())
    }

    fn capture_node(&self, session_id: &str) -> Result<Option<String>, StoreError> {
        self.blocking(|conn| {
            Ok(conn
                .query_row(
                    "SELECT capture_node FROM sessions WHERE id = ?1",
                    [session_id],
                    |r| r.get(0),
                )
                .optional()?
                .flatten())
        })
    }

    fn in_states_on(
        &self,
        states: &[SessionState],
        node: &str,
    ) -> Result<Vec<Session>, StoreError> {
        let names: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
        self.query(
            &format!("capture_node = ?1 AND state IN ({})", names.join(",")),
            &[&node],
        )
    }
}

/// Appends an event to a session's log inside `tx`, numbered under the session row (the
/// update that takes the number holds the write lock until commit): its number.
fn event_line(tx: &Connection, id: &str, now: u64, body: &str) -> Result<i64, StoreError> {
    let seq: i64 = tx.query_row(
        "UPDATE sessions SET event_seq = event_seq + 1 WHERE id = ?1 RETURNING event_seq",
        [id],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO events (session_id, seq, at, body) VALUES (?1, ?2, ?3, ?4)",
        params![id, seq, now as i64, body],
    )?;
    Ok(seq)
}

impl SqliteStore {
    /// Wakes this process's readers of a session's events.
    fn ring_event(&self, session: &str) {
        let _ = self.bell.send(Bell::Event {
            session: session.to_string(),
            local: true,
        });
    }

    /// Runs `f` on the connection. On a multi-threaded runtime the worker first hands its
    /// other tasks to another thread (`block_in_place`), so a slow disk or a long query never
    /// holds up calls and requests queued behind it on that worker.
    fn blocking<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> T {
        let run = || f(&mut self.conn.lock().unwrap_or_else(|p| p.into_inner()));
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(run)
            }
            _ => run(),
        }
    }

    fn webhooks_where(
        &self,
        clause: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        self.blocking(|conn| select_webhooks(conn, clause, args))
    }

    fn exec(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<usize, StoreError> {
        self.blocking(|conn| Ok(conn.execute(sql, args)?))
    }
}

/// The webhooks that match `clause`.
fn select_webhooks(
    conn: &Connection,
    clause: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<WebhookDelivery>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT event_id, session_id, account_id, url, body, created_at, attempts, next_at, state, last_error \
         FROM webhooks WHERE {clause}"
    ))?;
    let rows = stmt.query_map(args, |r| {
        Ok(WebhookDelivery {
            event_id: r.get(0)?,
            session_id: r.get(1)?,
            account_id: r.get(2)?,
            url: r.get(3)?,
            body: r.get(4)?,
            created_at: r.get::<_, i64>(5)? as u64,
            attempts: r.get(6)?,
            next_at: r.get::<_, i64>(7)? as u64,
            state: WebhookState::parse(&r.get::<_, String>(8)?),
            last_error: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Queues a webhook delivery (a second queueing of the same event id is ignored).
fn insert_webhook(conn: &Connection, w: &WebhookDelivery) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO webhooks (event_id, session_id, account_id, url, body, created_at, attempts, next_at, state, last_error) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            w.event_id,
            w.session_id,
            w.account_id,
            w.url,
            w.body,
            w.created_at as i64,
            w.attempts,
            w.next_at as i64,
            w.state.as_str(),
            w.last_error,
        ],
    )?;
    Ok(())
}

/// Creates the database file readable by its owner only (0600), or makes an existing one so;
/// SQLite gives its WAL and shared-memory files the same mode.
fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(test)]
mod tests {
    //! What only SQLite has (its file, pragmas, query plans, trigger, migrations from older
    //! files); the behaviour of every role is tests/sessions/store.rs, run on each backend.
    use super::*;

    fn session(id: &str) -> Session {
        Session {
            id: id.into(),
            kind: SessionKind::SelfService,
            client_id: "c".into(),
            account_id: "a".into(),
            call_guid: Some("g".into()),
            dtmf_link_id: Some("123456".into()),
            state: SessionState::Created,
            amount_minor: Some(12499),
            currency: "GBP".into(),
            merchant_txn_ref: Some("ref".into()),
            payment_data: serde_json::from_str(
                r#"{"cardholderName":"A N Other","cardholder Address":"1 High St"}"#,
            )
            .unwrap(),
            created_at: 100,
            updated_at: 100,
            expires_at: 200,
            result: PaymentResult::default(),
            ui_secret_hash: None,
        }
    }

    #[test]
    fn a_database_from_a_newer_tonegate_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        drop(SqliteStore::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let e = SqliteStore::open(&path).err().expect("refused").to_string();
        assert!(e.contains("migrating the schema"), "{e}");
        let c = Connection::open(&path).unwrap();
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 99);
        // An older one (version 4: no webhook outbox, no state-machine trigger, no idempotency
        // table) is brought up to date.
        c.pragma_update(None, "user_version", 4).unwrap();
        c.execute_batch(
            "DROP TABLE webhooks; DROP TRIGGER sessions_state_machine;
             DROP TABLE idempotency; DROP INDEX sessions_client_created;
             DROP INDEX sessions_live_link; DROP TABLE events;
             ALTER TABLE sessions DROP COLUMN capture_node;
             ALTER TABLE sessions DROP COLUMN event_seq",
        )
        .unwrap();
        drop(c);
        let st = SqliteStore::open(&path).unwrap();
        assert!(
            st.webhooks_due(0, 1).unwrap().is_empty(),
            "migration 5 ran again"
        );
        let trigger: i64 = st.blocking(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name = 'sessions_state_machine'",
                [],
                |r| r.get(0),
            )
            .unwrap()
        });
        assert_eq!(trigger, 1, "migration 6 ran again");
    }

    #[test]
    fn survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x/tonegate.db");
        SqliteStore::open(&path)
            .unwrap()
            .insert(&session("s2"), "t")
            .unwrap();
        let again = SqliteStore::open(&path).unwrap();
        assert_eq!(again.get("s2").unwrap().unwrap().id, "s2");
        // Only its owner may read it, and its WAL likewise.
        use std::os::unix::fs::PermissionsExt;
        for f in [path.clone(), path.with_extension("db-wal")] {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
        let sync: i64 = again.blocking(|c| {
            c.pragma_query_value(None, "synchronous", |r| r.get(0))
                .unwrap()
        });
        assert_eq!(sync, 2, "synchronous = FULL");
    }

    #[test]
    fn waiting_sessions_are_found_by_index() {
        let st = SqliteStore::in_memory().unwrap();
        let ss = (SessionKind::SelfService, SessionState::Created);
        assert!(!st.any_in_state("c", ss.0, ss.1).unwrap());
        st.insert(&session("s3"), "t").unwrap();
        assert!(st.any_in_state("c", ss.0, ss.1).unwrap());
        assert!(!st.any_in_state("other", ss.0, ss.1).unwrap());
        assert!(!st.any_in_state("c", SessionKind::Agent, ss.1).unwrap());
        st.transition("s3", ss.1.to(SessionState::Cancelled).unwrap(), "t", 101)
            .unwrap();
        assert!(!st.any_in_state("c", ss.0, ss.1).unwrap());
        // The sweeps and the call-link check read the state index, not the whole table.
        let plan: Vec<String> = st.blocking(|conn| {
            let mut q = conn
                .prepare(&format!(
                    "EXPLAIN QUERY PLAN SELECT id FROM sessions WHERE {LIVE} AND expires_at <= 5"
                ))
                .unwrap();
            q.query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        });
        assert!(
            plan.iter().any(|p| p.contains("sessions_state")),
            "{plan:?}"
        );
    }
}

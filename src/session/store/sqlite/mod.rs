//! The SQLite store: one connection behind a mutex, the embedded single-node default.

use std::path::Path;
use std::sync::Mutex;

use super::super::model::{PaymentResult, Session, SessionKind, SessionState, Transition};
use super::*;
use rusqlite::{params, Connection, OptionalExtension};

mod audit;
mod cluster;
mod idempotency;
mod links;
mod outbox;
mod retention;
mod sessions;
#[cfg(test)]
mod tests;
mod webhooks;

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

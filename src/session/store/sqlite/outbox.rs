//! The SMS outbox.

use super::*;

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

//! Answers kept for `Idempotency-Key`s (hashes and sealed answers only).

use super::*;

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

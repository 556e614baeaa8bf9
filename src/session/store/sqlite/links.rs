//! Payment-link records (token hashes only).

use super::*;

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

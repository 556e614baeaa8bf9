//! Payment-link records (token hashes only).

use super::*;

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

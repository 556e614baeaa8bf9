//! Answers kept for `Idempotency-Key`s (hashes and sealed answers only).

use super::*;

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

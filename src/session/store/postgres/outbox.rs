//! The SMS outbox.

use super::*;

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

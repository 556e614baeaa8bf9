//! The result-webhook queue.

use super::*;

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

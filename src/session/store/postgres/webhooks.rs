//! The result-webhook queue; nodes claim with `FOR UPDATE SKIP LOCKED`.

use super::*;

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

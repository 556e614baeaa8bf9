//! Retention: forgetting personal data of sessions closed long enough ago.

use super::*;

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

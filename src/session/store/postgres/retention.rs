//! Retention: forgetting personal data of sessions closed long enough ago.

use super::*;

impl Retention for PgStore {
    fn forget_personal_data(&self, before: u64) -> Result<Forgotten, StoreError> {
        let before = before as i64;
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let sessions = tx
                .execute(
                    &format!(
                        "UPDATE sessions SET payment_data = '{{}}' WHERE {TERMINAL} AND updated_at < $1 AND payment_data != '{{}}'"
                    ),
                    &[&before],
                )
                .await? as usize;
            let messages = tx.execute("DELETE FROM outbox WHERE at < $1", &[&before]).await? as usize;
            let links = tx
                .execute("DELETE FROM links WHERE expires_at < $1", &[&before])
                .await? as usize;
            let webhooks = tx
                .execute(
                    "DELETE FROM webhooks WHERE state != 'pending' AND created_at < $1",
                    &[&before],
                )
                .await? as usize;
            let events = tx
                .execute(
                    &format!(
                        "DELETE FROM events WHERE session_id IN (SELECT id FROM sessions WHERE {TERMINAL} AND updated_at < $1)"
                    ),
                    &[&before],
                )
                .await? as usize;
            // Commands are answered within seconds; any left this old were given up.
            tx.execute("DELETE FROM commands WHERE created_at < $1", &[&before])
                .await?;
            tx.commit().await?;
            if sessions + messages + links + webhooks + events > 0 {
                // Old row versions stay in the table's pages until a vacuum reclaims them.
                c.batch_execute("VACUUM sessions, outbox, links, webhooks, events")
                    .await?;
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

//! The audit trails: session transitions and relay-call control events.

use super::*;

impl AuditTrail for PgStore {
    fn audit(&self, id: &str) -> Result<Vec<AuditEvent>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT at, actor, from_state, to_state FROM audit WHERE session_id = $1 ORDER BY seq",
                )
                .await?;
            Ok(c.query(&stmt, &[&id])
                .await?
                .iter()
                .map(|r| AuditEvent {
                    at: r.get::<_, i64>(0) as u64,
                    actor: r.get(1),
                    from: r.get(2),
                    to: r.get(3),
                })
                .collect())
        })
    }

    fn relay_audit_add(&self, e: &RelayAuditRecord) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO relay_audit (at, call_id, call_guid, owner, actor, action, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &(e.at as i64),
                &e.call_id,
                &e.call_guid,
                &e.owner,
                &e.actor,
                &e.action,
                &e.reason,
            ],
        )?;
        Ok(())
    }

    fn relay_audit(
        &self,
        call_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RelayAuditRecord>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT at, call_id, call_guid, owner, actor, action, reason FROM relay_audit \
                     WHERE $1::TEXT IS NULL OR call_id = $1 ORDER BY seq DESC LIMIT $2",
                )
                .await?;
            Ok(c.query(&stmt, &[&call_id, &(limit as i64)])
                .await?
                .iter()
                .map(|r| RelayAuditRecord {
                    at: r.get::<_, i64>(0) as u64,
                    call_id: r.get(1),
                    call_guid: r.get(2),
                    owner: r.get(3),
                    actor: r.get(4),
                    action: r.get(5),
                    reason: r.get(6),
                })
                .collect())
        })
    }
}

//! The audit trails: session transitions and relay-call control events.

use super::*;

impl AuditTrail for SqliteStore {
    fn audit(&self, id: &str) -> Result<Vec<AuditEvent>, StoreError> {
        self.blocking(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT at, actor, from_state, to_state FROM audit WHERE session_id = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([id], |r| {
                Ok(AuditEvent {
                    at: r.get::<_, i64>(0)? as u64,
                    actor: r.get(1)?,
                    from: r.get(2)?,
                    to: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn relay_audit_add(&self, e: &RelayAuditRecord) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO relay_audit (at, call_id, call_guid, owner, actor, action, reason) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
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
        self.blocking(|conn| {
            let mut stmt = conn.prepare(
                "SELECT at, call_id, call_guid, owner, actor, action, reason FROM relay_audit \
                 WHERE ?1 IS NULL OR call_id = ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(rusqlite::params![call_id, limit as i64], |r| {
                Ok(RelayAuditRecord {
                    at: r.get::<_, i64>(0)? as u64,
                    call_id: r.get(1)?,
                    call_guid: r.get(2)?,
                    owner: r.get(3)?,
                    actor: r.get(4)?,
                    action: r.get(5)?,
                    reason: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

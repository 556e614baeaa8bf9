//! Schema migrations: versioned in `tonegate_schema`, run once under an advisory lock.

use super::*;

/// The advisory lock migrations run under (any constant both nodes agree on).
const MIGRATION_LOCK: i64 = 0x746f_6e65_6761_7465; // "tonegate"

impl PgStore {
    /// Brings the schema up to date, or refuses a newer one without touching it.
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS tonegate_schema (version INTEGER NOT NULL);
             INSERT INTO tonegate_schema SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM tonegate_schema);",
        )
        .await?;
        let version: i32 = tx
            .query_one("SELECT version FROM tonegate_schema", &[])
            .await?
            .get(0);
        let latest = schema::POSTGRES.len() as i32;
        if version > latest {
            return Err(StoreError::Schema(format!(
                "the database's schema is version {version}, from a newer tonegate (this one knows {latest}); refused, left as it is"
            )));
        }
        for m in &schema::POSTGRES[version as usize..] {
            tx.batch_execute(m)
                .await
                .map_err(|e| StoreError::Schema(e.to_string()))?;
        }
        tx.execute("UPDATE tonegate_schema SET version = $1", &[&latest])
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

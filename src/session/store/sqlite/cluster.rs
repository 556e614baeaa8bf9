//! The single-node side of cluster state: the in-process doorbell, event logs, capture nodes.

use super::*;

impl ClusterState for SqliteStore {
    fn doorbell(&self) -> tokio::sync::broadcast::Receiver<Bell> {
        self.bell.subscribe()
    }

    fn event_add(&self, session_id: &str, body: &str, now: u64) -> Result<i64, StoreError> {
        let seq = self.blocking(|conn| {
            let tx = conn.transaction()?;
            let seq = event_line(&tx, session_id, now, body)?;
            tx.commit()?;
            Ok::<_, StoreError>(seq)
        })?;
        self.ring_event(session_id);
        Ok(seq)
    }

    fn events_add(&self, events: &[PendingEvent]) -> Result<usize, StoreError> {
        let groups = by_session(events);
        let written = self.blocking(|conn| {
            let tx = conn.transaction()?;
            let mut written = Vec::new();
            for (id, group) in &groups {
                let last: Option<i64> = tx
                    .query_row(
                        "UPDATE sessions SET event_seq = event_seq + ?1 WHERE id = ?2 RETURNING event_seq",
                        params![group.len() as i64, id],
                        |r| r.get(0),
                    )
                    .optional()?;
                let Some(last) = last else { continue };
                let mut insert = tx.prepare_cached(
                    "INSERT INTO events (session_id, seq, at, body) VALUES (?1, ?2, ?3, ?4)",
                )?;
                let first = last - group.len() as i64 + 1;
                for (seq, e) in (first..).zip(group) {
                    insert.execute(params![id, seq, e.at as i64, e.body])?;
                }
                written.push((*id, group.len()));
            }
            tx.commit()?;
            Ok::<_, StoreError>(written)
        })?;
        for (id, _) in &written {
            self.ring_event(id);
        }
        Ok(written.iter().map(|(_, n)| n).sum())
    }

    fn events_after(
        &self,
        session_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.blocking(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, body FROM events WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![session_id, after, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn set_capture_node(&self, session_id: &str, node: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE sessions SET capture_node = ?1 WHERE id = ?2",
            &[&node, &session_id],
        )?;
        Ok(())
    }

    fn capture_node(&self, session_id: &str) -> Result<Option<String>, StoreError> {
        self.blocking(|conn| {
            Ok(conn
                .query_row(
                    "SELECT capture_node FROM sessions WHERE id = ?1",
                    [session_id],
                    |r| r.get(0),
                )
                .optional()?
                .flatten())
        })
    }

    fn in_states_on(
        &self,
        states: &[SessionState],
        node: &str,
    ) -> Result<Vec<Session>, StoreError> {
        let names: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
        self.query(
            &format!("capture_node = ?1 AND state IN ({})", names.join(",")),
            &[&node],
        )
    }
}

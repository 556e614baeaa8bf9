//! What nodes share: the doorbell (LISTEN/NOTIFY), event logs, capture nodes, node commands and heartbeats.

use super::*;

/// The doorbell: a dedicated connection (not the pool's: LISTEN belongs to one session) that
/// hears every node's notifications and rings `bell`. It reconnects after a failure and then
/// rings `Resync`, since whatever was notified meanwhile is lost.
pub(super) async fn listen(
    pg: tokio_postgres::Config,
    bell: tokio::sync::broadcast::Sender<Bell>,
    origin: String,
) {
    use tokio_postgres::AsyncMessage;
    loop {
        if let Ok((client, mut conn)) = pg.connect(NoTls).await {
            let ring = bell.clone();
            let origin = origin.clone();
            let driver = tokio::spawn(async move {
                while let Some(m) = futures_util::future::poll_fn(|cx| conn.poll_message(cx)).await
                {
                    match m {
                        Ok(AsyncMessage::Notification(n)) => {
                            if let Some(b) = Bell::parse(n.payload(), &origin) {
                                let _ = ring.send(b);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
            if client.batch_execute("LISTEN tonegate").await.is_ok() {
                let _ = bell.send(Bell::Resync);
            } else {
                driver.abort();
            }
            let _ = driver.await;
            tracing::warn!("the store's notification connection closed; reconnecting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl ClusterState for PgStore {
    fn shared(&self) -> bool {
        true
    }

    fn doorbell(&self) -> tokio::sync::broadcast::Receiver<Bell> {
        self.bell.subscribe()
    }

    fn event_add(&self, session_id: &str, body: &str, now: u64) -> Result<i64, StoreError> {
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let seq = self.event_line(&tx, session_id, now, body).await?;
            tx.commit().await?;
            Ok(seq)
        })
    }

    fn events_add(&self, events: &[PendingEvent]) -> Result<usize, StoreError> {
        let groups = by_session(events);
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let (mut ids, mut seqs, mut ats, mut bodies) = (vec![], vec![], vec![], vec![]);
            for (id, group) in &groups {
                // The numbers are taken under the session row's lock, as `event_line` does.
                let Some(row) = tx
                    .query_opt(
                        "UPDATE sessions SET event_seq = event_seq + $1 WHERE id = $2 RETURNING event_seq",
                        &[&(group.len() as i64), id],
                    )
                    .await?
                else {
                    continue;
                };
                let last: i64 = row.get(0);
                for (seq, e) in (last - group.len() as i64 + 1..).zip(group) {
                    ids.push(*id);
                    seqs.push(seq);
                    ats.push(e.at as i64);
                    bodies.push(e.body.as_str());
                }
                notify(&tx, &format!("e:{}:{id}", self.origin)).await?;
            }
            // One statement for the whole batch.
            if !ids.is_empty() {
                tx.execute(
                "INSERT INTO events (session_id, seq, at, body) \
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[])",
                &[&ids, &seqs, &ats, &bodies],
            )
            .await?;
            }
            tx.commit().await?;
            Ok(ids.len())
        })
    }

    fn events_after(
        &self,
        session_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT seq, body FROM events WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                )
                .await?;
            Ok(c.query(&stmt, &[&session_id, &after, &(limit as i64)])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    fn set_capture_node(&self, session_id: &str, node: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE sessions SET capture_node = $1 WHERE id = $2",
            &[&node, &session_id],
        )?;
        Ok(())
    }

    fn capture_node(&self, session_id: &str) -> Result<Option<String>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            Ok(c.query_opt(
                "SELECT capture_node FROM sessions WHERE id = $1",
                &[&session_id],
            )
            .await?
            .and_then(|r| r.get(0)))
        })
    }

    fn in_states_on(
        &self,
        states: &[SessionState],
        node: &str,
    ) -> Result<Vec<Session>, StoreError> {
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        self.sessions("state = ANY($1) AND capture_node = $2", &[&names, &node])
    }

    fn command_add(
        &self,
        node: &str,
        session_id: &str,
        command: &str,
        now: u64,
    ) -> Result<i64, StoreError> {
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let id: i64 = tx
                .query_one(
                    "INSERT INTO commands (node, session_id, command, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
                    &[&node, &session_id, &command, &(now as i64)],
                )
                .await?
                .get(0);
            notify(&tx, &format!("c:{node}")).await?;
            tx.commit().await?;
            Ok(id)
        })
    }

    fn commands_take(&self, node: &str, since: u64) -> Result<Vec<NodeCommand>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(
                    "UPDATE commands SET taken = TRUE WHERE id IN (SELECT id FROM commands \
                     WHERE node = $1 AND NOT taken AND created_at >= $2 FOR UPDATE SKIP LOCKED) \
                     RETURNING id, session_id, command",
                )
                .await?;
            let mut taken: Vec<NodeCommand> = c
                .query(&stmt, &[&node, &(since as i64)])
                .await?
                .iter()
                .map(|r| NodeCommand {
                    id: r.get(0),
                    session_id: r.get(1),
                    command: r.get(2),
                })
                .collect();
            taken.sort_by_key(|c| c.id);
            Ok(taken)
        })
    }

    fn command_done(&self, id: i64, answer: &str) -> Result<(), StoreError> {
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            tx.execute(
                "UPDATE commands SET answer = $1 WHERE id = $2",
                &[&answer, &id],
            )
            .await?;
            notify(&tx, &format!("a:{id}")).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn command_answer(&self, id: i64) -> Result<Option<String>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            Ok(
                c.query_opt("SELECT answer FROM commands WHERE id = $1", &[&id])
                    .await?
                    .and_then(|r| r.get(0)),
            )
        })
    }

    fn command_drop(&self, id: i64) -> Result<(), StoreError> {
        self.exec("DELETE FROM commands WHERE id = $1", &[&id])?;
        Ok(())
    }

    fn heartbeat(&self, node: &str, now: u64) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO nodes (name, beat_at) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET beat_at = GREATEST(nodes.beat_at, EXCLUDED.beat_at)",
            &[&node, &(now as i64)],
        )?;
        Ok(())
    }

    fn stale_nodes(&self, me: &str, before: u64) -> Result<Vec<String>, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            Ok(c.query(
                "SELECT name FROM nodes WHERE name != $1 AND beat_at < $2 ORDER BY name",
                &[&me, &(before as i64)],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn forget_node(&self, node: &str, before: u64) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM nodes WHERE name = $1 AND beat_at < $2",
            &[&node, &(before as i64)],
        )?;
        Ok(())
    }
}

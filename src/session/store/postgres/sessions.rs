//! Session rows, their state changes and lookups.

use super::*;

impl SessionRecords for PgStore {
    fn insert(&self, s: &Session, actor: &str) -> Result<(), StoreError> {
        let payment_data = serde_json::Value::Object(s.payment_data.clone()).to_string();
        let result = json(&s.result);
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            tx.execute(
                &format!(
                    "INSERT INTO sessions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
                ),
                &[
                    &s.id,
                    &s.kind.as_str(),
                    &s.client_id,
                    &s.account_id,
                    &s.call_guid,
                    &s.dtmf_link_id,
                    &s.state.as_str(),
                    &s.amount_minor,
                    &s.currency,
                    &s.merchant_txn_ref,
                    &payment_data,
                    &(s.created_at as i64),
                    &(s.updated_at as i64),
                    &(s.expires_at as i64),
                    &result,
                    &s.ui_secret_hash,
                ],
            )
            .await
            .map_err(|e| match e.as_db_error() {
                Some(d) if d.constraint() == Some("sessions_live_link") => StoreError::LinkIdTaken,
                _ => StoreError::Pg(e),
            })?;
            audit_line(&tx, &s.id, s.created_at, actor, None, s.state.as_str()).await?;
            self.event_line(&tx, &s.id, s.created_at, &state_event(s.state.as_str(), &result))
                .await?;
            if s.call_guid.is_some() {
                // A node that holds the call already links it (the session came late).
                notify(&tx, &format!("s:{}:{}", self.origin, s.id)).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn get(&self, id: &str) -> Result<Option<Session>, StoreError> {
        Ok(self.sessions("id = $1", &[&id])?.pop())
    }

    fn transition(
        &self,
        id: &str,
        t: Transition,
        actor: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let (from, to) = (t.from().as_str(), t.to().as_str());
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let moved = tx
                .query_opt(
                    "UPDATE sessions SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4 RETURNING result",
                    &[&to, &(now as i64), &id, &from],
                )
                .await?;
            if let Some(row) = &moved {
                audit_line(&tx, id, now, actor, Some(from), to).await?;
                let result: String = row.get(0);
                self.event_line(&tx, id, now, &state_event(to, &result)).await?;
            }
            tx.commit().await?;
            Ok(moved.is_some())
        })
    }

    fn settle(
        &self,
        id: &str,
        t: Transition,
        actor: &str,
        now: u64,
        result: Option<&PaymentResult>,
        webhook: &(dyn Fn(&Session) -> Option<WebhookDelivery> + Sync),
    ) -> Result<bool, StoreError> {
        let (from, to) = (t.from().as_str(), t.to().as_str());
        let result = result.map(json);
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            // The row lock taken here holds off every other node's change until commit.
            let n = tx
                .execute(
                    "UPDATE sessions SET state = $1, updated_at = $2, result = COALESCE($3, result) \
                     WHERE id = $4 AND state = $5",
                    &[&to, &(now as i64), &result, &id, &from],
                )
                .await?;
            if n != 1 {
                return Ok(false); // dropped: rolled back
            }
            audit_line(&tx, id, now, actor, Some(from), to).await?;
            let row = tx
                .query_one(&format!("SELECT {COLUMNS} FROM sessions WHERE id = $1"), &[&id])
                .await?;
            let ended = row_to_session(&row)?;
            if let Some(w) = webhook(&ended) {
                insert_webhook(&tx, &w).await?;
            }
            self.event_line(&tx, id, now, &state_event(to, &json(&ended.result)))
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    fn set_result(&self, id: &str, result: &PaymentResult, now: u64) -> Result<(), StoreError> {
        let result = json(result);
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let row = tx
                .query_opt(
                    "UPDATE sessions SET result = $1, updated_at = $2 WHERE id = $3 RETURNING state",
                    &[&result, &(now as i64), &id],
                )
                .await?;
            if let Some(row) = row {
                let state: String = row.get(0);
                self.event_line(&tx, id, now, &state_event(&state, &result))
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn take_ui_secret(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.exec(
            "UPDATE sessions SET ui_secret_hash = NULL WHERE id = $1 AND ui_secret_hash IS NOT NULL",
            &[&id],
        )? == 1)
    }

    fn expired(&self, now: u64) -> Result<Vec<Session>, StoreError> {
        self.sessions(
            &format!("{LIVE} AND state != 'Submitting' AND expires_at <= $1"),
            &[&(now as i64)],
        )
    }

    fn in_states(&self, states: &[SessionState]) -> Result<Vec<Session>, StoreError> {
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        self.sessions("state = ANY($1)", &[&names])
    }

    fn live_by_link_id(
        &self,
        client_id: &str,
        link_id: &str,
    ) -> Result<Option<Session>, StoreError> {
        Ok(self
            .sessions(
                &format!("client_id = $1 AND dtmf_link_id = $2 AND {LIVE}"),
                &[&client_id, &link_id],
            )?
            .pop())
    }

    fn any_in_state(
        &self,
        client_id: &str,
        kind: SessionKind,
        state: SessionState,
    ) -> Result<bool, StoreError> {
        self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM sessions WHERE state = $1 AND client_id = $2 AND kind = $3)",
                )
                .await?;
            Ok(c.query_one(&stmt, &[&state.as_str(), &client_id, &kind.as_str()])
                .await?
                .get(0))
        })
    }

    fn live_by_call_guid(
        &self,
        client_id: &str,
        call_guid: &str,
    ) -> Result<Option<Session>, StoreError> {
        Ok(self
            .sessions(
                &format!(
                    "client_id = $1 AND call_guid = $2 AND {LIVE} ORDER BY created_at DESC LIMIT 1"
                ),
                &[&client_id, &call_guid],
            )?
            .pop())
    }

    fn live_by_merchant_ref(
        &self,
        client: &str,
        account: &str,
        kind: SessionKind,
        merchant_ref: &str,
    ) -> Result<Option<Session>, StoreError> {
        Ok(self
            .sessions(
                &format!("client_id = $1 AND account_id = $2 AND kind = $3 AND merchant_txn_ref = $4 AND {LIVE}"),
                &[&client, &account, &kind.as_str(), &merchant_ref],
            )?
            .pop())
    }

    fn list(&self, client_id: &str, f: &SessionFilter) -> Result<Vec<Session>, StoreError> {
        // Every filter is always bound; a NULL one matches everything.
        let state = f.state.map(|s| s.as_str());
        let from = f.created_from.map(|t| t as i64);
        let to = f.created_to.map(|t| t as i64);
        let after_t = f.after.as_ref().map(|(t, _)| *t as i64);
        let after_id = f.after.as_ref().map(|(_, id)| id.as_str());
        self.sessions(
            "client_id = $1 AND ($2::TEXT IS NULL OR call_guid = $2) \
             AND ($3::TEXT IS NULL OR merchant_txn_ref = $3) AND ($4::TEXT IS NULL OR state = $4) \
             AND ($5::BIGINT IS NULL OR created_at >= $5) AND ($6::BIGINT IS NULL OR created_at < $6) \
             AND ($7::BIGINT IS NULL OR created_at < $7 OR (created_at = $7 AND id < $8)) \
             ORDER BY created_at DESC, id DESC LIMIT $9",
            &[
                &client_id,
                &f.call_guid,
                &f.merchant_txn_ref,
                &state,
                &from,
                &to,
                &after_t,
                &after_id,
                &(f.limit as i64),
            ],
        )
    }

    fn live_counts(&self) -> Result<Vec<(SessionState, u64)>, StoreError> {
        let counted = self.run(async {
            let c = self.conn().await?;
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT state, count(*) FROM sessions WHERE {LIVE} GROUP BY state"
                ))
                .await?;
            Ok(c.query(&stmt, &[])
                .await?
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
                .collect::<Vec<_>>())
        })?;
        Ok(SessionState::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .map(|s| {
                let n = counted
                    .iter()
                    .find(|(name, _)| name == s.as_str())
                    .map_or(0, |c| c.1);
                (s, n)
            })
            .collect())
    }

    fn terminal_without_webhook(&self, since: u64) -> Result<Vec<Session>, StoreError> {
        self.sessions(
            &format!(
                "{TERMINAL} AND updated_at >= $1 \
                 AND NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.session_id = sessions.id)"
            ),
            &[&(since as i64)],
        )
    }
}

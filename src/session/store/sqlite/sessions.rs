//! Session rows, their state changes and lookups.

use super::*;

impl SessionRecords for SqliteStore {
    fn insert(&self, s: &Session, actor: &str) -> Result<(), StoreError> {
        self.blocking(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                &format!("INSERT INTO sessions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"),
                params![
                    s.id,
                    s.kind.as_str(),
                    s.client_id,
                    s.account_id,
                    s.call_guid,
                    s.dtmf_link_id,
                    s.state.as_str(),
                    s.amount_minor,
                    s.currency,
                    s.merchant_txn_ref,
                    serde_json::Value::Object(s.payment_data.clone()).to_string(),
                    s.created_at as i64,
                    s.updated_at as i64,
                    s.expires_at as i64,
                    serde_json::to_string(&s.result).expect("result serialises"),
                    s.ui_secret_hash,
                ],
            )
            .map_err(|e| match &e {
                rusqlite::Error::SqliteFailure(f, Some(m))
                    if f.code == rusqlite::ErrorCode::ConstraintViolation
                        && m.contains("dtmf_link_id") =>
                {
                    StoreError::LinkIdTaken
                }
                _ => StoreError::Db(e),
            })?;
            tx.execute(
                "INSERT INTO audit (session_id, at, actor, from_state, to_state) VALUES (?1, ?2, ?3, NULL, ?4)",
                params![s.id, s.created_at as i64, actor, s.state.as_str()],
            )?;
            let body = state_event(
                s.state.as_str(),
                &serde_json::to_string(&s.result).expect("result serialises"),
            );
            event_line(&tx, &s.id, s.created_at, &body)?;
            tx.commit()?;
            Ok::<_, StoreError>(())
        })?;
        self.ring_event(&s.id);
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<Session>, StoreError> {
        Ok(self.query("id = ?1", &[&id])?.pop())
    }

    fn transition(
        &self,
        id: &str,
        t: Transition,
        actor: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let (from, to) = (t.from(), t.to());
        let moved = self.blocking(|conn| {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "UPDATE sessions SET state = ?1, updated_at = ?2 WHERE id = ?3 AND state = ?4",
                params![to.as_str(), now as i64, id, from.as_str()],
            )?;
            if n == 1 {
                tx.execute(
                    "INSERT INTO audit (session_id, at, actor, from_state, to_state) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, now as i64, actor, from.as_str(), to.as_str()],
                )?;
                let result: String =
                    tx.query_row("SELECT result FROM sessions WHERE id = ?1", [id], |r| {
                        r.get(0)
                    })?;
                event_line(&tx, id, now, &state_event(to.as_str(), &result))?;
            }
            tx.commit()?;
            Ok::<_, StoreError>(n == 1)
        })?;
        if moved {
            self.ring_event(id);
        }
        Ok(moved)
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
        let (from, to) = (t.from(), t.to());
        let settled = self.blocking(|conn| {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "UPDATE sessions SET state = ?1, updated_at = ?2 WHERE id = ?3 AND state = ?4",
                params![to.as_str(), now as i64, id, from.as_str()],
            )?;
            if n != 1 {
                return Ok::<_, StoreError>(false); // dropped: rolled back
            }
            if let Some(r) = result {
                tx.execute(
                    "UPDATE sessions SET result = ?1 WHERE id = ?2",
                    params![serde_json::to_string(r).expect("result serialises"), id],
                )?;
            }
            tx.execute(
                "INSERT INTO audit (session_id, at, actor, from_state, to_state) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, now as i64, actor, from.as_str(), to.as_str()],
            )?;
            let ended = tx.query_row(
                &format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1"),
                [id],
                row_to_session,
            )??;
            if let Some(w) = webhook(&ended) {
                insert_webhook(&tx, &w)?;
            }
            let result = serde_json::to_string(&ended.result).expect("result serialises");
            event_line(&tx, id, now, &state_event(to.as_str(), &result))?;
            tx.commit()?;
            Ok(true)
        })?;
        if settled {
            self.ring_event(id);
        }
        Ok(settled)
    }

    fn set_result(&self, id: &str, result: &PaymentResult, now: u64) -> Result<(), StoreError> {
        let result = serde_json::to_string(result).expect("result serialises");
        let changed = self.blocking(|conn| {
            let tx = conn.transaction()?;
            let state: Option<String> = tx
                .query_row(
                    "UPDATE sessions SET result = ?1, updated_at = ?2 WHERE id = ?3 RETURNING state",
                    params![result, now as i64, id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(state) = &state {
                event_line(&tx, id, now, &state_event(state, &result))?;
            }
            tx.commit()?;
            Ok::<_, StoreError>(state.is_some())
        })?;
        if changed {
            self.ring_event(id);
        }
        Ok(())
    }

    fn take_ui_secret(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.exec("UPDATE sessions SET ui_secret_hash = NULL WHERE id = ?1 AND ui_secret_hash IS NOT NULL", &[&id])? == 1)
    }

    fn expired(&self, now: u64) -> Result<Vec<Session>, StoreError> {
        self.query(
            &format!("{LIVE} AND state != 'Submitting' AND expires_at <= ?1"),
            &[&(now as i64)],
        )
    }

    fn in_states(&self, states: &[SessionState]) -> Result<Vec<Session>, StoreError> {
        let list: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
        self.query(&format!("state IN ({})", list.join(",")), &[])
    }

    fn live_by_link_id(
        &self,
        client_id: &str,
        link_id: &str,
    ) -> Result<Option<Session>, StoreError> {
        Ok(self
            .query(
                &format!("client_id = ?1 AND dtmf_link_id = ?2 AND {LIVE}"),
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
        self.blocking(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM sessions WHERE state = ?1 AND client_id = ?2 AND kind = ?3)",
                )?
                .query_row(params![state.as_str(), client_id, kind.as_str()], |r| {
                    r.get::<_, bool>(0)
                })?)
        })
    }

    fn live_by_call_guid(
        &self,
        client_id: &str,
        call_guid: &str,
    ) -> Result<Option<Session>, StoreError> {
        Ok(self
            .query(
                &format!("client_id = ?1 AND call_guid = ?2 AND {LIVE} ORDER BY created_at DESC"),
                &[&client_id, &call_guid],
            )?
            .into_iter()
            .next())
    }

    fn live_by_merchant_ref(
        &self,
        client: &str,
        account: &str,
        kind: SessionKind,
        merchant_ref: &str,
    ) -> Result<Option<Session>, StoreError> {
        Ok(self
            .query(
                &format!("client_id = ?1 AND account_id = ?2 AND kind = ?3 AND merchant_txn_ref = ?4 AND {LIVE}"),
                &[&client, &account, &kind.as_str(), &merchant_ref],
            )?
            .pop())
    }

    fn list(&self, client_id: &str, f: &SessionFilter) -> Result<Vec<Session>, StoreError> {
        let mut clause = String::from("client_id = ?1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(client_id.to_string())];
        let mut add = |sql: &str, v: Box<dyn rusqlite::ToSql>| {
            args.push(v);
            clause.push_str(&sql.replace('?', &format!("?{}", args.len())));
        };
        if let Some(g) = &f.call_guid {
            add(" AND call_guid = ?", Box::new(g.clone()));
        }
        if let Some(r) = &f.merchant_txn_ref {
            add(" AND merchant_txn_ref = ?", Box::new(r.clone()));
        }
        if let Some(s) = f.state {
            add(" AND state = ?", Box::new(s.as_str()));
        }
        if let Some(t) = f.created_from {
            add(" AND created_at >= ?", Box::new(t as i64));
        }
        if let Some(t) = f.created_to {
            add(" AND created_at < ?", Box::new(t as i64));
        }
        if let Some((t, id)) = &f.after {
            add(" AND (created_at < ?", Box::new(*t as i64));
            add(" OR (created_at = ?", Box::new(*t as i64));
            add(" AND id < ?))", Box::new(id.clone()));
        }
        add(
            " ORDER BY created_at DESC, id DESC LIMIT ?",
            Box::new(f.limit as i64),
        );
        let refs: Vec<&dyn rusqlite::ToSql> = args.iter().map(|a| &**a).collect();
        self.query(&clause, &refs)
    }

    fn live_counts(&self) -> Result<Vec<(SessionState, u64)>, StoreError> {
        self.blocking(|conn| {
            // The state index answers this without reading the sessions' rows.
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT state, count(*) FROM sessions WHERE {LIVE} GROUP BY state"
            ))?;
            let mut out: Vec<(SessionState, u64)> = SessionState::ALL
                .into_iter()
                .filter(|s| !s.is_terminal())
                .map(|s| (s, 0))
                .collect();
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let state = r.get::<_, String>(0)?;
                let n = r.get::<_, i64>(1)? as u64;
                if let Some(slot) = out.iter_mut().find(|(s, _)| s.as_str() == state) {
                    slot.1 = n;
                }
            }
            Ok(out)
        })
    }

    fn terminal_without_webhook(&self, since: u64) -> Result<Vec<Session>, StoreError> {
        self.query(
            "state IN ('Completed','Declined','Failed','Cancelled','Expired') AND updated_at >= ?1 \
             AND NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.session_id = sessions.id)",
            &[&(since as i64)],
        )
    }
}

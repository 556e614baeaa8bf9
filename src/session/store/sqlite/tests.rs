//! What only SQLite has (its file, pragmas, query plans, trigger, migrations from older
//! files); the behaviour of every role is tests/sessions/store.rs, run on each backend.
use super::*;

fn session(id: &str) -> Session {
    Session {
        id: id.into(),
        kind: SessionKind::SelfService,
        client_id: "c".into(),
        account_id: "a".into(),
        call_guid: Some("g".into()),
        dtmf_link_id: Some("123456".into()),
        state: SessionState::Created,
        amount_minor: Some(12499),
        currency: "GBP".into(),
        merchant_txn_ref: Some("ref".into()),
        payment_data: serde_json::from_str(
            r#"{"cardholderName":"A N Other","cardholder Address":"1 High St"}"#,
        )
        .unwrap(),
        created_at: 100,
        updated_at: 100,
        expires_at: 200,
        result: PaymentResult::default(),
        ui_secret_hash: None,
    }
}

#[test]
fn a_database_from_a_newer_tonegate_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    drop(SqliteStore::open(&path).unwrap());
    let c = Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let e = SqliteStore::open(&path).err().expect("refused").to_string();
    assert!(e.contains("migrating the schema"), "{e}");
    let c = Connection::open(&path).unwrap();
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 99);
    // An older one (version 4: no webhook outbox, no state-machine trigger, no idempotency
    // table) is brought up to date.
    c.pragma_update(None, "user_version", 4).unwrap();
    c.execute_batch(
        "DROP TABLE webhooks; DROP TRIGGER sessions_state_machine;
         DROP TABLE idempotency; DROP INDEX sessions_client_created;
         DROP INDEX sessions_live_link; DROP TABLE events;
         ALTER TABLE sessions DROP COLUMN capture_node;
         ALTER TABLE sessions DROP COLUMN event_seq",
    )
    .unwrap();
    drop(c);
    let st = SqliteStore::open(&path).unwrap();
    assert!(
        st.webhooks_due(0, 1).unwrap().is_empty(),
        "migration 5 ran again"
    );
    let trigger: i64 = st.blocking(|c| {
        c.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name = 'sessions_state_machine'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    });
    assert_eq!(trigger, 1, "migration 6 ran again");
}

#[test]
fn survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x/tonegate.db");
    SqliteStore::open(&path)
        .unwrap()
        .insert(&session("s2"), "t")
        .unwrap();
    let again = SqliteStore::open(&path).unwrap();
    assert_eq!(again.get("s2").unwrap().unwrap().id, "s2");
    // Only its owner may read it, and its WAL likewise.
    use std::os::unix::fs::PermissionsExt;
    for f in [path.clone(), path.with_extension("db-wal")] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    let sync: i64 = again.blocking(|c| {
        c.pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap()
    });
    assert_eq!(sync, 2, "synchronous = FULL");
}

#[test]
fn waiting_sessions_are_found_by_index() {
    let st = SqliteStore::in_memory().unwrap();
    let ss = (SessionKind::SelfService, SessionState::Created);
    assert!(!st.any_in_state("c", ss.0, ss.1).unwrap());
    st.insert(&session("s3"), "t").unwrap();
    assert!(st.any_in_state("c", ss.0, ss.1).unwrap());
    assert!(!st.any_in_state("other", ss.0, ss.1).unwrap());
    assert!(!st.any_in_state("c", SessionKind::Agent, ss.1).unwrap());
    st.transition("s3", ss.1.to(SessionState::Cancelled).unwrap(), "t", 101)
        .unwrap();
    assert!(!st.any_in_state("c", ss.0, ss.1).unwrap());
    // The sweeps and the call-link check read the state index, not the whole table.
    let plan: Vec<String> = st.blocking(|conn| {
        let mut q = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT id FROM sessions WHERE {LIVE} AND expires_at <= 5"
            ))
            .unwrap();
        q.query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    });
    assert!(
        plan.iter().any(|p| p.contains("sessions_state")),
        "{plan:?}"
    );
}

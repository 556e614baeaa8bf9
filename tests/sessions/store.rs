//! The store suite: the same tests run against every backend (SQLite, PostgreSQL), one role at
//! a time. Two handles on one database stand for two nodes (or two workers) racing.

use std::collections::HashSet;
use std::sync::Arc;

use tonegate::session::model::{PaymentResult, Session, SessionKind, SessionState};
use tonegate::session::store::{
    IdempotentAnswer, PgStore, RelayAuditRecord, SessionFilter, SessionStore, SqliteStore,
    WebhookDelivery, WebhookState,
};

use crate::common;

/// SQL run on a database directly: the rows changed, or the database's error.
type RawSql = Box<dyn Fn(&str) -> Result<usize, String>>;

/// One database of one backend: `open` gives another handle on it.
struct Backend {
    open: Box<dyn Fn() -> Result<Arc<dyn SessionStore>, String>>,
    /// Runs SQL on the database directly, as an operator (or a bug) could.
    sql: RawSql,
    /// Marks the schema as a newer tonegate's.
    bump_schema: Box<dyn Fn()>,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    fn store(&self) -> Arc<dyn SessionStore> {
        (self.open)().unwrap()
    }
}

fn sqlite() -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let p = path.clone();
    let raw = path.clone();
    Some(Backend {
        sql: Box::new(move |q| {
            rusqlite::Connection::open(&raw)
                .unwrap()
                .execute(q, [])
                .map_err(|e| e.to_string())
        }),
        open: Box::new(move || {
            SqliteStore::open(&p)
                .map(|s| Arc::new(s) as Arc<dyn SessionStore>)
                .map_err(|e| e.to_string())
        }),
        bump_schema: Box::new(move || {
            rusqlite::Connection::open(&path)
                .unwrap()
                .pragma_update(None, "user_version", 99)
                .unwrap();
        }),
        _dir: Some(dir),
    })
}

fn postgres() -> Option<Backend> {
    let url = common::postgres::database()?;
    let u = url.clone();
    let raw = url.clone();
    Some(Backend {
        sql: Box::new(move |q| common::postgres::try_exec(&raw, q)),
        open: Box::new(move || {
            PgStore::open(&u)
                .map(|s| Arc::new(s) as Arc<dyn SessionStore>)
                .map_err(|e| e.to_string())
        }),
        bump_schema: Box::new(move || {
            common::postgres::exec(&url, "UPDATE tonegate_schema SET version = 99");
        }),
        _dir: None,
    })
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(&super::sqlite().unwrap()); })*
        }
        mod postgres {
            $(#[test] fn $name() {
                if let Some(b) = super::postgres() { super::$name(&b); }
            })*
        }
    };
}

suite!(
    sessions_round_trip_and_every_transition_is_audited,
    a_session_settles_exactly_once_however_many_race,
    sessions_are_found_listed_and_counted,
    a_link_is_used_once,
    a_live_link_id_belongs_to_one_session_of_its_client,
    the_sms_outbox_keeps_order,
    two_claimers_never_get_the_same_webhook,
    webhook_tries_are_recorded,
    an_idempotent_answer_is_kept_once_and_expires,
    retention_forgets_personal_data_and_keeps_the_rest,
    relay_audit_is_kept_newest_first,
    a_database_from_a_newer_tonegate_is_refused_and_left_alone,
    the_database_refuses_exactly_the_moves_the_state_machine_refuses,
    agent_ui_events_are_numbered_per_session_resumable_and_forgotten_with_it,
    a_written_event_rings_the_doorbell_of_every_handle,
    a_batch_of_events_keeps_each_sessions_order_and_numbers,
);

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
        ui_secret_hash: Some("h".into()),
    }
}

fn hook(event_id: &str, session: &str, at: u64) -> WebhookDelivery {
    WebhookDelivery {
        event_id: event_id.into(),
        session_id: session.into(),
        account_id: "a".into(),
        url: "http://127.0.0.1:9/hook".into(),
        body: format!(r#"{{"event":"{event_id}"}}"#),
        created_at: at,
        attempts: 0,
        next_at: at,
        state: WebhookState::Pending,
        last_error: None,
    }
}

/// Walks `id` from Created to Submitting.
fn to_submitting(st: &dyn SessionStore, id: &str) {
    use SessionState::*;
    for (from, to) in [
        (Created, Capturing),
        (Capturing, ReadyToSubmit),
        (ReadyToSubmit, Submitting),
    ] {
        assert!(st.transition(id, from.to(to).unwrap(), "t", 110).unwrap());
    }
}

fn sessions_round_trip_and_every_transition_is_audited(b: &Backend) {
    use SessionState::*;
    let st = b.store();
    st.insert(&session("s1"), "client:c").unwrap();
    assert_eq!(st.get("s1").unwrap().unwrap(), session("s1"));
    assert!(st.get("nope").unwrap().is_none());
    assert!(st
        .transition("s1", Created.to(Capturing).unwrap(), "gateway", 110)
        .unwrap());
    // A stale transition (the session is no longer Created) writes nothing.
    assert!(!st
        .transition("s1", Created.to(Cancelled).unwrap(), "client:c", 111)
        .unwrap());
    let s = st.get("s1").unwrap().unwrap();
    assert_eq!((s.state, s.updated_at), (Capturing, 110));
    let audit = st.audit("s1").unwrap();
    let lines: Vec<_> = audit
        .iter()
        .map(|a| (a.at, a.actor.as_str(), a.from.as_deref(), a.to.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (100, "client:c", None, "Created"),
            (110, "gateway", Some("Created"), "Capturing")
        ]
    );
    let r = PaymentResult {
        psp_transaction_id: Some("pi_1".into()),
        ..Default::default()
    };
    st.set_result("s1", &r, 120).unwrap();
    assert_eq!(st.get("s1").unwrap().unwrap().result, r);
    // The payment-UI credential is single-use.
    assert!(st.take_ui_secret("s1").unwrap());
    assert!(!st.take_ui_secret("s1").unwrap());
    assert_eq!(st.get("s1").unwrap().unwrap().ui_secret_hash, None);
}

fn a_session_settles_exactly_once_however_many_race(b: &Backend) {
    use SessionState::*;
    let st = b.store();
    st.insert(&session("s1"), "client:c").unwrap();
    let declined = PaymentResult {
        failure_reason: Some("card_declined".into()),
        ..Default::default()
    };
    let make = |s: &Session| {
        Some(WebhookDelivery {
            body: format!(
                r#"{{"state":"{}","reason":{:?}}}"#,
                s.state.as_str(),
                s.result.failure_reason
            ),
            ..hook(&format!("evt-{}", uniq()), &s.id, 120)
        })
    };
    // From a state it is not in: nothing written, no webhook.
    let t = Submitting.to(Declined).unwrap();
    assert!(!st
        .settle("s1", t, "psp", 120, Some(&declined), &make)
        .unwrap());
    assert_eq!(
        st.get("s1").unwrap().unwrap().result,
        PaymentResult::default()
    );
    assert!(st.webhooks_due(1000, 10).unwrap().is_empty());
    to_submitting(&*st, "s1");
    // Eight settlers on two handles (two nodes) race: one wins, one webhook.
    let other = b.store();
    let won: usize = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let h = if i % 2 == 0 {
                    st.clone()
                } else {
                    other.clone()
                };
                let declined = declined.clone();
                sc.spawn(move || {
                    h.settle("s1", t, "psp", 120, Some(&declined), &make)
                        .unwrap() as usize
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(won, 1);
    let s = st.get("s1").unwrap().unwrap();
    assert_eq!((s.state, &s.result), (Declined, &declined));
    let audit = st.audit("s1").unwrap();
    assert_eq!(audit.iter().filter(|a| a.to == "Declined").count(), 1);
    let due = st.webhooks_due(1000, 10).unwrap();
    assert_eq!(due.len(), 1, "{due:?}");
    // The webhook was made of the ended session, in the same transaction.
    assert!(
        due[0].body.contains("Declined") && due[0].body.contains("card_declined"),
        "{}",
        due[0].body
    );
    assert!(st.terminal_without_webhook(0).unwrap().is_empty());
}

fn uniq() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn sessions_are_found_listed_and_counted(b: &Backend) {
    use SessionState::*;
    let st = b.store();
    let ss = (SessionKind::SelfService, Created);
    assert!(!st.any_in_state("c", ss.0, ss.1).unwrap());
    for (i, id) in ["s1", "s2", "s3"].iter().enumerate() {
        let mut s = session(id);
        s.created_at = 100 + i as u64;
        s.call_guid = Some(format!("g{i}"));
        s.dtmf_link_id = Some(format!("11111{i}"));
        s.merchant_txn_ref = Some(format!("ref{i}"));
        st.insert(&s, "t").unwrap();
    }
    let mut other = session("o1");
    other.client_id = "other".into();
    st.insert(&other, "t").unwrap();
    assert!(st.any_in_state("c", ss.0, ss.1).unwrap());
    assert!(!st.any_in_state("c", SessionKind::Agent, ss.1).unwrap());
    // Lookups are per client and see live sessions only.
    assert_eq!(st.live_by_link_id("c", "111111").unwrap().unwrap().id, "s2");
    assert!(st.live_by_link_id("other", "111111").unwrap().is_none());
    assert_eq!(st.live_by_call_guid("c", "g2").unwrap().unwrap().id, "s3");
    assert!(st.live_by_call_guid("other", "g2").unwrap().is_none());
    assert_eq!(
        st.live_by_merchant_ref("c", "a", SessionKind::SelfService, "ref0")
            .unwrap()
            .unwrap()
            .id,
        "s1"
    );
    assert!(st
        .live_by_merchant_ref("c", "a", SessionKind::Agent, "ref0")
        .unwrap()
        .is_none());
    st.transition("s3", Created.to(Cancelled).unwrap(), "t", 150)
        .unwrap();
    assert!(st.live_by_call_guid("c", "g2").unwrap().is_none());
    assert!(st.live_by_link_id("c", "111112").unwrap().is_none());
    // Expiry: live sessions past their time (not the one being paid).
    assert!(st.expired(199).unwrap().is_empty());
    let mut expired: Vec<_> = st.expired(200).unwrap().into_iter().map(|s| s.id).collect();
    expired.sort();
    assert_eq!(expired, ["o1", "s1", "s2"]);
    to_submitting(&*st, "s1");
    assert!(st.expired(500).unwrap().iter().all(|s| s.id != "s1"));
    let sub: Vec<_> = st
        .in_states(&[Submitting, Cancelled])
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(sub.len(), 2, "{sub:?}");
    let counts = st.live_counts().unwrap();
    let count = |s: SessionState| counts.iter().find(|c| c.0 == s).unwrap().1;
    assert_eq!(
        (count(Created), count(Submitting), count(Capturing)),
        (2, 1, 0)
    );
    assert!(counts.iter().all(|c| !c.0.is_terminal()));
    // The cancelled one has no webhook queued.
    let missing: Vec<_> = st
        .terminal_without_webhook(0)
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(missing, ["s3"]);
    assert!(st.terminal_without_webhook(151).unwrap().is_empty());
    // Listing: newest first, filtered, paged.
    let page = |f: SessionFilter| -> Vec<String> {
        st.list("c", &f)
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect()
    };
    let all = SessionFilter {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(page(all.clone()), ["s3", "s2", "s1"]);
    assert_eq!(
        page(SessionFilter {
            limit: 2,
            ..all.clone()
        }),
        ["s3", "s2"]
    );
    assert_eq!(
        page(SessionFilter {
            after: Some((101, "s2".into())),
            ..all.clone()
        }),
        ["s1"]
    );
    assert_eq!(
        page(SessionFilter {
            state: Some(Cancelled),
            ..all.clone()
        }),
        ["s3"]
    );
    assert_eq!(
        page(SessionFilter {
            call_guid: Some("g1".into()),
            ..all.clone()
        }),
        ["s2"]
    );
    assert_eq!(
        page(SessionFilter {
            merchant_txn_ref: Some("ref0".into()),
            ..all.clone()
        }),
        ["s1"]
    );
    assert_eq!(
        page(SessionFilter {
            created_from: Some(101),
            created_to: Some(102),
            ..all.clone()
        }),
        ["s2"]
    );
    assert_eq!(st.list("other", &all).unwrap().len(), 1);
}

fn a_link_is_used_once(b: &Backend) {
    let st = b.store();
    st.insert(&session("s1"), "t").unwrap();
    assert!(st.link("h1").unwrap().is_none());
    st.insert_link("h1", "s1", 100, 200).unwrap();
    let l = st.link("h1").unwrap().unwrap();
    assert_eq!(
        (l.session_id.as_str(), l.expires_at, l.used_at, l.revoked),
        ("s1", 200, None, false)
    );
    // Re-issued: the earlier link is revoked and can no longer be used.
    st.insert_link("h2", "s1", 110, 210).unwrap();
    assert!(st.link("h1").unwrap().unwrap().revoked);
    assert!(!st.use_link("h1", 120).unwrap());
    // Sixteen tries on two handles: exactly one uses it.
    let other = b.store();
    let used: usize = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..16)
            .map(|i| {
                let h = if i % 2 == 0 {
                    st.clone()
                } else {
                    other.clone()
                };
                sc.spawn(move || h.use_link("h2", 130).unwrap() as usize)
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(used, 1);
    assert_eq!(st.link("h2").unwrap().unwrap().used_at, Some(130));
}

fn a_live_link_id_belongs_to_one_session_of_its_client(b: &Backend) {
    use tonegate::session::store::StoreError;
    let st = b.store();
    st.insert(&session("s1"), "t").unwrap();
    // Same client, same live link id: refused, nothing stored (a create that raced draws again).
    let mut twin = session("s2");
    twin.call_guid = Some("g2".into());
    assert!(matches!(
        st.insert(&twin, "t"),
        Err(StoreError::LinkIdTaken)
    ));
    assert!(st.get("s2").unwrap().is_none() && st.audit("s2").unwrap().is_empty());
    // Another client's namespace is its own.
    let mut other = session("o1");
    other.client_id = "other".into();
    st.insert(&other, "t").unwrap();
    // Once the first has ended, the id is free again.
    st.transition(
        "s1",
        SessionState::Created.to(SessionState::Cancelled).unwrap(),
        "t",
        150,
    )
    .unwrap();
    st.insert(&twin, "t").unwrap();
}

fn the_sms_outbox_keeps_order(b: &Backend) {
    let st = b.store();
    let a = st
        .outbox_add(Some("s1"), "+447700900001", "first", 100)
        .unwrap();
    let c = st.outbox_add(None, "+447700900002", "second", 101).unwrap();
    assert!(c > a);
    let all = st.outbox(10).unwrap();
    let got: Vec<_> = all
        .iter()
        .map(|m| {
            (
                m.seq,
                m.session_id.as_deref(),
                m.to.as_str(),
                m.body.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (c, None, "+447700900002", "second"),
            (a, Some("s1"), "+447700900001", "first")
        ]
    );
    assert_eq!(st.outbox(1).unwrap().len(), 1);
}

fn two_claimers_never_get_the_same_webhook(b: &Backend) {
    let st = b.store();
    let n = 60;
    for i in 0..n {
        st.webhook_add(&hook(&format!("e{i}"), "s", 100 + i))
            .unwrap();
    }
    // Queueing the same event again changes nothing.
    st.webhook_add(&hook("e0", "s", 999)).unwrap();
    assert_eq!(st.webhook_backlog().unwrap(), (n, Some(100)));
    // Two claimers on two handles take batches until nothing is due.
    let other = b.store();
    let claimed: Vec<Vec<String>> = std::thread::scope(|sc| {
        let hs: Vec<_> = [st.clone(), other.clone()]
            .into_iter()
            .map(|h| {
                sc.spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        let got = h.webhooks_claim(1000, 5000, 7).unwrap();
                        if got.is_empty() {
                            return mine;
                        }
                        assert!(got.iter().all(|w| w.next_at == 5000));
                        mine.extend(got.into_iter().map(|w| w.event_id));
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total: usize = claimed.iter().map(Vec::len).sum();
    let distinct: HashSet<&String> = claimed.iter().flatten().collect();
    assert_eq!(
        (total, distinct.len()),
        (n as usize, n as usize),
        "{claimed:?}"
    );
    // Held: not due again until the hold ends; then a dead claimer's are taken again.
    assert!(st.webhooks_claim(4999, 6000, 100).unwrap().is_empty());
    assert_eq!(
        st.webhooks_claim(5000, 9000, 100).unwrap().len(),
        n as usize
    );
    // Oldest first.
    let st2 = b.store();
    let first = st2.webhooks_claim(9000, 9500, 3).unwrap();
    let ids: Vec<_> = first.iter().map(|w| w.event_id.as_str()).collect();
    assert_eq!(ids, ["e0", "e1", "e2"]);
}

fn webhook_tries_are_recorded(b: &Backend) {
    let st = b.store();
    st.webhook_add(&hook("ok", "s1", 100)).unwrap();
    st.webhook_add(&hook("retry", "s2", 101)).unwrap();
    st.webhook_add(&hook("gone", "s3", 102)).unwrap();
    assert_eq!(st.webhooks_due(99, 10).unwrap().len(), 0);
    assert_eq!(st.webhooks_due(200, 10).unwrap().len(), 3);
    st.webhook_tried("ok", WebhookState::Delivered, 200, None)
        .unwrap();
    st.webhook_tried("retry", WebhookState::Pending, 300, Some("HTTP 500"))
        .unwrap();
    st.webhook_tried("gone", WebhookState::Failed, 200, Some("timed out"))
        .unwrap();
    let due: Vec<_> = st.webhooks_due(299, 10).unwrap();
    assert!(due.is_empty(), "{due:?}");
    let due = st.webhooks_due(300, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (
            due[0].event_id.as_str(),
            due[0].attempts,
            due[0].last_error.as_deref()
        ),
        ("retry", 1, Some("HTTP 500"))
    );
    let undelivered: Vec<_> = st
        .webhooks_undelivered(10)
        .unwrap()
        .into_iter()
        .map(|w| (w.event_id, w.state))
        .collect();
    assert_eq!(
        undelivered,
        [
            ("gone".to_string(), WebhookState::Failed),
            ("retry".to_string(), WebhookState::Pending)
        ]
    );
    assert_eq!(st.webhook_backlog().unwrap(), (1, Some(101)));
}

fn an_idempotent_answer_is_kept_once_and_expires(b: &Backend) {
    let st = b.store();
    let a = IdempotentAnswer {
        key_hash: "k1".into(),
        request_hash: "r1".into(),
        session_id: "s1".into(),
        sealed: "sealed-1".into(),
        created_at: 100,
    };
    assert!(st.idempotent_get("k1", 0).unwrap().is_none());
    st.idempotent_put(&a, 0).unwrap();
    // A second answer under the same key does not replace the first.
    st.idempotent_put(
        &IdempotentAnswer {
            sealed: "sealed-2".into(),
            created_at: 101,
            ..a.clone()
        },
        0,
    )
    .unwrap();
    assert_eq!(st.idempotent_get("k1", 100).unwrap(), Some(a.clone()));
    assert!(
        st.idempotent_get("k1", 101).unwrap().is_none(),
        "too old for the window"
    );
    // Storing another forgets those from before `before`.
    st.idempotent_put(
        &IdempotentAnswer {
            key_hash: "k2".into(),
            created_at: 300,
            ..a.clone()
        },
        200,
    )
    .unwrap();
    assert!(st.idempotent_get("k1", 0).unwrap().is_none());
    assert!(st.idempotent_get("k2", 0).unwrap().is_some());
}

fn retention_forgets_personal_data_and_keeps_the_rest(b: &Backend) {
    use SessionState::*;
    let st = b.store();
    st.insert(&session("old"), "t").unwrap();
    st.transition("old", Created.to(Cancelled).unwrap(), "t", 150)
        .unwrap();
    st.insert(&session("live"), "t").unwrap();
    st.outbox_add(Some("old"), "+447700900001", "pay here", 120)
        .unwrap();
    st.outbox_add(Some("live"), "+447700900002", "pay here", 900)
        .unwrap();
    st.insert_link("l-old", "old", 100, 150).unwrap();
    st.insert_link("l-new", "live", 100, 2000).unwrap();
    st.webhook_add(&hook("delivered", "old", 150)).unwrap();
    st.webhook_tried("delivered", WebhookState::Delivered, 150, None)
        .unwrap();
    st.webhook_add(&hook("pending", "old", 150)).unwrap();
    let gone = st.forget_personal_data(500).unwrap();
    assert_eq!(
        (gone.sessions, gone.messages, gone.links, gone.webhooks),
        (1, 1, 1, 1)
    );
    let old = st.get("old").unwrap().unwrap();
    assert!(old.payment_data.is_empty());
    assert_eq!((old.state, old.amount_minor), (Cancelled, Some(12499)));
    assert_eq!(
        st.get("live").unwrap().unwrap().payment_data,
        session("live").payment_data
    );
    assert_eq!(st.outbox(10).unwrap().len(), 1);
    assert!(st.link("l-old").unwrap().is_none() && st.link("l-new").unwrap().is_some());
    assert_eq!(
        st.webhooks_due(1000, 10).unwrap().len(),
        1,
        "the pending one stays"
    );
    // Nothing more to forget.
    let again = st.forget_personal_data(500).unwrap();
    assert_eq!(
        (again.sessions, again.messages, again.links, again.webhooks),
        (0, 0, 0, 0)
    );
}

/// Each state change writes its event in the same transaction (a refused one writes none);
/// capture updates are appended; a session's events are numbered 1, 2, … with no gap or
/// repeat however many writers race (two handles: two nodes); a reader resumes after any
/// number; retention deletes a closed session's events with its personal data.
fn agent_ui_events_are_numbered_per_session_resumable_and_forgotten_with_it(b: &Backend) {
    use SessionState::*;
    let (st, other) = (b.store(), b.store());
    st.insert(&session("ev"), "t").unwrap();
    let live = Session {
        dtmf_link_id: Some("654321".into()),
        ..session("ev-live")
    };
    st.insert(&live, "t").unwrap();
    assert!(st
        .transition("ev", Created.to(Capturing).unwrap(), "t", 110)
        .unwrap());
    assert!(!st
        .transition("ev", Created.to(Cancelled).unwrap(), "t", 111)
        .unwrap());
    let states = |id: &str, after: i64| -> Vec<(i64, String)> {
        st.events_after(id, after, 1000)
            .unwrap()
            .into_iter()
            .map(|(n, body)| {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                (n, v["sessionState"].as_str().unwrap_or("-").to_string())
            })
            .collect()
    };
    assert_eq!(
        states("ev", 0),
        [(1, "Created".to_string()), (2, "Capturing".to_string())]
    );
    // Capture updates from two handles at once, while a third writer changes state.
    std::thread::scope(|sc| {
        for h in [&st, &other] {
            sc.spawn(move || {
                for _ in 0..15 {
                    h.event_add("ev", r#"{"sessionState":"Capturing","capture":{}}"#, 112)
                        .unwrap();
                }
            });
        }
    });
    let all = st.events_after("ev", 0, 1000).unwrap();
    let numbers: Vec<i64> = all.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (1..=32).collect::<Vec<i64>>());
    // Resuming after 30 gets 31 and 32 only; paging is by number.
    assert_eq!(
        st.events_after("ev", 30, 1000)
            .unwrap()
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>(),
        [31, 32]
    );
    assert_eq!(st.events_after("ev", 0, 5).unwrap().len(), 5);
    // A settle's event carries the stored result; each session has its own numbering.
    let r = PaymentResult {
        failure_reason: Some("capture node lost".into()),
        ..Default::default()
    };
    assert!(st
        .settle(
            "ev",
            Capturing.to(Failed).unwrap(),
            "t",
            150,
            Some(&r),
            &|_| None
        )
        .unwrap());
    let last = st.events_after("ev", 32, 10).unwrap();
    assert_eq!(last.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&last[0].1).unwrap();
    assert_eq!(
        (
            v["sessionState"].as_str(),
            v["result"]["failureReason"].as_str()
        ),
        (Some("Failed"), Some("capture node lost"))
    );
    assert_eq!(states("ev-live", 0), [(1, "Created".to_string())]);
    // The capture node is recorded and found by state.
    st.set_capture_node("ev-live", "node-b").unwrap();
    assert_eq!(
        st.capture_node("ev-live").unwrap().as_deref(),
        Some("node-b")
    );
    assert!(st
        .transition("ev-live", Created.to(Capturing).unwrap(), "t", 160)
        .unwrap());
    let on_b = st
        .in_states_on(&[Capturing, ReadyToSubmit], "node-b")
        .unwrap();
    assert_eq!(
        on_b.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["ev-live"]
    );
    assert!(st.in_states_on(&[Capturing], "node-a").unwrap().is_empty());
    // Retention: the closed session's events go; the live one's stay.
    let gone = st.forget_personal_data(500).unwrap();
    assert_eq!(gone.events, 33);
    assert!(st.events_after("ev", 0, 1000).unwrap().is_empty());
    assert_eq!(st.events_after("ev-live", 0, 1000).unwrap().len(), 2);
}

/// The event writer's batch: interleaved sessions' events are numbered after what each
/// session already has, in the order given, with no gap; an event of a session that is gone
/// is skipped, not an error (the rest are written); every handle hears each session's bell.
fn a_batch_of_events_keeps_each_sessions_order_and_numbers(b: &Backend) {
    use tonegate::session::store::{Bell, PendingEvent};
    let (st, other) = (b.store(), b.store());
    let listener = if st.shared() { &other } else { &st };
    let mut bells = listener.doorbell();
    for (id, link) in [("batch-a", "111111"), ("batch-b", "222222")] {
        let s = Session {
            dtmf_link_id: Some(link.into()),
            ..session(id)
        };
        st.insert(&s, "t").unwrap();
    }
    let ev = |id: &str, n: u32| PendingEvent {
        session_id: id.into(),
        body: format!("{{\"n\":{n}}}"),
        at: 120,
    };
    let batch: Vec<PendingEvent> = (1..=6)
        .map(|n| ev(if n % 2 == 0 { "batch-b" } else { "batch-a" }, n))
        .chain([ev("batch-gone", 7)])
        .collect();
    assert_eq!(st.events_add(&batch).unwrap(), 6);
    assert_eq!(other.events_add(&[ev("batch-a", 8)]).unwrap(), 1);
    let log = |id: &str| -> Vec<(i64, u64)> {
        other
            .events_after(id, 0, 100)
            .unwrap()
            .into_iter()
            .map(|(seq, body)| {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                (seq, v["n"].as_u64().unwrap_or(0))
            })
            .collect()
    };
    // Number 1 is each session's creation.
    assert_eq!(log("batch-a"), [(1, 0), (2, 1), (3, 3), (4, 5), (5, 8)]);
    assert_eq!(log("batch-b"), [(1, 0), (2, 2), (3, 4), (4, 6)]);
    assert!(other.events_after("batch-gone", 0, 100).unwrap().is_empty());
    // Bells: batches are written until both sessions' are heard (another handle's listening
    // connection may still be coming up; the log holds every event either way).
    let mut heard = HashSet::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while heard.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "bells heard: {heard:?}"
        );
        st.events_add(&[ev("batch-a", 9), ev("batch-b", 9), ev("batch-gone", 9)])
            .unwrap();
        let wait = std::time::Instant::now() + std::time::Duration::from_millis(300);
        while std::time::Instant::now() < wait {
            match bells.try_recv() {
                Ok(Bell::Event { session, .. }) if session.starts_with("batch-") => {
                    heard.insert(session);
                }
                Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }
    assert!(!heard.contains("batch-gone"), "{heard:?}");
}

/// A written event rings the doorbell of every handle on the database (on PostgreSQL through
/// LISTEN/NOTIFY: another handle stands for another node), saying which session.
fn a_written_event_rings_the_doorbell_of_every_handle(b: &Backend) {
    use tonegate::session::store::Bell;
    let (writer, reader) = (b.store(), b.store());
    // A shared store's other handle hears it; a single-node store's own handle does.
    let listener = if writer.shared() { &reader } else { &writer };
    let mut bells = listener.doorbell();
    writer.insert(&session("bell"), "t").unwrap();
    // The other handle's listening connection may still be coming up: events are written
    // until one is heard (each is in the log either way; the bell only wakes readers).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    'heard: loop {
        assert!(std::time::Instant::now() < deadline, "no bell heard");
        writer.event_add("bell", "{}", 100).unwrap();
        let wait = std::time::Instant::now() + std::time::Duration::from_millis(300);
        while std::time::Instant::now() < wait {
            match bells.try_recv() {
                Ok(Bell::Event { session, local }) if session == "bell" => {
                    // Only the writing handle calls it its own.
                    assert_eq!(local, !writer.shared());
                    break 'heard;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }
}

fn relay_audit_is_kept_newest_first(b: &Backend) {
    let st = b.store();
    for (i, (call, action)) in [("c1", "create"), ("c2", "create"), ("c1", "secure_on")]
        .iter()
        .enumerate()
    {
        st.relay_audit_add(&RelayAuditRecord {
            at: 100 + i as u64,
            call_id: call.to_string(),
            call_guid: format!("g-{call}"),
            owner: "client:c".into(),
            actor: "client:c".into(),
            action: action.to_string(),
            reason: "test".into(),
        })
        .unwrap();
    }
    let c1: Vec<_> = st
        .relay_audit(Some("c1"), 10)
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(c1, ["secure_on", "create"]);
    assert_eq!(st.relay_audit(None, 10).unwrap().len(), 3);
    assert_eq!(st.relay_audit(None, 1).unwrap()[0].at, 102);
}

fn the_database_refuses_exactly_the_moves_the_state_machine_refuses(b: &Backend) {
    // Whoever writes to the database, every session stays on the state machine's edges: all
    // 81 pairs, each from a fresh session.
    let st = b.store();
    for (i, from) in SessionState::ALL.into_iter().enumerate() {
        for (j, to) in SessionState::ALL.into_iter().enumerate() {
            let id = format!("s-{i}-{j}");
            let mut s = session(&id);
            s.state = from;
            s.dtmf_link_id = Some(id.clone());
            st.insert(&s, "t").unwrap();
            let written = (b.sql)(&format!(
                "UPDATE sessions SET state = '{}' WHERE id = '{id}'",
                to.as_str()
            ));
            let allowed = from == to || from.to(to).is_ok();
            match written {
                Ok(1) => assert!(allowed, "{from:?} -> {to:?} was written"),
                Ok(n) => panic!("{n} rows for {id}"),
                Err(e) => {
                    assert!(!allowed, "{from:?} -> {to:?} refused: {e}");
                    assert!(e.contains("illegal session state transition"), "{e}");
                    assert_eq!(st.get(&id).unwrap().unwrap().state, from);
                }
            }
        }
    }
}

fn a_database_from_a_newer_tonegate_is_refused_and_left_alone(b: &Backend) {
    let st = b.store();
    st.insert(&session("s1"), "t").unwrap();
    drop(st);
    (b.bump_schema)();
    let e = match (b.open)() {
        Ok(_) => panic!("a newer schema was accepted"),
        Err(e) => e,
    };
    assert!(e.contains("migrating the schema"), "{e}");
    // Still refused: the first refusal changed nothing.
    assert!((b.open)().is_err());
}

/// A whole payment on a gateway whose store is PostgreSQL: an agent session paid with a card
/// keyed over the relay, and a digital session whose link was texted. Then every row of every
/// table is read: no PAN, expiry, CVV or link token in any of them.
#[test]
fn on_postgresql_a_payment_leaves_no_card_data_or_link_token_in_any_table() {
    use common::gateway::{get, post, wait_state, Gateway};
    use serde_json::json;
    let Some(url) = common::postgres::database() else {
        return;
    };
    let gw = Gateway::start(&format!("[store]\npostgres_url = {url:?}\n"));
    let tok = gw.token("globalpci");
    let relay_tok = gw.token("relay");
    let (s, v) = post(
        &gw,
        &tok,
        "/globalpci/v1/agentsession",
        &json!({"AccountConfigurationId": "dev-account", "CallGuid": "guid-pg-1",
                "PaymentData": {"amount": "12.34", "cardholderName": "Ada Lovelace"}}),
    );
    assert_eq!(s, 200, "{v}");
    let id = v["sessionId"].as_str().unwrap().to_string();
    let caller = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let agent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (s, v) = post(
        &gw,
        &relay_tok,
        "/relay/v1/calls",
        &json!({"call_guid": "guid-pg-1", "codec": "PCMU", "telephone_event_pt": 101,
                "caller": {"remote": caller.local_addr().unwrap().to_string()},
                "agent": {"remote": agent.local_addr().unwrap().to_string()}}),
    );
    assert_eq!(s, 201, "{v}");
    let relay_caller: std::net::SocketAddr =
        v["caller"]["local"].as_str().unwrap().parse().unwrap();
    wait_state(&gw, &tok, &id, "Capturing");
    let signal =
        tonegate_dsp::generator::human_keying("4242424242424242#1230#737#", 11, Some(25.0));
    for p in common::rtp_stream(
        &signal,
        common::StreamOptions {
            events_pt: Some(101),
            ..Default::default()
        },
    ) {
        caller.send_to(&p.bytes, relay_caller).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    wait_state(&gw, &tok, &id, "ReadyToSubmit");
    let (s, v) = post(
        &gw,
        &tok,
        &format!("/globalpci/v1/session/{id}/submit"),
        &json!({}),
    );
    assert_eq!(
        (s, v["sessionState"].as_str()),
        (200, Some("Completed")),
        "{v}"
    );
    // A digital session: its link is texted (the development outbox shows it as sent).
    let (s, v) = post(
        &gw,
        &tok,
        "/globalpci/v1/digitalselfservicesession",
        &json!({"AccountConfigurationId": "dev-account",
                "PaymentData": {"CustomerPhoneNumber": "+447700900123", "amount": "5.00"}}),
    );
    assert_eq!(s, 200, "{v}");
    let digital = v["sessionId"].as_str().unwrap().to_string();
    let (_, outbox) = get(&gw, &gw.token("admin"), "/admin/v1/outbox");
    let text = outbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["sessionId"] == digital.as_str())
        .and_then(|m| m["body"].as_str())
        .unwrap_or_else(|| panic!("{outbox}"))
        .to_string();
    let link = text[text.find("http").unwrap()..]
        .split_whitespace()
        .next()
        .unwrap();
    let token = link.rsplit('/').next().unwrap().to_string();
    assert!(token.len() >= 16, "{link}");
    drop(gw);
    let dump = common::postgres::dump(&url);
    // The right database was read: it holds both sessions, the result and the link's hash.
    for seen in [id.as_str(), digital.as_str(), "************4242", "links: "] {
        assert!(dump.contains(seen), "{seen} not in {dump}");
    }
    common::assert_no_card_digits("the PostgreSQL tables", dump.as_bytes());
    assert!(!dump.contains(&token), "the link token is stored in clear");
}

/// Sessions created per second through the store (insert with its audit line, as a create
/// does), SQLite then PostgreSQL, four threads, same run. A measurement, not a check: run it
/// with `cargo test --test sessions sessions_created_per_second -- --ignored --nocapture`.
#[test]
#[ignore]
fn sessions_created_per_second() {
    let n = 2000;
    for (name, b) in [("sqlite", sqlite()), ("postgresql", postgres())] {
        let Some(b) = b else { continue };
        let st = b.store();
        let started = std::time::Instant::now();
        std::thread::scope(|sc| {
            for t in 0..4 {
                let st = st.clone();
                sc.spawn(move || {
                    for i in 0..n / 4 {
                        let mut s = session(&format!("b-{t}-{i}"));
                        s.dtmf_link_id = Some(format!("{t}-{i}"));
                        st.insert(&s, "client:c").unwrap();
                    }
                });
            }
        });
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{name}: {n} sessions in {secs:.2} s: {:.0}/s",
            n as f64 / secs
        );
    }
}

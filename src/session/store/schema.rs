//! The schema of each backend, as its migrations: each runs once, in order, and the version a
//! database is at is the number of them applied (SQLite: `user_version`; PostgreSQL: the
//! `tonegate_schema` table). Never edit one that has shipped; add the next.

/// SQLite's migrations (numbered from 1 as the file's `user_version` counts them).
pub(super) const SQLITE: &[&str] = &[
    // 1: sessions and their audit trail.
    "CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        client_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        call_guid TEXT,
        dtmf_link_id TEXT,
        state TEXT NOT NULL,
        amount_minor INTEGER,
        currency TEXT NOT NULL,
        merchant_txn_ref TEXT,
        payment_data TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        result TEXT NOT NULL,
        ui_secret_hash TEXT
    );
    CREATE INDEX sessions_call_guid ON sessions(call_guid);
    CREATE INDEX sessions_link ON sessions(dtmf_link_id);
    CREATE INDEX sessions_ref ON sessions(client_id, account_id, merchant_txn_ref);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL
    );
    CREATE INDEX audit_session ON audit(session_id);",
    // 2: digital payment links (token hashes only) and the SMS outbox.
    "CREATE TABLE links (
        token_hash TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER,
        revoked INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX links_session ON links(session_id);
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        session_id TEXT,
        recipient TEXT NOT NULL,
        body TEXT NOT NULL
    );",
    // 3: relay calls' control events (ownership, secure mode).
    "CREATE TABLE relay_audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        call_id TEXT NOT NULL,
        call_guid TEXT NOT NULL,
        owner TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX relay_audit_call ON relay_audit(call_id);",
    // 4: the sweeps and the call-link lookups select live sessions by state.
    "CREATE INDEX sessions_state ON sessions(state, client_id, kind);",
    // 5: the durable result-webhook outbox.
    "CREATE TABLE webhooks (
        event_id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        url TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        state TEXT NOT NULL,
        last_error TEXT
    );
    CREATE INDEX webhooks_due ON webhooks(state, next_at);
    CREATE INDEX webhooks_session ON webhooks(session_id);",
    // 6: the database itself refuses a session state change the state machine does not allow
    // (`SessionState::to`; a test checks the two agree on every pair), whoever writes it.
    "CREATE TRIGGER sessions_state_machine BEFORE UPDATE OF state ON sessions
    WHEN NEW.state <> OLD.state AND OLD.state || '>' || NEW.state NOT IN (
        'Created>Capturing',
        'Capturing>ReadyToSubmit', 'Capturing>Failed',
        'ReadyToSubmit>Capturing', 'ReadyToSubmit>Submitting',
        'Submitting>Completed', 'Submitting>Declined', 'Submitting>Failed',
        'Capturing>Created', 'ReadyToSubmit>Created',
        'Created>Cancelled', 'Capturing>Cancelled', 'ReadyToSubmit>Cancelled',
        'Created>Expired', 'Capturing>Expired', 'ReadyToSubmit>Expired')
    BEGIN SELECT RAISE(ABORT, 'illegal session state transition'); END;",
    // 7: an agent may ask for the card again after a decline or a failure (Declined|Failed
    // to Created, `Sessions::recapture`); a payment link's declined or unauthenticated attempt
    // goes back to Capturing (Submitting to Capturing).
    "DROP TRIGGER sessions_state_machine;
    CREATE TRIGGER sessions_state_machine BEFORE UPDATE OF state ON sessions
    WHEN NEW.state <> OLD.state AND OLD.state || '>' || NEW.state NOT IN (
        'Created>Capturing',
        'Capturing>ReadyToSubmit', 'Capturing>Failed',
        'ReadyToSubmit>Capturing', 'ReadyToSubmit>Submitting',
        'Submitting>Completed', 'Submitting>Declined', 'Submitting>Failed',
        'Submitting>Capturing',
        'Capturing>Created', 'ReadyToSubmit>Created',
        'Created>Cancelled', 'Capturing>Cancelled', 'ReadyToSubmit>Cancelled',
        'Created>Expired', 'Capturing>Expired', 'ReadyToSubmit>Expired',
        'Declined>Created', 'Failed>Created')
    BEGIN SELECT RAISE(ABORT, 'illegal session state transition'); END;",
    // 8: create answers kept for Idempotency-Key replays (key hashed, answer sealed), and the
    // client's session listing, newest first.
    "CREATE TABLE idempotency (
        key_hash TEXT PRIMARY KEY,
        request_hash TEXT NOT NULL,
        session_id TEXT NOT NULL,
        sealed TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX idempotency_created ON idempotency(created_at);
    CREATE INDEX sessions_client_created ON sessions(client_id, created_at, id);",
    // 9: a live link id belongs to one session of its client, whoever creates it.
    "CREATE UNIQUE INDEX sessions_live_link ON sessions(client_id, dtmf_link_id)
    WHERE state IN ('Created','Capturing','ReadyToSubmit','Submitting');",
    // 10: the agent UI's event log (numbered per session under the session row) and the node
    // that runs a session's capture.
    "ALTER TABLE sessions ADD COLUMN capture_node TEXT;
    ALTER TABLE sessions ADD COLUMN event_seq INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE events (
        session_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (session_id, seq)
    );",
];

/// Each migration, in order; the version is its position (1-based).
pub(super) const POSTGRES: &[&str] = &[
    // 1: the schema of SQLite's migrations 1-8, in PostgreSQL's types.
    "CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        client_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        call_guid TEXT,
        dtmf_link_id TEXT,
        state TEXT NOT NULL,
        amount_minor BIGINT,
        currency TEXT NOT NULL,
        merchant_txn_ref TEXT,
        payment_data TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        result TEXT NOT NULL,
        ui_secret_hash TEXT
    );
    CREATE INDEX sessions_call_guid ON sessions(call_guid);
    CREATE INDEX sessions_link ON sessions(dtmf_link_id);
    CREATE INDEX sessions_ref ON sessions(client_id, account_id, merchant_txn_ref);
    CREATE INDEX sessions_state ON sessions(state, client_id, kind);
    CREATE INDEX sessions_client_created ON sessions(client_id, created_at, id);
    CREATE TABLE audit (
        seq BIGSERIAL PRIMARY KEY,
        session_id TEXT NOT NULL,
        at BIGINT NOT NULL,
        actor TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL
    );
    CREATE INDEX audit_session ON audit(session_id);
    CREATE TABLE links (
        token_hash TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at BIGINT,
        revoked BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX links_session ON links(session_id);
    CREATE TABLE outbox (
        seq BIGSERIAL PRIMARY KEY,
        at BIGINT NOT NULL,
        session_id TEXT,
        recipient TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE relay_audit (
        seq BIGSERIAL PRIMARY KEY,
        at BIGINT NOT NULL,
        call_id TEXT NOT NULL,
        call_guid TEXT NOT NULL,
        owner TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX relay_audit_call ON relay_audit(call_id);
    CREATE TABLE webhooks (
        event_id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        url TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at BIGINT NOT NULL,
        state TEXT NOT NULL,
        last_error TEXT
    );
    CREATE INDEX webhooks_due ON webhooks(state, next_at);
    CREATE INDEX webhooks_session ON webhooks(session_id);
    CREATE TABLE idempotency (
        key_hash TEXT PRIMARY KEY,
        request_hash TEXT NOT NULL,
        session_id TEXT NOT NULL,
        sealed TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX idempotency_created ON idempotency(created_at);
    -- A live link id belongs to one session of its client, whichever node creates it.
    CREATE UNIQUE INDEX sessions_live_link ON sessions(client_id, dtmf_link_id)
        WHERE state IN ('Created','Capturing','ReadyToSubmit','Submitting');
    -- The database itself refuses a state change the state machine does not allow
    -- (`SessionState::to`), whoever writes it; as SQLite's trigger.
    CREATE FUNCTION sessions_state_machine() RETURNS trigger AS $$
    BEGIN
        IF NEW.state <> OLD.state AND OLD.state || '>' || NEW.state NOT IN (
            'Created>Capturing',
            'Capturing>ReadyToSubmit', 'Capturing>Failed',
            'ReadyToSubmit>Capturing', 'ReadyToSubmit>Submitting',
            'Submitting>Completed', 'Submitting>Declined', 'Submitting>Failed',
            'Submitting>Capturing',
            'Capturing>Created', 'ReadyToSubmit>Created',
            'Created>Cancelled', 'Capturing>Cancelled', 'ReadyToSubmit>Cancelled',
            'Created>Expired', 'Capturing>Expired', 'ReadyToSubmit>Expired',
            'Declined>Created', 'Failed>Created') THEN
            RAISE EXCEPTION 'illegal session state transition';
        END IF;
        RETURN NEW;
    END $$ LANGUAGE plpgsql;
    CREATE TRIGGER sessions_state_machine BEFORE UPDATE OF state ON sessions
        FOR EACH ROW EXECUTE FUNCTION sessions_state_machine();",
    // 2: the agent UI's event log (numbered per session under the session row's lock, so in
    // commit order), the node running each capture, commands between nodes, heartbeats.
    "ALTER TABLE sessions ADD COLUMN capture_node TEXT;
    ALTER TABLE sessions ADD COLUMN event_seq BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX sessions_capture_node ON sessions(capture_node)
        WHERE state IN ('Capturing','ReadyToSubmit','Submitting');
    CREATE TABLE events (
        session_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at BIGINT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (session_id, seq)
    );
    CREATE TABLE commands (
        id BIGSERIAL PRIMARY KEY,
        node TEXT NOT NULL,
        session_id TEXT NOT NULL,
        command TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        taken BOOLEAN NOT NULL DEFAULT FALSE,
        answer TEXT
    );
    CREATE INDEX commands_waiting ON commands(node) WHERE NOT taken;
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        beat_at BIGINT NOT NULL
    );",
];

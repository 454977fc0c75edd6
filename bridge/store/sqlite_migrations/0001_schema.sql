-- The standalone store: the same tables as PostgreSQL's migrations 0001-0005,
-- in SQLite's types. Times are Unix seconds (REAL), UUIDs text, JSON text.
CREATE TABLE notifications (
    key             TEXT    PRIMARY KEY,
    occurrence      INTEGER NOT NULL,
    occurrence_at   REAL    NOT NULL,
    source          TEXT    NOT NULL,
    receiver        TEXT    NOT NULL,
    group_key       TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    common_labels   TEXT    NOT NULL DEFAULT '{}',
    external_url    TEXT    NOT NULL DEFAULT '',
    alert_count     INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE deliveries (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_key     TEXT    NOT NULL REFERENCES notifications (key),
    occurrence           INTEGER NOT NULL,
    chat_id              INTEGER NOT NULL,
    thread_id            INTEGER,
    silent               INTEGER NOT NULL DEFAULT 0,
    template             TEXT    NOT NULL,
    text                 TEXT    NOT NULL,
    state                TEXT    NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'sending', 'retry', 'delivered', 'failed', 'ambiguous', 'suppressed')),
    attempts             INTEGER NOT NULL DEFAULT 0,
    created_at           REAL    NOT NULL,
    last_attempt_at      REAL,
    next_attempt_at      REAL    NOT NULL,
    republish_at         REAL    NOT NULL,
    lease_until          REAL,
    last_error           TEXT,
    telegram_message_id  INTEGER,
    finished_at          REAL,
    plain_text           INTEGER NOT NULL DEFAULT 0,
    was_ambiguous        INTEGER NOT NULL DEFAULT 0,
    group_ref            TEXT,
    resolves_group       INTEGER NOT NULL DEFAULT 0,
    reply_to_message_id  INTEGER,
    digest_id            INTEGER REFERENCES deliveries (id)
);

CREATE UNIQUE INDEX deliveries_once
    ON deliveries (notification_key, occurrence, chat_id, COALESCE(thread_id, 0));
CREATE INDEX deliveries_due ON deliveries (republish_at) WHERE state IN ('queued', 'retry');
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE state = 'sending';
CREATE INDEX deliveries_group_order
    ON deliveries (group_ref, chat_id, COALESCE(thread_id, 0), id)
    WHERE state IN ('queued', 'sending', 'retry');
CREATE INDEX deliveries_by_message ON deliveries (chat_id, telegram_message_id);
CREATE INDEX deliveries_by_chat ON deliveries (chat_id, state);

CREATE TABLE chat_migrations (
    old_chat_id  INTEGER PRIMARY KEY,
    new_chat_id  INTEGER NOT NULL,
    migrated_at  REAL    NOT NULL
);

CREATE TABLE group_threads (
    group_ref    TEXT    NOT NULL,
    chat_id      INTEGER NOT NULL,
    thread_key   INTEGER NOT NULL,
    message_id   INTEGER NOT NULL,
    opened_at    REAL    NOT NULL,
    closed_at    REAL,
    PRIMARY KEY (group_ref, chat_id, thread_key)
);

CREATE TABLE telegram_updates (
    update_id    INTEGER PRIMARY KEY,
    received_at  REAL    NOT NULL
);

CREATE TABLE acks (
    notification_key  TEXT    NOT NULL REFERENCES notifications (key),
    chat_id           INTEGER NOT NULL,
    user_id           INTEGER NOT NULL,
    user_name         TEXT    NOT NULL,
    acked_at          REAL    NOT NULL,
    PRIMARY KEY (notification_key, chat_id)
);

CREATE TABLE bot_silences (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    silence_id        TEXT    NOT NULL,
    alertmanager_url  TEXT    NOT NULL,
    delivery_id       INTEGER REFERENCES deliveries (id),
    chat_id           INTEGER NOT NULL,
    created_by        TEXT    NOT NULL,
    ends_at           REAL    NOT NULL,
    created_at        REAL    NOT NULL,
    expired_at        REAL
);

CREATE TABLE workers (
    worker_id  TEXT PRIMARY KEY,
    seen_at    REAL NOT NULL
);

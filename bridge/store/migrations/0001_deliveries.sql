-- One row per notification key: which occurrence it is on and when that began.
-- A copy inside the dedup window finds the row and is dropped; the same
-- content after the window starts the next occurrence (a repeat reminder).
CREATE TABLE notifications (
    key             UUID PRIMARY KEY,
    occurrence      INTEGER     NOT NULL,
    occurrence_at   TIMESTAMPTZ NOT NULL,
    source          TEXT        NOT NULL,
    receiver        TEXT        NOT NULL,
    group_key       TEXT        NOT NULL,
    status          TEXT        NOT NULL
);

-- One row per (occurrence, destination): the unit of work, and its whole state.
CREATE TABLE deliveries (
    id                   BIGSERIAL PRIMARY KEY,
    notification_key     UUID        NOT NULL REFERENCES notifications (key),
    occurrence           INTEGER     NOT NULL,
    chat_id              BIGINT      NOT NULL,
    thread_id            BIGINT,
    silent               BOOLEAN     NOT NULL DEFAULT FALSE,
    template             TEXT        NOT NULL,
    text                 TEXT        NOT NULL,
    state                TEXT        NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'sending', 'retry', 'delivered', 'failed', 'ambiguous', 'suppressed')),
    attempts             INTEGER     NOT NULL DEFAULT 0,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_attempt_at      TIMESTAMPTZ,
    -- Earliest moment a send may happen: Telegram's retry_after lands here.
    next_attempt_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- When the scheduler (re)publishes the row if no worker has claimed it.
    republish_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until          TIMESTAMPTZ,
    last_error           TEXT,
    telegram_message_id  BIGINT,
    finished_at          TIMESTAMPTZ,
    plain_text           BOOLEAN     NOT NULL DEFAULT FALSE,
    -- Set once a lease expired mid-send: whatever happened next, this
    -- delivery went through the window where nobody can know.
    was_ambiguous        BOOLEAN     NOT NULL DEFAULT FALSE
);

CREATE UNIQUE INDEX deliveries_once
    ON deliveries (notification_key, occurrence, chat_id, COALESCE(thread_id, 0));
CREATE INDEX deliveries_due
    ON deliveries (republish_at) WHERE state IN ('queued', 'retry');
CREATE INDEX deliveries_leased
    ON deliveries (lease_until) WHERE state = 'sending';

-- Telegram moves a group to a new id when it becomes a supergroup; once told,
-- every later delivery for the old id goes to the new one.
CREATE TABLE chat_migrations (
    old_chat_id  BIGINT PRIMARY KEY,
    new_chat_id  BIGINT      NOT NULL,
    migrated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

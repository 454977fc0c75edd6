-- PostgreSQL's 0010: producers' receipts, an outbox written with the transition
-- that finishes a delivery of a producer's message.
CREATE TABLE receipts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT    NOT NULL,
    event            TEXT    NOT NULL,
    producer         TEXT    NOT NULL,
    delivery_id      INTEGER REFERENCES deliveries (id),
    message_id       TEXT,
    chat_id          INTEGER,
    payload          TEXT    NOT NULL DEFAULT '{}',
    occurred_at      REAL    NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'sent', 'gave_up')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL    NOT NULL,
    last_error       TEXT,
    finished_at      REAL
);
CREATE UNIQUE INDEX receipts_by_event_id ON receipts (event_id);
CREATE INDEX receipts_due ON receipts (next_attempt_at) WHERE state = 'pending';
CREATE INDEX receipts_by_delivery ON receipts (delivery_id) WHERE delivery_id IS NOT NULL;
CREATE INDEX receipts_finished ON receipts (finished_at) WHERE delivery_id IS NULL;

ALTER TABLE producer_messages ADD COLUMN receipts INTEGER NOT NULL DEFAULT 0;

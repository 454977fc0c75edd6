-- PostgreSQL's 0012: messages waiting for their recipient's link.
CREATE TABLE waiting_messages (
    id                    INTEGER PRIMARY KEY,
    key                   TEXT    NOT NULL REFERENCES producer_messages (key),
    producer              TEXT    NOT NULL,
    recipient             TEXT    NOT NULL,
    thread_id             INTEGER,
    silent                INTEGER NOT NULL,
    text                  TEXT    NOT NULL,
    buttons               TEXT,
    disable_link_preview  INTEGER NOT NULL,
    group_ref             TEXT,
    expires_at            REAL    NOT NULL,
    expired_at            REAL
);
CREATE UNIQUE INDEX waiting_messages_by_key ON waiting_messages (key);
CREATE INDEX waiting_messages_by_recipient ON waiting_messages (producer, recipient, id)
    WHERE expired_at IS NULL;
CREATE INDEX waiting_messages_due ON waiting_messages (expires_at) WHERE expired_at IS NULL;

-- PostgreSQL's 0007: producers' own messages, and rows no storm digest folds.
CREATE TABLE producer_messages (
    key           TEXT    PRIMARY KEY REFERENCES notifications (key),
    producer      TEXT    NOT NULL,
    message_id    TEXT    NOT NULL,
    request_hash  TEXT    NOT NULL,
    request       TEXT    NOT NULL,
    created_at    REAL    NOT NULL
);
CREATE UNIQUE INDEX producer_messages_by_id ON producer_messages (producer, message_id);

ALTER TABLE deliveries ADD COLUMN own_message INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN buttons TEXT;
ALTER TABLE deliveries ADD COLUMN disable_link_preview INTEGER NOT NULL DEFAULT 0;

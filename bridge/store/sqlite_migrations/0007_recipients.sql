-- PostgreSQL's 0011: recipients and their one-time link tokens.
CREATE TABLE recipient_links (
    token_hash  TEXT    PRIMARY KEY,
    producer    TEXT    NOT NULL,
    recipient   TEXT    NOT NULL,
    created_at  REAL    NOT NULL,
    expires_at  REAL    NOT NULL
);
CREATE INDEX recipient_links_by_expiry ON recipient_links (expires_at);
CREATE INDEX recipient_links_by_recipient ON recipient_links (producer, recipient);

CREATE TABLE recipients (
    producer    TEXT    NOT NULL,
    recipient   TEXT    NOT NULL,
    chat_id     INTEGER,
    linked_at   REAL,
    updated_at  REAL    NOT NULL,
    PRIMARY KEY (producer, recipient)
);
CREATE INDEX recipients_by_chat ON recipients (chat_id) WHERE chat_id IS NOT NULL;
CREATE INDEX recipients_unlinked ON recipients (updated_at) WHERE chat_id IS NULL;

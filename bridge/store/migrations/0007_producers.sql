-- Producers' own messages (POST /v1/messages). A message is a notification
-- whose key is derived from (producer, message_id); its deliveries are
-- ordinary rows. This table remembers what the producer asked for, so a retry
-- with the same message_id is answered from it and sent nothing twice:
-- * request: the canonical request (without its message_id), to name what
--   differs when the same message_id comes with another body;
-- * request_hash: its SHA-256, what a replay is compared by.
CREATE TABLE producer_messages (
    key           UUID        PRIMARY KEY REFERENCES notifications (key),
    producer      TEXT        NOT NULL,
    message_id    TEXT        NOT NULL,
    request_hash  TEXT        NOT NULL,
    request       TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX producer_messages_by_id ON producer_messages (producer, message_id);

-- A producer's own message reaches the chat as written: never folded into a
-- storm digest, no alert buttons; its own URL buttons (JSON: rows of
-- {text, url}) and link preview choice go with it.
ALTER TABLE deliveries
    ADD COLUMN own_message BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN buttons TEXT,
    ADD COLUMN disable_link_preview BOOLEAN NOT NULL DEFAULT FALSE;

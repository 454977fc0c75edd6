-- Messages waiting for their recipient's link (issue 14: "or wait for the link,
-- if the request says so"). A message to a recipient not linked yet, sent with
-- "wait_for_link": true, is stored with no delivery (no chat is known) and one
-- row here holding what its delivery will be. When the user opens a link
-- (consume_link), the same transaction turns the recipient's rows into
-- deliveries, in id order (the order accepted), and deletes them. A row not
-- linked by expires_at is marked expired_at: the message has failed
-- (not_linked), and the row stays to say so, until retention removes the
-- message.
CREATE TABLE waiting_messages (
    id                    BIGSERIAL   PRIMARY KEY,
    key                   UUID        NOT NULL REFERENCES producer_messages (key),
    producer              TEXT        NOT NULL,
    recipient             TEXT        NOT NULL,
    thread_id             BIGINT,
    silent                BOOLEAN     NOT NULL,
    text                  TEXT        NOT NULL,
    buttons               TEXT,
    disable_link_preview  BOOLEAN     NOT NULL,
    group_ref             UUID,
    expires_at            TIMESTAMPTZ NOT NULL,
    expired_at            TIMESTAMPTZ
);
CREATE UNIQUE INDEX waiting_messages_by_key ON waiting_messages (key);
-- The link takes a recipient's live rows in order; the scheduler expires them.
CREATE INDEX waiting_messages_by_recipient ON waiting_messages (producer, recipient, id)
    WHERE expired_at IS NULL;
CREATE INDEX waiting_messages_due ON waiting_messages (expires_at) WHERE expired_at IS NULL;

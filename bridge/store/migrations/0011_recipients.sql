-- Recipients: a producer addresses its own users, not chat ids (issue 14).
-- * recipient_links: one-time tokens of deep links t.me/<bot>?start=<token>;
--   only the token's SHA-256 is kept, so a read of the table cannot link
--   anyone. A token goes when used (/start) and is pruned once expired.
-- * recipients: (producer, recipient) → the private chat it was linked from.
--   chat_id is NULL while not linked (a link asked for, or /stop); such a row
--   is pruned once it has not changed for the retention period and no token
--   for it is pending.
CREATE TABLE recipient_links (
    token_hash  TEXT        PRIMARY KEY,
    producer    TEXT        NOT NULL,
    recipient   TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX recipient_links_by_expiry ON recipient_links (expires_at);
CREATE INDEX recipient_links_by_recipient ON recipient_links (producer, recipient);

CREATE TABLE recipients (
    producer    TEXT        NOT NULL,
    recipient   TEXT        NOT NULL,
    chat_id     BIGINT,
    linked_at   TIMESTAMPTZ,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (producer, recipient)
);
-- /stop unlinks by chat; the pruner looks for unlinked rows.
CREATE INDEX recipients_by_chat ON recipients (chat_id) WHERE chat_id IS NOT NULL;
CREATE INDEX recipients_unlinked ON recipients (updated_at) WHERE chat_id IS NULL;

-- One Telegram thread per alert group and chat: the group's first message is
-- the anchor; later notifications of the group are replies to it, and the
-- anchor is edited to show the group's current state.
ALTER TABLE deliveries
    ADD COLUMN group_ref UUID,
    -- The notification resolves its whole group: delivering it closes the thread.
    ADD COLUMN resolves_group BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN reply_to_message_id BIGINT;

-- Per-group order: a delivery waits while an older one of the same group and
-- chat is unfinished, so "resolved" never overtakes its "firing".
CREATE INDEX deliveries_group_order
    ON deliveries (group_ref, chat_id, COALESCE(thread_id, 0), id)
    WHERE state IN ('queued', 'sending', 'retry');

CREATE TABLE group_threads (
    group_ref    UUID        NOT NULL,
    chat_id      BIGINT      NOT NULL,
    thread_key   BIGINT      NOT NULL,  -- the forum topic id, 0 for none
    message_id   BIGINT      NOT NULL,
    opened_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at    TIMESTAMPTZ,
    PRIMARY KEY (group_ref, chat_id, thread_key)
);

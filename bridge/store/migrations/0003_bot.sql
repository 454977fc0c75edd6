-- What the bot needs to act on an alert message: the labels that identify
-- the alerts (for a silence) and where the sender's UI is.
ALTER TABLE notifications
    ADD COLUMN common_labels JSONB NOT NULL DEFAULT '{}',
    ADD COLUMN external_url TEXT NOT NULL DEFAULT '';

-- Telegram repeats an update it thinks was not received; each is acted on once.
CREATE TABLE telegram_updates (
    update_id    BIGINT      PRIMARY KEY,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- An ack silences the repeat reminders of one notification in one chat: the
-- same content arriving again (Alertmanager's repeat_interval) is suppressed;
-- anything new (another alert, resolved) is delivered.
CREATE TABLE acks (
    notification_key  UUID        NOT NULL REFERENCES notifications (key),
    chat_id           BIGINT      NOT NULL,
    user_id           BIGINT      NOT NULL,
    user_name         TEXT        NOT NULL,
    acked_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (notification_key, chat_id)
);

-- Silences made from Telegram; the short id goes in the Undo button's data.
CREATE TABLE bot_silences (
    id                BIGSERIAL   PRIMARY KEY,
    silence_id        TEXT        NOT NULL,
    alertmanager_url  TEXT        NOT NULL,
    delivery_id       BIGINT      REFERENCES deliveries (id),
    chat_id           BIGINT      NOT NULL,
    created_by        TEXT        NOT NULL,
    ends_at           TIMESTAMPTZ NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    expired_at        TIMESTAMPTZ
);
CREATE INDEX deliveries_by_message ON deliveries (chat_id, telegram_message_id);

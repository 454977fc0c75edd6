-- Producers' receipts: an outbox. A row is written in the same statement as the
-- transition that finishes a delivery of a producer's message (bridge/store/sql.py
-- receipt_rows), so no final state exists without its receipt; bridge/outbox.py
-- POSTs the rows to the producer's callback_url until a 2xx or give_up_after.
-- An event of no delivery (recipient.linked) is a row with delivery_id NULL.
-- * event_id: deterministic per final occurrence (bridge/receipts.py
--   delivery_event_id): a replayed transition cannot write a second row;
-- * payload: JSON, the event's own fields (a delivery's status, attempts, ...);
-- * next_attempt_at: when it is due; a claim pushes it past its lease, so a
--   sender that dies mid-POST leaves a row that is simply due again.
CREATE TABLE receipts (
    id               BIGSERIAL   PRIMARY KEY,
    event_id         TEXT        NOT NULL,
    event            TEXT        NOT NULL,
    producer         TEXT        NOT NULL,
    delivery_id      BIGINT      REFERENCES deliveries (id),
    message_id       TEXT,
    chat_id          BIGINT,
    payload          TEXT        NOT NULL DEFAULT '{}',
    occurred_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    state            TEXT        NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'sent', 'gave_up')),
    attempts         INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error       TEXT,
    finished_at      TIMESTAMPTZ
);
CREATE UNIQUE INDEX receipts_by_event_id ON receipts (event_id);
CREATE INDEX receipts_due ON receipts (next_attempt_at) WHERE state = 'pending';
-- Retention deletes a delivery's receipts with it, and other events once finished.
CREATE INDEX receipts_by_delivery ON receipts (delivery_id) WHERE delivery_id IS NOT NULL;
CREATE INDEX receipts_finished ON receipts (finished_at) WHERE delivery_id IS NULL;

-- Whether the producer had a callback_url when the message was accepted: only
-- then are its deliveries' receipts written (none for a producer that wants none).
ALTER TABLE producer_messages ADD COLUMN receipts BOOLEAN NOT NULL DEFAULT FALSE;

-- The delivery lifecycle written once (bridge/delivery.py):
-- * reason: why a delivery is where it is, as a fixed word (bridge.delivery.Reason)
--   that metrics and decisions read; last_error keeps the free-text detail.
-- * send_started_at: stamped just before the request is written. A lease that
--   expires before it means "never sent, send again"; after it, "ambiguous".
ALTER TABLE deliveries
    ADD COLUMN reason TEXT,
    ADD COLUMN send_started_at TIMESTAMPTZ;

-- The same index the standalone schema has: storm digests and chat migrations
-- look up a chat's waiting deliveries.
CREATE INDEX deliveries_by_chat ON deliveries (chat_id, state);

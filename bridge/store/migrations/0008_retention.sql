-- Retention (bridge/retention.py): the pruner finds the oldest finished rows
-- of each table through these, without reading the live ones.
CREATE INDEX deliveries_finished
    ON deliveries (finished_at) WHERE finished_at IS NOT NULL;
-- A digest is kept while a row it carried still points at it; deleting a
-- delivery also checks nothing points at it (the foreign key's own lookup).
CREATE INDEX deliveries_by_digest
    ON deliveries (digest_id) WHERE digest_id IS NOT NULL;
-- An open thread keeps only its first message and its latest reply.
CREATE INDEX deliveries_replies
    ON deliveries (chat_id, reply_to_message_id) WHERE reply_to_message_id IS NOT NULL;
CREATE INDEX notifications_by_occurrence ON notifications (occurrence_at);
CREATE INDEX group_threads_closed
    ON group_threads (closed_at) WHERE closed_at IS NOT NULL;
CREATE INDEX telegram_updates_received ON telegram_updates (received_at);
CREATE INDEX bot_silences_by_delivery
    ON bot_silences (delivery_id) WHERE delivery_id IS NOT NULL;

-- Storm digests: a chat's backlog coalesced into one message. Every
-- coalesced row points at the delivery that carried the digest.
ALTER TABLE deliveries ADD COLUMN digest_id BIGINT REFERENCES deliveries (id);
ALTER TABLE notifications ADD COLUMN alert_count INTEGER NOT NULL DEFAULT 1;

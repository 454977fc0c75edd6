-- PostgreSQL's 0006: a typed reason beside the free-text detail, and the moment
-- the request is about to be written (see bridge/delivery.py).
ALTER TABLE deliveries ADD COLUMN reason TEXT;
ALTER TABLE deliveries ADD COLUMN send_started_at REAL;

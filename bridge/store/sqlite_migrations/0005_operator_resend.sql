-- PostgreSQL's 0007: an operator's resend, who asked and when, and how many.
ALTER TABLE deliveries ADD COLUMN operator_note TEXT;
ALTER TABLE deliveries ADD COLUMN operator_resends INTEGER NOT NULL DEFAULT 0;
CREATE INDEX deliveries_resent ON deliveries (id) WHERE operator_resends > 0;

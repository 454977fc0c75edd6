-- PostgreSQL's 0007: an operator's resend, who asked and when, and how many.
ALTER TABLE deliveries ADD COLUMN operator_note TEXT;
ALTER TABLE deliveries ADD COLUMN operator_resends INTEGER NOT NULL DEFAULT 0;

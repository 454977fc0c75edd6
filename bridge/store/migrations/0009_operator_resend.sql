-- An operator's resend of an ambiguous or failed delivery (alertbridge
-- deliveries resend): who asked and when, and how many times a person did.
-- The count is what alertbridge_operator_resends_total is read from.
ALTER TABLE deliveries
    ADD COLUMN operator_note TEXT,
    ADD COLUMN operator_resends INTEGER NOT NULL DEFAULT 0;

-- The scheduler sums the count each pass: only resent rows are read.
CREATE INDEX deliveries_resent ON deliveries (id) WHERE operator_resends > 0;

-- A created order's first answer can be kept as the order's document (the JSON the change
-- feed keeps, built in the statement that creates the order) rather than as rendered bytes:
-- the create and its record are then one statement. A replay renders the document as the
-- first answer rendered the order, byte for byte. Every other answer is kept rendered.
ALTER TABLE idempotency_records
    ADD COLUMN order_document jsonb,
    ALTER COLUMN content_type DROP NOT NULL,
    ALTER COLUMN body DROP NOT NULL,
    -- NOT VALID: every row so far has the rendered form, and checking them would hold the
    -- table locked for as long as the scan takes; the check applies to every row written.
    ADD CONSTRAINT idempotency_records_one_form CHECK (
        CASE WHEN order_document IS NULL THEN content_type IS NOT NULL AND body IS NOT NULL
             ELSE content_type IS NULL AND body IS NULL AND status = 201 END
    ) NOT VALID;

-- The Message-ID header of an accepted message, sqlite dialect. Keep in step with ../postgres/0017_header_message_id.sql.
--
-- A repeat of a submission with the same idempotency key answers with the stored
-- message's Message-ID, not a new one. NULL for messages accepted before this column
-- (the API then reads it from the stored header).
ALTER TABLE messages ADD COLUMN header_message_id TEXT;

-- Whether a tenant's header `From:` and `Sender:` must be in its allowed sender
-- domains, as the envelope sender is, PostgreSQL dialect. Keep in step with
-- ../sqlite/0007_header_from_check.sql. 1 (the default): checked at acceptance; 0: only
-- the envelope sender is checked (e.g. a tenant relaying for customers' own domains).

ALTER TABLE tenants ADD COLUMN header_from_check BIGINT NOT NULL DEFAULT 1;

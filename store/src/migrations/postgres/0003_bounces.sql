-- Bounce intake, PostgreSQL dialect. Keep in step with ../sqlite/0003_bounces.sql.
--
-- `suppressions`: per tenant, addresses that must not be sent to (a hard bounce, a
-- feedback complaint, or an operator's entry). `address` is lower-cased. `reason` is the
-- bounce stage's reason (e.g. userunknown, feedback) or `manual`; `source` says where it
-- came from (reply, dsn, complaint, manual); `detail` is a JSON object (status,
-- diagnostic, message id).
CREATE TABLE suppressions (
    tenant_id TEXT NOT NULL,
    address TEXT NOT NULL,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    detail TEXT NOT NULL,
    message_id TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, address)
);

-- Secrets the host makes itself on first start when the pipeline names none (the VERP
-- signing key), shared by every host on the database.
CREATE TABLE host_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- Copied out of an event's detail like `hard`/`class`: `dsn` or `complaint` for what
-- arrived after the attempt (a bounce e-mail). Relay stats count those as bounces of
-- the relay that carried the message but not as another attempt.
ALTER TABLE events ADD COLUMN source TEXT;

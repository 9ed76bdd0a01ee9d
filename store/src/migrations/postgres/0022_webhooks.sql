-- Webhooks (issue 21, second part), postgres dialect. Keep in step with ../sqlite/0022_webhooks.sql.
--
-- A webhook is a tenant's (tenant_id set) or the platform's (tenant_id NULL: every
-- tenant's events). It reads the tenant-visible event log by cursor: one row of
-- `webhook_cursors` per (webhook, tenant), moved only after the receiver answered 2xx.
-- `state`: active, paused (by its owner, or by Sluice after failing past the retry
-- window; `paused_reason` says which), disabled. `secret` signs; after a rotation
-- `previous_secret` signs too until `previous_expires_ms`.
-- Retry state lives on the row (`failures`, `failing_since_ms`, `next_attempt_ms`), so a
-- restart or another node picks up where the last attempt left off. `lease_node` /
-- `lease_until_ms`: the one node delivering it now (see serve/webhooks.rs).
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    tenant_id TEXT,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    description TEXT NOT NULL,
    state TEXT NOT NULL,
    paused_reason TEXT,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_expires_ms BIGINT,
    failures BIGINT NOT NULL DEFAULT 0,
    failing_since_ms BIGINT,
    next_attempt_ms BIGINT,
    lease_node TEXT,
    lease_until_ms BIGINT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id);

CREATE TABLE webhook_cursors (
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL,
    cursor BIGINT NOT NULL,
    PRIMARY KEY (webhook_id, tenant_id)
);

-- The last attempts of each webhook (bounded: older ones are deleted as new ones come).
CREATE TABLE webhook_attempts (
    id BIGSERIAL PRIMARY KEY,
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    at_ms BIGINT NOT NULL,
    tenant_id TEXT,
    first_cursor BIGINT,
    last_cursor BIGINT,
    events BIGINT NOT NULL,
    status BIGINT,
    latency_ms BIGINT NOT NULL,
    error TEXT
);
CREATE INDEX webhook_attempts_of ON webhook_attempts (webhook_id, id);

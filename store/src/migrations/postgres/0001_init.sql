-- Sluice store, PostgreSQL dialect. Keep in step with ../sqlite/0001_init.sql: same tables,
-- same columns, same meaning; only types and sequences differ.
-- Lists (tags, domains, pools) are JSON arrays in TEXT; event details are JSON objects.

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    allowed_sender_domains TEXT NOT NULL,
    pools TEXT NOT NULL,
    route_plugin TEXT,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    secret_sha256 TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE relays (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    auth_user TEXT,
    auth_secret_ref TEXT,
    connection_limit BIGINT NOT NULL,
    rate_limit_per_sec BIGINT,
    weight BIGINT NOT NULL,
    tags TEXT NOT NULL,
    owner TEXT,
    state TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    idempotency_key TEXT,
    sender TEXT NOT NULL,
    body BYTEA NOT NULL,
    size BIGINT NOT NULL,
    tags TEXT NOT NULL,
    max_age_secs BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
-- NULL keys are distinct, so messages without a key never collide.
CREATE UNIQUE INDEX messages_idempotency ON messages (tenant_id, idempotency_key);

CREATE TABLE recipients (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    idx BIGINT NOT NULL,
    address TEXT NOT NULL,
    domain TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT,
    lease_owner TEXT,
    lease_until_ms BIGINT,
    -- The relay of the last `routed` event while the recipient is in flight.
    routed_relay TEXT,
    last_relay TEXT,
    last_reply TEXT,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (message_id, idx)
);
CREATE INDEX recipients_due ON recipients (state, next_attempt_at_ms);
CREATE INDEX recipients_lease ON recipients (state, lease_until_ms);
CREATE INDEX recipients_owner ON recipients (lease_owner);

CREATE TABLE events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id TEXT NOT NULL,
    recipient_idx BIGINT,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    relay TEXT,
    detail TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    -- Copied out of `detail` on append so relay stats need no JSON parsing.
    latency_ms BIGINT,
    hard BIGINT,
    class TEXT
);
CREATE INDEX events_message ON events (message_id, seq);
CREATE INDEX events_relay_at ON events (relay, at_ms);

-- Tenant plugins, PostgreSQL dialect. Keep in step with ../sqlite/0002_plugins.sql.
-- Every upload is a version, numbered per (tenant, stage) from 1; at most one version
-- per (tenant, stage) is active. `history` is a JSON array of the versions that were
-- active before (most recent last): rollback pops it. `config` is a JSON array of
-- [key, value] pairs; `timeout_ms`/`memory_bytes` are the tenant's own limits (NULL: the
-- stage's defaults), checked against the platform maxima when loaded.

CREATE TABLE plugin_versions (
    tenant_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    version BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    wasm BYTEA NOT NULL,
    config TEXT NOT NULL,
    timeout_ms BIGINT,
    memory_bytes BIGINT,
    uploaded_by TEXT NOT NULL,
    uploaded_at_ms BIGINT NOT NULL,
    state TEXT NOT NULL,
    state_reason TEXT,
    state_changed_at_ms BIGINT,
    PRIMARY KEY (tenant_id, stage, version)
);

CREATE TABLE active_plugins (
    tenant_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    version BIGINT NOT NULL,
    history TEXT NOT NULL,
    activated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, stage)
);

-- Tenant plugins, SQLite dialect. Keep in step with ../postgres/0002_plugins.sql.
-- Every upload is a version, numbered per (tenant, stage) from 1; at most one version
-- per (tenant, stage) is active. `history` is a JSON array of the versions that were
-- active before (most recent last): rollback pops it. `config` is a JSON array of
-- [key, value] pairs; `timeout_ms`/`memory_bytes` are the tenant's own limits (NULL: the
-- stage's defaults), checked against the platform maxima when loaded.

CREATE TABLE plugin_versions (
    tenant_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    version INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    wasm BLOB NOT NULL,
    config TEXT NOT NULL,
    timeout_ms INTEGER,
    memory_bytes INTEGER,
    uploaded_by TEXT NOT NULL,
    uploaded_at_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    state_reason TEXT,
    state_changed_at_ms INTEGER,
    PRIMARY KEY (tenant_id, stage, version)
);

CREATE TABLE active_plugins (
    tenant_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    version INTEGER NOT NULL,
    history TEXT NOT NULL,
    activated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, stage)
);

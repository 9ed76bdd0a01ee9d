-- Tenant plugins' failure policy and concurrency, PostgreSQL dialect. Keep in step with
-- ../sqlite/0005_plugin_policy.sql.
-- `on_failure`: after a trap or timeout (or while suspended), `fallback` runs the
-- platform's plugin, `defer` fails closed (the message waits; nothing is decided for the
-- tenant by another plugin). `calls_in_flight`: the tenant's own cap on concurrent calls
-- of the version (NULL: the platform's default), checked against the maximum when loaded.

ALTER TABLE plugin_versions ADD COLUMN on_failure TEXT NOT NULL DEFAULT 'fallback';
ALTER TABLE plugin_versions ADD COLUMN calls_in_flight BIGINT;

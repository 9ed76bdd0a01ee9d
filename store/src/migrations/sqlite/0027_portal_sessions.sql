-- The web portal's sessions (issue 24), sqlite dialect. Keep in step with ../postgres/0027_portal_sessions.sql.
--
-- A session is kept on the server, not in a signed cookie, so that signing out, a
-- revoked key and an operator can end it at once. The cookie carries a random 256-bit
-- secret; only its SHA-256 is stored (a copy of this table signs no one in). A tenant's
-- session names the API key it was opened with and ends with that key (the lookup
-- joins it); `kind` is 'tenant' or 'operator' (the operator portal, whose sessions
-- have no tenant and no key). Each tenant keeps at most a few sessions: opening one
-- past the bound drops its oldest (`store/portal_sessions.rs`).
CREATE TABLE portal_sessions (
    secret_sha256 TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    key_id TEXT,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX portal_sessions_owner ON portal_sessions (kind, tenant_id, created_at_ms);

-- DKIM keys (issue 23), postgres dialect. Keep in step with ../sqlite/0026_dkim_keys.sql.
--
-- One row per (tenant, domain, selector). The private key is sealed (ChaCha20-Poly1305
-- under the pipeline's [dkim] key secret, bound to tenant, domain and selector:
-- dkim/seal.rs), so a dump of this table alone reveals no key. At most one key of a
-- tenant's domain is active (the one that signs); the others are published for
-- rotation, before or after their turn.
CREATE TABLE dkim_keys (
    tenant_id TEXT NOT NULL,
    domain TEXT NOT NULL,
    selector TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    -- The DNS record's p= value, base64.
    public_key TEXT NOT NULL,
    private_key_sealed TEXT NOT NULL,
    active BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    activated_at_ms BIGINT,
    PRIMARY KEY (tenant_id, domain, selector)
);
CREATE UNIQUE INDEX dkim_keys_one_active ON dkim_keys (tenant_id, domain) WHERE active = 1;

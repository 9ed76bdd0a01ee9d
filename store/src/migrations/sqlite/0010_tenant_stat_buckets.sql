-- Relay stat buckets per tenant, sqlite dialect. Keep in step with ../postgres/0010_tenant_stat_buckets.sql.
--
-- A tenant's route plugin saw the whole platform's counts on a shared relay, so one
-- tenant could watch another's traffic (its sent_1h growing). Buckets are now kept per
-- (tenant, relay, 10 seconds): a tenant's route input carries its own windows, and the
-- admin API's platform-wide windows are the sums over tenants. The key leads with the
-- bucket, so the per-second window read and the pruning are range scans.
CREATE TABLE relay_stat_buckets_by_tenant (
    tenant_id TEXT NOT NULL,
    relay TEXT NOT NULL,
    bucket_ms INTEGER NOT NULL,
    sent INTEGER NOT NULL,
    delivered INTEGER NOT NULL,
    deferred INTEGER NOT NULL,
    hard_bounced INTEGER NOT NULL,
    soft_bounced INTEGER NOT NULL,
    blocked INTEGER NOT NULL,
    latency_sum INTEGER NOT NULL,
    latency_n INTEGER NOT NULL,
    PRIMARY KEY (bucket_ms, relay, tenant_id)
);

-- The buckets already kept belonged to no one tenant: they keep counting in the
-- platform's windows under the empty tenant id (no tenant has it) and age out within
-- the hour the longest window covers.
INSERT INTO relay_stat_buckets_by_tenant (tenant_id, relay, bucket_ms, sent, delivered,
    deferred, hard_bounced, soft_bounced, blocked, latency_sum, latency_n)
SELECT '', relay, bucket_ms, sent, delivered, deferred, hard_bounced, soft_bounced, blocked,
    latency_sum, latency_n
FROM relay_stat_buckets;

DROP TABLE relay_stat_buckets;
ALTER TABLE relay_stat_buckets_by_tenant RENAME TO relay_stat_buckets;

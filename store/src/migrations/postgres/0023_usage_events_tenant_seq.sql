-- Account rating's walk of a tenant's usage, postgres dialect. Keep in step with ../sqlite/0023_usage_events_tenant_seq.sql.
--
-- Issue 17: account rating finds a tenant's usage after its cursor (the claim, the batch,
-- the count waiting). usage_events had no index by tenant, so each of those walked every
-- tenant's usage from the cursor on by seq: for a tenant that sends rarely, every poll
-- walked all the usage since its last message. With this index each is a walk of the
-- tenant's own rows after its cursor.
CREATE INDEX usage_events_tenant_seq ON usage_events (tenant_id, seq);

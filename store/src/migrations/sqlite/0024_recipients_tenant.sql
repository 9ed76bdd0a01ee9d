-- The dispatcher's look by tenant, sqlite dialect. Keep in step with ../postgres/0024_recipients_tenant.sql.
--
-- Issue 16: the look for due work leaves out the tenants at their share on this host. The
-- tenant was known only through messages, so the look walked recipients_due in due order
-- and joined each row to its message to skip it: with a flooding tenant's backlog in the
-- store, every look (one per 250 ms tick at least) read past that whole backlog, on the
-- store's one writer. With the tenant on the recipient and this index, the look asks each
-- tenant with room for its own oldest due rows (store/leases.rs): a walk of at most the
-- batch per tenant and state, whatever another tenant has waiting.
--
-- (state, tenant_id, …) rather than (tenant_id, state, …): the look also lists the tenants
-- that have queued or deferred work by skipping through this index one tenant at a time,
-- which with the state first passes no tenant whose rows are all final.
ALTER TABLE recipients ADD COLUMN tenant_id TEXT NOT NULL DEFAULT '';
UPDATE recipients SET tenant_id = (SELECT m.tenant_id FROM messages m WHERE m.id = recipients.message_id);
CREATE INDEX recipients_tenant_due ON recipients (state, tenant_id, next_attempt_at_ms);

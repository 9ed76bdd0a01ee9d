-- A tenant's events about no message, postgres dialect. Keep in step with ../sqlite/0020_tenant_events.sql.
--
-- Issue 21: `plugin.suspended` and `billing.low_balance` are events of a tenant
-- that no message caused, so `events.message_id` may be NULL.
ALTER TABLE events ALTER COLUMN message_id DROP NOT NULL;

-- `billing.low_balance`: set when a prepaid tenant's reservation first falls short (a
-- recipient held for credit), with the event, and cleared by the next reservation that
-- succeeds; while it is set, further shortfalls write no event (one per crossing).
ALTER TABLE tenant_billing ADD COLUMN low_balance_at_ms BIGINT;

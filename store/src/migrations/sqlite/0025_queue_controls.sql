-- Queue inspection and controls (issue 22), sqlite dialect. Keep in step with ../postgres/0025_queue_controls.sql.
--
-- `recipients.hold`: why a recipient is kept back by request: 'hold' (held by the
-- operator or its tenant, until released) or 'suspended' (its tenant's sending is
-- suspended, until resumed). NULL otherwise; a prepaid hold (funds short) is state
-- 'held' with hold NULL, so crediting a tenant never releases what was held by request.
-- A recipient in flight when it is held keeps state 'delivering' with hold set: an
-- outcome that would queue it again (deferred) makes it 'held' instead.
ALTER TABLE recipients ADD COLUMN hold TEXT;
CREATE INDEX recipients_hold ON recipients (hold, message_id) WHERE hold IS NOT NULL;

-- A suspended tenant's new mail is accepted and stored held ('suspended').
ALTER TABLE tenants ADD COLUMN suspended_at_ms INTEGER;
ALTER TABLE tenants ADD COLUMN suspend_reason TEXT;

-- GET /v1/messages: a tenant's messages newest first by id (ULIDs sort by acceptance
-- time, so since/until are ranges of this index too), by envelope sender, and by
-- recipient address. Without them each page walked every tenant's messages.
CREATE INDEX messages_tenant_id ON messages (tenant_id, id);
CREATE INDEX messages_tenant_sender ON messages (tenant_id, sender, id);
CREATE INDEX recipients_address ON recipients (address, message_id);

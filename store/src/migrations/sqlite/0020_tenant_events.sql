-- A tenant's events about no message, sqlite dialect. Keep in step with ../postgres/0020_tenant_events.sql.
--
-- Issue 21: `plugin.suspended` and `billing.low_balance` are events of a tenant
-- that no message caused, so `events.message_id` may be NULL. SQLite cannot drop a
-- column's NOT NULL: the table is rebuilt with the same columns, rows, `seq` values and
-- indexes, and its AUTOINCREMENT counter is carried over so that no `seq` (an event's
-- public id, `evt_…`) is ever handed out twice, also one of an event already pruned.
CREATE TABLE events_new (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT,
    recipient_idx INTEGER,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    relay TEXT,
    detail TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    -- Copied out of `detail` on append so relay stats need no JSON parsing.
    latency_ms INTEGER,
    hard INTEGER,
    class TEXT,
    source TEXT,
    tenant_seq INTEGER
);
INSERT INTO events_new (seq, message_id, recipient_idx, tenant_id, kind, relay, detail, at_ms,
                        latency_ms, hard, class, source, tenant_seq)
    SELECT seq, message_id, recipient_idx, tenant_id, kind, relay, detail, at_ms,
           latency_ms, hard, class, source, tenant_seq
    FROM events;
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'events_new', seq FROM sqlite_sequence WHERE name = 'events'
    AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'events_new');
UPDATE sqlite_sequence
    SET seq = max(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'events'))
    WHERE name = 'events_new' AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'events');
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_message ON events (message_id, seq);
CREATE UNIQUE INDEX events_tenant_seq ON events (tenant_id, tenant_seq);
CREATE INDEX events_unsequenced ON events (seq) WHERE tenant_seq IS NULL;

-- `billing.low_balance`: set when a prepaid tenant's reservation first falls short (a
-- recipient held for credit), with the event, and cleared by the next reservation that
-- succeeds; while it is set, further shortfalls write no event (one per crossing).
ALTER TABLE tenant_billing ADD COLUMN low_balance_at_ms INTEGER;

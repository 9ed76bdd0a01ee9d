-- The tenant-visible event log's cursors, sqlite dialect. Keep in step with ../postgres/0019_event_cursors.sql.
--
-- Issue 21: the tenant-visible event log. Every event gets a per-tenant cursor
-- (`tenant_seq`: 1, 2, 3, … per tenant, no gaps) — not in the transaction that writes
-- it, but after it committed, by the one sequencer of the database (`store/event_log.rs`,
-- on SQLite the one write connection), in the order the sequencer sees commits. Writers never wait
-- for one another over a tenant's counter, and a reader following a tenant's cursors can
-- never miss a smaller cursor that commits later: a cursor is only ever handed out to
-- an event that is already committed, and the sequencer's transactions are serialised.
--
-- events.tenant_seq: NULL until sequenced. Events written before this migration are
-- sequenced by the first sequencer rounds, oldest first.
-- event_sequences: per tenant, the last cursor handed out.
ALTER TABLE events ADD COLUMN tenant_seq INTEGER;
CREATE UNIQUE INDEX events_tenant_seq ON events (tenant_id, tenant_seq);
CREATE INDEX events_unsequenced ON events (seq) WHERE tenant_seq IS NULL;

CREATE TABLE event_sequences (
    tenant_id TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
);

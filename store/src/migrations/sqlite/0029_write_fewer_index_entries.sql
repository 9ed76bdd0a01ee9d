-- Fewer index entries written per message, sqlite dialect. Keep in step with ../postgres/0029_write_fewer_index_entries.sql.
--
-- Issue 16/17: every accepted-and-delivered message paid for index entries no query
-- reads. Each recipient is inserted, then rewritten once when its attempt finishes (its
-- state, lease and next attempt change), and an index entry costs a B-tree insert on the
-- first and a delete plus an insert on the second; every event is inserted, then given
-- its tenant cursor. What each index below is read by is in host/src/store (the plans:
-- store_conformance::hot_queries_read_by_index).
--
-- recipients_due (state, next_attempt_at_ms): read by nothing since migration 0024 (the
-- look reads recipients_tenant_due); its reads by state alone are served as well by
-- recipients_tenant_due, whose leading column is the state.
DROP INDEX recipients_due;
-- recipients_owner (lease_owner): every query by owner also asks state = 'delivering',
-- and the recipients in flight are few (the hosts' in-flight limits), so they are read
-- through recipients_lease below. It held an entry for every recipient ever accepted.
DROP INDEX recipients_owner;
-- recipients_lease: only recipients in flight have a lease, and every query by lease
-- asks state = 'delivering': the index holds those only. A finished recipient leaves it
-- (one delete) instead of moving to a 'delivered' entry kept forever (a delete and an
-- insert), and the index stays the size of the work in flight, not of the history.
DROP INDEX recipients_lease;
CREATE INDEX recipients_lease ON recipients (lease_until_ms) WHERE state = 'delivering';
-- messages_idempotency: keys are optional and two messages without one never collide,
-- so a message without a key needs no entry; the look for a key (tenant_id = … AND
-- idempotency_key = …) implies the key is not NULL and reads the partial index.
DROP INDEX messages_idempotency;
CREATE UNIQUE INDEX messages_idempotency ON messages (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- events_tenant_seq: an event is written without its cursor and the sequencer gives it
-- one; every read by cursor compares it (tenant_seq > … or = …). Unsequenced events now
-- get no entry at insert, so the sequencer's update is an insert instead of a delete
-- and an insert; events_unsequenced still finds them.
DROP INDEX events_tenant_seq;
CREATE UNIQUE INDEX events_tenant_seq ON events (tenant_id, tenant_seq)
    WHERE tenant_seq IS NOT NULL;

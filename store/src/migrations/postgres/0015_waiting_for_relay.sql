-- Deferred work that waits for a relay, postgres dialect. Keep in step with ../sqlite/0015_waiting_for_relay.sql.
--
-- A recipient deferred only because its relay did not answer (a refused or timed-out
-- connection, no SMTP reply) names that relay here; one deferred because no relay it may
-- use was up says '*'. When a relay answers a probe again, such recipients are made due
-- at once instead of waiting out their retry delay. Any other outcome clears it.
ALTER TABLE recipients ADD COLUMN waiting_for_relay TEXT;
CREATE INDEX recipients_waiting_for_relay ON recipients (waiting_for_relay) WHERE waiting_for_relay IS NOT NULL;

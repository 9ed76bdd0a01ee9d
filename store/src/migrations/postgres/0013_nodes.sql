-- Nodes and the leader, postgres dialect. Keep in step with ../sqlite/0013_nodes.sql.
--
-- Every running `sluice serve` has one row, keyed by its stable node id (the id its
-- leases carry), and writes `heartbeat_at_ms` every heartbeat interval. A node whose
-- heartbeat is older than a few intervals is dead: the others expire its leases at once
-- instead of waiting for them to run out. `incarnation` is new for every process, so
-- that a second process started with a live node's id is refused, and a process whose
-- id was taken over by a newer one finds out at its next heartbeat. `stopped_at_ms` is
-- set by a graceful stop (its leases were given back).
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    incarnation TEXT NOT NULL,
    address TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    heartbeat_at_ms BIGINT NOT NULL,
    stopped_at_ms BIGINT
);

-- The one node that runs the periodic jobs only one node should run (volume
-- settlement, pruning relay stats). One row; a node holds the role until `until_ms` and
-- renews it with its heartbeat, so a dead leader's role passes on when it runs out.
CREATE TABLE node_leader (
    slot INTEGER PRIMARY KEY,
    node_id TEXT,
    since_ms BIGINT NOT NULL,
    until_ms BIGINT NOT NULL
);
INSERT INTO node_leader (slot, node_id, since_ms, until_ms) VALUES (1, NULL, 0, 0);

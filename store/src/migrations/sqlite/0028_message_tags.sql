-- Tag search and bulk holds by index (issue 22), sqlite dialect. Keep in step with ../postgres/0028_message_tags.sql.
--
-- `GET /v1/messages?tag=` looked for the tag inside `messages.tags` (a JSON array, as
-- text) row by row: a rare tag walked the tenant's whole history (0.8–1.6 s at 1 M
-- messages). This table holds one row per (tenant, tag, message), so a tag's messages
-- are one range of its primary key, newest first by message id (ULIDs sort by
-- acceptance). Only tagged messages have rows: an untagged accept writes nothing more,
-- a tagged one one multi-row INSERT per group commit (store/accept.rs). Tags longer
-- than 128 bytes are not kept here (a search cannot ask for them: the API's bound).
-- No foreign key: messages are never deleted, and a key would be one more probe per row
-- on the accept path. WITHOUT ROWID: the key is the whole row, stored once.
CREATE TABLE message_tags (
    tenant_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    message_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, tag, message_id)
) WITHOUT ROWID;
INSERT INTO message_tags (tenant_id, tag, message_id)
SELECT DISTINCT m.tenant_id, t.value, m.id
FROM messages m, json_each(m.tags) AS t
WHERE m.tags <> '[]' AND t.type = 'text' AND length(CAST(t.value AS BLOB)) <= 128;

-- The prepaid holds (funds short: state 'held', hold NULL), for a bulk hold or a
-- suspension to take, and a credit to release, without walking the `held` range of
-- `recipients_due`, which a large hold by request fills with millions of rows. Few rows:
-- only work held for funds is in it. `state` and `hold` are the same in every row; as
-- columns they make the index the best match by equality for SQLite's planner (which has
-- no statistics to weigh a small partial index with), ahead of `recipients_tenant_due`.
CREATE INDEX recipients_prepaid ON recipients (state, hold, tenant_id) WHERE state = 'held' AND hold IS NULL;

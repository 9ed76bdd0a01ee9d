-- API keys issued per account (issue 17), postgres dialect. Keep in step with ../sqlite/0016_account_keys.sql.
--
-- A key with an account_id is that account's key: it may submit mail billed to that
-- account and read that account's usage, invoices and balance, nothing else
-- (serve/auth.rs holds the table of what each kind of key may call). A key without
-- one is the tenant's, as before. Deleting an account revokes its keys.
ALTER TABLE api_keys ADD COLUMN account_id TEXT;
CREATE INDEX api_keys_account ON api_keys (tenant_id, account_id);

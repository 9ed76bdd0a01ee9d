-- Two ledgers (issue 17), SQLite dialect. Keep in step with ../postgres/0012_accounts.sql.
--
-- The tables of 0004 (ledger, period_counters, credits, reservations, tenant_billing)
-- are, unchanged, the platform → tenant books: from this version on they are rated only
-- by the platform's rater with the tariff the platform assigned to the tenant. Rows a
-- tenant's own rater wrote there before this migration stay (a ledger row is never
-- changed); the operator can find them by their services.
--
-- A tenant's own customers ("accounts") get books of their own, written only from the
-- tenant's rater: its uploaded bill plugin (the bill plugins tenants uploaded before
-- this migration become their account raters as they are: nothing to move), else the
-- platform's rater with the tenant's own account tariff.
--
-- accounts: a tenant's customers; mode prepaid | postpaid.
-- account_logins: addresses or domains (lower case) naming an account, matched sender
--   first, else recipient (the `sluice bill --logins` rules); one account per login.
-- account_tariffs: the tenant's tariff for its accounts.
-- account_rating: per tenant, the usage_events seq its account rating has reached,
--   advanced in the transaction that writes the account charges (so a replay inserts
--   nothing), with the failures of the last try.
-- account_ledger: immutable account charges, unique per (tenant, message, recipient,
--   outcome, service).
-- account_credits: a tenant's credits to its accounts, once per (tenant, account, reference).
-- usage_events.sender: whom login matching tries first. usage_events.inserted_at_ms:
--   account rating reads usage in seq order only up to rows old enough to be sure that
--   no lower seq is still uncommitted (PostgreSQL hands out seqs before commit).

CREATE TABLE accounts (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    mode TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE account_logins (
    tenant_id TEXT NOT NULL,
    login TEXT NOT NULL,
    account_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, login)
);
CREATE INDEX account_logins_account ON account_logins (tenant_id, account_id);

CREATE TABLE account_tariffs (
    tenant_id TEXT PRIMARY KEY,
    tariff TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

CREATE TABLE account_rating (
    tenant_id TEXT PRIMARY KEY,
    after_seq INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at_ms INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    claim_owner TEXT,
    claim_until_ms INTEGER
);

CREATE TABLE account_ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    recipient_idx INTEGER NOT NULL,
    recipient TEXT NOT NULL,
    outcome TEXT NOT NULL,
    service TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    unit_price TEXT NOT NULL,
    amount_micros INTEGER NOT NULL,
    currency TEXT NOT NULL,
    period TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (tenant_id, message_id, recipient_idx, outcome, service)
);
CREATE INDEX account_ledger_account ON account_ledger (tenant_id, account_id, period);

CREATE TABLE account_credits (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    reference TEXT NOT NULL,
    amount_micros INTEGER NOT NULL,
    currency TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (tenant_id, account_id, reference)
);

ALTER TABLE usage_events ADD COLUMN sender TEXT;
ALTER TABLE usage_events ADD COLUMN inserted_at_ms INTEGER;

-- Live billing, SQLite dialect. Keep in step with ../postgres/0004_billing.sql.
-- (Numbered 0004: 0003 belongs to bounce intake; sqlx applies missing versions in order
-- and needs no contiguous numbers.)
--
-- usage_events: one row per final outcome of a recipient, written in the transaction
--   that records the outcome; `state` pending → rated. Rating claims rows (claim_owner,
--   claim_until_ms) like recipients are leased; failures back off via next_try_at_ms.
-- ledger: immutable charges, unique per (message, recipient, outcome, service): a
--   replayed batch inserts nothing. Amounts are integer micro-units of `currency`.
-- period_counters: quantity and amount per (tenant, service, period), advanced only by
--   ledger rows that were actually inserted, in the same transaction.
-- credits: prepaid top-ups, unique per (tenant, reference). Balance = credits − charges.
-- reservations: estimated cost of recipients not yet rated (prepaid); deleted when the
--   recipient's usage is rated.

CREATE TABLE tenant_billing (
    tenant_id TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    tariff TEXT,
    updated_at_ms INTEGER NOT NULL
);

CREATE TABLE usage_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    recipient_idx INTEGER NOT NULL,
    recipient TEXT NOT NULL,
    outcome TEXT NOT NULL,
    direction TEXT NOT NULL,
    size INTEGER NOT NULL,
    relay TEXT,
    at_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at_ms INTEGER NOT NULL,
    claim_owner TEXT,
    claim_until_ms INTEGER,
    last_error TEXT,
    rated_at_ms INTEGER,
    UNIQUE (message_id, recipient_idx, outcome)
);
CREATE INDEX usage_events_pending ON usage_events (state, next_try_at_ms);

CREATE TABLE ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
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
    relay TEXT,
    at_ms INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (message_id, recipient_idx, outcome, service)
);
CREATE INDEX ledger_tenant_at ON ledger (tenant_id, at_ms);
CREATE INDEX ledger_tenant_period ON ledger (tenant_id, period);

CREATE TABLE period_counters (
    tenant_id TEXT NOT NULL,
    service TEXT NOT NULL,
    period TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    amount_micros INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, service, period)
);

CREATE TABLE credits (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    reference TEXT NOT NULL,
    amount_micros INTEGER NOT NULL,
    currency TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (tenant_id, reference)
);

CREATE TABLE reservations (
    message_id TEXT NOT NULL,
    recipient_idx INTEGER NOT NULL,
    tenant_id TEXT NOT NULL,
    amount_micros INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (message_id, recipient_idx)
);
CREATE INDEX reservations_tenant ON reservations (tenant_id);

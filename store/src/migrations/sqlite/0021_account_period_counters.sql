-- Account period counters, sqlite dialect. Keep in step with ../postgres/0020_account_period_counters.sql.
--
-- Issue 17: account rating gives the tenant's rater each account's period-to-date
-- quantity per service. Summing the account ledger's rows of the month for every rated
-- batch grew with the month (quadratic in a month's usage). The counter is kept in the
-- transaction that inserts the ledger rows (store/accounts.rs, write_account_charges),
-- from the rows actually inserted, so it always equals the ledger's sum.
CREATE TABLE account_period_counters (
    tenant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    period TEXT NOT NULL,
    service TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, account_id, period, service)
);

INSERT INTO account_period_counters (tenant_id, account_id, period, service, quantity)
SELECT tenant_id, account_id, period, service, CAST(SUM(quantity) AS BIGINT)
FROM account_ledger GROUP BY tenant_id, account_id, period, service;

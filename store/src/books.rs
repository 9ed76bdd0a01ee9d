//! What the two sets of books have in common (issue 17): the platform → tenant books
//! (`ledger/`: `ledger`, `credits`) and the tenant → account books (`accounts.rs`:
//! `account_ledger`, `account_credits`) check, write and sum charges and credits the same
//! way; only their tables, and whose a row is, differ ([`Book`], [`Whose`]).
//!
//! Invariants, for both books:
//! - A charge row is never changed. Its key — (message, recipient, outcome, service), and
//!   the tenant too in the account ledger — is unique, and [`insert_charges`] inserts with
//!   `ON CONFLICT DO NOTHING` and says which rows were new, so a replayed batch inserts
//!   nothing and its caller counts only new rows.
//! - [`check_charges`] refuses a batch holding a negative amount that the tariff does not
//!   declare a credit, or a quantity past `i64`, before anything is written: the last
//!   line of defence behind `billing::check_charges`, whoever rated the batch.
//! - A credit is positive, has a reference of 1 to 200 bytes, and is written once per
//!   reference ([`check_credit`], [`insert_credit`]).
//! - Sums are integers of micro-units, cast to BIGINT on both databases.
//!
//! Nothing here chooses a book: each caller names its own, and neither `ledger/` nor
//! `accounts.rs` names the other's.

use sqlx::AnyConnection;
use sqlx::any::{Any, AnyArguments};
use sqlx::query::Query;
use std::collections::HashMap;

use serde::Serialize;

use super::StoreError;
use super::codec::{col, corrupt, get_idx, positional, rows_per_batch_statement, value_rows};
use super::connect::Pools;
use sqlx::any::AnyRow;

/// A ledger's charges summed per (service, unit price): one invoice line. The store
/// sums; the host's `billing` turns the sums into an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeSum {
    pub service: String,
    pub unit_price: String,
    pub quantity: u64,
    pub amount_micros: i64,
    /// A volume-mode settlement row.
    pub settlement: bool,
}

/// The money of a book's owner (a tenant, or a tenant's account), exact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub credits_micros: i64,
    pub charges_micros: i64,
    /// Estimated cost of recipients authorised but not yet rated.
    pub reserved_micros: i64,
}

impl Balance {
    /// credits − charges.
    pub fn balance_micros(&self) -> i64 {
        self.credits_micros - self.charges_micros
    }

    /// What new sends may still reserve: credits − charges − reservations.
    pub fn available_micros(&self) -> i64 {
        self.balance_micros() - self.reserved_micros
    }
}

/// Which books a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Book {
    /// What the platform charges its tenants (rated only by the platform's rater).
    Platform,
    /// What a tenant charges its own customers (rated by the tenant's rater).
    Accounts,
}

impl Book {
    fn ledger(self) -> &'static str {
        match self {
            Book::Platform => "ledger",
            Book::Accounts => "account_ledger",
        }
    }

    fn credits(self) -> &'static str {
        match self {
            Book::Platform => "credits",
            Book::Accounts => "account_credits",
        }
    }

    /// The column beside the tenant a charge row has: the relay a platform charge's
    /// mail went through, the account an account charge bills.
    fn charge_column(self) -> &'static str {
        match self {
            Book::Platform => "relay",
            Book::Accounts => "account_id",
        }
    }

    /// The ledger's unique key.
    fn charge_key(self) -> &'static str {
        match self {
            Book::Platform => "message_id, recipient_idx, outcome, service",
            Book::Accounts => "tenant_id, message_id, recipient_idx, outcome, service",
        }
    }
}

/// Whose rows to sum or credit: a tenant in the platform's books, or one account of a
/// tenant in the tenant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Whose<'a> {
    Tenant(&'a str),
    Account { tenant: &'a str, account: &'a str },
}

impl<'a> Whose<'a> {
    fn book(self) -> Book {
        match self {
            Whose::Tenant(_) => Book::Platform,
            Whose::Account { .. } => Book::Accounts,
        }
    }

    /// The `WHERE` condition naming the owner's rows, as `$1` (and `$2`).
    fn filter(self) -> &'static str {
        match self {
            Whose::Tenant(_) => "tenant_id = $1",
            Whose::Account { .. } => "tenant_id = $1 AND account_id = $2",
        }
    }

    /// How many parameters [`Self::filter`] takes.
    fn params(self) -> usize {
        match self {
            Whose::Tenant(_) => 1,
            Whose::Account { .. } => 2,
        }
    }

    fn bind<'q>(self, q: Query<'q, Any, AnyArguments<'q>>) -> Query<'q, Any, AnyArguments<'q>>
    where
        'a: 'q,
    {
        match self {
            Whose::Tenant(t) => q.bind(t),
            Whose::Account { tenant, account } => q.bind(tenant).bind(account),
        }
    }
}

impl std::fmt::Display for Whose<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Whose::Tenant(t) => write!(f, "tenant {t:?}"),
            Whose::Account { tenant, account } => {
                write!(f, "account {account:?} of tenant {tenant:?}")
            }
        }
    }
}

/// One charge to write, in either book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChargeRow<'a> {
    pub tenant_id: &'a str,
    /// The relay (platform book; may be none) or the account (account book).
    pub whose: Option<&'a str>,
    pub message_id: &'a str,
    pub recipient_idx: i32,
    pub recipient: &'a str,
    pub outcome: &'a str,
    pub service: &'a str,
    pub quantity: u64,
    pub unit_price: &'a str,
    pub amount_micros: i64,
    pub currency: &'a str,
    /// The tariff declares the service a credit: only then may the amount be negative.
    pub credit: bool,
    /// `YYYY-MM` of `at_ms`.
    pub period: String,
    pub at_ms: i64,
}

/// Refuses the whole batch if one charge is negative without being a credit, or has a
/// quantity past `i64`; nothing is written then.
pub(crate) fn check_charges(
    op: &str,
    book: Book,
    rows: &[ChargeRow<'_>],
) -> Result<(), StoreError> {
    for c in rows {
        let of = match book {
            Book::Platform => format!("message {:?} recipient {}", c.message_id, c.recipient_idx),
            Book::Accounts => format!(
                "account {:?} (message {:?})",
                c.whose.unwrap_or(""),
                c.message_id
            ),
        };
        if c.amount_micros < 0 && !c.credit {
            return Err(StoreError::invalid(
                op,
                format!(
                    "negative amount {} micro-units for service {:?} of {of}, which is not a credit service",
                    c.amount_micros, c.service
                ),
            ));
        }
        if i64::try_from(c.quantity).is_err() {
            return Err(StoreError::invalid(
                op,
                format!(
                    "quantity {} of service {:?} of {of} is too large",
                    c.quantity, c.service
                ),
            ));
        }
    }
    Ok(())
}

/// Inserts charge rows into `book`'s ledger inside the caller's transaction, in
/// multi-row statements, each insert-or-ignore on the ledger's key. Returns, per row,
/// whether it was new: a replayed row, and a row repeating an earlier one of the same
/// batch, was not. Call [`check_charges`] first.
pub(crate) async fn insert_charges(
    conn: &mut AnyConnection,
    book: Book,
    rows: &[ChargeRow<'_>],
    now_ms: i64,
    op: &str,
) -> Result<Vec<bool>, StoreError> {
    const COLS: usize = 14;
    // Each charge's key → its place; a key repeated within the batch keeps its first.
    // The tenant is left out: the account ledger's rows of one batch are one tenant's,
    // and message ids are unique across tenants.
    let mut at: HashMap<(&str, i32, &str, &str), usize> = HashMap::with_capacity(rows.len());
    for (i, c) in rows.iter().enumerate() {
        at.entry((c.message_id, c.recipient_idx, c.outcome, c.service))
            .or_insert(i);
    }
    let mut new_row = vec![false; rows.len()];
    for chunk in rows.chunks(rows_per_batch_statement(COLS)) {
        // RETURNING names the rows that were new (a replayed charge conflicts and is
        // skipped).
        let sql = format!(
            "INSERT INTO {ledger} (tenant_id, {column}, message_id, recipient_idx, recipient, \
             outcome, service, quantity, unit_price, amount_micros, currency, period, at_ms, \
             created_at_ms) VALUES {values} \
             ON CONFLICT ({key}) DO NOTHING \
             RETURNING message_id, recipient_idx, outcome, service",
            ledger = book.ledger(),
            column = book.charge_column(),
            values = value_rows(chunk.len(), COLS),
            key = book.charge_key(),
        );
        let sql = positional(&*conn, sql);
        let mut q = sqlx::query(&sql);
        for c in chunk {
            q = q
                .bind(c.tenant_id)
                .bind(c.whose)
                .bind(c.message_id)
                .bind(i64::from(c.recipient_idx))
                .bind(c.recipient)
                .bind(c.outcome)
                .bind(c.service)
                .bind(c.quantity as i64)
                .bind(c.unit_price)
                .bind(c.amount_micros)
                .bind(c.currency)
                .bind(c.period.as_str())
                .bind(c.at_ms)
                .bind(now_ms);
        }
        let returned = q
            .fetch_all(&mut *conn)
            .await
            .map_err(StoreError::db(format!(
                "{op}: {} charges (first: message {:?} recipient {} outcome {})",
                chunk.len(),
                chunk[0].message_id,
                chunk[0].recipient_idx,
                chunk[0].outcome
            )))?;
        for row in &returned {
            let message_id: String = col(row, op, "message_id")?;
            let outcome: String = col(row, op, "outcome")?;
            let service: String = col(row, op, "service")?;
            let key = (
                message_id.as_str(),
                get_idx(row, op, "recipient_idx")?,
                outcome.as_str(),
                service.as_str(),
            );
            if let Some(&i) = at.get(&key) {
                new_row[i] = true;
            }
        }
    }
    Ok(new_row)
}

/// Refuses a credit that is not positive or whose reference is empty or over 200 bytes.
pub(crate) fn check_credit(
    op: &str,
    amount_micros: i64,
    reference: &str,
) -> Result<(), StoreError> {
    if amount_micros <= 0 {
        return Err(StoreError::invalid(
            op,
            format!("amount {amount_micros} micro-units is not positive"),
        ));
    }
    if reference.trim().is_empty() || reference.len() > 200 {
        return Err(StoreError::invalid(
            op,
            format!("reference {reference:?} must be 1 to 200 characters"),
        ));
    }
    Ok(())
}

/// `NotFound` unless the owner is there (the tenant; the account of the tenant), read
/// inside the caller's transaction.
pub(crate) async fn must_exist(
    conn: &mut AnyConnection,
    whose: Whose<'_>,
    op: &str,
) -> Result<(), StoreError> {
    let (sql, what, id) = match whose {
        Whose::Tenant(t) => ("SELECT id FROM tenants WHERE id = $1", "tenant", t),
        Whose::Account { account, .. } => (
            "SELECT id FROM accounts WHERE tenant_id = $1 AND id = $2",
            "account",
            account,
        ),
    };
    let row = whose
        .bind(sqlx::query(sql))
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::db(format!("{op}: {whose}")))?;
    match row {
        Some(_) => Ok(()),
        None => Err(StoreError::not_found(op, what, id)),
    }
}

/// Writes a credit inside the caller's transaction, once per (owner, reference);
/// whether it was written now. Call [`check_credit`] first.
pub(crate) async fn insert_credit(
    conn: &mut AnyConnection,
    whose: Whose<'_>,
    reference: &str,
    amount_micros: i64,
    currency: &str,
    now_ms: i64,
    op: &str,
) -> Result<bool, StoreError> {
    let (columns, key) = match whose {
        Whose::Tenant(_) => ("tenant_id", "tenant_id"),
        Whose::Account { .. } => ("tenant_id, account_id", "tenant_id, account_id"),
    };
    let n = whose.params();
    let sql = format!(
        "INSERT INTO {table} ({columns}, reference, amount_micros, currency, created_at_ms) \
         VALUES ({owner}, ${}, ${}, ${}, ${}) ON CONFLICT ({key}, reference) DO NOTHING",
        n + 1,
        n + 2,
        n + 3,
        n + 4,
        table = whose.book().credits(),
        owner = (1..=n)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let done = whose
        .bind(sqlx::query(&sql))
        .bind(reference)
        .bind(amount_micros)
        .bind(currency)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::db(format!(
            "{op}: {whose} reference {reference:?}"
        )))?;
    Ok(done.rows_affected() == 1)
}

async fn total(
    conn: &mut AnyConnection,
    table: &str,
    whose: Whose<'_>,
    op: &str,
) -> Result<i64, StoreError> {
    let sql = format!(
        "SELECT CAST(COALESCE(SUM(amount_micros), 0) AS BIGINT) AS total FROM {table} WHERE {}",
        whose.filter()
    );
    let row = whose
        .bind(sqlx::query(&sql))
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::db(format!("{op}: {whose}")))?;
    col(&row, op, "total")
}

/// Credits and charges of an owner, exact; no reservations (the platform's books add
/// their own).
pub(crate) async fn credits_and_charges(
    conn: &mut AnyConnection,
    whose: Whose<'_>,
    op: &str,
) -> Result<Balance, StoreError> {
    let book = whose.book();
    Ok(Balance {
        credits_micros: total(conn, book.credits(), whose, op).await?,
        charges_micros: total(conn, book.ledger(), whose, op).await?,
        reserved_micros: 0,
    })
}

/// An owner's ledger of one period summed per (service, unit price, settlement or not)
/// for an invoice, in the order services were first charged, and the currency of its
/// rows.
pub(crate) async fn charge_sums(
    conn: &mut AnyConnection,
    whose: Whose<'_>,
    period: &str,
    op: &str,
) -> Result<(Vec<ChargeSum>, Option<String>), StoreError> {
    // SUM of a BIGINT is NUMERIC on PostgreSQL; the casts keep both at BIGINT.
    let sql = format!(
        "SELECT service, unit_price, currency, \
         CASE WHEN outcome = 'settlement' THEN 1 ELSE 0 END AS settlement, \
         CAST(SUM(quantity) AS BIGINT) AS quantity, \
         CAST(SUM(amount_micros) AS BIGINT) AS amount_micros, MIN(seq) AS first_seq \
         FROM {ledger} WHERE {filter} AND period = ${p} \
         GROUP BY service, unit_price, currency, CASE WHEN outcome = 'settlement' THEN 1 ELSE 0 END \
         ORDER BY service, first_seq",
        ledger = whose.book().ledger(),
        filter = whose.filter(),
        p = whose.params() + 1,
    );
    let rows = whose
        .bind(sqlx::query(&sql))
        .bind(period)
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::db(format!("{op}: {whose} period {period}")))?;
    let mut currency = None;
    let mut sums = Vec::with_capacity(rows.len());
    for r in &rows {
        let settlement: i32 = col::<i32>(r, op, "settlement")
            .or_else(|_| col::<i64>(r, op, "settlement").map(|v| i32::from(v != 0)))?;
        currency.get_or_insert(col::<String>(r, op, "currency")?);
        sums.push(ChargeSum {
            service: col(r, op, "service")?,
            unit_price: col(r, op, "unit_price")?,
            quantity: quantity(r, op)?,
            amount_micros: col(r, op, "amount_micros")?,
            settlement: settlement != 0,
        });
    }
    Ok((sums, currency))
}

/// The `quantity` column of a row: never negative in a ledger.
pub(crate) fn quantity(row: &AnyRow, op: &str) -> Result<u64, StoreError> {
    let q: i64 = col(row, op, "quantity")?;
    u64::try_from(q).map_err(|_| corrupt(&format!("{op}: quantity"), &q.to_string()))
}

/// A page of an owner's ledger rows: `columns` of the rows whose usage time is in
/// `[from_ms, to_ms)` and whose seq is above `after_seq`, by seq, at most `limit`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn list_charges(
    pools: &Pools,
    whose: Whose<'_>,
    columns: &str,
    from_ms: i64,
    to_ms: i64,
    after_seq: i64,
    limit: u32,
    op: &str,
) -> Result<Vec<AnyRow>, StoreError> {
    let n = whose.params();
    let sql = format!(
        "SELECT {columns} FROM {ledger} WHERE {filter} AND at_ms >= ${} AND at_ms < ${} \
         AND seq > ${} ORDER BY seq LIMIT ${}",
        n + 1,
        n + 2,
        n + 3,
        n + 4,
        ledger = whose.book().ledger(),
        filter = whose.filter(),
    );
    whose
        .bind(sqlx::query(&sql))
        .bind(from_ms)
        .bind(to_ms)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&pools.read)
        .await
        .map_err(StoreError::db(format!("{op}: {whose}")))
}

/// Retry delay after `attempts` failed ratings, for both books' rating queues: 2 s
/// doubling, at most 10 minutes.
pub(crate) fn rating_backoff_ms(attempts: u32) -> i64 {
    (2_000i64 << attempts.min(12)).min(600_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(rating_backoff_ms(0), 2_000);
        assert_eq!(rating_backoff_ms(1), 4_000);
        assert_eq!(rating_backoff_ms(40), 600_000);
    }
}

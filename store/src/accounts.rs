//! A tenant's own customers ("accounts") and the tenant → account books (issue 17):
//! accounts and their logins, the tenant's account tariff, the account ledger, account
//! credits, and the per-tenant cursor of account rating.
//!
//! Invariants:
//! - These are the tenant's books, apart from the platform's: nothing here reads or
//!   writes `ledger`, `credits`, `reservations` or `period_counters` (the platform →
//!   tenant books in `ledger/`), and nothing there touches these tables.
//! - Account rating reads a tenant's usage events in seq order after its cursor
//!   ([`claim_account_batch`]); the charges and the cursor's advance commit together,
//!   and the cursor moves only from the value the batch was read at (compare and set),
//!   so a replayed, retried or concurrently rated batch writes nothing the second time.
//!   Account ledger rows are also insert-or-ignore on (tenant, message, recipient,
//!   outcome, service). `account_period_counters` grow in the same transaction by the
//!   rows inserted (not those ignored), so they equal the ledger's sums per (account,
//!   period, service); the rating reads the period to date from them.
//! - On PostgreSQL a seq is handed out before its transaction commits, so a lower seq
//!   can appear after a higher one: a batch stops before the first event inserted less
//!   than [`SETTLE_MS`] ago, and so never moves the cursor past a seq still to appear.
//! - Every read and write names the tenant: an account id means an account of that
//!   tenant only.

use std::collections::HashMap;

use sqlx::any::AnyRow;

use super::StoreError;
use super::books::{self, Book, ChargeRow, Whose};
use super::codec::{
    col, corrupt, get_idx, get_u32, positional, rows_per_batch_statement, value_rows,
};
use super::connect::{Backend, Pools};
use super::ledger::{Balance, BalanceMode, ChargeSum};

/// How old (by insertion) the newest usage event of a batch must be on PostgreSQL.
pub const SETTLE_MS: i64 = 5_000;
/// How long a tenant's usage gathers before it is rated, unless a full batch waits:
/// once settled, its oldest waiting event must be this old. Each batch costs a claim,
/// a rater call per account and a write whatever its size, so rating whatever arrived
/// during the last batch (~110 events under load) paid them ~4 times as often as full
/// batches; this is at most how much later a charge appears in an account's usage.
pub const GATHER_MS: i64 = 250;
/// Most logins of one account.
pub const MAX_LOGINS: usize = 1_000;
/// Most accounts of one tenant: dispatch and the rating task read a tenant's accounts
/// and logins whole, so what one tenant stores is bounded.
pub const MAX_ACCOUNTS: i64 = 10_000;
/// Most logins of one tenant, over all its accounts.
pub const MAX_TENANT_LOGINS: i64 = 100_000;

/// A tenant's customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub tenant_id: String,
    pub id: String,
    pub name: String,
    /// Whether the tenant holds this customer to its credit (its choice, its books).
    pub mode: BalanceMode,
    /// Lower-case addresses and domains, sorted.
    pub logins: Vec<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// An account to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub id: String,
    pub name: String,
    pub mode: BalanceMode,
    pub logins: Vec<String>,
}

/// Changes to an account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountUpdate {
    pub name: Option<String>,
    pub mode: Option<BalanceMode>,
    /// Replaces all logins.
    pub logins: Option<Vec<String>>,
}

/// A usage event as account rating reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountUsage {
    pub seq: i64,
    pub message_id: String,
    pub recipient_idx: i32,
    pub recipient: String,
    /// The envelope sender (`None` for usage recorded before migration 0012).
    pub sender: Option<String>,
    pub outcome: String,
    pub direction: String,
    pub size: u64,
    pub relay: Option<String>,
    pub at_ms: i64,
    /// The account the message names (its tag `account:ID`), if any: billed there
    /// before logins are matched. `None` for usage from followed logs.
    pub account: Option<String>,
}

/// A tenant's usage events after its account-rating cursor, claimed by one rater.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountBatch {
    pub tenant_id: String,
    /// The cursor the batch was read at: [`super::Store::write_account_charges`] moves
    /// it only from here.
    pub after_seq: i64,
    /// Failed tries of this cursor so far.
    pub attempts: u32,
    pub events: Vec<AccountUsage>,
}

/// One charge of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountCharge {
    pub account_id: String,
    pub message_id: String,
    pub recipient_idx: i32,
    pub recipient: String,
    pub outcome: String,
    pub service: String,
    pub quantity: u64,
    pub unit_price: String,
    pub amount_micros: i64,
    pub currency: String,
    /// The tariff declares the service a credit; only then may the amount be negative.
    pub credit: bool,
    pub at_ms: i64,
}

/// An account ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountLedgerEntry {
    pub seq: i64,
    pub account_id: String,
    pub message_id: String,
    pub recipient_idx: i32,
    pub recipient: String,
    pub outcome: String,
    pub service: String,
    pub quantity: u64,
    pub unit_price: String,
    pub amount_micros: i64,
    pub currency: String,
    pub period: String,
    pub at_ms: i64,
}

/// Where a tenant's account rating stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRatingStatus {
    pub after_seq: i64,
    pub attempts: u32,
    pub next_try_at_ms: i64,
    /// Why the last try failed (refused charges, a trap, no rater); `None` after a success.
    pub last_error: Option<String>,
    /// Usage events of the tenant after the cursor.
    pub waiting: i64,
}

fn check_id(op: &str, id: &str) -> Result<(), StoreError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            op,
            format!("account id {id:?}: 1 to 64 of A-Z a-z 0-9 - _ ."),
        ))
    }
}

fn check_name(op: &str, name: &str) -> Result<(), StoreError> {
    if name.len() > 200 || name.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            op,
            format!(
                "account name of {} bytes: at most 200, no control characters",
                name.len()
            ),
        ));
    }
    Ok(())
}

/// Logins trimmed, lower-cased, checked by the `sluice bill --logins` rule, deduplicated
/// and sorted.
fn normal_logins(op: &str, logins: &[String]) -> Result<Vec<String>, StoreError> {
    if logins.len() > MAX_LOGINS {
        return Err(StoreError::invalid(
            op,
            format!("{} logins: at most {MAX_LOGINS}", logins.len()),
        ));
    }
    let mut out = Vec::with_capacity(logins.len());
    for l in logins {
        let value = l.trim().to_ascii_lowercase();
        if let Some(problem) = sluice_maillog::login::login_problem(&value) {
            return Err(StoreError::invalid(op, format!("login {l:?} {problem}")));
        }
        if value.len() > 320 {
            return Err(StoreError::invalid(op, format!("login {l:?} is too long")));
        }
        out.push(value);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

async fn count(
    conn: &mut sqlx::AnyConnection,
    op: &str,
    sql: &str,
    tenant_id: &str,
) -> Result<i64, StoreError> {
    let row = sqlx::query(sql)
        .bind(tenant_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::db(format!("{op}: tenant {tenant_id:?}")))?;
    col(&row, op, "n")
}

async fn insert_logins(
    conn: &mut sqlx::AnyConnection,
    op: &str,
    tenant_id: &str,
    account_id: &str,
    logins: &[String],
) -> Result<(), StoreError> {
    let held = count(
        conn,
        op,
        "SELECT COUNT(*) AS n FROM account_logins WHERE tenant_id = $1",
        tenant_id,
    )
    .await?;
    if held.saturating_add(logins.len() as i64) > MAX_TENANT_LOGINS {
        return Err(StoreError::invalid(
            op,
            format!(
                "{} more logins: a tenant has at most {MAX_TENANT_LOGINS} ({held} now)",
                logins.len()
            ),
        ));
    }
    for login in logins {
        let done = sqlx::query(
            "INSERT INTO account_logins (tenant_id, login, account_id) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, login) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(login)
        .bind(account_id)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::db(format!("{op}: login {login:?}")))?;
        if done.rows_affected() == 0 {
            let owner: String = sqlx::query(
                "SELECT account_id FROM account_logins WHERE tenant_id = $1 AND login = $2",
            )
            .bind(tenant_id)
            .bind(login)
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::db(format!("{op}: login {login:?}")))
            .and_then(|r| col(&r, op, "account_id"))?;
            return Err(StoreError::Conflict(format!(
                "{op}: login {login:?} of account {owner:?}"
            )));
        }
    }
    Ok(())
}

pub(crate) async fn create_account(
    pools: &Pools,
    tenant_id: &str,
    new: &NewAccount,
    now_ms: i64,
) -> Result<Account, StoreError> {
    let op = "create_account";
    check_id(op, &new.id)?;
    check_name(op, &new.name)?;
    let logins = normal_logins(op, &new.logins)?;
    let context = || format!("{op}: tenant {tenant_id:?} account {:?}", new.id);
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    let exists = sqlx::query("SELECT id FROM tenants WHERE id = $1")
        .bind(tenant_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db(context()))?;
    if exists.is_none() {
        return Err(StoreError::not_found(op, "tenant", tenant_id));
    }
    let n = count(
        &mut tx,
        op,
        "SELECT COUNT(*) AS n FROM accounts WHERE tenant_id = $1",
        tenant_id,
    )
    .await?;
    if n >= MAX_ACCOUNTS {
        return Err(StoreError::invalid(
            op,
            format!("a tenant has at most {MAX_ACCOUNTS} accounts"),
        ));
    }
    let done = sqlx::query(
        "INSERT INTO accounts (tenant_id, id, name, mode, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (tenant_id, id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(&new.id)
    .bind(&new.name)
    .bind(new.mode.as_str())
    .bind(now_ms)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?;
    if done.rows_affected() == 0 {
        return Err(StoreError::conflict(op, "account", &new.id));
    }
    insert_logins(&mut tx, op, tenant_id, &new.id, &logins).await?;
    // The tenant's first account starts its account rating at its usage so far:
    // customers are billed from when they exist.
    sqlx::query(
        "INSERT INTO account_rating (tenant_id, after_seq) \
         SELECT $1, COALESCE(MAX(seq), 0) FROM usage_events WHERE tenant_id = $1 \
         ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant_id)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?;
    tx.commit().await.map_err(StoreError::db(context()))?;
    Ok(Account {
        tenant_id: tenant_id.to_owned(),
        id: new.id.clone(),
        name: new.name.clone(),
        mode: new.mode,
        logins,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
    })
}

fn account_from_row(row: &AnyRow, op: &str) -> Result<Account, StoreError> {
    let mode: String = col(row, op, "mode")?;
    Ok(Account {
        tenant_id: col(row, op, "tenant_id")?,
        id: col(row, op, "id")?,
        name: col(row, op, "name")?,
        mode: BalanceMode::parse(&mode)
            .ok_or_else(|| corrupt(&format!("{op}: column mode"), &mode))?,
        logins: Vec::new(),
        created_at_ms: col(row, op, "created_at_ms")?,
        updated_at_ms: col(row, op, "updated_at_ms")?,
    })
}

pub(crate) async fn list_accounts(
    pools: &Pools,
    tenant_id: &str,
) -> Result<Vec<Account>, StoreError> {
    let op = "list_accounts";
    let context = || format!("{op}: tenant {tenant_id:?}");
    let rows = sqlx::query(
        "SELECT tenant_id, id, name, mode, created_at_ms, updated_at_ms FROM accounts \
         WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(tenant_id)
    .fetch_all(&pools.read)
    .await
    .map_err(StoreError::db(context()))?;
    let mut accounts = rows
        .iter()
        .map(|r| account_from_row(r, op))
        .collect::<Result<Vec<_>, _>>()?;
    // By position, not by a search on the order: the database's collation orders ids.
    let at: HashMap<String, usize> = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| (a.id.clone(), i))
        .collect();
    for (login, account) in account_logins(pools, tenant_id).await? {
        if let Some(&i) = at.get(&account) {
            accounts[i].logins.push(login);
        }
    }
    Ok(accounts)
}

pub(crate) async fn get_account(
    pools: &Pools,
    tenant_id: &str,
    id: &str,
) -> Result<Option<Account>, StoreError> {
    let op = "get_account";
    let context = || format!("{op}: tenant {tenant_id:?} account {id:?}");
    let row = sqlx::query(
        "SELECT tenant_id, id, name, mode, created_at_ms, updated_at_ms FROM accounts \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&pools.read)
    .await
    .map_err(StoreError::db(context()))?;
    let Some(row) = row else { return Ok(None) };
    let mut account = account_from_row(&row, op)?;
    let rows = sqlx::query(
        "SELECT login FROM account_logins WHERE tenant_id = $1 AND account_id = $2 ORDER BY login",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_all(&pools.read)
    .await
    .map_err(StoreError::db(context()))?;
    account.logins = rows
        .iter()
        .map(|r| col(r, op, "login"))
        .collect::<Result<_, _>>()?;
    Ok(Some(account))
}

pub(crate) async fn update_account(
    pools: &Pools,
    tenant_id: &str,
    id: &str,
    update: &AccountUpdate,
    now_ms: i64,
) -> Result<(), StoreError> {
    let op = "update_account";
    if let Some(name) = &update.name {
        check_name(op, name)?;
    }
    let logins = update
        .logins
        .as_ref()
        .map(|l| normal_logins(op, l))
        .transpose()?;
    let context = || format!("{op}: tenant {tenant_id:?} account {id:?}");
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    let done = sqlx::query(
        "UPDATE accounts SET name = COALESCE($3, name), mode = COALESCE($4, mode), \
         updated_at_ms = $5 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(update.name.clone())
    .bind(update.mode.map(|m| m.as_str().to_owned()))
    .bind(now_ms)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?;
    if done.rows_affected() == 0 {
        return Err(StoreError::not_found(op, "account", id));
    }
    if let Some(logins) = logins {
        sqlx::query("DELETE FROM account_logins WHERE tenant_id = $1 AND account_id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(context()))?;
        insert_logins(&mut tx, op, tenant_id, id, &logins).await?;
    }
    tx.commit().await.map_err(StoreError::db(context()))
}

/// Deletes an account and its logins and revokes its keys; its ledger rows and credits
/// stay (books are not rewritten), readable again only if an account of the same id is
/// created.
pub(crate) async fn delete_account(
    pools: &Pools,
    tenant_id: &str,
    id: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let op = "delete_account";
    let context = || format!("{op}: tenant {tenant_id:?} account {id:?}");
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    let done = sqlx::query("DELETE FROM accounts WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(context()))?;
    if done.rows_affected() == 0 {
        return Err(StoreError::not_found(op, "account", id));
    }
    sqlx::query("DELETE FROM account_logins WHERE tenant_id = $1 AND account_id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(context()))?;
    super::api_keys::revoke_all_of_account(&mut tx, tenant_id, id, now_ms, &context()).await?;
    tx.commit().await.map_err(StoreError::db(context()))
}

/// Every (login, account id) of a tenant.
pub(crate) async fn account_logins(
    pools: &Pools,
    tenant_id: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let op = "account_logins";
    let rows = sqlx::query(
        "SELECT login, account_id FROM account_logins WHERE tenant_id = $1 ORDER BY login",
    )
    .bind(tenant_id)
    .fetch_all(&pools.read)
    .await
    .map_err(StoreError::db(format!("{op}: tenant {tenant_id:?}")))?;
    rows.iter()
        .map(|r| Ok((col(r, op, "login")?, col(r, op, "account_id")?)))
        .collect()
}

pub(crate) async fn set_account_tariff(
    pools: &Pools,
    tenant_id: &str,
    tariff: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let op = "set_account_tariff";
    let context = || format!("{op}: tenant {tenant_id:?}");
    let q = match tariff {
        Some(t) => sqlx::query(
            "INSERT INTO account_tariffs (tenant_id, tariff, updated_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET tariff = excluded.tariff, \
             updated_at_ms = excluded.updated_at_ms",
        )
        .bind(tenant_id)
        .bind(t.to_owned())
        .bind(now_ms),
        None => sqlx::query("DELETE FROM account_tariffs WHERE tenant_id = $1").bind(tenant_id),
    };
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    q.execute(&mut *tx)
        .await
        .map_err(StoreError::db(context()))?;
    tx.commit().await.map_err(StoreError::db(context()))
}

pub(crate) async fn get_account_tariff(
    pools: &Pools,
    tenant_id: &str,
) -> Result<Option<String>, StoreError> {
    let op = "get_account_tariff";
    let row = sqlx::query("SELECT tariff FROM account_tariffs WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(&pools.read)
        .await
        .map_err(StoreError::db(format!("{op}: tenant {tenant_id:?}")))?;
    row.map(|r| col(&r, op, "tariff")).transpose()
}

fn account_usage_from_row(row: &AnyRow, op: &str) -> Result<AccountUsage, StoreError> {
    let size: i64 = col(row, op, "size")?;
    Ok(AccountUsage {
        seq: col(row, op, "seq")?,
        message_id: col(row, op, "message_id")?,
        recipient_idx: get_idx(row, op, "recipient_idx")?,
        recipient: col(row, op, "recipient")?,
        sender: col(row, op, "sender")?,
        outcome: col(row, op, "outcome")?,
        direction: col(row, op, "direction")?,
        size: u64::try_from(size)
            .map_err(|_| corrupt(&format!("{op}: size"), &size.to_string()))?,
        relay: col(row, op, "relay")?,
        at_ms: col(row, op, "at_ms")?,
        account: match col::<Option<String>>(row, op, "message_tags")? {
            Some(text) => super::codec::list_from_text(op, &text)?
                .iter()
                .find_map(|t| t.strip_prefix(super::types::ACCOUNT_TAG).map(str::to_owned)),
            None => None,
        },
    })
}

pub(crate) async fn claim_account_batch(
    pools: &Pools,
    owner: &str,
    now_ms: i64,
    claim_ms: i64,
    limit: u32,
) -> Result<Option<AccountBatch>, StoreError> {
    let op = "claim_account_batch";
    if owner.is_empty() || claim_ms <= 0 || limit == 0 {
        return Err(StoreError::invalid(
            op,
            format!("owner {owner:?}, claim {claim_ms} ms, limit {limit}: need all three"),
        ));
    }
    let settled = match pools.backend {
        Backend::Postgres => now_ms - SETTLE_MS,
        Backend::Sqlite => now_ms,
    };
    let context = || format!("{op} for owner {owner:?}");
    if pools.backend == Backend::Postgres {
        return claim_in_one_statement(pools, owner, now_ms, settled, claim_ms, limit).await;
    }
    // The batch is read on a reader and claimed after by one compare and set on the
    // cursor's row: the write is one short statement, not a transaction holding the
    // writer while it reads the batch. Another host that claimed or wrote meanwhile
    // makes the compare and set miss; the next tenant is tried then.
    let mut skip: Vec<String> = Vec::new();
    for _ in 0..CLAIM_TRIES {
        let Some((tenant_id, after_seq, attempts)) =
            due_cursor(pools, owner, now_ms, settled, limit, &skip).await?
        else {
            return Ok(None);
        };
        // The tenant and cursor are known here: each store plans this for them (SQLite by
        // the index on (tenant_id, seq), PostgreSQL by it or the primary key, by its
        // statistics). The message's tags by its key, per event read: as a join with the
        // row bounds of `after_cursor`, PostgreSQL hashed the whole messages table and
        // sorted the tenant's whole backlog for each batch (EXPLAIN ANALYZE during the
        // benchmark; ~0.6 s per claim at 20,000 messages).
        let rows = sqlx::query(
            "SELECT u.seq, u.message_id, u.recipient_idx, u.recipient, u.sender, u.outcome, \
             u.direction, u.size, u.relay, u.at_ms, u.inserted_at_ms, \
             (SELECT m.tags FROM messages m WHERE m.id = u.message_id) AS message_tags \
             FROM usage_events u WHERE u.tenant_id = $1 AND u.seq > $2 ORDER BY u.seq LIMIT $3",
        )
        .bind(&tenant_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&pools.read)
        .await
        .map_err(StoreError::db(context()))?;
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            let inserted: Option<i64> = col(r, op, "inserted_at_ms")?;
            if inserted.unwrap_or(0) > settled {
                break;
            }
            events.push(account_usage_from_row(r, op)?);
        }
        let claimed = !events.is_empty()
            && sqlx::query(
                "UPDATE account_rating SET claim_owner = $2, claim_until_ms = $3 \
                 WHERE tenant_id = $1 AND after_seq = $4 AND next_try_at_ms <= $5 \
                   AND (claim_until_ms IS NULL OR claim_until_ms <= $5 OR claim_owner = $2)",
            )
            .bind(&tenant_id)
            .bind(owner)
            .bind(now_ms.saturating_add(claim_ms))
            .bind(after_seq)
            .bind(now_ms)
            .execute(&pools.write)
            .await
            .map_err(StoreError::db(context()))?
            .rows_affected()
                == 1;
        if claimed {
            return Ok(Some(AccountBatch {
                tenant_id,
                after_seq,
                attempts,
                events,
            }));
        }
        skip.push(tenant_id);
    }
    Ok(None)
}

/// [`claim_account_batch`] on PostgreSQL: the due cursor chosen, claimed and its batch
/// read by one statement, on one connection of the store's pool. As three (the cursor
/// on a reader, the batch, the compare and set) each waited for a connection of the
/// pool the API and dispatch share, and the claim took ~775 µs per event under load
/// (issue 17). The cursor's row is locked (`SKIP LOCKED`: another host claiming at the
/// same moment passes it) and claimed in the statement's UPDATE; the batch is the
/// tenant's events after it, of which the settled prefix is kept. Only a cursor whose
/// first waiting event is settled is due here, so the prefix is never empty; if it is
/// anyway (a clock step), the claim is handed back at once.
async fn claim_in_one_statement(
    pools: &Pools,
    owner: &str,
    now_ms: i64,
    settled: i64,
    claim_ms: i64,
    limit: u32,
) -> Result<Option<AccountBatch>, StoreError> {
    let op = "claim_account_batch";
    let context = || format!("{op} for owner {owner:?}");
    let after = after_cursor(Backend::Postgres, "a.tenant_id", "a.after_seq");
    let read = after_cursor(Backend::Postgres, "c.tenant_id", "c.after_seq");
    let sql = format!(
        "WITH cur AS ( \
             SELECT a.tenant_id FROM account_rating a \
             WHERE a.next_try_at_ms <= $1 \
               AND (a.claim_until_ms IS NULL OR a.claim_until_ms <= $1 OR a.claim_owner = $2) \
               AND (SELECT COALESCE(u.inserted_at_ms, 0) FROM usage_events u \
                    WHERE {after} LIMIT 1) <= $4 \
               AND ((SELECT COALESCE(u.inserted_at_ms, 0) FROM usage_events u \
                     WHERE {after} LIMIT 1) <= $3 \
                 OR (SELECT COALESCE(u.inserted_at_ms, 0) FROM usage_events u \
                     WHERE {after} LIMIT 1 OFFSET {offset}) <= $4) \
             ORDER BY COALESCE(a.claim_until_ms, 0), a.tenant_id LIMIT 1 \
             FOR UPDATE OF a SKIP LOCKED), \
         claimed AS ( \
             UPDATE account_rating a SET claim_owner = $2, claim_until_ms = $5 \
             FROM cur WHERE a.tenant_id = cur.tenant_id \
             RETURNING a.tenant_id, a.after_seq, a.attempts) \
         SELECT c.tenant_id AS claimed_tenant, c.after_seq AS claimed_after, \
             c.attempts AS claimed_attempts, \
             u.seq, u.message_id, u.recipient_idx, u.recipient, u.sender, u.outcome, \
             u.direction, u.size, u.relay, u.at_ms, u.inserted_at_ms, \
             (SELECT m.tags FROM messages m WHERE m.id = u.message_id) AS message_tags \
         FROM claimed c LEFT JOIN LATERAL ( \
             SELECT u.* FROM usage_events u WHERE {read} LIMIT $6) u ON TRUE \
         ORDER BY u.seq",
        offset = limit - 1
    );
    let rows = sqlx::query(&sql)
        .bind(now_ms)
        .bind(owner)
        .bind(settled.saturating_sub(GATHER_MS))
        .bind(settled)
        .bind(now_ms.saturating_add(claim_ms))
        .bind(i64::from(limit))
        .fetch_all(&pools.write)
        .await
        .map_err(StoreError::db(context()))?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let tenant_id: String = col(first, op, "claimed_tenant")?;
    let after_seq: i64 = col(first, op, "claimed_after")?;
    let attempts = get_u32(first, op, "claimed_attempts")?;
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        let seq: Option<i64> = col(r, op, "seq")?;
        let inserted: Option<i64> = col(r, op, "inserted_at_ms")?;
        if seq.is_none() || inserted.unwrap_or(0) > settled {
            break;
        }
        events.push(account_usage_from_row(r, op)?);
    }
    if events.is_empty() {
        sqlx::query(
            "UPDATE account_rating SET claim_owner = NULL, claim_until_ms = NULL \
             WHERE tenant_id = $1 AND claim_owner = $2 AND after_seq = $3",
        )
        .bind(&tenant_id)
        .bind(owner)
        .bind(after_seq)
        .execute(&pools.write)
        .await
        .map_err(StoreError::db(context()))?;
        return Ok(None);
    }
    Ok(Some(AccountBatch {
        tenant_id,
        after_seq,
        attempts,
        events,
    }))
}

/// A tenant's usage (`u`) after its cursor in seq order: a WHERE condition and its ORDER
/// BY that walk the index on (tenant_id, seq) (migration 0023) on both stores. Given
/// `tenant_id = t AND seq > c ORDER BY seq LIMIT n` with `t` and `c` from an outer row,
/// PostgreSQL 15 walks the primary key from `c` and filters out other tenants' rows
/// (EXPLAIN ANALYZE: 60–740 ms for tenants with nothing waiting behind 200,000 rows of
/// another); bounds on the row (tenant_id, seq) leave it only the index (0.02 ms).
/// SQLite walks the index with the plain form and would not with the row form.
fn after_cursor(backend: Backend, tenant: &str, seq: &str) -> String {
    match backend {
        Backend::Postgres => format!(
            "(u.tenant_id, u.seq) > ({tenant}, {seq}) \
             AND (u.tenant_id, u.seq) <= ({tenant}, 9223372036854775807) \
             ORDER BY u.tenant_id, u.seq"
        ),
        Backend::Sqlite => format!("u.tenant_id = {tenant} AND u.seq > {seq} ORDER BY u.seq"),
    }
}

/// Tenants tried by one [`claim_account_batch`] whose cursor another host took first.
const CLAIM_TRIES: usize = 3;

/// The cursor to rate next: due (no backoff, not claimed by another host), and with a
/// batch gathered — its oldest waiting event settled [`GATHER_MS`] ago, or a full batch
/// (`limit` events) settled. The least recently claimed goes first; `skip` are passed.
async fn due_cursor(
    pools: &Pools,
    owner: &str,
    now_ms: i64,
    settled: i64,
    limit: u32,
    skip: &[String],
) -> Result<Option<(String, i64, u32)>, StoreError> {
    let op = "claim_account_batch";
    let skipped = (0..skip.len())
        .map(|i| format!(" AND a.tenant_id <> ${}", i + 5))
        .collect::<String>();
    // Each subquery walks the tenant's usage after its cursor by the index on
    // (tenant_id, seq) (migration 0023): the first waiting event, and the `limit`-th.
    let after = after_cursor(pools.backend, "a.tenant_id", "a.after_seq");
    let sql = format!(
        "SELECT a.tenant_id, a.after_seq, a.attempts FROM account_rating a \
         WHERE a.next_try_at_ms <= $1 \
           AND (a.claim_until_ms IS NULL OR a.claim_until_ms <= $1 OR a.claim_owner = $2) \
           AND ((SELECT COALESCE(u.inserted_at_ms, 0) FROM usage_events u \
                 WHERE {after} LIMIT 1) <= $3 \
             OR (SELECT COALESCE(u.inserted_at_ms, 0) FROM usage_events u \
                 WHERE {after} LIMIT 1 OFFSET {offset}) <= $4){skipped} \
         ORDER BY COALESCE(a.claim_until_ms, 0), a.tenant_id LIMIT 1",
        offset = limit - 1
    );
    let mut q = sqlx::query(&sql)
        .bind(now_ms)
        .bind(owner)
        .bind(settled.saturating_sub(GATHER_MS))
        .bind(settled);
    for t in skip {
        q = q.bind(t.as_str());
    }
    let Some(row) = q
        .fetch_optional(&pools.read)
        .await
        .map_err(StoreError::db(format!("{op} for owner {owner:?}")))?
    else {
        return Ok(None);
    };
    Ok(Some((
        col(&row, op, "tenant_id")?,
        col(&row, op, "after_seq")?,
        get_u32(&row, op, "attempts")?,
    )))
}

pub(crate) async fn write_account_charges(
    pools: &Pools,
    tenant_id: &str,
    after_seq: i64,
    through_seq: i64,
    charges: &[AccountCharge],
    now_ms: i64,
) -> Result<usize, StoreError> {
    let op = "write_account_charges";
    if through_seq <= after_seq {
        return Err(StoreError::invalid(
            op,
            format!("cursor from {after_seq} to {through_seq} does not move forward"),
        ));
    }
    let rows: Vec<ChargeRow<'_>> = charges
        .iter()
        .map(|c| ChargeRow {
            tenant_id,
            whose: Some(&c.account_id),
            message_id: &c.message_id,
            recipient_idx: c.recipient_idx,
            recipient: &c.recipient,
            outcome: &c.outcome,
            service: &c.service,
            quantity: c.quantity,
            unit_price: &c.unit_price,
            amount_micros: c.amount_micros,
            currency: &c.currency,
            credit: c.credit,
            period: sluice_stage::period::period_of(c.at_ms),
            at_ms: c.at_ms,
        })
        .collect();
    books::check_charges(op, Book::Accounts, &rows)?;
    let context = || format!("{op}: tenant {tenant_id:?} from seq {after_seq} to {through_seq}");
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    let moved = sqlx::query(
        "UPDATE account_rating SET after_seq = $3, attempts = 0, next_try_at_ms = 0, \
         last_error = NULL, claim_owner = NULL, claim_until_ms = NULL \
         WHERE tenant_id = $1 AND after_seq = $2",
    )
    .bind(tenant_id)
    .bind(after_seq)
    .bind(through_seq)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?;
    if moved.rows_affected() == 0 {
        // Another rater wrote this batch already (or this is a replay): nothing again.
        return Ok(0);
    }
    let new_rows = books::insert_charges(&mut tx, Book::Accounts, &rows, now_ms, op).await?;
    // The period counters grow by the rows inserted, in the same transaction: they always
    // equal the ledger's sums (a replayed row was not inserted and is not counted).
    let mut added: std::collections::BTreeMap<(&str, &str, &str), i64> = Default::default();
    for (r, _) in rows.iter().zip(&new_rows).filter(|(_, new)| **new) {
        let q = added
            .entry((r.whose.unwrap_or(""), r.period.as_str(), r.service))
            .or_default();
        *q = q.saturating_add(r.quantity as i64);
    }
    let added: Vec<_> = added.into_iter().collect();
    for chunk in added.chunks(rows_per_batch_statement(5)) {
        let sql = format!(
            "INSERT INTO account_period_counters (tenant_id, account_id, period, service, quantity) \
             VALUES {} ON CONFLICT (tenant_id, account_id, period, service) \
             DO UPDATE SET quantity = account_period_counters.quantity + excluded.quantity",
            value_rows(chunk.len(), 5)
        );
        let sql = positional(&tx, sql);
        let mut q = sqlx::query(&sql);
        for ((account, period, service), quantity) in chunk {
            q = q
                .bind(tenant_id)
                .bind(*account)
                .bind(*period)
                .bind(*service)
                .bind(*quantity);
        }
        q.execute(&mut *tx)
            .await
            .map_err(StoreError::db(context()))?;
    }
    let inserted = new_rows.into_iter().filter(|new| *new).count();
    tx.commit().await.map_err(StoreError::db(context()))?;
    Ok(inserted)
}

pub(crate) async fn defer_account_rating(
    pools: &Pools,
    tenant_id: &str,
    error: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let op = "defer_account_rating";
    let context = || format!("{op}: tenant {tenant_id:?}");
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    let row = sqlx::query("SELECT attempts FROM account_rating WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db(context()))?;
    let Some(row) = row else {
        return Err(StoreError::not_found(
            op,
            "account rating of tenant",
            tenant_id,
        ));
    };
    let attempts = get_u32(&row, op, "attempts")?;
    let next = now_ms.saturating_add(books::rating_backoff_ms(attempts));
    sqlx::query(
        "UPDATE account_rating SET attempts = attempts + 1, next_try_at_ms = $2, \
         last_error = $3, claim_owner = NULL, claim_until_ms = NULL WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .bind(next)
    .bind(error)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?;
    tx.commit().await.map_err(StoreError::db(context()))
}

pub(crate) async fn account_rating_status(
    pools: &Pools,
    tenant_id: &str,
) -> Result<Option<AccountRatingStatus>, StoreError> {
    let op = "account_rating_status";
    let context = || format!("{op}: tenant {tenant_id:?}");
    let row = sqlx::query(
        "SELECT after_seq, attempts, next_try_at_ms, last_error, \
         (SELECT COUNT(*) FROM usage_events u WHERE u.tenant_id = a.tenant_id \
          AND u.seq > a.after_seq) AS waiting \
         FROM account_rating a WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(&pools.read)
    .await
    .map_err(StoreError::db(context()))?;
    row.map(|r| {
        Ok(AccountRatingStatus {
            after_seq: col(&r, op, "after_seq")?,
            attempts: get_u32(&r, op, "attempts")?,
            next_try_at_ms: col(&r, op, "next_try_at_ms")?,
            last_error: col(&r, op, "last_error")?,
            waiting: col(&r, op, "waiting")?,
        })
    })
    .transpose()
}

/// Accounts named per statement by [`account_quantities`] (bind parameters stay few).
const QUANTITY_ACCOUNTS_PER_STATEMENT: usize = 200;

/// Period-to-date quantity per service of each of `accounts` in `period`, from the
/// account period counters (kept with the ledger, equal to its sums): one statement per [`QUANTITY_ACCOUNTS_PER_STATEMENT`] accounts
/// rather than one per account (a rated batch names up to hundreds). An account without
/// rows in the period is absent from the map.
pub(crate) async fn account_quantities(
    pools: &Pools,
    tenant_id: &str,
    period: &str,
    accounts: &[&str],
) -> Result<HashMap<String, Vec<(String, u64)>>, StoreError> {
    let op = "account_quantities";
    let mut out: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for chunk in accounts.chunks(QUANTITY_ACCOUNTS_PER_STATEMENT) {
        let ids = (0..chunk.len())
            .map(|i| format!("${}", i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT account_id, service, quantity FROM account_period_counters \
             WHERE tenant_id = $1 AND period = $2 AND account_id IN ({ids}) \
             ORDER BY account_id, service"
        );
        let mut q = sqlx::query(&sql).bind(tenant_id).bind(period);
        for a in chunk {
            q = q.bind(*a);
        }
        let rows = q
            .fetch_all(&pools.read)
            .await
            .map_err(StoreError::db(format!(
                "{op}: tenant {tenant_id:?} period {period}, {} accounts (first {:?})",
                chunk.len(),
                chunk[0]
            )))?;
        for r in &rows {
            let account: String = col(r, op, "account_id")?;
            out.entry(account)
                .or_default()
                .push((col(r, op, "service")?, books::quantity(r, op)?));
        }
    }
    Ok(out)
}

fn account_entry_from_row(row: &AnyRow, op: &str) -> Result<AccountLedgerEntry, StoreError> {
    Ok(AccountLedgerEntry {
        seq: col(row, op, "seq")?,
        account_id: col(row, op, "account_id")?,
        message_id: col(row, op, "message_id")?,
        recipient_idx: get_idx(row, op, "recipient_idx")?,
        recipient: col(row, op, "recipient")?,
        outcome: col(row, op, "outcome")?,
        service: col(row, op, "service")?,
        quantity: books::quantity(row, op)?,
        unit_price: col(row, op, "unit_price")?,
        amount_micros: col(row, op, "amount_micros")?,
        currency: col(row, op, "currency")?,
        period: col(row, op, "period")?,
        at_ms: col(row, op, "at_ms")?,
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn list_account_charges(
    pools: &Pools,
    tenant_id: &str,
    account_id: &str,
    from_ms: i64,
    to_ms: i64,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<AccountLedgerEntry>, StoreError> {
    let op = "list_account_charges";
    let whose = Whose::Account {
        tenant: tenant_id,
        account: account_id,
    };
    let rows = books::list_charges(
        pools,
        whose,
        "seq, account_id, message_id, recipient_idx, recipient, outcome, service, quantity, \
         unit_price, amount_micros, currency, period, at_ms",
        from_ms,
        to_ms,
        after_seq,
        limit,
        op,
    )
    .await?;
    rows.iter().map(|r| account_entry_from_row(r, op)).collect()
}

pub(crate) async fn account_charge_sums(
    pools: &Pools,
    tenant_id: &str,
    account_id: &str,
    period: &str,
) -> Result<(Vec<ChargeSum>, Option<String>), StoreError> {
    let op = "account_charge_sums";
    let mut conn = pools.read.acquire().await.map_err(StoreError::db(op))?;
    let whose = Whose::Account {
        tenant: tenant_id,
        account: account_id,
    };
    books::charge_sums(&mut conn, whose, period, op).await
}

pub(crate) async fn account_balance(
    pools: &Pools,
    tenant_id: &str,
    account_id: &str,
) -> Result<Balance, StoreError> {
    let op = "account_balance";
    let whose = Whose::Account {
        tenant: tenant_id,
        account: account_id,
    };
    let mut conn = pools
        .read
        .acquire()
        .await
        .map_err(StoreError::db(format!("{op}: {whose}")))?;
    books::credits_and_charges(&mut conn, whose, op).await
}

/// Credits an account once per reference; `Ok(false)` when the reference was used.
pub(crate) async fn add_account_credit(
    pools: &Pools,
    tenant_id: &str,
    account_id: &str,
    amount_micros: i64,
    currency: &str,
    reference: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let op = "add_account_credit";
    books::check_credit(op, amount_micros, reference)?;
    let context = || format!("{op}: tenant {tenant_id:?} account {account_id:?}");
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    let whose = Whose::Account {
        tenant: tenant_id,
        account: account_id,
    };
    books::must_exist(&mut tx, whose, op).await?;
    let credited = books::insert_credit(
        &mut tx,
        whose,
        reference,
        amount_micros,
        currency,
        now_ms,
        op,
    )
    .await?;
    tx.commit().await.map_err(StoreError::db(context()))?;
    Ok(credited)
}

impl super::Store {
    /// Creates an account of a tenant with its logins; `Conflict` if the id or a login
    /// is taken, `NotFound` if there is no such tenant. The tenant's first account
    /// starts its account rating at the tenant's usage so far.
    pub async fn create_account(
        &self,
        tenant_id: &str,
        new: &NewAccount,
        now_ms: i64,
    ) -> Result<Account, StoreError> {
        create_account(self.pools(), tenant_id, new, now_ms).await
    }

    /// A tenant's accounts with their logins, by id.
    pub async fn list_accounts(&self, tenant_id: &str) -> Result<Vec<Account>, StoreError> {
        list_accounts(self.pools(), tenant_id).await
    }

    /// One account of a tenant; `None` if the tenant has no such account.
    pub async fn get_account(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<Account>, StoreError> {
        get_account(self.pools(), tenant_id, id).await
    }

    /// Changes an account; `NotFound` if the tenant has no such account, `Conflict` if
    /// a new login belongs to another account.
    pub async fn update_account(
        &self,
        tenant_id: &str,
        id: &str,
        update: &AccountUpdate,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        update_account(self.pools(), tenant_id, id, update, now_ms).await
    }

    /// Deletes an account and its logins and revokes its keys; its ledger rows and
    /// credits stay.
    pub async fn delete_account(
        &self,
        tenant_id: &str,
        id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        delete_account(self.pools(), tenant_id, id, now_ms).await
    }

    /// Every (login, account id) of a tenant.
    pub async fn account_logins(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        account_logins(self.pools(), tenant_id).await
    }

    /// Sets (or with `None` removes) the tariff a tenant rates its accounts with.
    pub async fn set_account_tariff(
        &self,
        tenant_id: &str,
        tariff: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        set_account_tariff(self.pools(), tenant_id, tariff, now_ms).await
    }

    pub async fn get_account_tariff(&self, tenant_id: &str) -> Result<Option<String>, StoreError> {
        get_account_tariff(self.pools(), tenant_id).await
    }

    /// Claims the usage events after one tenant's account-rating cursor (at most
    /// `limit`, in seq order) for `owner` until `now + claim_ms`; the tenant whose
    /// cursor was claimed least recently goes first. A tenant's usage gathers: it is due
    /// when its oldest waiting event is [`GATHER_MS`] old (once settled) or `limit`
    /// events wait. `None` when nothing is due.
    pub async fn claim_account_batch(
        &self,
        owner: &str,
        now_ms: i64,
        claim_ms: i64,
        limit: u32,
    ) -> Result<Option<AccountBatch>, StoreError> {
        claim_account_batch(self.pools(), owner, now_ms, claim_ms, limit).await
    }

    /// Writes a batch's account charges and moves the tenant's cursor from `after_seq`
    /// to `through_seq` in one transaction; if the cursor is no longer at `after_seq`
    /// (the batch was written already) nothing is written. Returns the rows inserted.
    pub async fn write_account_charges(
        &self,
        tenant_id: &str,
        after_seq: i64,
        through_seq: i64,
        charges: &[AccountCharge],
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let (tenant_id, charges) = (tenant_id.to_owned(), charges.to_vec());
        self.on_writer(move |s| async move {
            write_account_charges(
                s.pools(),
                &tenant_id,
                after_seq,
                through_seq,
                &charges,
                now_ms,
            )
            .await
        })
        .await
    }

    /// Leaves a tenant's cursor where it is after a failed rating: counts the attempt,
    /// stores the reason and retries after a growing delay.
    pub async fn defer_account_rating(
        &self,
        tenant_id: &str,
        error: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        defer_account_rating(self.pools(), tenant_id, error, now_ms).await
    }

    /// Where a tenant's account rating stands; `None` before its first account.
    pub async fn account_rating_status(
        &self,
        tenant_id: &str,
    ) -> Result<Option<AccountRatingStatus>, StoreError> {
        account_rating_status(self.pools(), tenant_id).await
    }

    /// Period-to-date quantity per service of each of `accounts` in `period`, by
    /// account id (an account with no charges in the period is absent).
    pub async fn account_quantities(
        &self,
        tenant_id: &str,
        period: &str,
        accounts: &[&str],
    ) -> Result<HashMap<String, Vec<(String, u64)>>, StoreError> {
        account_quantities(self.pools(), tenant_id, period, accounts).await
    }

    /// An account's ledger rows whose usage time is in `[from, to)` after `after_seq`.
    #[allow(clippy::too_many_arguments)]
    pub async fn list_account_charges(
        &self,
        tenant_id: &str,
        account_id: &str,
        from_ms: i64,
        to_ms: i64,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AccountLedgerEntry>, StoreError> {
        list_account_charges(
            self.pools(),
            tenant_id,
            account_id,
            from_ms,
            to_ms,
            after_seq,
            limit,
        )
        .await
    }

    /// An account's ledger of one period summed per (service, unit price), and its currency.
    pub async fn account_charge_sums(
        &self,
        tenant_id: &str,
        account_id: &str,
        period: &str,
    ) -> Result<(Vec<ChargeSum>, Option<String>), StoreError> {
        account_charge_sums(self.pools(), tenant_id, account_id, period).await
    }

    /// An account's credits and charges, exact (no reservations).
    pub async fn account_balance(
        &self,
        tenant_id: &str,
        account_id: &str,
    ) -> Result<Balance, StoreError> {
        account_balance(self.pools(), tenant_id, account_id).await
    }

    /// Credits an account once per reference; `Ok(false)` when the reference was used.
    pub async fn add_account_credit(
        &self,
        tenant_id: &str,
        account_id: &str,
        amount_micros: i64,
        currency: &str,
        reference: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        add_account_credit(
            self.pools(),
            tenant_id,
            account_id,
            amount_micros,
            currency,
            reference,
            now_ms,
        )
        .await
    }
}

//! API keys: only the SHA-256 of a secret is stored, with a short prefix for display.
//! A key is found by the hash of the secret presented, so no secret comparison happens.
//!
//! A key is the whole tenant's (made through the admin API) or one account's (made by
//! the tenant for its customer, issue 17): its scope comes back with its owner
//! ([`owner`]), and what each scope may call is decided in one place, `serve/auth.rs`.
//! An account's key counts only while its account exists, and deleting the account
//! revokes it (`accounts::delete_account`), so an account made again under the same
//! id does not bring old keys back.

use sha2::{Digest, Sha256};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::StoreError;
use super::codec::{col, hex};
use super::connect::Pools;
use super::tenants;
use super::types::{ApiKeyInfo, KeyOwner, KeyScope};

/// Every secret starts with this, so a leaked key is recognisable in logs and scanners.
const SECRET_PREFIX: &str = "sluice_";
/// How much of the secret is kept for display (the fixed prefix plus 6 random chars).
const DISPLAY_LEN: usize = SECRET_PREFIX.len() + 6;
/// Most live keys of one account: a tenant cannot grow the key table without bound
/// through its customers.
pub const MAX_ACCOUNT_KEYS: i64 = 100;

const KEY_COLUMNS: &str = "id, tenant_id, prefix, account_id, created_at_ms, revoked_at_ms";

fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn from_row(row: &AnyRow, op: &str) -> Result<ApiKeyInfo, StoreError> {
    Ok(ApiKeyInfo {
        id: col(row, op, "id")?,
        tenant_id: col(row, op, "tenant_id")?,
        prefix: col(row, op, "prefix")?,
        account_id: col(row, op, "account_id")?,
        created_at_ms: col(row, op, "created_at_ms")?,
        revoked_at_ms: col(row, op, "revoked_at_ms")?,
    })
}

/// A new secret and its listing; nothing is written.
fn new_secret(
    op: &str,
    tenant_id: &str,
    account_id: Option<&str>,
    now_ms: i64,
) -> Result<(ApiKeyInfo, String), StoreError> {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random)
        .map_err(|e| StoreError::invalid(op, format!("no randomness for a secret: {e}")))?;
    let secret = format!("{SECRET_PREFIX}{}", hex(&random));
    let info = ApiKeyInfo {
        id: ulid::Ulid::new().to_string(),
        tenant_id: tenant_id.to_string(),
        prefix: secret[..DISPLAY_LEN].to_string(),
        account_id: account_id.map(str::to_owned),
        created_at_ms: now_ms,
        revoked_at_ms: None,
    };
    Ok((info, secret))
}

async fn insert(
    conn: &mut AnyConnection,
    info: &ApiKeyInfo,
    secret: &str,
    context: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, secret_sha256, prefix, account_id, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&info.id)
    .bind(&info.tenant_id)
    .bind(hash(secret))
    .bind(&info.prefix)
    .bind(info.account_id.clone())
    .bind(info.created_at_ms)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::db(context))?;
    Ok(())
}

pub(crate) async fn create(
    pools: &Pools,
    tenant_id: &str,
    now_ms: i64,
) -> Result<(ApiKeyInfo, String), StoreError> {
    let op = "create_api_key";
    let (info, secret) = new_secret(op, tenant_id, None, now_ms)?;
    let context = format!("{op} for tenant {tenant_id:?}");
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(&context))?;
    let exists = sqlx::query("SELECT id FROM tenants WHERE id = $1")
        .bind(tenant_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db(&context))?;
    if exists.is_none() {
        return Err(StoreError::not_found(op, "tenant", tenant_id));
    }
    insert(&mut tx, &info, &secret, &context).await?;
    tx.commit().await.map_err(StoreError::db(&context))?;
    Ok((info, secret))
}

pub(crate) async fn create_for_account(
    pools: &Pools,
    tenant_id: &str,
    account_id: &str,
    now_ms: i64,
) -> Result<(ApiKeyInfo, String), StoreError> {
    let op = "create_account_key";
    let (info, secret) = new_secret(op, tenant_id, Some(account_id), now_ms)?;
    let context = format!("{op} for account {account_id:?} of tenant {tenant_id:?}");
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(&context))?;
    // On PostgreSQL the row lock keeps two creations from both passing the count.
    let lock = match pools.backend {
        super::connect::Backend::Postgres => " FOR UPDATE",
        super::connect::Backend::Sqlite => "",
    };
    let exists = sqlx::query(&format!(
        "SELECT id FROM accounts WHERE tenant_id = $1 AND id = $2{lock}"
    ))
    .bind(tenant_id)
    .bind(account_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(StoreError::db(&context))?;
    if exists.is_none() {
        return Err(StoreError::not_found(op, "account", account_id));
    }
    let live = sqlx::query(
        "SELECT COUNT(*) AS n FROM api_keys WHERE tenant_id = $1 AND account_id = $2 \
         AND revoked_at_ms IS NULL",
    )
    .bind(tenant_id)
    .bind(account_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(StoreError::db(&context))?;
    let live: i64 = col(&live, op, "n")?;
    if live >= MAX_ACCOUNT_KEYS {
        return Err(StoreError::invalid(
            op,
            format!(
                "account {account_id:?} has {live} live keys, the most an account may have: \
                 revoke one first"
            ),
        ));
    }
    insert(&mut tx, &info, &secret, &context).await?;
    tx.commit().await.map_err(StoreError::db(&context))?;
    Ok((info, secret))
}

pub(crate) async fn owner(pools: &Pools, secret: &str) -> Result<Option<KeyOwner>, StoreError> {
    let op = "key_owner";
    // An account's key counts only while its account is there.
    let row = sqlx::query(
        "SELECT t.id, t.name, t.allowed_sender_domains, t.pools, t.route_plugin, \
         t.header_from_check, t.created_at_ms, k.account_id, k.id AS key_id \
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
         WHERE k.secret_sha256 = $1 AND k.revoked_at_ms IS NULL \
         AND (k.account_id IS NULL OR EXISTS (SELECT 1 FROM accounts a \
              WHERE a.tenant_id = k.tenant_id AND a.id = k.account_id))",
    )
    .bind(hash(secret))
    .fetch_optional(&pools.read)
    .await
    // Nothing of the secret in a message, not even its prefix: messages reach logs.
    .map_err(StoreError::db(format!("{op} for a bearer key")))?;
    let Some(row) = row else { return Ok(None) };
    let tenant = tenants::from_row(&row, op)?;
    let scope = match col::<Option<String>>(&row, op, "account_id")? {
        Some(account) => KeyScope::Account(account),
        None => KeyScope::Tenant,
    };
    let key_id = col(&row, op, "key_id")?;
    Ok(Some(KeyOwner {
        tenant,
        scope,
        key_id,
    }))
}

pub(crate) async fn revoke(
    pools: &Pools,
    tenant_id: &str,
    key_id: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at_ms = $3 \
         WHERE tenant_id = $1 AND id = $2 AND revoked_at_ms IS NULL",
    )
    .bind(tenant_id)
    .bind(key_id)
    .bind(now_ms)
    .execute(&pools.write)
    .await
    .map_err(StoreError::db(format!(
        "revoke_api_key {key_id:?} of tenant {tenant_id:?}"
    )))?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn revoke_for_account(
    pools: &Pools,
    tenant_id: &str,
    account_id: &str,
    key_id: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at_ms = $4 \
         WHERE tenant_id = $1 AND account_id = $2 AND id = $3 AND revoked_at_ms IS NULL",
    )
    .bind(tenant_id)
    .bind(account_id)
    .bind(key_id)
    .bind(now_ms)
    .execute(&pools.write)
    .await
    .map_err(StoreError::db(format!(
        "revoke_account_key {key_id:?} of account {account_id:?} of tenant {tenant_id:?}"
    )))?;
    Ok(done.rows_affected() > 0)
}

/// Revokes every live key of an account, inside the caller's transaction (the one that
/// deletes the account).
pub(crate) async fn revoke_all_of_account(
    conn: &mut AnyConnection,
    tenant_id: &str,
    account_id: &str,
    now_ms: i64,
    context: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE api_keys SET revoked_at_ms = $3 \
         WHERE tenant_id = $1 AND account_id = $2 AND revoked_at_ms IS NULL",
    )
    .bind(tenant_id)
    .bind(account_id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::db(context))?;
    Ok(())
}

pub(crate) async fn list(pools: &Pools, tenant_id: &str) -> Result<Vec<ApiKeyInfo>, StoreError> {
    let op = "list_api_keys";
    let rows = sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at_ms, id"
    ))
    .bind(tenant_id)
    .fetch_all(&pools.read)
    .await
    .map_err(StoreError::db(format!("{op} of tenant {tenant_id:?}")))?;
    rows.iter().map(|r| from_row(r, op)).collect()
}

pub(crate) async fn list_for_account(
    pools: &Pools,
    tenant_id: &str,
    account_id: &str,
) -> Result<Vec<ApiKeyInfo>, StoreError> {
    let op = "list_account_keys";
    let rows = sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND account_id = $2 \
         ORDER BY created_at_ms, id"
    ))
    .bind(tenant_id)
    .bind(account_id)
    .fetch_all(&pools.read)
    .await
    .map_err(StoreError::db(format!(
        "{op} of account {account_id:?} of tenant {tenant_id:?}"
    )))?;
    rows.iter().map(|r| from_row(r, op)).collect()
}

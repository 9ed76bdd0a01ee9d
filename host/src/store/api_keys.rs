//! API keys: only the SHA-256 of a secret is stored, with a short prefix for display.
//! A key is found by the hash of the secret presented, so no secret comparison happens.

use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;

use super::StoreError;
use super::codec::{col, hex};
use super::connect::Pools;
use super::tenants;
use super::types::{ApiKeyInfo, Tenant};

/// Every secret starts with this, so a leaked key is recognisable in logs and scanners.
const SECRET_PREFIX: &str = "sluice_";
/// How much of the secret is kept for display (the fixed prefix plus 6 random chars).
const DISPLAY_LEN: usize = SECRET_PREFIX.len() + 6;

fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn from_row(row: &AnyRow, op: &str) -> Result<ApiKeyInfo, StoreError> {
    Ok(ApiKeyInfo {
        id: col(row, op, "id")?,
        tenant_id: col(row, op, "tenant_id")?,
        prefix: col(row, op, "prefix")?,
        created_at_ms: col(row, op, "created_at_ms")?,
        revoked_at_ms: col(row, op, "revoked_at_ms")?,
    })
}

pub(crate) async fn create(
    pools: &Pools,
    tenant_id: &str,
    now_ms: i64,
) -> Result<(ApiKeyInfo, String), StoreError> {
    let op = "create_api_key";
    let mut random = [0u8; 32];
    getrandom::fill(&mut random)
        .map_err(|e| StoreError::invalid(op, format!("no randomness for a secret: {e}")))?;
    let secret = format!("{SECRET_PREFIX}{}", hex(&random));
    let info = ApiKeyInfo {
        id: ulid::Ulid::new().to_string(),
        tenant_id: tenant_id.to_string(),
        prefix: secret[..DISPLAY_LEN].to_string(),
        created_at_ms: now_ms,
        revoked_at_ms: None,
    };
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
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, secret_sha256, prefix, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&info.id)
    .bind(tenant_id)
    .bind(hash(&secret))
    .bind(&info.prefix)
    .bind(now_ms)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(&context))?;
    tx.commit().await.map_err(StoreError::db(&context))?;
    Ok((info, secret))
}

pub(crate) async fn tenant_for_key(
    pools: &Pools,
    secret: &str,
) -> Result<Option<Tenant>, StoreError> {
    let op = "tenant_for_key";
    let row = sqlx::query(
        "SELECT t.id, t.name, t.allowed_sender_domains, t.pools, t.route_plugin, \
         t.header_from_check, t.created_at_ms \
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
         WHERE k.secret_sha256 = $1 AND k.revoked_at_ms IS NULL",
    )
    .bind(hash(secret))
    .fetch_optional(&pools.read)
    .await
    // Nothing of the secret in a message, not even its prefix: messages reach logs.
    .map_err(StoreError::db(format!("{op} for a bearer key")))?;
    row.map(|r| tenants::from_row(&r, op)).transpose()
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

pub(crate) async fn list(pools: &Pools, tenant_id: &str) -> Result<Vec<ApiKeyInfo>, StoreError> {
    let op = "list_api_keys";
    let rows = sqlx::query(
        "SELECT id, tenant_id, prefix, created_at_ms, revoked_at_ms FROM api_keys \
         WHERE tenant_id = $1 ORDER BY created_at_ms, id",
    )
    .bind(tenant_id)
    .fetch_all(&pools.read)
    .await
    .map_err(StoreError::db(format!("{op} of tenant {tenant_id:?}")))?;
    rows.iter().map(|r| from_row(r, op)).collect()
}

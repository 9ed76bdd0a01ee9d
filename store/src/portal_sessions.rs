//! The web portal's sessions (`serve/portal/`): opened with a tenant's API key, ended by
//! signing out, by their expiry, by the key's revocation, or by a newer session pushing
//! them past the bound per tenant.
//!
//! As with API keys, only the SHA-256 of a session's secret is stored and a session is
//! found by the hash of the secret presented, so no secret is compared here.

use sha2::{Digest, Sha256};

use super::StoreError;
use super::codec::{col, hex};
use super::connect::Pools;
use super::tenants;
use super::types::Tenant;

/// Sessions one tenant keeps open at most: opening another drops its oldest, so
/// signing in again and again cannot grow the table without bound.
pub const MAX_PORTAL_SESSIONS: i64 = 16;
/// Length of a session's secret in bytes (256 bits).
const SECRET_BYTES: usize = 32;
/// A tenant's session (the only kind so far; the operator portal's will be `operator`).
const KIND_TENANT: &str = "tenant";

fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// A live tenant session, as a request presenting its secret finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct PortalSession {
    pub tenant: Tenant,
    /// The API key it was opened with (it ends with that key).
    pub key_id: String,
    pub expires_at_ms: i64,
}

/// Opens a session of `tenant_id` signed in with key `key_id`, live until
/// `expires_at_ms`; returns its secret, which only the cookie holds. The tenant's
/// expired sessions are dropped, and its oldest while it would have more than
/// [`MAX_PORTAL_SESSIONS`].
pub(crate) async fn open(
    pools: &Pools,
    tenant_id: &str,
    key_id: &str,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<String, StoreError> {
    let op = "open_portal_session";
    let mut random = [0u8; SECRET_BYTES];
    getrandom::fill(&mut random)
        .map_err(|e| StoreError::invalid(op, format!("no randomness for a session: {e}")))?;
    let secret = hex(&random);
    let context = format!("{op} for tenant {tenant_id:?}");
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(&context))?;
    sqlx::query(
        "DELETE FROM portal_sessions WHERE kind = $1 AND tenant_id = $2 AND expires_at_ms <= $3",
    )
    .bind(KIND_TENANT)
    .bind(tenant_id)
    .bind(now_ms)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(&context))?;
    // Room for the new one: the oldest past the bound go (the index leads with the
    // tenant, so this reads only its few rows).
    sqlx::query(
        "DELETE FROM portal_sessions WHERE secret_sha256 IN ( \
           SELECT secret_sha256 FROM portal_sessions WHERE kind = $1 AND tenant_id = $2 \
           ORDER BY created_at_ms DESC, secret_sha256 DESC LIMIT 1000000 OFFSET $3)",
    )
    .bind(KIND_TENANT)
    .bind(tenant_id)
    .bind(MAX_PORTAL_SESSIONS - 1)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(&context))?;
    sqlx::query(
        "INSERT INTO portal_sessions (secret_sha256, kind, tenant_id, key_id, created_at_ms, \
         expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(hash(&secret))
    .bind(KIND_TENANT)
    .bind(tenant_id)
    .bind(key_id)
    .bind(now_ms)
    .bind(expires_at_ms)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(&context))?;
    tx.commit().await.map_err(StoreError::db(&context))?;
    Ok(secret)
}

/// The live session whose secret this is: not expired, its key not revoked, its tenant
/// there.
pub(crate) async fn find(
    pools: &Pools,
    secret: &str,
    now_ms: i64,
) -> Result<Option<PortalSession>, StoreError> {
    let op = "portal_session";
    let row = sqlx::query(
        "SELECT t.id, t.name, t.allowed_sender_domains, t.pools, t.route_plugin, \
         t.header_from_check, t.created_at_ms, s.key_id, s.expires_at_ms \
         FROM portal_sessions s \
         JOIN api_keys k ON k.id = s.key_id AND k.tenant_id = s.tenant_id \
         JOIN tenants t ON t.id = s.tenant_id \
         WHERE s.secret_sha256 = $1 AND s.kind = $2 AND s.expires_at_ms > $3 \
         AND k.revoked_at_ms IS NULL AND k.account_id IS NULL",
    )
    .bind(hash(secret))
    .bind(KIND_TENANT)
    .bind(now_ms)
    .fetch_optional(&pools.read)
    .await
    // Nothing of the secret in a message: messages reach logs.
    .map_err(StoreError::db(format!("{op} for a session cookie")))?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(PortalSession {
        tenant: tenants::from_row(&row, op)?,
        key_id: col(&row, op, "key_id")?,
        expires_at_ms: col(&row, op, "expires_at_ms")?,
    }))
}

/// Ends the session whose secret this is; whether there was one.
pub(crate) async fn close(pools: &Pools, secret: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM portal_sessions WHERE secret_sha256 = $1")
        .bind(hash(secret))
        .execute(&pools.write)
        .await
        .map_err(StoreError::db("close_portal_session"))?;
    Ok(done.rows_affected() > 0)
}

/// How many sessions a tenant has open (expired ones not yet dropped included).
pub(crate) async fn count(pools: &Pools, tenant_id: &str) -> Result<i64, StoreError> {
    let op = "count_portal_sessions";
    let row =
        sqlx::query("SELECT COUNT(*) AS n FROM portal_sessions WHERE kind = $1 AND tenant_id = $2")
            .bind(KIND_TENANT)
            .bind(tenant_id)
            .fetch_one(&pools.read)
            .await
            .map_err(StoreError::db(format!("{op} of tenant {tenant_id:?}")))?;
    col(&row, op, "n")
}

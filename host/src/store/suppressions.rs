//! Per-tenant suppression lists: addresses that must not be sent to because they
//! hard-bounced, complained, or an operator said so. Addresses are kept lower-cased;
//! a second entry for the same (tenant, address) replaces the reason and keeps the
//! first creation time.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::codec::{col, get_json};
use super::connect::Pools;
use super::{Store, StoreError};

/// One suppressed address of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suppression {
    pub tenant_id: String,
    /// Lower-cased.
    pub address: String,
    /// The bounce stage's reason (`userunknown`, `feedback`, …) or `manual`.
    pub reason: String,
    /// Where it came from: `reply` (refused while sending), `dsn` (a bounce e-mail),
    /// `complaint` (a feedback report) or `manual`.
    pub source: String,
    /// Status, diagnostic and whatever else explains it.
    pub detail: serde_json::Value,
    /// The message whose bounce suppressed the address, if any.
    pub message_id: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What [`Store::suppress`] writes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSuppression {
    pub tenant_id: String,
    pub address: String,
    pub reason: String,
    pub source: String,
    pub detail: serde_json::Value,
    pub message_id: Option<String>,
}

pub(crate) const COLUMNS: &str =
    "tenant_id, address, reason, source, detail, message_id, created_at_ms, updated_at_ms";

pub(crate) fn from_row(row: &AnyRow, op: &str) -> Result<Suppression, StoreError> {
    Ok(Suppression {
        tenant_id: col(row, op, "tenant_id")?,
        address: col(row, op, "address")?,
        reason: col(row, op, "reason")?,
        source: col(row, op, "source")?,
        detail: get_json(row, op, "detail")?,
        message_id: col(row, op, "message_id")?,
        created_at_ms: col(row, op, "created_at_ms")?,
        updated_at_ms: col(row, op, "updated_at_ms")?,
    })
}

/// The form addresses are kept and compared in.
pub(crate) fn normalize(address: &str) -> String {
    address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_lowercase()
}

fn check(op: &str, new: &NewSuppression) -> Result<String, StoreError> {
    let address = normalize(&new.address);
    let ok = address.len() <= 320
        && address
            .rsplit_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
        && !address.contains(char::is_whitespace);
    if !ok {
        return Err(StoreError::invalid(
            op,
            format!("{:?} is not an e-mail address", new.address),
        ));
    }
    if new.reason.trim().is_empty() || new.source.trim().is_empty() {
        return Err(StoreError::invalid(
            op,
            format!("suppression of {address:?}: reason and source must not be empty"),
        ));
    }
    Ok(address)
}

/// Writes (or replaces) one entry inside the caller's transaction.
pub(crate) async fn upsert_in(
    conn: &mut AnyConnection,
    new: &NewSuppression,
    now_ms: i64,
    op: &str,
) -> Result<(), StoreError> {
    let address = check(op, new)?;
    sqlx::query(&format!(
        "INSERT INTO suppressions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
         ON CONFLICT (tenant_id, address) DO UPDATE SET reason = excluded.reason, \
         source = excluded.source, detail = excluded.detail, message_id = excluded.message_id, \
         updated_at_ms = excluded.updated_at_ms"
    ))
    .bind(&new.tenant_id)
    .bind(&address)
    .bind(&new.reason)
    .bind(&new.source)
    .bind(new.detail.to_string())
    .bind(new.message_id.clone())
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::db(format!(
        "{op}: tenant {:?} address {address:?}",
        new.tenant_id
    )))?;
    Ok(())
}

async fn suppress(pools: &Pools, new: NewSuppression, now_ms: i64) -> Result<(), StoreError> {
    let op = "suppress";
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    upsert_in(&mut tx, &new, now_ms, op).await?;
    tx.commit().await.map_err(StoreError::db(format!(
        "{op}: commit for tenant {:?}",
        new.tenant_id
    )))
}

impl Store {
    /// Suppresses an address for a tenant (or replaces the reason of an existing
    /// entry, keeping its creation time). `Invalid` if the address is not one.
    pub async fn suppress(&self, new: NewSuppression, now_ms: i64) -> Result<(), StoreError> {
        suppress(self.pools(), new, now_ms).await
    }

    /// A tenant's suppressions by address, at most `limit`, starting after `after`
    /// (the last address of the previous page).
    pub async fn list_suppressions(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Suppression>, StoreError> {
        let op = "list_suppressions";
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM suppressions WHERE tenant_id = $1 AND address > $2 \
             ORDER BY address LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(after.map(normalize).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(&self.pools().read)
        .await
        .map_err(StoreError::db(format!("{op} of tenant {tenant_id:?}")))?;
        rows.iter().map(|r| from_row(r, op)).collect()
    }

    /// Removes an address from a tenant's list; false if it was not on it.
    pub async fn delete_suppression(
        &self,
        tenant_id: &str,
        address: &str,
    ) -> Result<bool, StoreError> {
        let op = "delete_suppression";
        let done = sqlx::query("DELETE FROM suppressions WHERE tenant_id = $1 AND address = $2")
            .bind(tenant_id)
            .bind(normalize(address))
            .execute(&self.pools().write)
            .await
            .map_err(StoreError::db(format!(
                "{op}: tenant {tenant_id:?} address {address:?}"
            )))?;
        Ok(done.rows_affected() > 0)
    }

    /// Which of `addresses` a tenant has suppressed, by normalised address (what
    /// acceptance checks). Concurrent calls share queries (`suppression_lookups.rs`).
    pub async fn suppressed_among(
        &self,
        tenant_id: &str,
        addresses: &[String],
    ) -> Result<HashMap<String, Suppression>, StoreError> {
        let wanted: Vec<String> = addresses.iter().map(|a| normalize(a)).collect();
        self.inner.lookups.ask(tenant_id, wanted).await
    }
}

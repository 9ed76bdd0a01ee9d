//! Per-tenant suppression lists: addresses that must not be sent to because they
//! hard-bounced, complained, or an operator said so. Addresses are kept lower-cased;
//! a second entry for the same (tenant, address) replaces the reason and keeps the
//! first creation time.
//!
//! Every entry says who added it ([`AddedBy`], migration `0011_suppression_owner`): the
//! platform's (bounce processing, the admin API) outrank the tenant's own — a tenant's
//! re-entry leaves a platform entry as it is, and only the platform removes one.

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
    /// Who added it, and so who may remove it.
    pub added_by: AddedBy,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Who added a suppression (or asks to remove one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddedBy {
    /// Bounce processing or the admin API: only the platform removes it.
    Platform,
    /// The tenant through its own API: the tenant or the platform removes it.
    Tenant,
}

impl AddedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            AddedBy::Platform => "platform",
            AddedBy::Tenant => "tenant",
        }
    }

    fn parse(s: &str) -> Option<AddedBy> {
        match s {
            "platform" => Some(AddedBy::Platform),
            "tenant" => Some(AddedBy::Tenant),
            _ => None,
        }
    }
}

/// What [`Store::delete_suppression`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Removal {
    Removed,
    /// The address is not on the tenant's list.
    NotFound,
    /// The platform added it and a tenant asked: it stays (this is the entry).
    Protected(Box<Suppression>),
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
    pub added_by: AddedBy,
}

pub(crate) const COLUMNS: &str = "tenant_id, address, reason, source, detail, message_id, \
     added_by, created_at_ms, updated_at_ms";

pub(crate) fn from_row(row: &AnyRow, op: &str) -> Result<Suppression, StoreError> {
    Ok(Suppression {
        tenant_id: col(row, op, "tenant_id")?,
        address: col(row, op, "address")?,
        reason: col(row, op, "reason")?,
        source: col(row, op, "source")?,
        detail: get_json(row, op, "detail")?,
        message_id: col(row, op, "message_id")?,
        added_by: {
            let v: String = col(row, op, "added_by")?;
            AddedBy::parse(&v).ok_or_else(|| {
                StoreError::invalid(op, format!("suppression added by {v:?}: not a known owner"))
            })?
        },
        created_at_ms: col(row, op, "created_at_ms")?,
        updated_at_ms: col(row, op, "updated_at_ms")?,
    })
}

/// The form addresses are kept and compared in.
pub fn normalize(address: &str) -> String {
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

/// Writes (or replaces) one entry inside the caller's transaction. A tenant's entry
/// does not replace the platform's; the platform's takes over a tenant's.
pub(crate) async fn upsert_in(
    conn: &mut AnyConnection,
    new: &NewSuppression,
    now_ms: i64,
    op: &str,
) -> Result<(), StoreError> {
    let address = check(op, new)?;
    sqlx::query(&format!(
        "INSERT INTO suppressions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
         ON CONFLICT (tenant_id, address) DO UPDATE SET reason = excluded.reason, \
         source = excluded.source, detail = excluded.detail, message_id = excluded.message_id, \
         added_by = excluded.added_by, updated_at_ms = excluded.updated_at_ms \
         WHERE suppressions.added_by = 'tenant' OR excluded.added_by = 'platform'"
    ))
    .bind(&new.tenant_id)
    .bind(&address)
    .bind(&new.reason)
    .bind(&new.source)
    .bind(new.detail.to_string())
    .bind(new.message_id.clone())
    .bind(new.added_by.as_str())
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

    /// Removes an address from a tenant's list at `by`'s request: the platform removes
    /// any entry, a tenant only those it added itself.
    pub async fn delete_suppression(
        &self,
        tenant_id: &str,
        address: &str,
        by: AddedBy,
    ) -> Result<Removal, StoreError> {
        let op = "delete_suppression";
        let context = || format!("{op}: tenant {tenant_id:?} address {address:?}");
        let address = normalize(address);
        let sql = match by {
            AddedBy::Platform => "DELETE FROM suppressions WHERE tenant_id = $1 AND address = $2",
            AddedBy::Tenant => {
                "DELETE FROM suppressions WHERE tenant_id = $1 AND address = $2 \
                 AND added_by = 'tenant'"
            }
        };
        let done = sqlx::query(sql)
            .bind(tenant_id)
            .bind(&address)
            .execute(&self.pools().write)
            .await
            .map_err(StoreError::db(context()))?;
        if done.rows_affected() > 0 {
            return Ok(Removal::Removed);
        }
        // Nothing removed: not there, or not the asker's to remove.
        let kept = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM suppressions WHERE tenant_id = $1 AND address = $2"
        ))
        .bind(tenant_id)
        .bind(&address)
        .fetch_optional(&self.pools().read)
        .await
        .map_err(StoreError::db(context()))?;
        Ok(match kept {
            Some(row) => Removal::Protected(Box::new(from_row(&row, op)?)),
            None => Removal::NotFound,
        })
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

//! Reading a tenant's ledger back: its charge rows by page, and a period's rows summed
//! per service and unit price for an invoice.

use serde::Serialize;
use sqlx::any::AnyRow;

use super::super::StoreError;
use super::super::books::{self, ChargeSum, Whose};
use super::super::codec::{col, get_idx};
use super::super::connect::Pools;

/// A ledger row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    pub seq: i64,
    pub tenant_id: String,
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
    pub relay: Option<String>,
    /// When the usage happened.
    pub at_ms: i64,
    pub created_at_ms: i64,
}

const LEDGER_COLUMNS: &str = "seq, tenant_id, message_id, recipient_idx, recipient, outcome, \
    service, quantity, unit_price, amount_micros, currency, period, relay, at_ms, created_at_ms";

fn ledger_from_row(row: &AnyRow, op: &str) -> Result<LedgerEntry, StoreError> {
    Ok(LedgerEntry {
        seq: col(row, op, "seq")?,
        tenant_id: col(row, op, "tenant_id")?,
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
        relay: col(row, op, "relay")?,
        at_ms: col(row, op, "at_ms")?,
        created_at_ms: col(row, op, "created_at_ms")?,
    })
}

pub(crate) async fn list_charges(
    pools: &Pools,
    tenant_id: &str,
    from_ms: i64,
    to_ms: i64,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<LedgerEntry>, StoreError> {
    let op = "list_charges";
    let whose = Whose::Tenant(tenant_id);
    let rows = books::list_charges(
        pools,
        whose,
        LEDGER_COLUMNS,
        from_ms,
        to_ms,
        after_seq,
        limit,
        op,
    )
    .await?;
    rows.iter().map(|r| ledger_from_row(r, op)).collect()
}

pub(crate) async fn charge_sums(
    pools: &Pools,
    tenant_id: &str,
    period: &str,
) -> Result<(Vec<ChargeSum>, Option<String>), StoreError> {
    let op = "charge_sums";
    let mut conn = pools.read.acquire().await.map_err(StoreError::db(op))?;
    books::charge_sums(&mut conn, Whose::Tenant(tenant_id), period, op).await
}

impl super::super::Store {
    /// A tenant's ledger rows whose usage time is in `[from, to)` and whose seq is
    /// above `after_seq`, by seq (pages: pass the last seq back).
    pub async fn list_charges(
        &self,
        tenant_id: &str,
        from_ms: i64,
        to_ms: i64,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        list_charges(self.pools(), tenant_id, from_ms, to_ms, after_seq, limit).await
    }

    /// A tenant's ledger of one period summed per (service, unit price), and the
    /// currency of its rows.
    pub async fn charge_sums(
        &self,
        tenant_id: &str,
        period: &str,
    ) -> Result<(Vec<ChargeSum>, Option<String>), StoreError> {
        charge_sums(self.pools(), tenant_id, period).await
    }
}

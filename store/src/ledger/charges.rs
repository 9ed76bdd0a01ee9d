//! Writing what the platform's rater charged: ledger rows inserted once on their key,
//! the period-to-date counters of the rows actually inserted, volume settlements written
//! once like a charge.

use sqlx::AnyConnection;
use std::collections::BTreeMap;

use super::super::StoreError;
use super::super::books::{self, Book, ChargeRow};
use super::super::codec::{col, placeholders, positional, rows_per_statement, value_rows};
use super::super::connect::Pools;
use super::usage_queue::PendingUsage;

/// One charge the rater made for a usage event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCharge {
    pub service: String,
    pub quantity: u64,
    /// The unit price as the exact decimal string the rater gave.
    pub unit_price: String,
    pub amount_micros: i64,
    /// The tariff declares the service a credit (`credit = true`): only then may the
    /// amount be negative. [`super::Store::write_charges`] refuses a batch holding a
    /// negative charge that is not one, whoever rated it.
    pub credit: bool,
}

/// A rated usage event: what [`super::Store::write_charges`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatedUsage {
    pub usage: PendingUsage,
    pub currency: String,
    /// Possibly none: the tariff does not charge this outcome.
    pub charges: Vec<NewCharge>,
}

/// A volume-mode settlement of one (tenant, period, service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub tenant_id: String,
    /// `YYYY-MM`.
    pub period: String,
    pub service: String,
    /// The price of the tier the period's total reached.
    pub unit_price: String,
    /// What the period's charges are short (or over, negative) at that price.
    pub amount_micros: i64,
    pub currency: String,
}

pub(crate) async fn write_charges(
    pools: &Pools,
    rated: &[RatedUsage],
    now_ms: i64,
) -> Result<usize, StoreError> {
    let op = "write_charges";
    if rated.is_empty() {
        return Ok(0);
    }
    // Every charge of the batch, as the books write it.
    let charges: Vec<ChargeRow<'_>> = rated
        .iter()
        .flat_map(|r| {
            let u = &r.usage;
            let period = sluice_stage::period::period_of(u.at_ms);
            r.charges.iter().map(move |c| ChargeRow {
                tenant_id: &u.tenant_id,
                whose: u.relay.as_deref(),
                message_id: &u.message_id,
                recipient_idx: u.recipient_idx,
                recipient: &u.recipient,
                outcome: &u.outcome,
                service: &c.service,
                quantity: c.quantity,
                unit_price: &c.unit_price,
                amount_micros: c.amount_micros,
                currency: &r.currency,
                credit: c.credit,
                period: period.clone(),
                at_ms: u.at_ms,
            })
        })
        .collect();
    // The last line of the books' defence: the rating task checked the answer against
    // the tariff (`billing::check_charges`); whatever slips past writes nothing of its
    // batch.
    books::check_charges(op, Book::Platform, &charges)?;
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    let new_row = books::insert_charges(&mut tx, Book::Platform, &charges, now_ms, op).await?;
    // (tenant, service, period) → (quantity, amount) of the new rows, each counted once.
    let mut counters: BTreeMap<(&str, &str, &str), (i64, i64)> = BTreeMap::new();
    let mut inserted = 0;
    // Replayed charges (and repeats within the batch) were not new: they count nothing.
    for (c, _) in charges.iter().zip(&new_row).filter(|(_, new)| **new) {
        inserted += 1;
        let sum = counters
            .entry((c.tenant_id, c.service, c.period.as_str()))
            .or_default();
        sum.0 += c.quantity as i64;
        sum.1 += c.amount_micros;
    }
    for ((tenant_id, service, period), (quantity, amount_micros)) in counters {
        add_to_counter(&mut tx, tenant_id, service, period, quantity, amount_micros)
            .await
            .map_err(StoreError::db(format!(
                "{op}: counter {service:?} of tenant {tenant_id:?} for {period}"
            )))?;
    }
    let usages: Vec<&PendingUsage> = rated.iter().map(|r| &r.usage).collect();
    for chunk in usages.chunks(rows_per_statement(1) - 1) {
        let sql = format!(
            "UPDATE usage_events SET state = 'rated', rated_at_ms = $1, claim_owner = NULL, \
             claim_until_ms = NULL, last_error = NULL WHERE seq IN ({})",
            placeholders(2, chunk.len())
        );
        let sql = positional(&tx, sql);
        let mut q = sqlx::query(&sql).bind(now_ms);
        for u in chunk {
            q = q.bind(u.seq);
        }
        q.execute(&mut *tx).await.map_err(StoreError::db(format!(
            "{op}: marking {} usage events rated",
            chunk.len()
        )))?;
    }
    for chunk in usages.chunks(rows_per_statement(2)) {
        let sql = format!(
            "WITH v(message_id, idx) AS (VALUES {}) DELETE FROM reservations WHERE EXISTS \
             (SELECT 1 FROM v WHERE v.message_id = reservations.message_id \
             AND v.idx = reservations.recipient_idx)",
            value_rows(chunk.len(), 2)
        );
        let sql = positional(&tx, sql);
        let mut q = sqlx::query(&sql);
        for u in chunk {
            q = q.bind(&u.message_id).bind(i64::from(u.recipient_idx));
        }
        q.execute(&mut *tx).await.map_err(StoreError::db(format!(
            "{op}: releasing the reservations of {} usage events",
            chunk.len()
        )))?;
    }
    tx.commit().await.map_err(StoreError::db(format!(
        "{op}: commit of {} rated events",
        rated.len()
    )))?;
    Ok(inserted)
}

async fn add_to_counter(
    conn: &mut AnyConnection,
    tenant_id: &str,
    service: &str,
    period: &str,
    quantity: i64,
    amount_micros: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO period_counters (tenant_id, service, period, quantity, amount_micros) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant_id, service, period) DO UPDATE SET \
         quantity = period_counters.quantity + excluded.quantity, \
         amount_micros = period_counters.amount_micros + excluded.amount_micros",
    )
    .bind(tenant_id)
    .bind(service)
    .bind(period)
    .bind(quantity)
    .bind(amount_micros)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes a settlement as one ledger row keyed like a charge, so it is written once.
/// Returns whether it was written now.
pub(crate) async fn write_settlement(
    pools: &Pools,
    st: &Settlement,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let Settlement {
        tenant_id,
        period,
        service,
        unit_price,
        amount_micros,
        currency,
    } = st;
    let amount_micros = *amount_micros;
    let op = "write_settlement";
    let context = || format!("{op}: tenant {tenant_id:?} period {period} service {service:?}");
    let (start, end) = sluice_stage::period::period_bounds(period)
        .map_err(|e| StoreError::invalid(op, e.to_string()))?;
    let settlement_id = format!("settlement:{tenant_id}:{period}");
    // A settlement's amount may be negative (the tiers reached priced the period lower):
    // it is the platform's own sum, not a rater's answer, so it is not checked as one.
    let row = ChargeRow {
        tenant_id,
        whose: None,
        message_id: &settlement_id,
        recipient_idx: 0,
        recipient: "",
        outcome: "settlement",
        service,
        quantity: 0,
        unit_price,
        amount_micros,
        currency,
        credit: true,
        period: period.clone(),
        at_ms: end.max(start + 1) - 1,
    };
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    let written = books::insert_charges(&mut tx, Book::Platform, &[row], now_ms, op).await?[0];
    if written {
        add_to_counter(&mut tx, tenant_id, service, period, 0, amount_micros)
            .await
            .map_err(StoreError::db(context()))?;
    }
    tx.commit().await.map_err(StoreError::db(context()))?;
    Ok(written)
}

pub(crate) async fn period_counters(
    pools: &Pools,
    tenant_id: &str,
    period: &str,
) -> Result<Vec<(String, u64, i64)>, StoreError> {
    let op = "period_counters";
    let rows = sqlx::query(
        "SELECT service, quantity, amount_micros FROM period_counters \
         WHERE tenant_id = $1 AND period = $2 ORDER BY service",
    )
    .bind(tenant_id)
    .bind(period)
    .fetch_all(&pools.read)
    .await
    .map_err(StoreError::db(format!(
        "{op}: tenant {tenant_id:?} period {period}"
    )))?;
    rows.iter()
        .map(|r| {
            Ok((
                col(r, op, "service")?,
                books::quantity(r, op)?,
                col(r, op, "amount_micros")?,
            ))
        })
        .collect()
}

impl super::super::Store {
    /// Writes the charges of rated usage events in one transaction: ledger rows
    /// (insert-or-ignore on their key), the period counters of the rows inserted, the
    /// events marked rated, their reservations released. Returns how many ledger rows
    /// were inserted (0 for a replay).
    pub async fn write_charges(
        &self,
        rated: &[RatedUsage],
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let rated = rated.to_vec();
        self.on_writer(move |s| async move { write_charges(s.pools(), &rated, now_ms).await })
            .await
    }

    /// Period-to-date (service, quantity, amount in micro-units) of a tenant.
    pub async fn period_counters(
        &self,
        tenant_id: &str,
        period: &str,
    ) -> Result<Vec<(String, u64, i64)>, StoreError> {
        period_counters(self.pools(), tenant_id, period).await
    }

    /// Writes a volume-mode settlement once; returns whether this call wrote it.
    pub async fn write_settlement(&self, st: &Settlement, now_ms: i64) -> Result<bool, StoreError> {
        write_settlement(self.pools(), st, now_ms).await
    }
}

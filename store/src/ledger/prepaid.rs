//! A tenant's balance and what moves it outside rating: credits once per reference,
//! prepaid reservations (all or nothing against credits − charges − reservations), and
//! recipients held for credit put back in the queue. A tenant's first reservation that
//! falls short after one that succeeded (or ever) writes its `low_balance` event, once
//! per crossing (`tenant_billing.low_balance_at_ms` marks the tenant low until a
//! reservation succeeds again). On PostgreSQL a tenant's balance-changing transactions
//! are serialised by a row lock on its billing settings.

use serde::Serialize;
use sqlx::AnyConnection;

use super::super::StoreError;
use super::super::books::{self, Balance, Whose};
use super::super::codec::{col, get_idx};
use super::super::connect::{Backend, Pools};
use super::super::event_log::append_tenant_event;
use super::super::events::{RecipientEvent, insert_recipient_event};
use super::super::types::EventKind;

/// What [`super::Store::add_credit`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credited {
    /// False when the reference was used before: nothing was credited again.
    pub credited: bool,
    /// Held recipients put back to `queued`.
    pub released: usize,
}

/// The answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved (or already reserved earlier).
    Reserved,
    /// The balance cannot cover it; nothing was reserved.
    Short {
        available_micros: i64,
        needed_micros: i64,
    },
}

async fn balance_in(
    conn: &mut AnyConnection,
    tenant_id: &str,
    op: &str,
) -> Result<Balance, StoreError> {
    let mut balance = books::credits_and_charges(conn, Whose::Tenant(tenant_id), op).await?;
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(amount_micros), 0) AS BIGINT) AS total FROM reservations \
         WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_one(&mut *conn)
    .await
    .map_err(StoreError::db(format!("{op}: tenant {tenant_id:?}")))?;
    balance.reserved_micros = col(&row, op, "total")?;
    Ok(balance)
}

pub(crate) async fn balance(pools: &Pools, tenant_id: &str) -> Result<Balance, StoreError> {
    let op = "balance";
    let mut conn = pools.read.acquire().await.map_err(StoreError::db(op))?;
    balance_in(&mut conn, tenant_id, op).await
}

/// Serialises a tenant's balance-changing transactions on PostgreSQL (SQLite has one
/// writer already): a row lock on its billing settings, created if missing.
async fn lock_tenant(
    conn: &mut AnyConnection,
    backend: Backend,
    tenant_id: &str,
    now_ms: i64,
    op: &str,
) -> Result<(), StoreError> {
    if backend != Backend::Postgres {
        return Ok(());
    }
    let context = || format!("{op}: locking tenant {tenant_id:?}");
    sqlx::query(
        "INSERT INTO tenant_billing (tenant_id, mode, tariff, updated_at_ms) \
         VALUES ($1, 'postpaid', NULL, $2) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::db(context()))?;
    sqlx::query("SELECT tenant_id FROM tenant_billing WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::db(context()))?;
    Ok(())
}

pub(crate) async fn reserve(
    pools: &Pools,
    tenant_id: &str,
    items: &[(String, i32, i64)],
    now_ms: i64,
) -> Result<Reservation, StoreError> {
    let op = "reserve";
    if let Some(bad) = items.iter().find(|i| i.2 < 0) {
        return Err(StoreError::invalid(
            op,
            format!("negative reservation {} for message {:?}", bad.2, bad.0),
        ));
    }
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    lock_tenant(&mut tx, pools.backend, tenant_id, now_ms, op).await?;
    let mut needed = 0i64;
    let mut missing = Vec::new();
    for (message_id, idx, amount) in items {
        let row = sqlx::query(
            "SELECT amount_micros FROM reservations WHERE message_id = $1 AND recipient_idx = $2",
        )
        .bind(message_id)
        .bind(i64::from(*idx))
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db(format!("{op}: message {message_id:?}")))?;
        if row.is_none() {
            needed = needed.saturating_add(*amount);
            missing.push((message_id, *idx, *amount));
        }
    }
    let available = balance_in(&mut tx, tenant_id, op).await?.available_micros();
    if needed > available {
        // The first shortfall since the last reservation that succeeded marks the
        // tenant low, with its `low_balance` event; later ones find the mark.
        let marked = sqlx::query(
            "UPDATE tenant_billing SET low_balance_at_ms = $2 \
             WHERE tenant_id = $1 AND low_balance_at_ms IS NULL",
        )
        .bind(tenant_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(format!(
            "{op}: marking tenant {tenant_id:?} low"
        )))?;
        if marked.rows_affected() > 0 {
            let detail = serde_json::json!({
                "available_micros": available,
                "needed_micros": needed,
                "recipients": items.len(),
            });
            append_tenant_event(
                &mut tx,
                tenant_id,
                EventKind::LowBalance,
                &detail,
                now_ms,
                op,
            )
            .await?;
            tx.commit().await.map_err(StoreError::db(op))?;
        }
        return Ok(Reservation::Short {
            available_micros: available,
            needed_micros: needed,
        });
    }
    // Covered again: the next shortfall is a new crossing.
    sqlx::query(
        "UPDATE tenant_billing SET low_balance_at_ms = NULL \
         WHERE tenant_id = $1 AND low_balance_at_ms IS NOT NULL",
    )
    .bind(tenant_id)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(format!(
        "{op}: clearing tenant {tenant_id:?}'s low mark"
    )))?;
    for (message_id, idx, amount) in missing {
        sqlx::query(
            "INSERT INTO reservations (message_id, recipient_idx, tenant_id, amount_micros, \
             created_at_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (message_id, recipient_idx) DO NOTHING",
        )
        .bind(message_id)
        .bind(i64::from(idx))
        .bind(tenant_id)
        .bind(amount)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(format!(
            "{op}: message {message_id:?} recipient {idx}"
        )))?;
    }
    tx.commit().await.map_err(StoreError::db(op))?;
    Ok(Reservation::Reserved)
}

pub(crate) async fn add_credit(
    pools: &Pools,
    tenant_id: &str,
    amount_micros: i64,
    currency: &str,
    reference: &str,
    now_ms: i64,
) -> Result<Credited, StoreError> {
    let op = "add_credit";
    books::check_credit(op, amount_micros, reference)?;
    let context = || format!("{op}: tenant {tenant_id:?} reference {reference:?}");
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    books::must_exist(&mut tx, Whose::Tenant(tenant_id), op).await?;
    lock_tenant(&mut tx, pools.backend, tenant_id, now_ms, op).await?;
    let credited = books::insert_credit(
        &mut tx,
        Whose::Tenant(tenant_id),
        reference,
        amount_micros,
        currency,
        now_ms,
        op,
    )
    .await?;
    // Held recipients get another try either way: they are authorised again at
    // dispatch, and those the balance still cannot cover are held again.
    let detail = serde_json::json!({"reason": "credited", "reference": reference});
    let released = release_held_in(&mut tx, tenant_id, &detail, now_ms, op).await?;
    tx.commit().await.map_err(StoreError::db(context()))?;
    Ok(Credited { credited, released })
}

/// Puts a tenant's held recipients back to `queued`, each with a `released` event
/// carrying `detail`; how many.
async fn release_held_in(
    tx: &mut AnyConnection,
    tenant_id: &str,
    detail: &serde_json::Value,
    now_ms: i64,
    op: &str,
) -> Result<usize, StoreError> {
    let context = || format!("{op}: releasing the held recipients of tenant {tenant_id:?}");
    let released = sqlx::query(
        "UPDATE recipients SET state = 'queued', next_attempt_at_ms = $2, updated_at_ms = $2 \
         WHERE state = 'held' AND hold IS NULL \
         AND message_id IN (SELECT id FROM messages WHERE tenant_id = $1) \
         RETURNING message_id, idx",
    )
    .bind(tenant_id)
    .bind(now_ms)
    .fetch_all(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?;
    for r in &released {
        let message_id: String = col(r, op, "message_id")?;
        let idx = get_idx(r, op, "idx")?;
        let ev = RecipientEvent {
            message_id: &message_id,
            recipient_idx: idx,
            kind: EventKind::Released,
            relay: None,
            detail,
            at_ms: now_ms,
        };
        insert_recipient_event(&mut *tx, ev, op).await?;
    }
    Ok(released.len())
}

pub(crate) async fn release_held(
    pools: &Pools,
    tenant_id: &str,
    detail: &serde_json::Value,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let op = "release_held";
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    let n = release_held_in(&mut tx, tenant_id, detail, now_ms, op).await?;
    tx.commit().await.map_err(StoreError::db(op))?;
    Ok(n)
}

impl super::super::Store {
    /// Credits, charges and reservations of a tenant, exact.
    pub async fn balance(&self, tenant_id: &str) -> Result<Balance, StoreError> {
        balance(self.pools(), tenant_id).await
    }

    /// Reserves the estimated cost of recipients `(message, idx, micros)` if credits −
    /// charges − reservations cover what is not reserved yet; all or nothing.
    pub async fn reserve(
        &self,
        tenant_id: &str,
        items: &[(String, i32, i64)],
        now_ms: i64,
    ) -> Result<Reservation, StoreError> {
        reserve(self.pools(), tenant_id, items, now_ms).await
    }

    /// Puts a tenant's held recipients back to `queued` (each with a `released` event
    /// carrying `detail`), to be authorised again at dispatch; how many.
    pub async fn release_held(
        &self,
        tenant_id: &str,
        detail: &serde_json::Value,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        release_held(self.pools(), tenant_id, detail, now_ms).await
    }

    /// Credits a tenant once per `reference` and puts its held recipients back to
    /// `queued` (with a `released` event). `NotFound` if there is no such tenant.
    pub async fn add_credit(
        &self,
        tenant_id: &str,
        amount_micros: i64,
        currency: &str,
        reference: &str,
        now_ms: i64,
    ) -> Result<Credited, StoreError> {
        add_credit(
            self.pools(),
            tenant_id,
            amount_micros,
            currency,
            reference,
            now_ms,
        )
        .await
    }
}

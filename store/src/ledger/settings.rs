//! How each tenant pays (postpaid or prepaid, volume settlement) and on which tariff.

use serde::Serialize;

use super::super::StoreError;
use super::super::codec::{col, corrupt};
use super::super::connect::Pools;

/// How a tenant pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BalanceMode {
    /// Each message is authorised against the balance before it is sent.
    Prepaid,
    /// Charged as used, invoiced per period.
    Postpaid,
}

impl BalanceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepaid => "prepaid",
            Self::Postpaid => "postpaid",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "prepaid" => Some(Self::Prepaid),
            "postpaid" => Some(Self::Postpaid),
            _ => None,
        }
    }
}

/// A tenant's billing settings; a tenant without any is postpaid on the platform tariff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BillingSettings {
    pub tenant_id: String,
    pub mode: BalanceMode,
    /// The tariff document its rater reads; `None` = the platform's default tariff.
    pub tariff: Option<String>,
    pub updated_at_ms: i64,
}

pub(crate) async fn set_billing(
    pools: &Pools,
    tenant_id: &str,
    mode: BalanceMode,
    tariff: Option<&str>,
    now_ms: i64,
) -> Result<BillingSettings, StoreError> {
    let op = "set_billing";
    let context = || format!("{op}: tenant {tenant_id:?}");
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
    sqlx::query(
        "INSERT INTO tenant_billing (tenant_id, mode, tariff, updated_at_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id) DO UPDATE SET mode = excluded.mode, tariff = excluded.tariff, \
         updated_at_ms = excluded.updated_at_ms",
    )
    .bind(tenant_id)
    .bind(mode.as_str())
    .bind(tariff.map(str::to_owned))
    .bind(now_ms)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?;
    tx.commit().await.map_err(StoreError::db(context()))?;
    Ok(BillingSettings {
        tenant_id: tenant_id.to_owned(),
        mode,
        tariff: tariff.map(str::to_owned),
        updated_at_ms: now_ms,
    })
}

pub(crate) async fn get_billing(
    pools: &Pools,
    tenant_id: &str,
) -> Result<Option<BillingSettings>, StoreError> {
    let op = "get_billing";
    let row = sqlx::query(
        "SELECT tenant_id, mode, tariff, updated_at_ms FROM tenant_billing WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(&pools.read)
    .await
    .map_err(StoreError::db(format!("{op}: tenant {tenant_id:?}")))?;
    row.map(|r| {
        let mode: String = col(&r, op, "mode")?;
        Ok(BillingSettings {
            tenant_id: col(&r, op, "tenant_id")?,
            mode: BalanceMode::parse(&mode)
                .ok_or_else(|| corrupt(&format!("{op}: column mode"), &mode))?,
            tariff: col(&r, op, "tariff")?,
            updated_at_ms: col(&r, op, "updated_at_ms")?,
        })
    })
    .transpose()
}

impl super::super::Store {
    /// A tenant's billing settings; `None` = postpaid on the platform tariff.
    pub async fn get_billing(
        &self,
        tenant_id: &str,
    ) -> Result<Option<BillingSettings>, StoreError> {
        get_billing(self.pools(), tenant_id).await
    }

    /// Sets a tenant's balance mode and tariff document (`None` = the platform's);
    /// `NotFound` if there is no such tenant.
    pub async fn set_billing(
        &self,
        tenant_id: &str,
        mode: BalanceMode,
        tariff: Option<&str>,
        now_ms: i64,
    ) -> Result<BillingSettings, StoreError> {
        set_billing(self.pools(), tenant_id, mode, tariff, now_ms).await
    }
}

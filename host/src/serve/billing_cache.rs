//! Tenants' billing settings as this host caches them: held by the server's state, read
//! and filled by `billing.rs`.

use crate::store::BalanceMode;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// A tenant's billing as this host uses it.
#[derive(Debug, Clone)]
pub struct TenantBilling {
    pub mode: BalanceMode,
    pub tariff: String,
}

/// Billing settings cached per tenant.
#[derive(Default)]
pub struct BillingCache {
    pub(super) settings: Mutex<HashMap<String, (TenantBilling, Instant)>>,
}

impl BillingCache {
    /// Forgets a tenant's cached settings (after a change through the admin API).
    pub fn forget(&self, tenant_id: &str) {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant_id);
    }
}

//! Each tenant's accounts as dispatch reads them, cached on this host: held by the
//! server's state, read and filled by `account_billing.rs`.

use crate::store::BalanceMode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a tenant's accounts are cached on this host for the check at dispatch.
pub(super) const ACCOUNTS_TTL: Duration = Duration::from_secs(2);

/// A tenant's accounts as dispatch reads them: logins and modes.
#[derive(Debug, Default)]
pub struct AccountRules {
    /// Lower-case login → index in `accounts`.
    pub(super) by_login: HashMap<String, usize>,
    /// (id, mode).
    pub(super) accounts: Vec<(String, BalanceMode)>,
}

impl AccountRules {
    pub(super) fn account_of(&self, address: &str) -> Option<usize> {
        let address = address.to_ascii_lowercase();
        let (_, domain) = address.rsplit_once('@')?;
        self.by_login
            .get(&address)
            .or_else(|| self.by_login.get(domain))
            .copied()
    }

    /// The account of a recipient: by the sender, else by the recipient.
    pub(super) fn of(&self, sender: &str, recipient: &str) -> Option<usize> {
        self.account_of(sender)
            .or_else(|| self.account_of(recipient))
    }
}

/// Each tenant's [`AccountRules`], cached for [`ACCOUNTS_TTL`], read from the store by
/// one caller at a time (single flight). Dispatch asks for every group, hundreds at once
/// under load; when the rules expired, each of them read every account and login of the
/// tenant again (20,000 logins in the benchmark) until one of the reads landed. Now one
/// reads; the others keep using the expired rules meanwhile (a read's time older than
/// the TTL at most), or wait for that read when there are none (first use, or after
/// [`AccountsCache::forget`]).
#[derive(Default)]
pub struct AccountsCache {
    pub(super) by_tenant: Mutex<HashMap<String, Slot>>,
}

#[derive(Default)]
pub(super) struct Slot {
    /// The rules and when they were read.
    pub(super) rules: Option<(Arc<AccountRules>, Instant)>,
    /// Bumped by `forget`: a read begun before it answers its caller but is not kept.
    pub(super) generation: u64,
    /// Held by the one read in progress.
    pub(super) read: Arc<tokio::sync::Mutex<()>>,
}

impl AccountsCache {
    /// Forgets a tenant's accounts (after a change through the API on this host).
    pub fn forget(&self, tenant_id: &str) {
        if let Some(slot) = self.slots().get_mut(tenant_id) {
            slot.rules = None;
            slot.generation += 1;
        }
    }

    pub(super) fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.by_tenant.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tenant's rules if read less than [`ACCOUNTS_TTL`] ago.
    pub(super) fn fresh(&self, tenant_id: &str) -> Option<Arc<AccountRules>> {
        match self.slots().get(tenant_id)?.rules.as_ref()? {
            (rules, at) if at.elapsed() < ACCOUNTS_TTL => Some(rules.clone()),
            _ => None,
        }
    }
}

//! How often a tenant may upload plugins on this host: a rate for every upload and a
//! stricter one for refused uploads (each refused upload may have cost a compilation),
//! each a burst then a steady rate, and one upload of a tenant checked at a time.
//!
//! Each rate is a GCRA (generic cell rate algorithm): one instant per tenant, the
//! "theoretical arrival time", advanced by the interval on every use; a use is allowed
//! while that instant is at most `burst - 1` intervals ahead of now. The answer to a
//! refusal is exactly when the next use will be allowed (`Retry-After`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A burst of `burst` uses, then one per `interval`.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub interval: Duration,
    pub burst: u32,
}

impl Rate {
    /// `per_hour` uses an hour after a burst of `burst`.
    pub fn per_hour(per_hour: u32, burst: u32) -> Rate {
        Rate {
            interval: Duration::from_secs(3600) / per_hour.max(1),
            burst: burst.max(1),
        }
    }

    /// `per_sec` uses a second after a burst of `burst`.
    pub fn per_sec(per_sec: u32, burst: u32) -> Rate {
        Rate {
            interval: Duration::from_secs(1) / per_sec.max(1),
            burst: burst.max(1),
        }
    }

    fn tolerance(&self) -> Duration {
        self.interval * (self.burst - 1)
    }

    /// How long until a use is allowed with `tat` (zero: now).
    pub(super) fn wait(&self, tat: Option<Instant>, now: Instant) -> Duration {
        match tat {
            Some(tat) => tat.saturating_duration_since(now + self.tolerance()),
            None => Duration::ZERO,
        }
    }

    pub(super) fn take(&self, tat: &mut Option<Instant>, now: Instant) {
        let base = tat.map_or(now, |t| t.max(now));
        *tat = Some(base + self.interval);
    }
}

#[derive(Debug, Default)]
struct TenantState {
    uploads: Option<Instant>,
    failures: Option<Instant>,
    checking: bool,
}

/// Why an upload may not start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Too many uploads; the next is allowed after this long.
    Uploads(Duration),
    /// Too many refused uploads; the next is allowed after this long.
    Failures(Duration),
    /// Another upload of this tenant is being checked.
    Busy,
}

/// The upload rates of every tenant on this host.
#[derive(Debug)]
pub struct UploadLimits {
    uploads: Rate,
    failures: Rate,
    tenants: Mutex<HashMap<String, TenantState>>,
}

/// Held while an upload is checked; ends the tenant's turn when dropped.
#[derive(Debug)]
pub struct Turn<'a> {
    limits: &'a UploadLimits,
    tenant: String,
}

impl Turn<'_> {
    /// Counts the upload as refused (it breaks a limit or fails its checks).
    pub fn failed(&self) {
        self.failed_at(Instant::now());
    }

    fn failed_at(&self, now: Instant) {
        let mut tenants = self.limits.lock();
        let t = tenants.entry(self.tenant.clone()).or_default();
        self.limits.failures.take(&mut t.failures, now);
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.limits.lock().get_mut(&self.tenant) {
            t.checking = false;
        }
    }
}

impl UploadLimits {
    pub fn new(uploads: Rate, failures: Rate) -> UploadLimits {
        UploadLimits {
            uploads,
            failures,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TenantState>> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts an upload of `tenant` if its rates allow one now, counting it.
    pub fn start(&self, tenant: &str) -> Result<Turn<'_>, Refused> {
        self.start_at(tenant, Instant::now())
    }

    fn start_at(&self, tenant: &str, now: Instant) -> Result<Turn<'_>, Refused> {
        let mut tenants = self.lock();
        let t = tenants.entry(tenant.to_owned()).or_default();
        if t.checking {
            return Err(Refused::Busy);
        }
        let wait = self.failures.wait(t.failures, now);
        if !wait.is_zero() {
            return Err(Refused::Failures(wait));
        }
        let wait = self.uploads.wait(t.uploads, now);
        if !wait.is_zero() {
            return Err(Refused::Uploads(wait));
        }
        self.uploads.take(&mut t.uploads, now);
        t.checking = true;
        Ok(Turn {
            limits: self,
            tenant: tenant.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_failures_apart() {
        let l = UploadLimits::new(Rate::per_hour(60, 3), Rate::per_hour(6, 2));
        let now = Instant::now();
        for _ in 0..3 {
            drop(l.start_at("a", now).unwrap());
        }
        assert_eq!(
            l.start_at("a", now).unwrap_err(),
            Refused::Uploads(Duration::from_secs(60))
        );
        // Another tenant is not held back.
        drop(l.start_at("b", now).unwrap());
        drop(l.start_at("a", now + Duration::from_secs(60)).unwrap());
        let later = now + Duration::from_secs(3600);
        let turn = l.start_at("b", later).unwrap();
        assert_eq!(l.start_at("b", later).unwrap_err(), Refused::Busy);
        turn.failed_at(later);
        turn.failed_at(later);
        drop(turn);
        assert_eq!(
            l.start_at("b", later).unwrap_err(),
            Refused::Failures(Duration::from_secs(600))
        );
    }
}

//! Per-tenant admission (`[admission]`): how many of a tenant's requests this host
//! handles at once, and how fast it accepts a tenant's submissions. A tenant past
//! either is refused at once, before its request's body is read, and is told when to
//! come back; it never waits for a turn, so nothing it sends holds up another tenant.
//!
//! Without this, one tenant flooding `POST /v1/messages` takes the request workers,
//! the CPU that parses and checks messages and the group-commit writer's rounds in
//! proportion to how hard it sends, and every other tenant's requests queue behind
//! its own (`BENCHMARKS.md`, noisy neighbour: quiet's p99 went 11.7× while a neighbour
//! flooded). Bounding each tenant's share of requests in progress bounds its share of
//! all three; the accept rate bounds the work a tenant can make the host do over time.
//!
//! Plain data, no I/O and no HTTP: the HTTP API maps a refusal to 429 (`api.rs`), and
//! an SMTP submission listener would map it to a 421/451 reply the same way.
//! The rate is a GCRA (as [`super::upload_limits::Rate`]): a burst, then one per
//! interval, and a refusal says exactly when the next request would pass.

use super::upload_limits::Rate;
use crate::config::{Admission as Config, TenantAdmission};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a tenant's request is not admitted now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The tenant already has `limit` requests being handled on this host.
    InFlight { limit: u32 },
    /// The tenant's accept rate is spent; the next submission passes after `retry_after`.
    Rate {
        per_sec: u32,
        burst: u32,
        retry_after: Duration,
    },
}

impl Refused {
    /// The configuration key that set the limit.
    pub fn limit_key(&self) -> &'static str {
        match self {
            Refused::InFlight { .. } => "admission.max_requests_in_flight",
            Refused::Rate { .. } => "admission.accepts_per_sec",
        }
    }

    /// Whole seconds to wait before trying again (at least one).
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            // Requests in progress end within milliseconds to seconds.
            Refused::InFlight { .. } => 1,
            Refused::Rate { retry_after, .. } => retry_after.as_secs_f64().ceil().max(1.0) as u64,
        }
    }
}

/// What a request asks to be admitted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any request of the tenant: counted against its requests in flight only.
    Request,
    /// A submission (a message to accept): also takes one from its accept rate.
    Submission,
}

#[derive(Debug, Default)]
struct TenantState {
    in_flight: u32,
    /// The GCRA's theoretical arrival time of the next submission.
    tat: Option<Instant>,
}

/// One tenant's limits, resolved from the defaults and its overrides.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_in_flight: u32,
    rate: Rate,
    per_sec: u32,
}

impl Limits {
    fn of(t: &TenantAdmission) -> Limits {
        Limits {
            max_in_flight: t.max_requests_in_flight,
            rate: Rate::per_sec(t.accepts_per_sec, t.accept_burst),
            per_sec: t.accepts_per_sec,
        }
    }
}

/// Every tenant's admission state on this host.
#[derive(Debug)]
pub struct Admission {
    /// The defaults and the per-tenant overrides; a SIGHUP reload replaces them.
    limits: std::sync::RwLock<Configured>,
    /// Only tenants with requests in progress or a rate still recovering are kept:
    /// an entry is dropped once it holds nothing, so the map is bounded by the
    /// tenants active in the last burst's worth of time.
    tenants: Mutex<HashMap<String, TenantState>>,
}

/// Held while a request is handled; gives its place back when dropped.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    tenant: String,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.leave(&self.tenant, Instant::now());
    }
}

/// `[admission]` as configured: the defaults and each overridden tenant's limits.
#[derive(Debug)]
struct Configured {
    default: Limits,
    overrides: HashMap<String, Limits>,
}

impl Configured {
    fn of(config: &Config) -> Configured {
        Configured {
            default: Limits::of(&config.default),
            overrides: config
                .tenants
                .iter()
                .map(|(id, t)| (id.clone(), Limits::of(t)))
                .collect(),
        }
    }
}

impl Admission {
    pub fn new(config: &Config) -> Admission {
        Admission {
            limits: std::sync::RwLock::new(Configured::of(config)),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// Puts a reloaded `[admission]` in force. Requests already admitted keep their
    /// places; a tenant's next request is checked against its new limits, and its
    /// rate state carries over (a tenant does not get a fresh burst from a reload).
    pub fn reconfigure(&self, config: &Config) {
        let configured = Configured::of(config);
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = configured;
    }

    fn limits(&self, tenant: &str) -> Limits {
        let configured = self.limits.read().unwrap_or_else(|p| p.into_inner());
        configured
            .overrides
            .get(tenant)
            .copied()
            .unwrap_or(configured.default)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TenantState>> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits one request of `tenant` now, or says why not. Never waits.
    pub fn admit(self: &Arc<Self>, tenant: &str, kind: Kind) -> Result<Admitted, Refused> {
        self.admit_at(tenant, kind, Instant::now())
    }

    fn admit_at(
        self: &Arc<Self>,
        tenant: &str,
        kind: Kind,
        now: Instant,
    ) -> Result<Admitted, Refused> {
        let limits = self.limits(tenant);
        let mut tenants = self.lock();
        // No entry is made for a refusal: a refused request changes nothing.
        let state = tenants.get(tenant);
        if state.is_some_and(|s| s.in_flight >= limits.max_in_flight) {
            return Err(Refused::InFlight {
                limit: limits.max_in_flight,
            });
        }
        if kind == Kind::Submission {
            let wait = limits.rate.wait(state.and_then(|s| s.tat), now);
            if !wait.is_zero() {
                return Err(Refused::Rate {
                    per_sec: limits.per_sec,
                    burst: limits.rate.burst,
                    retry_after: wait,
                });
            }
        }
        let state = tenants.entry(tenant.to_owned()).or_default();
        if kind == Kind::Submission {
            limits.rate.take(&mut state.tat, now);
        }
        state.in_flight += 1;
        Ok(Admitted {
            admission: Arc::clone(self),
            tenant: tenant.to_owned(),
        })
    }

    fn leave(&self, tenant: &str, now: Instant) {
        let mut tenants = self.lock();
        if let Some(state) = tenants.get_mut(tenant) {
            state.in_flight = state.in_flight.saturating_sub(1);
            // Past its theoretical arrival time a tenant's bucket is full again:
            // forgetting it changes no later answer.
            if state.in_flight == 0 && state.tat.is_none_or(|t| t <= now) {
                tenants.remove(tenant);
            }
        }
    }

    /// Tenants with an entry (requests in progress or a rate recovering).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn admission(
        default: TenantAdmission,
        overrides: &[(&str, TenantAdmission)],
    ) -> Arc<Admission> {
        Arc::new(Admission::new(&Config {
            default,
            tenants: overrides
                .iter()
                .map(|(id, t)| (id.to_string(), *t))
                .collect::<BTreeMap<_, _>>(),
        }))
    }

    fn limits(
        max_requests_in_flight: u32,
        accepts_per_sec: u32,
        accept_burst: u32,
    ) -> TenantAdmission {
        TenantAdmission {
            max_requests_in_flight,
            accepts_per_sec,
            accept_burst,
        }
    }

    #[test]
    fn a_tenant_at_its_requests_in_flight_is_refused_and_others_are_not() {
        let a = admission(limits(2, 1000, 1000), &[]);
        let now = Instant::now();
        let first = a.admit_at("a", Kind::Request, now).unwrap();
        let _second = a.admit_at("a", Kind::Submission, now).unwrap();
        assert_eq!(
            a.admit_at("a", Kind::Request, now).unwrap_err(),
            Refused::InFlight { limit: 2 }
        );
        let _other = a.admit_at("c", Kind::Submission, now).unwrap();
        drop(first);
        a.admit_at("a", Kind::Request, now).unwrap();
    }

    #[test]
    fn the_rate_allows_a_burst_then_one_per_interval_and_says_when() {
        let a = admission(limits(100, 10, 3), &[("big", limits(100, 1000, 1000))]);
        let now = Instant::now();
        for _ in 0..3 {
            drop(a.admit_at("a", Kind::Submission, now).unwrap());
        }
        let refused = a.admit_at("a", Kind::Submission, now).unwrap_err();
        assert_eq!(
            refused,
            Refused::Rate {
                per_sec: 10,
                burst: 3,
                retry_after: Duration::from_millis(100)
            }
        );
        assert_eq!(refused.retry_after_secs(), 1);
        assert_eq!(refused.limit_key(), "admission.accepts_per_sec");
        // Other requests of the tenant are not rate limited, and a refusal took nothing.
        drop(a.admit_at("a", Kind::Request, now).unwrap());
        drop(
            a.admit_at("a", Kind::Submission, now + Duration::from_millis(100))
                .unwrap(),
        );
        // The override holds for its tenant only.
        for _ in 0..500 {
            drop(a.admit_at("big", Kind::Submission, now).unwrap());
        }
    }

    #[test]
    fn idle_tenants_are_forgotten() {
        let a = admission(limits(4, 1, 10), &[]);
        let now = Instant::now();
        let held = a.admit_at("a", Kind::Request, now).unwrap();
        assert_eq!(a.tracked(), 1);
        drop(held);
        assert_eq!(a.tracked(), 0, "nothing in flight, no rate used");
        // A submission's use of the rate (one a second) keeps the entry until its
        // bucket is full again.
        drop(a.admit_at("b", Kind::Submission, now).unwrap());
        assert_eq!(a.tracked(), 1);
        let held = a.admit_at("b", Kind::Request, now).unwrap();
        std::mem::forget(held);
        a.leave("b", now + Duration::from_secs(1));
        assert_eq!(a.tracked(), 0);
    }

    #[test]
    fn a_reconfiguration_applies_to_the_next_request() {
        let a = admission(limits(1, 1000, 1000), &[]);
        let now = Instant::now();
        let held = a.admit_at("a", Kind::Request, now).unwrap();
        assert!(a.admit_at("a", Kind::Request, now).is_err());
        a.reconfigure(&Config {
            default: limits(1, 1000, 1000),
            tenants: BTreeMap::from([("a".to_string(), limits(2, 1000, 1000))]),
        });
        let second = a.admit_at("a", Kind::Request, now).unwrap();
        assert_eq!(
            a.admit_at("a", Kind::Request, now).unwrap_err(),
            Refused::InFlight { limit: 2 },
            "the requests admitted before the reload still count"
        );
        drop((held, second));
        assert_eq!(a.tracked(), 0);
    }
}

//! Per-tenant admission (`[admission]`): how many of a tenant's requests this host
//! handles at once, and how fast it accepts a tenant's submissions. A tenant past
//! either is held, not served: its request waits, its body unread and with no worker
//! spent on it, until its turn comes (a place among its requests in flight, its next
//! submission by its rate) or `max_hold_ms` has passed, then it is let in or refused
//! with 429 and told when to come back. At most `max_held_requests` of a tenant's
//! requests are held at once; past that it is refused at once.
//!
//! Without this, one tenant flooding `POST /v1/messages` takes the request workers,
//! the CPU that parses and checks messages and the group-commit writer's rounds in
//! proportion to how hard it sends, and every other tenant's requests queue behind
//! its own (`benchmarks/HISTORY.md`, noisy neighbour: quiet's p99 went 11.7× while a neighbour
//! flooded). Bounding each tenant's share of requests in progress bounds its share of
//! all three; the accept rate bounds the work a tenant can make the host do over time.
//! Holding instead of refusing at once matters because a refusal is cheap but not free:
//! a client that retries at once turns a refusal into a busy loop on both ends of the
//! connection (13× quiet's p99 in the release bench with the flood mostly refused),
//! while a held request costs a timer and the connection's memory until it is answered.
//! A held tenant waits for its own turns only, never for another tenant's.
//!
//! Plain data and timers, no HTTP: the HTTP API maps a refusal to 429 (`api.rs`), and
//! an SMTP submission listener would map it to a 421/451 reply the same way.
//! The rate is a GCRA (as [`super::upload_limits::Rate`]): a burst, then one per
//! interval, and a refusal says exactly when the next request would pass. A held
//! submission reserves its turn of the rate at once (the GCRA's arrival time moves on),
//! so held submissions are let in in the order they came, one per interval.

use super::upload_limits::Rate;
use crate::config::{Admission as Config, TenantAdmission};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

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
    /// Requests held, waiting for their turn.
    held: u32,
    /// The GCRA's theoretical arrival time of the next submission.
    tat: Option<Instant>,
    /// Wakes a held request when one of the tenant's requests in flight ends.
    freed: Arc<Notify>,
}

impl TenantState {
    /// Whether the entry can be forgotten without changing a later answer: nothing in
    /// flight or held, and past its theoretical arrival time the bucket is full again.
    fn idle(&self, now: Instant) -> bool {
        self.in_flight == 0 && self.held == 0 && self.tat.is_none_or(|t| t <= now)
    }
}

/// One tenant's limits, resolved from the defaults and its overrides.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_in_flight: u32,
    rate: Rate,
    per_sec: u32,
    max_hold: Duration,
    max_held: u32,
}

impl Limits {
    fn of(t: &TenantAdmission) -> Limits {
        Limits {
            max_in_flight: t.max_requests_in_flight,
            rate: Rate::per_sec(t.accepts_per_sec, t.accept_burst),
            per_sec: t.accepts_per_sec,
            max_hold: Duration::from_millis(u64::from(t.max_hold_ms)),
            max_held: if t.max_hold_ms == 0 {
                0
            } else {
                t.max_held_requests
            },
        }
    }
}

/// Every tenant's admission state on this host.
#[derive(Debug)]
pub struct Admission {
    /// The defaults and the per-tenant overrides; a SIGHUP reload replaces them.
    limits: std::sync::RwLock<Configured>,
    /// Only tenants with requests in progress or held, or a rate still recovering, are
    /// kept: an entry is dropped once it holds nothing, so the map is bounded by the
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

/// A request's place among its tenant's held requests while it waits. `counted` says
/// whether it has one; dropped with one (the client went away while held), the place
/// is given back.
struct Holding<'a> {
    admission: &'a Admission,
    tenant: &'a str,
    counted: bool,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let mut tenants = self.admission.lock();
        if let Some(state) = tenants.get_mut(self.tenant) {
            state.held = state.held.saturating_sub(1);
            if state.idle(Instant::now()) {
                tenants.remove(self.tenant);
            }
        }
    }
}

/// What a request does next, decided under the lock.
enum Step {
    Admitted(Admitted),
    Refused(Refused),
    /// Held until this instant (its reserved turn of the rate, or the end of its hold).
    SleepUntil(Instant),
    /// Held until one of the tenant's requests in flight ends, or `deadline`.
    AwaitSlot(Arc<Notify>),
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

    /// Puts a reloaded `[admission]` in force. Requests already admitted or held keep
    /// their places (a held request keeps the hold it started with); a tenant's next
    /// request is checked against its new limits, and its rate state carries over (a
    /// tenant does not get a fresh burst from a reload).
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

    /// Admits one request of `tenant`, holding it first if the tenant is past a limit
    /// (at most its `max_hold_ms`, and only while fewer than `max_held_requests` of its
    /// requests are held), or says why not.
    pub async fn admit(self: &Arc<Self>, tenant: &str, kind: Kind) -> Result<Admitted, Refused> {
        let start = Instant::now();
        let limits = self.limits(tenant);
        let deadline = start + limits.max_hold;
        let mut rate_taken = kind == Kind::Request;
        let mut holding = Holding {
            admission: self,
            tenant,
            counted: false,
        };
        loop {
            let step = self.step(
                tenant,
                &limits,
                &mut rate_taken,
                &mut holding.counted,
                deadline,
                Instant::now(),
            );
            match step {
                Step::Admitted(a) => return Ok(a),
                Step::Refused(r) => return Err(r),
                Step::SleepUntil(t) => tokio::time::sleep_until(t.into()).await,
                Step::AwaitSlot(freed) => {
                    // A slot freed between the step and here left a permit: no wake-up
                    // is lost. Past the deadline the next step refuses.
                    let _ = tokio::time::timeout_at(deadline.into(), freed.notified()).await;
                }
            }
        }
    }

    /// One decision for a request: let in, refuse, or hold (and how). `rate_taken` is
    /// set once the request has its turn of the rate (taken or reserved); `held` while
    /// it is counted among the tenant's held requests.
    fn step(
        self: &Arc<Self>,
        tenant: &str,
        limits: &Limits,
        rate_taken: &mut bool,
        held: &mut bool,
        deadline: Instant,
        now: Instant,
    ) -> Step {
        let mut tenants = self.lock();
        if !tenants.contains_key(tenant) {
            tenants.insert(tenant.to_owned(), TenantState::default());
        }
        let Some(state) = tenants.get_mut(tenant) else {
            unreachable!("inserted above under the same lock")
        };
        let may_hold = now < deadline && (*held || state.held < limits.max_held);
        fn hold(state: &mut TenantState, held: &mut bool) {
            if !*held {
                state.held += 1;
                *held = true;
            }
        }
        let refused = 'decide: {
            if !*rate_taken {
                let wait = limits.rate.wait(state.tat, now);
                if wait.is_zero() {
                    limits.rate.take(&mut state.tat, now);
                    *rate_taken = true;
                } else if may_hold && now + wait <= deadline {
                    // Its turn comes within the hold: reserve it and sleep until then.
                    limits.rate.take(&mut state.tat, now);
                    *rate_taken = true;
                    hold(state, held);
                    return Step::SleepUntil(now + wait);
                } else if may_hold {
                    // Its turn is further off than the hold: hold it all the same (a
                    // client that does not wait for `Retry-After` waits here), then
                    // refuse.
                    hold(state, held);
                    return Step::SleepUntil(deadline);
                } else {
                    break 'decide Refused::Rate {
                        per_sec: limits.per_sec,
                        burst: limits.rate.burst,
                        retry_after: wait,
                    };
                }
            }
            if state.in_flight < limits.max_in_flight {
                state.in_flight += 1;
                if *held {
                    state.held -= 1;
                    *held = false;
                    // Another held request may fit too (two places freed while one
                    // waiter was woken).
                    if state.held > 0 && state.in_flight < limits.max_in_flight {
                        state.freed.notify_one();
                    }
                }
                return Step::Admitted(Admitted {
                    admission: Arc::clone(self),
                    tenant: tenant.to_owned(),
                });
            }
            if may_hold {
                hold(state, held);
                return Step::AwaitSlot(Arc::clone(&state.freed));
            }
            // A submission refused here keeps the turn of the rate it took: a tenant
            // past both limits loses it.
            Refused::InFlight {
                limit: limits.max_in_flight,
            }
        };
        if *held {
            state.held -= 1;
            *held = false;
        }
        if state.idle(now) {
            tenants.remove(tenant);
        }
        Step::Refused(refused)
    }

    fn leave(&self, tenant: &str, now: Instant) {
        let mut tenants = self.lock();
        if let Some(state) = tenants.get_mut(tenant) {
            state.in_flight = state.in_flight.saturating_sub(1);
            if state.held > 0 {
                state.freed.notify_one();
            }
            if state.idle(now) {
                tenants.remove(tenant);
            }
        }
    }

    /// Admits one request of `tenant` at `now` or says why not, never holding it.
    #[cfg(test)]
    fn admit_at(
        self: &Arc<Self>,
        tenant: &str,
        kind: Kind,
        now: Instant,
    ) -> Result<Admitted, Refused> {
        let limits = self.limits(tenant);
        let (mut rate_taken, mut held) = (kind == Kind::Request, false);
        match self.step(tenant, &limits, &mut rate_taken, &mut held, now, now) {
            Step::Admitted(a) => Ok(a),
            Step::Refused(r) => Err(r),
            Step::SleepUntil(_) | Step::AwaitSlot(_) => unreachable!("no hold at its deadline"),
        }
    }

    /// Tenants with an entry (requests in progress or held, or a rate recovering).
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
            max_hold_ms: 1000,
            max_held_requests: 32,
        }
    }

    fn holding(base: TenantAdmission, max_hold_ms: u32, max_held_requests: u32) -> TenantAdmission {
        TenantAdmission {
            max_hold_ms,
            max_held_requests,
            ..base
        }
    }

    #[tokio::test]
    async fn a_submission_past_the_rate_is_held_for_its_turn_not_refused() {
        // One a millisecond after a burst of one: each later submission waits for its
        // turn, well within the hold, and none is refused.
        let a = admission(holding(limits(100, 1000, 1), 60_000, 4), &[]);
        for _ in 0..20 {
            drop(a.admit("a", Kind::Submission).await.unwrap());
        }
        // Four at once, all held (four may be): each is let in at its turn.
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let a = a.clone();
                tokio::spawn(async move { a.admit("a", Kind::Submission).await.map(drop) })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_held_request_is_let_in_when_a_place_frees_and_the_surplus_is_refused() {
        let a = admission(holding(limits(1, 1000, 1000), 60_000, 2), &[]);
        let first = a.admit("a", Kind::Request).await.unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let a = a.clone();
                tokio::spawn(async move { a.admit("a", Kind::Request).await.map(drop) })
            })
            .collect();
        // Both held (the map's count), then a third is refused at once: the tenant's
        // held requests are full.
        let deadline = Instant::now() + Duration::from_secs(30);
        while a.lock().get("a").map_or(0, |s| s.held) < 2 {
            assert!(
                Instant::now() < deadline,
                "the two requests were never held"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(
            a.admit("a", Kind::Request).await.unwrap_err(),
            Refused::InFlight { limit: 1 }
        );
        // Another tenant is not held.
        drop(a.admit("c", Kind::Request).await.unwrap());
        drop(first);
        for w in waiters {
            w.await.unwrap().unwrap();
        }
        assert_eq!(a.tracked(), 0);
    }

    #[tokio::test]
    async fn a_request_held_past_its_hold_is_refused_and_leaves_nothing() {
        let a = admission(holding(limits(1, 1, 1), 20, 4), &[]);
        let first = a.admit("a", Kind::Request).await.unwrap();
        assert_eq!(
            a.admit("a", Kind::Request).await.unwrap_err(),
            Refused::InFlight { limit: 1 }
        );
        drop(first);
        drop(a.admit("a", Kind::Submission).await.unwrap());
        // The next turn of the rate is a second away, past the hold of 20 ms.
        match a.admit("a", Kind::Submission).await.unwrap_err() {
            Refused::Rate { retry_after, .. } => assert!(retry_after > Duration::ZERO),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.lock()["a"].held, 0);
        assert_eq!(a.lock()["a"].in_flight, 0);
    }

    #[tokio::test]
    async fn a_held_request_whose_client_goes_away_gives_its_place_back() {
        let a = admission(holding(limits(1, 1000, 1000), 60_000, 1), &[]);
        let first = a.admit("a", Kind::Request).await.unwrap();
        let held = tokio::spawn({
            let a = a.clone();
            async move { a.admit("a", Kind::Request).await.map(drop) }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while a.lock().get("a").map_or(0, |s| s.held) < 1 {
            assert!(Instant::now() < deadline, "never held");
            tokio::task::yield_now().await;
        }
        held.abort();
        let _ = held.await;
        assert_eq!(a.lock()["a"].held, 0);
        drop(first);
        assert_eq!(a.tracked(), 0);
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

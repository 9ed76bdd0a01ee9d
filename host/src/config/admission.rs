//! `[admission]`: what one tenant may take of a host's request handling.

use super::check::{Check, Count, at_most, bounded};
use crate::relay_spec::valid_id;
use serde::Deserialize;
use toml::Spanned;

/// How much of this host's request handling one tenant may take (`[admission]`,
/// `serve/admission.rs`): the defaults hold for every tenant, `[admission.tenant.ID]`
/// overrides them for one (keys it leaves out keep the defaults). Per host: a cluster
/// of n hosts behind a balancer admits up to n times as much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub default: TenantAdmission,
    pub tenants: std::collections::BTreeMap<String, TenantAdmission>,
}

/// One tenant's admission limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantAdmission {
    /// Requests of the tenant handled at once (`max_requests_in_flight`, 32); more are
    /// told 429 before their body is read.
    pub max_requests_in_flight: u32,
    /// Submissions accepted per second once the burst is spent (`accepts_per_sec`, 200).
    pub accepts_per_sec: u32,
    /// Submissions accepted at once after a quiet spell (`accept_burst`, 400).
    pub accept_burst: u32,
    /// How long a request past either limit is held before it is answered
    /// (`max_hold_ms`, 1000; 0 answers 429 at once): it is let in as soon as its turn
    /// comes within that time, else answered 429. A client that retries at once then
    /// waits this long per request instead of making the host answer it in a loop.
    pub max_hold_ms: u32,
    /// Requests of the tenant held at once (`max_held_requests`, 32; 0 holds none);
    /// past it a request is answered 429 at once, so memory held stays bounded.
    pub max_held_requests: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmission {
    max_requests_in_flight: Count,
    accepts_per_sec: Count,
    accept_burst: Count,
    max_hold_ms: Count,
    max_held_requests: Count,
    #[serde(default)]
    tenant: std::collections::BTreeMap<String, Spanned<RawTenantAdmission>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenantAdmission {
    max_requests_in_flight: Count,
    accepts_per_sec: Count,
    accept_burst: Count,
    max_hold_ms: Count,
    max_held_requests: Count,
}

impl RawTenantAdmission {
    pub(super) fn validate(
        self,
        check: &mut Check,
        table: &str,
        base: TenantAdmission,
    ) -> TenantAdmission {
        let mut n = |key: &str, raw, default: u32, max| {
            bounded(
                check,
                format!("{table}.{key}"),
                raw,
                u64::from(default),
                max,
            ) as u32
        };
        TenantAdmission {
            max_requests_in_flight: n(
                "max_requests_in_flight",
                self.max_requests_in_flight,
                base.max_requests_in_flight,
                1_000_000,
            ),
            accepts_per_sec: n(
                "accepts_per_sec",
                self.accepts_per_sec,
                base.accepts_per_sec,
                1_000_000,
            ),
            accept_burst: n(
                "accept_burst",
                self.accept_burst,
                base.accept_burst,
                10_000_000,
            ),
            max_hold_ms: at_most(
                check,
                format!("{table}.max_hold_ms"),
                self.max_hold_ms,
                base.max_hold_ms,
                60_000,
            ),
            max_held_requests: at_most(
                check,
                format!("{table}.max_held_requests"),
                self.max_held_requests,
                base.max_held_requests,
                100_000,
            ),
        }
    }
}

impl RawAdmission {
    pub(super) fn validate(self, check: &mut Check) -> Admission {
        let builtin = TenantAdmission {
            max_requests_in_flight: 32,
            accepts_per_sec: 200,
            accept_burst: 400,
            max_hold_ms: 1000,
            max_held_requests: 32,
        };
        let default = RawTenantAdmission {
            max_requests_in_flight: self.max_requests_in_flight,
            accepts_per_sec: self.accepts_per_sec,
            accept_burst: self.accept_burst,
            max_hold_ms: self.max_hold_ms,
            max_held_requests: self.max_held_requests,
        }
        .validate(check, "admission", builtin);
        let mut tenants = std::collections::BTreeMap::new();
        for (id, raw) in self.tenant {
            let span = raw.span();
            let table = format!("admission.tenant.{id}");
            if !valid_id(&id) {
                check.at(
                    span.clone(),
                    table.clone(),
                    format!("{id:?} is not a tenant id (1-64 of a-z 0-9 - _ .)"),
                );
            }
            let limits = raw.into_inner().validate(check, &table, default);
            tenants.insert(id, limits);
        }
        Admission { default, tenants }
    }
}

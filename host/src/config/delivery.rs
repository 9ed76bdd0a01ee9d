//! `[delivery]` and `[delivery.fairness]`: how mail leaves, VERP, and how delivery is
//! shared between tenants.

use super::check::{Check, secret};
use super::secrets::SecretRef;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct Delivery {
    /// Recipients being delivered at once, over all relays.
    pub max_in_flight: u32,
    /// How long a leased recipient stays ours without renewal.
    pub lease: Duration,
    /// A recipient older than this expires.
    pub max_age: Duration,
    /// Recipients leased per scheduling round.
    pub batch: u32,
    /// EHLO name.
    pub helo_name: String,
    /// Connect and per-command timeout of the SMTP client.
    pub smtp_timeout: Duration,
    /// How often a relay that stopped answering is probed (connect and EHLO) until it
    /// answers again (`relay_probe_secs`, 1–300, default 2).
    pub relay_probe: Duration,
    /// Return-path domain for VERP (`bounces+TOKEN@domain`); none turns VERP off.
    pub bounce_domain: Option<String>,
    /// The local part before `+TOKEN` (`bounce_prefix`, default `bounces`).
    pub bounce_prefix: String,
    /// The key VERP tokens are signed with; none: one made on first start and kept in
    /// the store.
    pub verp_key: Option<SecretRef>,
    /// How delivery is shared between tenants (`[delivery.fairness]`).
    pub fairness: Fairness,
}

/// How delivery is shared between tenants: deficit round robin over the tenants with
/// waiting work, each within its own budget (`serve/fair.rs` says how).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fairness {
    /// Recipients a tenant of weight 1 may start per turn.
    pub quantum: u32,
    /// Groups one tenant may have in progress at once (routing, waiting or sending).
    pub tenant_max_groups: u32,
    /// Recipients one tenant may have held in memory by this host (waiting or in
    /// progress); more stays queued in the store.
    pub tenant_max_held: u32,
    /// Recipients all tenants together may have held in memory by this host.
    pub max_held: u32,
    /// Turn sizes by tenant id; a tenant not listed weighs 1.
    pub weights: std::collections::BTreeMap<String, u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    #[serde(default = "default_max_in_flight")]
    max_in_flight: u32,
    #[serde(default = "default_lease_secs")]
    lease_secs: u64,
    #[serde(default = "default_max_age_secs")]
    max_age_secs: u64,
    #[serde(default = "default_batch")]
    batch: u32,
    #[serde(default = "default_helo")]
    helo_name: String,
    #[serde(default = "default_smtp_timeout")]
    smtp_timeout_secs: u64,
    #[serde(default = "default_relay_probe")]
    relay_probe_secs: u64,
    #[serde(default)]
    bounce_domain: Option<Spanned<String>>,
    #[serde(default = "default_bounce_prefix")]
    bounce_prefix: Spanned<String>,
    verp_key_env: Option<String>,
    verp_key_file: Option<PathBuf>,
    /// Only here to refuse it with a clear message.
    verp_key: Option<Spanned<toml::Value>>,
    #[serde(default)]
    fairness: RawFairness,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFairness {
    #[serde(default = "default_quantum")]
    quantum: u32,
    /// Absent: `max_in_flight`, so one tenant alone can use every delivery slot.
    tenant_max_groups: Option<u32>,
    /// Absent: `max_in_flight`.
    tenant_max_held: Option<u32>,
    /// Absent: four times `max_in_flight`.
    max_held: Option<u32>,
    #[serde(default)]
    weights: std::collections::BTreeMap<String, Spanned<u32>>,
}

impl Default for RawFairness {
    fn default() -> Self {
        toml::from_str("").expect("every fairness key has a default")
    }
}

fn default_quantum() -> u32 {
    100
}

fn default_bounce_prefix() -> Spanned<String> {
    Spanned::new(0..0, "bounces".into())
}

impl Default for RawDelivery {
    fn default() -> Self {
        toml::from_str("").expect("every delivery key has a default")
    }
}

fn default_max_in_flight() -> u32 {
    256
}
fn default_lease_secs() -> u64 {
    300
}
fn default_max_age_secs() -> u64 {
    5 * 86_400
}
fn default_batch() -> u32 {
    512
}
fn default_helo() -> String {
    "sluice.localhost".into()
}
fn default_smtp_timeout() -> u64 {
    30
}
fn default_relay_probe() -> u64 {
    2
}

impl RawDelivery {
    /// `[delivery]` and its `[delivery.fairness]`: the VERP key's source (read by
    /// `resolve`), never the key.
    pub(super) fn validate(self, check: &mut Check) -> Delivery {
        let d = self;
        if let Some(domain) = &d.bounce_domain {
            let v = domain.get_ref();
            let ok = !v.is_empty()
                && v.len() <= 253
                && v.contains('.')
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                check.at(
                    domain.span(),
                    "delivery.bounce_domain",
                    format!("{v:?} is not a domain name like bounces.example.com"),
                );
            }
        }
        {
            let v = d.bounce_prefix.get_ref();
            // The token is 48 characters; prefix + '+' + token must fit 64 octets.
            let ok = !v.is_empty()
                && v.len() <= 15
                && v.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !ok {
                check.at(
                    d.bounce_prefix.span(),
                    "delivery.bounce_prefix",
                    format!("{v:?} must be 1-15 of a-z 0-9 - _"),
                );
            }
        }
        let verp_span = d.verp_key.as_ref().map(|t| t.span()).unwrap_or(0..0);
        let verp_key = secret(
            check,
            "delivery.verp_key",
            d.verp_key_env,
            d.verp_key_file,
            d.verp_key,
            verp_span,
        );
        let max_in_flight = d.max_in_flight.max(1);
        let f = d.fairness;
        for (tenant, w) in &f.weights {
            let v = *w.get_ref();
            if v == 0 || v > 1000 {
                check.at(
                    w.span(),
                    "delivery.fairness.weights",
                    format!("tenant {tenant:?} has weight {v}; weights are 1 to 1000"),
                );
            }
        }
        let tenant_max_held = f.tenant_max_held.unwrap_or(max_in_flight).max(1);
        let fairness = Fairness {
            quantum: f.quantum.max(1),
            tenant_max_groups: f.tenant_max_groups.unwrap_or(max_in_flight).max(1),
            tenant_max_held,
            max_held: f
                .max_held
                .unwrap_or(max_in_flight.saturating_mul(4))
                .max(tenant_max_held),
            weights: f
                .weights
                .into_iter()
                .map(|(t, w)| (t, w.into_inner()))
                .collect(),
        };
        Delivery {
            fairness,
            max_in_flight,
            lease: Duration::from_secs(d.lease_secs.max(5)),
            max_age: Duration::from_secs(d.max_age_secs),
            batch: d.batch.clamp(1, 10_000),
            helo_name: d.helo_name,
            smtp_timeout: Duration::from_secs(d.smtp_timeout_secs.max(1)),
            relay_probe: Duration::from_secs(d.relay_probe_secs.clamp(1, 300)),
            bounce_domain: d.bounce_domain.map(Spanned::into_inner),
            bounce_prefix: d.bounce_prefix.into_inner(),
            verp_key,
        }
    }
}

//! `[[relay]]`: the SMTP relays mail leaves through. Their rules (ids, URLs, default
//! tags) are `relay_spec`'s, shared with the admin API.

use super::check::{Check, secret};
use super::secrets::SecretRef;
use crate::relay_spec::{
    DEFAULT_CONNECTION_LIMIT, DEFAULT_WEIGHT, TLS_CA_WITHOUT_TLS, check_relay_url, default_tags,
    invalid_id_message, relay_url_uses_tls, valid_id,
};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    pub id: String,
    pub url: String,
    pub auth_user: Option<String>,
    pub auth_password: Option<SecretRef>,
    pub connection_limit: u32,
    pub rate_limit_per_sec: Option<u32>,
    pub weight: u32,
    pub tags: Vec<String>,
    pub owner: Option<String>,
    /// PEM CA certificates the relay's TLS is checked against instead of the public
    /// roots (`relay::TlsCa`).
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRelay {
    id: Spanned<String>,
    url: Spanned<String>,
    auth_user: Option<String>,
    auth_password_env: Option<String>,
    auth_password_file: Option<PathBuf>,
    /// Only here to refuse it with a clear message.
    auth_password: Option<Spanned<toml::Value>>,
    #[serde(default = "default_connection_limit")]
    connection_limit: u32,
    rate_limit_per_sec: Option<u32>,
    #[serde(default = "default_weight")]
    weight: u32,
    /// Left out on a platform relay: `["pool:platform"]`, every tenant's default pool,
    /// as the admin API does.
    tags: Option<Vec<String>>,
    owner: Option<Spanned<String>>,
    tls_ca_file: Option<Spanned<String>>,
}

fn default_connection_limit() -> u32 {
    DEFAULT_CONNECTION_LIMIT
}
fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

/// `[[relay]]`. An owner must be a tenant of this file; a CA file needs a TLS URL (the
/// file itself is read by `resolve`).
pub(super) fn validate(
    raw: Vec<RawRelay>,
    check: &mut Check,
    tenant_ids: &HashSet<String>,
) -> Vec<RelayConfig> {
    let mut seen = HashSet::new();
    let mut relays = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("relay[{i}]");
        let id = r.id.get_ref().clone();
        if !valid_id(&id) {
            check.at(r.id.span(), format!("{key}.id"), invalid_id_message(&id));
        } else if !seen.insert(id.clone()) {
            check.at(
                r.id.span(),
                format!("{key}.id"),
                format!("relay id {id:?} is used twice"),
            );
        }
        if let Err(e) = check_relay_url(r.url.get_ref()) {
            check.at(r.url.span(), format!("{key}.url"), e);
        }
        if r.connection_limit == 0 {
            check.at(
                r.id.span(),
                format!("{key}.connection_limit"),
                "must be at least 1",
            );
        }
        if let Some(owner) = &r.owner
            && !tenant_ids.contains(owner.get_ref())
        {
            check.at(
                owner.span(),
                format!("{key}.owner"),
                format!("no tenant {:?} in this file", owner.get_ref()),
            );
        }
        if let Some(ca) = &r.tls_ca_file
            && !relay_url_uses_tls(r.url.get_ref())
        {
            check.at(ca.span(), format!("{key}.tls_ca_file"), TLS_CA_WITHOUT_TLS);
        }
        let span = r.id.span();
        let auth_password = secret(
            check,
            &format!("{key}.auth_password"),
            r.auth_password_env,
            r.auth_password_file,
            r.auth_password,
            span,
        );
        relays.push(RelayConfig {
            id,
            url: r.url.into_inner(),
            auth_user: r.auth_user,
            auth_password,
            connection_limit: r.connection_limit,
            rate_limit_per_sec: r.rate_limit_per_sec,
            weight: r.weight,
            tags: default_tags(r.owner.is_some(), r.tags),
            owner: r.owner.map(Spanned::into_inner),
            tls_ca_file: r.tls_ca_file.map(|p| PathBuf::from(p.into_inner())),
        });
    }
    relays
}

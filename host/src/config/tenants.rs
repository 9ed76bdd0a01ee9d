//! `[[tenant]]`: tenants the pipeline file defines.

use super::check::Check;
use crate::relay_spec::{PLATFORM_POOL, invalid_id_message, valid_id};
use serde::Deserialize;
use std::collections::HashSet;
use toml::Spanned;

#[derive(Debug, Clone, PartialEq)]
pub struct TenantConfig {
    pub id: String,
    pub name: String,
    pub allowed_sender_domains: Vec<String>,
    pub pools: Vec<String>,
    pub route_plugin: Option<String>,
    /// Whether the header `From:`/`Sender:` must be in the allowed sender domains.
    pub header_from_check: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    id: Spanned<String>,
    name: Option<String>,
    #[serde(default)]
    allowed_sender_domains: Vec<String>,
    #[serde(default = "default_pools")]
    pools: Vec<String>,
    route_plugin: Option<Spanned<String>>,
    #[serde(default = "default_header_from_check")]
    header_from_check: bool,
}

fn default_header_from_check() -> bool {
    true
}

fn default_pools() -> Vec<String> {
    vec![PLATFORM_POOL.into()]
}

/// `[[tenant]]`: ids, and a route plugin that is a default route plugin.
pub(super) fn validate(raw: Vec<RawTenant>, check: &mut Check) -> Vec<TenantConfig> {
    use crate::stage::Stage;
    let mut seen = HashSet::new();
    let mut tenants = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let key = format!("tenant[{i}]");
        let id = t.id.get_ref().clone();
        if !valid_id(&id) {
            check.at(t.id.span(), format!("{key}.id"), invalid_id_message(&id));
        } else if !seen.insert(id.clone()) {
            check.at(
                t.id.span(),
                format!("{key}.id"),
                format!("tenant id {id:?} is used twice"),
            );
        }
        if let Some(rp) = &t.route_plugin {
            match crate::builtin::by_name(rp.get_ref()) {
                Some(b) if b.stage == Stage::Route => {}
                _ => check.at(
                    rp.span(),
                    format!("{key}.route_plugin"),
                    format!("{:?} is not a default route plugin", rp.get_ref()),
                ),
            }
        }
        tenants.push(TenantConfig {
            name: t.name.unwrap_or_else(|| id.clone()),
            id,
            allowed_sender_domains: t.allowed_sender_domains,
            pools: t.pools,
            route_plugin: t.route_plugin.map(Spanned::into_inner),
            header_from_check: t.header_from_check,
        });
    }
    tenants
}

/// The ids of the file's tenants, for the checks of relays' owners.
pub(super) fn ids(raw: &[RawTenant]) -> HashSet<String> {
    raw.iter().map(|t| t.id.get_ref().clone()).collect()
}

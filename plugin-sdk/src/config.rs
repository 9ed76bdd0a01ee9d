//! The plugin's own settings: key/value pairs from the pipeline TOML (for
//! platform plugins) or the tenant's record (for tenant plugins).
//!
//! On a native target they come from [`crate::testing::set_config`].

/// Every setting, in the order the host gave them.
pub fn all() -> Vec<(String, String)> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::shared::sluice::plugin::host::config();
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::current_config();
}

/// The value of one setting.
pub fn get(key: &str) -> Option<String> {
    all().into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// A setting parsed as a number, `default` when absent or not a number.
pub fn get_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    get(key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

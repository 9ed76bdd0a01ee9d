//! The plugin's own settings: key/value pairs from the pipeline TOML (for
//! platform plugins) or the tenant's record (for tenant plugins).
//!
//! On a native target they come from [`crate::testing::set_config`].
//!
//! In Wasm the settings are asked of the host once per instance and kept:
//! they belong to the loaded plugin and cannot change under an instance, and
//! a reused instance then reads them without a call into the host.

/// Every setting, in the order the host gave them.
pub fn all() -> Vec<(String, String)> {
    #[cfg(target_arch = "wasm32")]
    return settings().to_vec();
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::current_config();
}

#[cfg(target_arch = "wasm32")]
fn settings() -> &'static [(String, String)] {
    static SETTINGS: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    SETTINGS.get_or_init(crate::bindings::shared::sluice::plugin::host::config)
}

/// The value of one setting.
pub fn get(key: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    return settings()
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone());
    #[cfg(not(target_arch = "wasm32"))]
    return all().into_iter().find(|(k, _)| k == key).map(|(_, v)| v);
}

/// A setting parsed as a number, `default` when absent or not a number.
pub fn get_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    get(key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

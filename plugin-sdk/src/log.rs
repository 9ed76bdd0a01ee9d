//! Structured logging to the plugin's log, which the host keeps per tenant.
//!
//! On a native target (tests) lines are collected in memory instead; read
//! them with [`crate::testing::take_logs`].

pub use crate::bindings::shared::sluice::plugin::host::Level;

/// Writes one line with key/value fields.
pub fn write(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    #[cfg(target_arch = "wasm32")]
    crate::bindings::shared::sluice::plugin::host::log(level, message, &fields);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::record_log(level, message, fields);
}

/// Writes a debug line.
pub fn debug(message: &str) {
    write(Level::Debug, message, &[]);
}

/// Writes an info line.
pub fn info(message: &str) {
    write(Level::Info, message, &[]);
}

/// Writes a warning.
pub fn warn(message: &str) {
    write(Level::Warn, message, &[]);
}

/// Writes an error line.
pub fn error(message: &str) {
    write(Level::Error, message, &[]);
}

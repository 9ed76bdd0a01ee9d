//! Shared helpers of Sluice's integration tests.

use sluice::runtime::{Runtime, RuntimeConfig};
use std::sync::OnceLock;

/// One engine per test binary: building it (and its pool) once keeps the
/// suite fast, and every test runs on the same engine as production would.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(RuntimeConfig::default()).expect("engine builds"))
}

//! Sluice: a mail pipeline whose stages are sandboxed WebAssembly plugins.
//!
//! The binary (`src/main.rs`) is thin glue over these modules; see
//! `ARCHITECTURE.md` for the map and the rules between them.

pub mod bill_logs;
pub mod billing;
pub mod bounce_eval;
pub mod builtin;
pub mod cli;
pub mod compose;
pub mod config;
pub mod dkim;
pub mod logging;
pub mod mbox;
pub mod metrics;
pub mod relay;
pub mod serve;
pub mod smtp_in;
pub mod socket_activation;
pub mod verp;
pub mod webhook_http;

// Crates cut out of the host, kept under their old module names so `crate::stage::…`
// (and `sluice::stage::…` in tests) still name them.
pub use sluice_maillog as maillog;
pub use sluice_runtime as runtime;
pub use sluice_stage as stage;
pub use sluice_store as store;
pub use sluice_wire as wire;
pub use sluice_wire::relay_spec;

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
pub mod maillog;
pub mod mbox;
pub mod relay;
pub mod runtime;
pub mod serve;
pub mod smtp_in;
pub mod stage;
pub mod store;
pub mod verp;
pub mod wire;

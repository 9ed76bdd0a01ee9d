//! Sluice's integration tests, one binary: the real `sluice` binary end to end
//! (serve, bill, plugin CLI), both stores' conformance suite, and the MTA-log
//! readers. One binary links once and shares its helpers; each module below was
//! a test binary of its own and keeps its name, so
//! `cargo test -p sluice --test it e2e::` runs what `--test e2e` ran.

mod pg_support;
mod support;

mod account_keys;
mod admin_cli;
mod bill_cli;
mod billing_e2e;
mod bounce_cli;
mod bounce_intake;
mod cli;
mod contract;
mod dkim;
mod e2e;
mod events;
mod first_hour;
mod hostile_tenants;
mod hostile_uploads;
mod listeners;
mod maillog;
mod metrics;
mod nodes;
mod plugin_new;
mod portal;
mod queue;
mod relay_tls;
mod store_conformance;
mod store_plugins;
mod submission;
mod tenant_plugins;
mod webhooks;
mod wire_safety;

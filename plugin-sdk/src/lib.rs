//! # Writing Sluice plugins
//!
//! Sluice carries every message through five stages — ingest, route, send,
//! bounce and bill — and each stage's decision is made by a WebAssembly
//! component. This crate is everything a plugin needs: the types of the
//! `sluice:plugin@0.1.0` contract, one trait per stage, one export macro per
//! stage, logging and settings, and a native test harness.
//!
//! A plugin is a `cdylib` crate that implements one stage trait and exports
//! it:
//!
//! ```
//! use sluice_sdk::route::*;
//!
//! struct FirstRelay;
//!
//! impl Router for FirstRelay {
//!     fn route(input: RouteInput) -> RouteDecision {
//!         RouteDecision::Relays(input.relays.into_iter().map(|r| r.id).collect())
//!     }
//! }
//!
//! sluice_sdk::export_router!(FirstRelay);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`, check it with
//! `sluice plugin check --stage route target/wasm32-wasip2/release/NAME.wasm`
//! and try it with `sluice plugin run --stage route FILE.wasm --input in.json`.
//!
//! ## The stages
//!
//! | stage | trait | export macro | called with → returns |
//! |---|---|---|---|
//! | ingest | [`ingest::IngestFilter`] | [`export_ingest_filter!`] | [`ingest::Submission`] → [`ingest::IngestDecision`] |
//! | route | [`route::Router`] | [`export_router!`] | [`route::RouteInput`] → [`route::RouteDecision`] |
//! | send | [`send::SendPolicy`] | [`export_send_policy!`] | [`send::Attempt`] → [`send::SendDecision`] |
//! | bounce | [`bounce::BounceParser`] | [`export_bounce_parser!`] | [`bounce::BounceInput`] → [`bounce::BounceOutput`] |
//! | bill | [`bill::Rater`] | [`export_rater!`] | [`bill::BillInput`] → `Result<`[`bill::BillOutput`]`, String>` |
//!
//! The [`examples`] module has one complete, compiled plugin per stage, and
//! [`guide`] walks through writing, testing, uploading and rolling back a
//! tenant plugin.
//!
//! ## What a plugin can and cannot do
//!
//! A plugin only decides. It has no sockets, no files, no environment
//! variables and no clock: the time is in its input (`now-ms`, `age-secs`).
//! It may log through [`log`] and read its settings through [`config`]. Every
//! call is bounded in wall time and memory; a plugin that loops, traps or
//! grows past its memory cap is stopped, the message is deferred or handed to
//! the platform's fallback plugin, and the tenant is told why. By default
//! every call runs in a fresh instance, so nothing carries over between calls.
//!
//! ## Testing without WebAssembly
//!
//! On a native target the trait impls are plain Rust: call
//! `MyRouter::route(input)` from a `#[test]`. The [`testing`] module builds
//! inputs with sensible defaults, sets the settings [`config`] returns and
//! collects what [`log`] wrote.
//!
//! ## JSON form
//!
//! `sluice plugin run` reads a stage's input as JSON and prints its decision
//! as JSON. Field names are the WIT names in `snake_case`; variants are
//! objects with one key (`{"relays": ["a", "b"]}`, `{"defer": {"delay_secs":
//! 60, "reason": "…"}}`), unit variants and enums are strings
//! (`"delivered"`, `"userunknown"`), decimals are strings (`"0.0004"`), byte
//! lists are base64 strings with the key `email_base64`. The host's
//! `sluice plugin run --help` and the files in `plugin-sdk/json/` show one
//! input per stage.

#![deny(missing_docs)]

// Lets generated code and export macros name this crate the same way inside and outside it.
extern crate self as sluice_sdk;

#[doc(hidden)]
pub mod bindings;
pub mod config;
pub mod examples;
pub mod guide;
pub mod log;
pub mod money;
pub mod testing;

#[doc(hidden)]
pub use wit_bindgen::rt as __rt;

/// Declares the export macro of one stage: the generated export on
/// `wasm32`, nothing on a native target (where the type is used directly by
/// tests, and the component model's export names would not link).
macro_rules! stage_export_macro {
    ($(#[$doc:meta])* $name:ident, $generated:ident, $module:ident) => {
        $(#[$doc])*
        #[macro_export]
        macro_rules! $name {
            ($ty:ident) => {
                #[cfg(target_arch = "wasm32")]
                $crate::bindings::$module::$generated!($ty);
            };
        }
    };
}

stage_export_macro!(
    /// Exports an [`ingest::IngestFilter`] as the plugin's `ingest` world.
    export_ingest_filter, __export_ingest_filter, ingest
);
stage_export_macro!(
    /// Exports a [`route::Router`] as the plugin's `route` world.
    export_router, __export_router, route
);
stage_export_macro!(
    /// Exports a [`send::SendPolicy`] as the plugin's `send` world.
    export_send_policy, __export_send_policy, send
);
stage_export_macro!(
    /// Exports a [`bounce::BounceParser`] as the plugin's `bounce` world.
    export_bounce_parser, __export_bounce_parser, bounce
);
stage_export_macro!(
    /// Exports a [`bill::Rater`] as the plugin's `bill` world.
    export_rater, __export_rater, bill
);

/// Types every stage shares.
pub mod types {
    pub use crate::bindings::shared::sluice::plugin::types::{
        Decimal, Direction, Header, Micros, Relay, RelayWindow, SmtpReply,
    };
}

/// The ingest stage: accept or reject a submission.
pub mod ingest {
    pub use crate::bindings::ingest::exports::sluice::plugin::ingest_filter::{
        Acceptance, Guest as IngestFilter, IngestDecision, Rejection, Submission,
    };
    pub use crate::types::Header;
}

/// The route stage: choose relays for a message.
pub mod route {
    pub use crate::bindings::route::exports::sluice::plugin::router::{
        Deferral, Guest as Router, MessageSummary, RouteDecision, RouteInput,
    };
    pub use crate::types::{Relay, RelayWindow};
}

/// The send stage: decide what an SMTP reply means.
pub mod send {
    pub use crate::bindings::send::exports::sluice::plugin::send_policy::{
        Attempt, Guest as SendPolicy, Retry, SendDecision,
    };
    pub use crate::types::SmtpReply;
}

/// The bounce stage: read bounces, SMTP replies and log lines.
pub mod bounce {
    pub use crate::bindings::bounce::exports::sluice::plugin::bounce_parser::{
        BounceInput, BounceOutput, BounceResult, Guest as BounceParser, Reason, ReplyInput,
    };
    pub use crate::types::SmtpReply;
}

/// The bill stage: rate usage events.
pub mod bill {
    pub use crate::bindings::bill::exports::sluice::plugin::rater::{
        BillInput, BillOutput, Charge, Counter, Guest as Rater, Outcome, UsageEvent,
    };
    pub use crate::types::{Decimal, Direction, Micros};
}

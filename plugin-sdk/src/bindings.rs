//! Guest bindings generated from `../wit`: the shared types once, then one
//! module per stage world that reuses them.
//!
//! Plugin authors use the re-exports in the stage modules of the crate root
//! instead of these paths.

#![allow(missing_docs, clippy::all, unused_qualifications)]

/// The `types` and `host` interfaces every stage shares.
pub mod shared {
    wit_bindgen::generate!({
        path: "wit",
        world: "shared",
        runtime_path: "sluice_sdk::__rt",
        additional_derives: [PartialEq],
        generate_all,
    });
}

/// The `ingest` world.
pub mod ingest {
    wit_bindgen::generate!({
        path: "wit",
        world: "ingest",
        runtime_path: "sluice_sdk::__rt",
        additional_derives: [PartialEq],
        with: {
            "sluice:plugin/types@0.1.0": crate::bindings::shared::sluice::plugin::types,
            "sluice:plugin/host@0.1.0": crate::bindings::shared::sluice::plugin::host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_ingest_filter",
        default_bindings_module: "sluice_sdk::bindings::ingest",
    });
}

/// The `route` world.
pub mod route {
    wit_bindgen::generate!({
        path: "wit",
        world: "route",
        runtime_path: "sluice_sdk::__rt",
        additional_derives: [PartialEq],
        with: {
            "sluice:plugin/types@0.1.0": crate::bindings::shared::sluice::plugin::types,
            "sluice:plugin/host@0.1.0": crate::bindings::shared::sluice::plugin::host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_router",
        default_bindings_module: "sluice_sdk::bindings::route",
    });
}

/// The `send` world.
pub mod send {
    wit_bindgen::generate!({
        path: "wit",
        world: "send",
        runtime_path: "sluice_sdk::__rt",
        additional_derives: [PartialEq],
        with: {
            "sluice:plugin/types@0.1.0": crate::bindings::shared::sluice::plugin::types,
            "sluice:plugin/host@0.1.0": crate::bindings::shared::sluice::plugin::host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_send_policy",
        default_bindings_module: "sluice_sdk::bindings::send",
    });
}

/// The `bounce` world.
pub mod bounce {
    wit_bindgen::generate!({
        path: "wit",
        world: "bounce",
        runtime_path: "sluice_sdk::__rt",
        additional_derives: [PartialEq],
        with: {
            "sluice:plugin/types@0.1.0": crate::bindings::shared::sluice::plugin::types,
            "sluice:plugin/host@0.1.0": crate::bindings::shared::sluice::plugin::host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_bounce_parser",
        default_bindings_module: "sluice_sdk::bindings::bounce",
    });
}

/// The `bill` world.
pub mod bill {
    wit_bindgen::generate!({
        path: "wit",
        world: "bill",
        runtime_path: "sluice_sdk::__rt",
        additional_derives: [PartialEq],
        with: {
            "sluice:plugin/types@0.1.0": crate::bindings::shared::sluice::plugin::types,
            "sluice:plugin/host@0.1.0": crate::bindings::shared::sluice::plugin::host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_rater",
        default_bindings_module: "sluice_sdk::bindings::bill",
    });
}

//! Host bindings generated from `plugin-sdk/wit/`: the shared interfaces
//! once, then one module per stage world reusing them.

#![allow(missing_docs, clippy::all, unused_qualifications)]

wasmtime::component::bindgen!({
    path: "../plugin-sdk/wit",
    world: "shared",
});

pub mod ingest {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit",
        world: "ingest",
        with: {
            "sluice:plugin/types": super::sluice::plugin::types,
            "sluice:plugin/host": super::sluice::plugin::host,
        },
    });
}

pub mod route {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit",
        world: "route",
        with: {
            "sluice:plugin/types": super::sluice::plugin::types,
            "sluice:plugin/host": super::sluice::plugin::host,
        },
    });
}

pub mod send {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit",
        world: "send-stage",
        with: {
            "sluice:plugin/types": super::sluice::plugin::types,
            "sluice:plugin/host": super::sluice::plugin::host,
        },
    });
}

pub mod bounce {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit",
        world: "bounce",
        with: {
            "sluice:plugin/types": super::sluice::plugin::types,
            "sluice:plugin/host": super::sluice::plugin::host,
        },
    });
}

pub mod bill {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit",
        world: "bill",
        with: {
            "sluice:plugin/types": super::sluice::plugin::types,
            "sluice:plugin/host": super::sluice::plugin::host,
        },
    });
}

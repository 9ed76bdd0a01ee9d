//! `nop: func()`, doing nothing: what a call into a bare pooled Wasmtime
//! instance costs, fresh or reused, measured beside the stage calls in
//! `host/benches/plugins.rs`.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        inline: "package sluice:floor; world floor { export nop: func(); }",
    });

    struct Nop;

    impl Guest for Nop {
        fn nop() {}
    }

    export!(Nop);
}

//! The default plugins, embedded in the binary so `sluice serve` needs no
//! plugin files. Built from `plugins/*` by `build.rs`.

use crate::stage::Stage;

#[allow(missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
}

/// Components of `tests/guests/*`, for tests only.
#[doc(hidden)]
pub mod test_guests {
    pub use super::generated::{
        HOSTILE, LOG_BOMB, NOP, SLOW_ROUTER, TENANT_BILL, TENANT_BOUNCE, TENANT_INGEST,
        TENANT_INGEST_SMUGGLER, TENANT_ROUTE_WINDOWS, TENANT_SEND,
    };
}

/// A default plugin: its name, the stage it serves, its component.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    pub name: &'static str,
    pub stage: Stage,
    pub wasm: &'static [u8],
}

/// The stage a default plugin serves, from its name's prefix.
fn stage_of(name: &str) -> Stage {
    match name.split('-').next() {
        Some("ingest") => Stage::Ingest,
        Some("router") => Stage::Route,
        Some("send") => Stage::Send,
        Some("bounce") => Stage::Bounce,
        Some("rater") => Stage::Bill,
        _ => panic!("default plugin {name:?} does not start with a stage prefix"),
    }
}

/// Every default plugin.
pub fn all() -> Vec<Builtin> {
    generated::BUILTINS
        .iter()
        .map(|(name, wasm)| Builtin {
            name,
            stage: stage_of(name),
            wasm,
        })
        .collect()
}

/// The default plugin called `name`.
pub fn by_name(name: &str) -> Option<Builtin> {
    all().into_iter().find(|b| b.name == name)
}

/// The platform's default plugin for `stage`.
pub fn default_for(stage: Stage) -> Builtin {
    let name = match stage {
        Stage::Ingest => "ingest-allowlist",
        Stage::Route => "router-weighted",
        Stage::Send => "send-backoff",
        Stage::Bounce => "bounce-dsn",
        Stage::Bill => "rater-tiered",
    };
    by_name(name).expect("every stage has a default plugin")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_has_exactly_one_default_and_names_match_stages() {
        for stage in Stage::ALL {
            assert_eq!(default_for(stage).stage, stage);
        }
        assert_eq!(
            all().len(),
            5,
            "{:?}",
            all().iter().map(|b| b.name).collect::<Vec<_>>()
        );
    }
}

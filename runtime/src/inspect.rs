//! What a component is, read before anything compiles it: its world (the stage's
//! export, imports only from interfaces Sluice provides) and its sizes (core modules,
//! functions, locals per function, code bytes per function and in all, data bytes,
//! memories' and tables' initial sizes).
//!
//! Compiling costs CPU and memory roughly in proportion to what a module declares
//! (a function with 20 000 locals inside loops took cranelift 47 s and 4.7 GB), while
//! reading the declarations costs one pass over the bytes. So an upload is read first
//! and refused, naming the limit, before it can cost a compilation. This pass does not
//! validate the code (wasmtime does, when it compiles); it only counts.

use sluice_stage::Stage;
use wasmparser::{Encoding, Parser, Payload};

/// Interfaces a plugin may import: WASI preview 2 (the sandbox answers it with an
/// empty context) and Sluice's own.
const ALLOWED_IMPORTS: &[&str] = &[
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:random/",
    "wasi:sockets/",
    "sluice:plugin/types@",
    "sluice:plugin/host@",
];

/// Bounds of what an uploaded component may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticLimits {
    pub core_modules: u32,
    pub functions: u32,
    pub function_locals: u32,
    pub function_code_bytes: u64,
    pub code_bytes: u64,
    pub data_bytes: u64,
    pub memory_bytes: u64,
    pub table_elements: u64,
}

/// A limit a component breaks, with the name of its setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}; at most {max} {unit} allowed ({setting})")]
pub struct OverLimit {
    /// What the component declares, e.g. "function 3 of core module 1 declares 20000 locals".
    pub what: String,
    pub max: u64,
    pub unit: &'static str,
    /// The setting that holds the limit, e.g. `[plugins.uploads] max_function_locals`.
    pub setting: &'static str,
}

/// Why a component was refused without compiling it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    OverLimit(OverLimit),
    #[error("it does not export `{missing}` (it exports: {exports})")]
    MissingExport {
        missing: &'static str,
        exports: String,
    },
    #[error("it imports `{0}`, which Sluice does not provide")]
    UnknownImport(String),
}

/// What [`inspect`] counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub core_modules: u32,
    pub functions: u32,
    pub most_locals: u64,
    pub code_bytes: u64,
    pub data_bytes: u64,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
}

fn over(what: String, max: u64, unit: &'static str, setting: &'static str) -> Refusal {
    Refusal::OverLimit(OverLimit {
        what,
        max,
        unit,
        setting,
    })
}

/// Reads `bytes` as a component for `stage` and checks it against `limits`, without
/// compiling anything.
pub fn inspect(bytes: &[u8], stage: Stage, limits: &StaticLimits) -> Result<Summary, Refusal> {
    let mut s = Summary::default();
    // The encoding of each (component or module) being read, innermost last.
    let mut nesting: Vec<Encoding> = Vec::new();
    // Functions defined so far in the current core module (numbers name them in errors).
    let mut in_module = 0u32;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| Refusal::Malformed(e.to_string()))?;
        match payload {
            Payload::Version { encoding, .. } => {
                if nesting.is_empty() && encoding != Encoding::Component {
                    return Err(Refusal::Malformed(
                        "it is a core WebAssembly module, not a component (build it for wasm32-wasip2, or run `wasm-tools component new`)".into(),
                    ));
                }
                if encoding == Encoding::Module {
                    s.core_modules += 1;
                    in_module = 0;
                    if s.core_modules > limits.core_modules {
                        return Err(over(
                            format!(
                                "the component has more than {} core modules",
                                limits.core_modules
                            ),
                            limits.core_modules.into(),
                            "core modules are",
                            "[plugins.uploads] max_core_modules",
                        ));
                    }
                }
                nesting.push(encoding);
            }
            Payload::End(_) => {
                nesting.pop();
            }
            Payload::FunctionSection(r) => {
                s.functions = s.functions.saturating_add(r.count());
                if s.functions > limits.functions {
                    return Err(over(
                        format!("the component defines {} or more functions", s.functions),
                        limits.functions.into(),
                        "functions are",
                        "[plugins.uploads] max_functions",
                    ));
                }
            }
            Payload::CodeSectionEntry(body) => {
                let n = in_module;
                in_module += 1;
                let module = s.core_modules;
                let size = body.range().len() as u64;
                if size > limits.function_code_bytes {
                    return Err(over(
                        format!(
                            "function body {n} of core module {module} has {size} bytes of code"
                        ),
                        limits.function_code_bytes,
                        "bytes are",
                        "[plugins.uploads] max_function_code_bytes",
                    ));
                }
                s.code_bytes += size;
                if s.code_bytes > limits.code_bytes {
                    return Err(over(
                        format!("the component has {} or more bytes of code", s.code_bytes),
                        limits.code_bytes,
                        "bytes are",
                        "[plugins.uploads] max_code_bytes",
                    ));
                }
                let mut locals = 0u64;
                let reader = body
                    .get_locals_reader()
                    .map_err(|e| Refusal::Malformed(e.to_string()))?;
                for decl in reader {
                    let (count, _) = decl.map_err(|e| Refusal::Malformed(e.to_string()))?;
                    locals += u64::from(count);
                    if locals > limits.function_locals.into() {
                        break;
                    }
                }
                if locals > limits.function_locals.into() {
                    return Err(over(
                        format!(
                            "function body {n} of core module {module} declares {locals} or more locals"
                        ),
                        limits.function_locals.into(),
                        "are",
                        "[plugins.uploads] max_function_locals",
                    ));
                }
                s.most_locals = s.most_locals.max(locals);
            }
            Payload::DataSection(r) => {
                for data in r {
                    let data = data.map_err(|e| Refusal::Malformed(e.to_string()))?;
                    s.data_bytes += data.data.len() as u64;
                    if s.data_bytes > limits.data_bytes {
                        return Err(over(
                            format!("the component has {} or more bytes of data", s.data_bytes),
                            limits.data_bytes,
                            "bytes are",
                            "[plugins.uploads] max_data_bytes",
                        ));
                    }
                }
            }
            Payload::MemorySection(r) => {
                for m in r {
                    let m = m.map_err(|e| Refusal::Malformed(e.to_string()))?;
                    let page = 1u64 << m.page_size_log2.unwrap_or(16);
                    let initial = m.initial.saturating_mul(page);
                    if initial > limits.memory_bytes {
                        return Err(over(
                            format!(
                                "a memory of core module {} starts at {initial} bytes",
                                s.core_modules
                            ),
                            limits.memory_bytes,
                            "bytes are",
                            "[plugins] max_memory_mib",
                        ));
                    }
                }
            }
            Payload::TableSection(r) => {
                for t in r {
                    let t = t.map_err(|e| Refusal::Malformed(e.to_string()))?;
                    if t.ty.initial > limits.table_elements {
                        return Err(over(
                            format!(
                                "a table of core module {} starts with {} elements",
                                s.core_modules, t.ty.initial
                            ),
                            limits.table_elements,
                            "elements are",
                            "[plugins.uploads] max_table_elements",
                        ));
                    }
                }
            }
            Payload::ComponentImportSection(r) if nesting.len() == 1 => {
                for import in r {
                    let import = import.map_err(|e| Refusal::Malformed(e.to_string()))?;
                    let name = import.name.name;
                    if !ALLOWED_IMPORTS.iter().any(|p| name.starts_with(p)) {
                        return Err(Refusal::UnknownImport(name.to_owned()));
                    }
                    s.imports.push(name.to_owned());
                }
            }
            Payload::ComponentExportSection(r) if nesting.len() == 1 => {
                for export in r {
                    let export = export.map_err(|e| Refusal::Malformed(e.to_string()))?;
                    s.exports.push(export.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    if !s.exports.iter().any(|e| e == stage.export_name()) {
        return Err(Refusal::MissingExport {
            missing: stage.export_name(),
            exports: if s.exports.is_empty() {
                "nothing".into()
            } else {
                s.exports.join(", ")
            },
        });
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generous() -> StaticLimits {
        StaticLimits {
            core_modules: 16,
            functions: 50_000,
            function_locals: 5000,
            function_code_bytes: 1 << 20,
            code_bytes: 8 << 20,
            data_bytes: 8 << 20,
            memory_bytes: 128 << 20,
            table_elements: 100_000,
        }
    }

    #[test]
    fn every_default_plugin_and_test_guest_passes_the_default_limits() {
        use sluice::builtin::test_guests as g;
        for p in sluice::builtin::all() {
            let s =
                inspect(p.wasm, p.stage, &generous()).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert!(s.core_modules >= 1 && s.functions > 10, "{}: {s:?}", p.name);
        }
        for (name, wasm) in [("hostile", g::HOSTILE), ("log-bomb", g::LOG_BOMB)] {
            inspect(wasm, Stage::Route, &generous()).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn refusals_name_the_limit_and_the_missing_export() {
        let router = sluice::builtin::by_name("router-weighted").unwrap().wasm;
        let e = inspect(router, Stage::Bill, &generous()).unwrap_err();
        assert!(e.to_string().contains("sluice:plugin/rater@"), "{e}");
        let tight = StaticLimits {
            function_locals: 2,
            ..generous()
        };
        let e = inspect(router, Stage::Route, &tight)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("locals; at most 2 are allowed") && e.contains("max_function_locals"),
            "{e}"
        );
        let e = inspect(b"\0asm\x01\0\0\0", Stage::Route, &generous()).unwrap_err();
        assert!(e.to_string().contains("not a component"), "{e}");
        assert!(matches!(
            inspect(b"garbage", Stage::Route, &generous()),
            Err(Refusal::Malformed(_))
        ));
    }
}

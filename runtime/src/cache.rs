//! A disk cache of compiled components, so that a process does not compile the same
//! component again on every start (cranelift takes 0.1–0.5 s per plugin; loading a
//! compiled artefact takes about a millisecond).
//!
//! An entry is named by the component's SHA-256 and the engine's compatibility hash
//! (wasmtime version, target, and every setting that changes the code), so a changed
//! plugin, engine setting or wasmtime upgrade never loads a stale artefact. Entries are
//! written to a temporary file and renamed into place: concurrent processes see a whole
//! artefact or none. Any cache failure only costs a compilation. The directory keeps the
//! [`MAX_ENTRIES`] most recently used artefacts (tenants upload new versions for ever).
//!
//! Loading an artefact trusts it (it is machine code): the directory is created private
//! to the user (0700), like wasmtime's own cache. A loaded artefact is mapped from its
//! file, so entries are only ever replaced by a rename, never rewritten in place.

use crate::chain::Chain;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Artefacts kept; the least recently used go first.
pub const MAX_ENTRIES: usize = 256;

/// Where compiled components are kept: `SLUICE_CACHE_DIR` (`off` disables the cache),
/// else `$XDG_CACHE_HOME/sluice/components`, else `$HOME/.cache/sluice/components`.
pub fn default_dir() -> Option<PathBuf> {
    match std::env::var_os("SLUICE_CACHE_DIR") {
        Some(d) if d == "off" || d.is_empty() => None,
        Some(d) => Some(PathBuf::from(d)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("sluice").join("components")),
    }
}

/// The entry's file name for `bytes` compiled by `engine`.
fn entry_name(engine: &Engine, bytes: &[u8]) -> String {
    // SipHash with fixed keys: stable across runs of one build, which is all the
    // compatibility hash needs (a new build has a new wasmtime or a new config anyway).
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!(
        "{}-{:016x}.cwasm",
        hex::encode(Sha256::digest(bytes)),
        h.finish()
    )
}

/// Where the artefact of `bytes` compiled by `engine` is kept in `dir`.
pub(super) fn entry_path(engine: &Engine, bytes: &[u8], dir: &Path) -> PathBuf {
    dir.join(entry_name(engine, bytes))
}

/// The compiled artefact `dir` holds for `bytes`, if it holds a usable one.
pub(super) fn load(engine: &Engine, bytes: &[u8], dir: &Path) -> Option<Component> {
    let path = entry_path(engine, bytes, dir);
    if !path.is_file() {
        return None;
    }
    // SAFETY: the file was written (by `store` below or by the bounded compiler's
    // child, our own binary) from `Component::serialize` for an engine with this
    // compatibility hash, in a directory private to this user; wasmtime also checks
    // the artefact's header against the engine.
    match unsafe { Component::deserialize_file(engine, &path) } {
        Ok(c) => {
            // Recently used: kept when the directory is pruned.
            if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
            Some(c)
        }
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %Chain(&*e), "compiled component unusable; compiling again");
            None
        }
    }
}

/// Compiles `bytes`, or loads the compiled artefact `dir` holds for them.
pub fn compile(engine: &Engine, bytes: &[u8], dir: Option<&Path>) -> wasmtime::Result<Component> {
    let Some(dir) = dir else {
        return Component::new(engine, bytes);
    };
    if let Some(c) = load(engine, bytes, dir) {
        return Ok(c);
    }
    let path = entry_path(engine, bytes, dir);
    let component = Component::new(engine, bytes)?;
    if let Err(e) = store(dir, &path, &component) {
        tracing::debug!(path = %path.display(), error = %Chain(&*e), "cannot cache a compiled component");
    }
    Ok(component)
}

/// Keeps the directory to [`MAX_ENTRIES`] after an artefact was added by someone else.
pub(super) fn prune_dir(dir: &Path) {
    if let Err(e) = prune(dir, MAX_ENTRIES) {
        tracing::debug!(dir = %dir.display(), error = %Chain(&*e), "cannot prune the compiled component cache");
    }
}

fn store(dir: &Path, path: &Path, component: &Component) -> anyhow::Result<()> {
    private_dir(dir)?;
    let bytes = component
        .serialize()
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    prune(dir, MAX_ENTRIES)
}

/// Removes the least recently used artefacts beyond `keep`.
fn prune(dir: &Path, keep: usize) -> anyhow::Result<()> {
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if entries.len() <= keep {
        return Ok(());
    }
    entries.sort();
    for (_, path) in &entries[..entries.len() - keep] {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

pub(super) fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_load_comes_from_the_cache_and_a_corrupt_entry_is_replaced() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let wasm = sluice::builtin::all()[0].wasm;
        let first = compile(&engine, wasm, Some(dir.path())).unwrap();
        let entries: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(entries[0].to_string_lossy().ends_with(".cwasm"));
        let again = compile(&engine, wasm, Some(dir.path())).unwrap();
        assert_eq!(
            first.component_type().exports(&engine).count(),
            again.component_type().exports(&engine).count()
        );
        // A corrupt artefact is not loaded: it is compiled and written again. (Replaced
        // by a rename, never rewritten in place: the loaded ones map the file.)
        let bad = dir.path().join("bad");
        std::fs::write(&bad, b"not an artefact").unwrap();
        std::fs::rename(&bad, &entries[0]).unwrap();
        compile(&engine, wasm, Some(dir.path())).unwrap();
        assert!(std::fs::metadata(&entries[0]).unwrap().len() > 1000);
        // Another engine setting is another entry.
        let mut cfg = wasmtime::Config::new();
        cfg.epoch_interruption(true);
        let other = Engine::new(&cfg).unwrap();
        compile(&other, wasm, Some(dir.path())).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        prune(dir.path(), 1).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

//! Where a secret comes from: an environment variable or a file, never the pipeline
//! file itself.

use std::path::PathBuf;

/// Where a secret is read from. Secrets are never inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl SecretRef {
    /// Reads the secret; the error names where it looked.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
            }
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display())),
        }
    }

    /// How it is stored (`env:NAME` / `file:PATH`): safe to show.
    pub fn reference(&self) -> String {
        match self {
            SecretRef::Env(n) => format!("env:{n}"),
            SecretRef::File(p) => format!("file:{}", p.display()),
        }
    }
}

//! `[dkim]`: DKIM signing (issue 23). Tenants' keys are made through the API and kept in
//! the store sealed; this section names the secret that seals them.

use super::check::{Check, secret};
use super::secrets::SecretRef;
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

/// DKIM signing (`[dkim]`, `dkim/`, `serve/dkim_sign.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dkim {
    /// The secret DKIM private keys are sealed with (`key_env`/`key_file`, at least 32
    /// bytes). None: no key can be made, and `serve` refuses to start while the store
    /// holds keys.
    pub key: Option<SecretRef>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDkim {
    key_env: Option<String>,
    key_file: Option<PathBuf>,
    /// Only here to refuse it with a clear message.
    key: Option<Spanned<toml::Value>>,
}

impl RawDkim {
    pub(super) fn validate(self, check: &mut Check) -> Dkim {
        let span = self.key.as_ref().map(|k| k.span()).unwrap_or(0..0);
        Dkim {
            key: secret(
                check,
                "dkim.key",
                self.key_env,
                self.key_file,
                self.key,
                span,
            ),
        }
    }
}

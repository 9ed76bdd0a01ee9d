//! What every section's validation shares: the error collector with the file's text
//! (so an error points at its value), and the checks of counts and secret references.

use super::error::ConfigError;
use super::secrets::SecretRef;
use std::path::PathBuf;
use toml::Spanned;

/// A count in the file, with where it is.
pub(super) type Count = Option<Spanned<u64>>;

pub(super) struct Check<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a str,
    pub(super) errors: Vec<ConfigError>,
}

impl Check<'_> {
    pub(super) fn at(
        &mut self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let e = if span.is_empty() && span.start == 0 {
            ConfigError {
                origin: self.origin.into(),
                line: None,
                column: None,
                key: Some(key.into()),
                message: message.into(),
                snippet: None,
            }
        } else {
            ConfigError::at(self.origin, self.text, span, key.into(), message.into())
        };
        self.errors.push(e);
    }
}

pub(super) fn secret(
    check: &mut Check,
    key: &str,
    env: Option<String>,
    file: Option<PathBuf>,
    inline: Option<Spanned<toml::Value>>,
    span: std::ops::Range<usize>,
) -> Option<SecretRef> {
    if let Some(v) = inline {
        check.at(
            v.span(),
            key,
            format!("secrets are never inline: use {key}_env = \"VAR\" or {key}_file = \"PATH\""),
        );
        // The snippet would print the secret itself into a terminal or a CI
        // log; file:line:column already say where it is.
        if let Some(e) = check.errors.last_mut() {
            e.snippet = None;
        }
    }
    match (env, file) {
        (Some(_), Some(_)) => {
            check.at(span, key, format!("give {key}_env or {key}_file, not both"));
            None
        }
        (Some(e), None) => Some(SecretRef::Env(e)),
        (None, Some(f)) => Some(SecretRef::File(f)),
        (None, None) => None,
    }
}

/// A count of `key` between 1 and `max`, else `default` (an error is recorded).
pub(super) fn bounded(check: &mut Check, key: String, raw: Count, default: u64, max: u64) -> u64 {
    match raw {
        Some(v) if !(1..=max).contains(v.get_ref()) => {
            check.at(v.span(), key, format!("must be between 1 and {max}"));
            default
        }
        Some(v) => v.into_inner(),
        None => default,
    }
}

/// A count of `key` between 0 and `max`, else `default` (an error is recorded).
pub(super) fn at_most(check: &mut Check, key: String, raw: Count, default: u32, max: u32) -> u32 {
    match raw {
        Some(v) if *v.get_ref() > u64::from(max) => {
            check.at(v.span(), key, format!("must be between 0 and {max}"));
            default
        }
        Some(v) => v.into_inner() as u32,
        None => default,
    }
}

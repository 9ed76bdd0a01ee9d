//! LOGINS.toml (tenants and the addresses or domains that are theirs) and
//! TARIFFS.toml (each tenant's tariff document, inline or in a file).
//! See `pipelines/billing/*.example.toml` for documented examples.

use crate::maillog::hash::FxHashMap;
use crate::maillog::login::login_problem;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

/// A configuration file that cannot be used; always names the file and,
/// where there is one, the line and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path:?}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path:?}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path:?}, line {line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogins {
    tenant: BTreeMap<String, Spanned<RawTenant>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
    logins: Vec<Spanned<String>>,
}

/// Tenants and their logins.
#[derive(Debug, Clone)]
pub struct Logins {
    /// Tenant ids, sorted.
    pub tenants: Vec<String>,
    /// Lower-cased login (`user@domain` or `domain`) → index in `tenants`.
    pub by_login: FxHashMap<String, usize>,
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl Logins {
    pub fn load(path: &Path) -> Result<Logins, ConfigError> {
        let text = read(path)?;
        Logins::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Logins, ConfigError> {
        let raw: RawLogins = parse(path, text)?;
        let invalid = |at: usize, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, at),
            message,
        };
        let tenants: Vec<String> = raw.tenant.keys().cloned().collect();
        let mut by_login: FxHashMap<String, usize> = FxHashMap::default();
        for (i, (id, t)) in raw.tenant.iter().enumerate() {
            if t.get_ref().logins.is_empty() {
                return Err(invalid(
                    t.span().start,
                    format!("tenant.{id}.logins: tenant {id:?} has no logins"),
                ));
            }
            for login in &t.get_ref().logins {
                let value = login.get_ref().trim().to_ascii_lowercase();
                if let Some(problem) = login_problem(&value) {
                    return Err(invalid(
                        login.span().start,
                        format!("tenant.{id}.logins: login {:?} {problem}", login.get_ref()),
                    ));
                }
                if let Some(&other) = by_login.get(&value) {
                    return Err(invalid(
                        login.span().start,
                        format!(
                            "tenant.{id}.logins: login {:?} already belongs to tenant {:?}",
                            login.get_ref(),
                            tenants[other]
                        ),
                    ));
                }
                by_login.insert(value, i);
            }
        }
        Ok(Logins { tenants, by_login })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTariffs {
    #[serde(default)]
    default: Option<Spanned<Source>>,
    #[serde(default)]
    tenant: BTreeMap<String, Spanned<Source>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    inline: Option<String>,
}

/// A tenant's tariff document and where it came from (for error messages).
#[derive(Debug, Clone)]
pub struct TariffDoc {
    /// Shared: a `[default]` used by a million tenants is held once.
    pub text: Arc<str>,
    pub origin: String,
}

/// Reads TARIFFS.toml: one tariff document per tenant of `logins`.
pub fn load_tariffs(path: &Path, logins: &Logins) -> Result<Vec<TariffDoc>, ConfigError> {
    let text = read(path)?;
    let raw: RawTariffs = parse(path, &text)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let invalid = |at: usize, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        line: line_of(&text, at),
        message,
    };
    // A file named by many tenants is read once.
    let files: std::cell::RefCell<FxHashMap<PathBuf, Arc<str>>> = Default::default();
    let resolve = |key: &str, src: &Spanned<Source>| -> Result<TariffDoc, ConfigError> {
        match (&src.get_ref().file, &src.get_ref().inline) {
            (Some(file), None) => {
                let p = base.join(file);
                let known = files.borrow().get(&p).cloned();
                let text = match known {
                    Some(text) => text,
                    None => {
                        let text: Arc<str> = std::fs::read_to_string(&p)
                            .map_err(|e| {
                                invalid(
                                    src.span().start,
                                    format!("{key}.file: cannot read {p:?}: {e}"),
                                )
                            })?
                            .into();
                        files.borrow_mut().insert(p.clone(), text.clone());
                        text
                    }
                };
                Ok(TariffDoc {
                    text,
                    origin: p.display().to_string(),
                })
            }
            (None, Some(inline)) => Ok(TariffDoc {
                text: inline.as_str().into(),
                origin: format!("{}, {key}.inline", path.display()),
            }),
            _ => Err(invalid(
                src.span().start,
                format!("{key}: give exactly one of `file` or `inline`"),
            )),
        }
    };
    for (id, src) in &raw.tenant {
        // `tenants` is sorted (BTreeMap keys): a search, not a scan per entry.
        if logins.tenants.binary_search(id).is_err() {
            return Err(invalid(
                src.span().start,
                format!("tenant.{id}: no tenant {id:?} in the logins file"),
            ));
        }
    }
    let default = raw
        .default
        .as_ref()
        .map(|d| resolve("default", d))
        .transpose()?;
    logins
        .tenants
        .iter()
        .map(|id| match raw.tenant.get(id) {
            Some(src) => resolve(&format!("tenant.{id}"), src),
            None => default.clone().ok_or_else(|| ConfigError::Invalid {
                path: path.to_owned(),
                line: 1,
                message: format!("no tariff for tenant {id:?} and no [default]"),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_login_names_both_tenants_and_the_line() {
        let text = "[tenant.a]\nlogins = [\"a.example\"]\n[tenant.b]\nlogins = [\"A.example\"]\n";
        let err = Logins::parse(Path::new("l.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("\"a\""), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let text = "[tenant.a]\nlogins = [\"a.example\"]\ncolour = 1\n";
        let err = Logins::parse(Path::new("l.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour") && err.contains("line 3"), "{err}");
    }
}

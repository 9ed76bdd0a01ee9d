//! The step after validation: what a validated pipeline names outside its own file,
//! read — the secrets (`*_env`, `*_file`), each stage's plugin file, the log sources'
//! logins files and the relays' CA files. `serve` runs it before it opens anything
//! (`serve/preflight.rs`, which then compiles the plugins it read), `sluice pipeline
//! check` runs the same, and so does a SIGHUP reload: a file one of them passes, the
//! others pass too. Every failure is collected, one line each as `key: why`.

use super::{Pipeline, PluginSource, SecretRef};
use crate::bill_logs::Logins;
use crate::stage::Stage;
use std::borrow::Cow;

/// A plugin's component, read: a default plugin's embedded bytes or a file's.
#[derive(Debug, Clone)]
pub struct PluginBytes {
    /// The default plugin's name, or the file's path: how errors and logs name it.
    pub name: String,
    pub bytes: Cow<'static, [u8]>,
}

/// What [`resolve`] read. Complete only when `errors` is empty.
#[derive(Debug)]
pub struct Resolved {
    /// The admin token from `[admin] token_env`/`token_file`; `None`: the store keeps one.
    pub admin_token: Option<String>,
    /// The VERP key from `[delivery] verp_key_env`/`_file`; `None`: the store keeps one.
    pub verp_key: Option<String>,
    /// The secret DKIM keys are sealed with (`[dkim] key_env`/`key_file`), checked to
    /// be long enough.
    pub dkim_key: Option<String>,
    /// Each `[[log_source]]`'s logins, in the pipeline's order.
    pub log_source_logins: Vec<Logins>,
    /// Each stage's plugin, for those that could be read.
    pub plugins: Vec<(Stage, PluginBytes)>,
    /// What does not stop a start but will not work (a relay's password that cannot be
    /// read: it is read again at use, and the relay goes without AUTH until then).
    pub warnings: Vec<String>,
    /// Every reason the pipeline cannot be served, one per line: `key: why`.
    pub errors: Vec<String>,
}

/// Reads everything `pipeline` names outside itself; see [`Resolved`].
pub fn resolve(pipeline: &Pipeline) -> Resolved {
    let mut errors = Vec::new();
    let mut secret = |key: &str, s: Option<&SecretRef>| match s.map(SecretRef::resolve) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            errors.push(format!("{key}: {e}"));
            None
        }
    };
    let admin_token = secret("admin.token", pipeline.admin.token.as_ref());
    let verp_key = secret("delivery.verp_key", pipeline.delivery.verp_key.as_ref());
    let dkim_key = secret("dkim.key", pipeline.dkim.key.as_ref());
    // Named by its setting, never quoted: the error may reach a terminal or a CI log.
    if let Some(k) = &dkim_key
        && let Err(e) = crate::dkim::Sealer::from_secret(k)
    {
        errors.push(format!("dkim.key: {e}"));
    }
    let warnings = pipeline
        .relays
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let e = r.auth_password.as_ref()?.resolve().err()?;
            Some(format!(
                "relay[{i}].auth_password (relay {:?}): {e}; the relay is used without AUTH until it can be read",
                r.id
            ))
        })
        .collect();
    // Validation saw that a CA file goes with a TLS URL; here, that the file holds one.
    for (i, r) in pipeline.relays.iter().enumerate() {
        if let Some(ca) = &r.tls_ca_file
            && let Err(e) = crate::relay::check_ca_file(ca)
        {
            errors.push(format!("relay[{i}].tls_ca_file: {e}"));
        }
    }
    // Submission takes AUTH only over TLS: its certificate must load, as the listener
    // would load it.
    let sub = &pipeline.submission;
    if sub.enabled()
        && let (Some(cert), Some(key)) = (&sub.tls_cert_file, &sub.tls_key_file)
        && let Err(e) = crate::smtp_in::tls::server_config(cert, key)
    {
        errors.push(format!("submission.tls_cert_file: {e}"));
    }
    let mut log_source_logins = Vec::new();
    for (i, ls) in pipeline.log_sources.iter().enumerate() {
        match Logins::load(&ls.logins_file) {
            Ok(l) => log_source_logins.push(l),
            Err(e) => errors.push(format!("log_source[{i}].logins: {e}")),
        }
    }
    let p = &pipeline.plugins;
    let mut plugins = Vec::new();
    for (stage, c) in [
        (Stage::Ingest, &p.ingest),
        (Stage::Route, &p.route),
        (Stage::Send, &p.send),
        (Stage::Bounce, &p.bounce),
        (Stage::Bill, &p.bill),
    ] {
        match plugin_bytes(&c.source) {
            Ok(b) => plugins.push((stage, b)),
            Err(e) => errors.push(format!("plugins.{stage}: {e}")),
        }
    }
    Resolved {
        admin_token,
        verp_key,
        dkim_key,
        log_source_logins,
        plugins,
        warnings,
        errors,
    }
}

/// A plugin's component: a default plugin's (no copy) or a file's, read.
pub fn plugin_bytes(source: &PluginSource) -> Result<PluginBytes, String> {
    match source {
        PluginSource::Builtin(name) => crate::builtin::by_name(name)
            .map(|b| PluginBytes {
                name: name.clone(),
                bytes: Cow::Borrowed(b.wasm),
            })
            .ok_or_else(|| format!("no default plugin {name:?}")),
        PluginSource::File(path) => std::fs::read(path)
            .map(|b| PluginBytes {
                name: path.display().to_string(),
                bytes: Cow::Owned(b),
            })
            .map_err(|e| format!("cannot read plugin {}: {e}", path.display())),
    }
}

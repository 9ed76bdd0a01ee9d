//! `[plugins]`: each stage's plugin and its bounds, and the platform's bounds on
//! tenants' plugins, their logs and their uploads.

use super::check::{Check, Count};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// Which plugin serves a stage, and how it is bounded.
/// `[plugins] max_upload_bytes` when the file gives none.
pub(super) const DEFAULT_MAX_UPLOAD_BYTES: u64 = 10 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    pub source: PluginSource,
    pub timeout: Duration,
    pub memory_bytes: usize,
    pub reuse_instances: bool,
    pub config: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PluginSource {
    Builtin(String),
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Plugins {
    pub ingest: PluginConfig,
    pub route: PluginConfig,
    pub send: PluginConfig,
    pub bounce: PluginConfig,
    pub bill: PluginConfig,
    /// Platform maxima for tenant plugins.
    pub max_timeout: Duration,
    pub max_memory_bytes: usize,
    /// Most calls of one tenant plugin running at once (`[plugins]
    /// max_calls_in_flight`, default 8): a tenant asks for fewer at upload.
    pub max_calls_in_flight: u32,
    /// Largest tenant plugin upload (`[plugins] max_upload_bytes`, default 10 MiB).
    pub max_upload_bytes: u64,
    /// Bounds of tenant plugins' logs (`[plugins.logs]`).
    pub logs: PluginLogs,
    /// Bounds of what an upload may cost (`[plugins.uploads]`).
    pub uploads: PluginUploads,
    /// Threads that run tenants' plugin calls (`[plugins] tenant_threads`, default one
    /// per core).
    pub tenant_threads: usize,
    /// Their nice value (`[plugins] tenant_threads_nice`, 0–19, default 10): the host's
    /// other work comes first.
    pub tenant_threads_nice: i32,
}

/// Bounds of tenant plugins' logs, in bytes (`[plugins.logs]`). A tenant's logs
/// hold at most `max_bytes_per_tenant` on a host, whatever its plugins write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLogs {
    /// Bytes of one message kept, cut on a UTF-8 boundary (`max_line_bytes`, 4096).
    pub max_line_bytes: usize,
    /// Fields of one line kept (`max_fields`, 16).
    pub max_fields: usize,
    /// Bytes of a field's key, and of its value, kept (`max_field_bytes`, 256).
    pub max_field_bytes: usize,
    /// `log` calls kept per plugin call (`max_lines_per_call`, 64).
    pub max_lines_per_call: usize,
    /// Bytes one (tenant, stage) log holds (`max_bytes_per_stage`, 1 MiB).
    pub max_bytes_per_stage: usize,
    /// Bytes all of one tenant's logs hold together (`max_bytes_per_tenant`, 2 MiB).
    pub max_bytes_per_tenant: usize,
    /// Bytes of JSON lines in one page of `GET …/logs` (`max_page_bytes`, 256 KiB).
    pub max_page_bytes: usize,
}

/// Bounds of tenant plugin uploads (`[plugins.uploads]`): what a component may
/// declare (checked before it is compiled), what compiling it may cost, and how
/// often a tenant may upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginUploads {
    /// Core modules in one component (`max_core_modules`, 16).
    pub max_core_modules: u32,
    /// Functions defined, all core modules together (`max_functions`, 50 000).
    pub max_functions: u32,
    /// Locals one function declares (`max_function_locals`, 5000).
    pub max_function_locals: u32,
    /// Code bytes of one function (`max_function_code_bytes`, 1 MiB).
    pub max_function_code_bytes: u64,
    /// Code bytes of all functions (`max_code_bytes`, 8 MiB).
    pub max_code_bytes: u64,
    /// Data segment bytes (`max_data_bytes`, 8 MiB).
    pub max_data_bytes: u64,
    /// Elements a table may start with (`max_table_elements`, 100 000).
    pub max_table_elements: u64,
    /// Wall time of one compilation (`max_compile_secs`, 20).
    pub max_compile: Duration,
    /// CPU time of one compilation (`max_compile_cpu_secs`, 20).
    pub max_compile_cpu_secs: u64,
    /// Heap and anonymous memory of the compiling process, `RLIMIT_DATA`
    /// (`max_compile_memory_mib`, 1024).
    pub max_compile_memory_bytes: u64,
    /// Compilations at once on a host, all tenants together (`max_compiles_at_once`, 1).
    pub max_compiles_at_once: u32,
    /// Uploads a tenant may make per hour once its burst is spent (`uploads_per_hour`, 60).
    pub uploads_per_hour: u32,
    /// Uploads a tenant may make at once (`upload_burst`, 20).
    pub upload_burst: u32,
    /// Refused uploads a tenant may make per hour once its burst is spent
    /// (`failed_uploads_per_hour`, 12).
    pub failed_uploads_per_hour: u32,
    /// Refused uploads a tenant may make at once (`failed_upload_burst`, 10).
    pub failed_upload_burst: u32,
    /// Versions a tenant keeps, all stages together (`max_versions_per_tenant`, 100).
    pub max_versions_per_tenant: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlugins {
    #[serde(default)]
    ingest: Option<Spanned<RawPlugin>>,
    #[serde(default)]
    route: Option<Spanned<RawPlugin>>,
    #[serde(default)]
    send: Option<Spanned<RawPlugin>>,
    #[serde(default)]
    bounce: Option<Spanned<RawPlugin>>,
    #[serde(default)]
    bill: Option<Spanned<RawPlugin>>,
    #[serde(default)]
    max_timeout_ms: Option<u64>,
    #[serde(default)]
    max_memory_mib: Option<usize>,
    #[serde(default)]
    pub(super) max_upload_bytes: Option<u64>,
    #[serde(default)]
    max_calls_in_flight: Option<Spanned<u32>>,
    #[serde(default)]
    tenant_threads: Option<Spanned<u32>>,
    #[serde(default)]
    tenant_threads_nice: Option<Spanned<i64>>,
    #[serde(default)]
    logs: RawPluginLogs,
    #[serde(default)]
    uploads: RawPluginUploads,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPluginLogs {
    max_line_bytes: Count,
    max_fields: Count,
    max_field_bytes: Count,
    max_lines_per_call: Count,
    max_bytes_per_stage: Count,
    max_bytes_per_tenant: Count,
    max_page_bytes: Count,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPluginUploads {
    max_core_modules: Count,
    max_functions: Count,
    max_function_locals: Count,
    max_function_code_bytes: Count,
    max_code_bytes: Count,
    max_data_bytes: Count,
    max_table_elements: Count,
    max_compile_secs: Count,
    max_compile_cpu_secs: Count,
    max_compile_memory_mib: Count,
    max_compiles_at_once: Count,
    uploads_per_hour: Count,
    upload_burst: Count,
    failed_uploads_per_hour: Count,
    failed_upload_burst: Count,
    max_versions_per_tenant: Count,
}

/// A positive count of `[plugins.<table>] key`, else `default`; zero is an error.
pub(super) fn positive(check: &mut Check, table: &str, key: &str, raw: Count, default: u64) -> u64 {
    match raw {
        Some(v) if *v.get_ref() == 0 => {
            check.at(
                v.span(),
                format!("plugins.{table}.{key}"),
                "must be at least 1",
            );
            default
        }
        Some(v) => v.into_inner(),
        None => default,
    }
}

impl RawPluginLogs {
    pub(super) fn validate(self, check: &mut Check) -> PluginLogs {
        let mut n = |key, raw, default| positive(check, "logs", key, raw, default) as usize;
        let logs = PluginLogs {
            max_line_bytes: n("max_line_bytes", self.max_line_bytes, 4096),
            max_fields: n("max_fields", self.max_fields, 16),
            max_field_bytes: n("max_field_bytes", self.max_field_bytes, 256),
            max_lines_per_call: n("max_lines_per_call", self.max_lines_per_call, 64),
            max_bytes_per_stage: n("max_bytes_per_stage", self.max_bytes_per_stage, 1 << 20),
            max_bytes_per_tenant: n("max_bytes_per_tenant", self.max_bytes_per_tenant, 2 << 20),
            max_page_bytes: n("max_page_bytes", self.max_page_bytes, 256 << 10),
        };
        // A page holds at least one line: the longest line, escaped as JSON (at most six
        // bytes per byte), must fit.
        let longest = 6 * (logs.max_line_bytes + 2 * logs.max_fields * logs.max_field_bytes) + 512;
        if logs.max_page_bytes < longest {
            check.at(
                0..0,
                "plugins.logs.max_page_bytes",
                format!(
                    "{} is below {longest}, the JSON of the longest line the other limits allow",
                    logs.max_page_bytes
                ),
            );
        }
        logs
    }
}

impl RawPluginUploads {
    pub(super) fn validate(self, check: &mut Check) -> PluginUploads {
        let mut n = |key, raw, default| positive(check, "uploads", key, raw, default);
        PluginUploads {
            max_core_modules: n("max_core_modules", self.max_core_modules, 16) as u32,
            max_functions: n("max_functions", self.max_functions, 50_000) as u32,
            max_function_locals: n("max_function_locals", self.max_function_locals, 5000) as u32,
            max_function_code_bytes: n(
                "max_function_code_bytes",
                self.max_function_code_bytes,
                1 << 20,
            ),
            max_code_bytes: n("max_code_bytes", self.max_code_bytes, 8 << 20),
            max_data_bytes: n("max_data_bytes", self.max_data_bytes, 8 << 20),
            max_table_elements: n("max_table_elements", self.max_table_elements, 100_000),
            max_compile: Duration::from_secs(n("max_compile_secs", self.max_compile_secs, 20)),
            max_compile_cpu_secs: n("max_compile_cpu_secs", self.max_compile_cpu_secs, 20),
            max_compile_memory_bytes: n(
                "max_compile_memory_mib",
                self.max_compile_memory_mib,
                1024,
            ) << 20,
            max_compiles_at_once: n("max_compiles_at_once", self.max_compiles_at_once, 1) as u32,
            uploads_per_hour: n("uploads_per_hour", self.uploads_per_hour, 60) as u32,
            upload_burst: n("upload_burst", self.upload_burst, 20) as u32,
            failed_uploads_per_hour: n("failed_uploads_per_hour", self.failed_uploads_per_hour, 12)
                as u32,
            failed_upload_burst: n("failed_upload_burst", self.failed_upload_burst, 10) as u32,
            max_versions_per_tenant: n("max_versions_per_tenant", self.max_versions_per_tenant, 100)
                as u32,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlugin {
    builtin: Option<String>,
    file: Option<PathBuf>,
    timeout_ms: Option<u64>,
    memory_mib: Option<usize>,
    /// Default: on for the built-in plugins (trusted, and a reused instance
    /// is ten times cheaper), off for plugin files.
    #[serde(default)]
    reuse_instances: Option<bool>,
    #[serde(default)]
    config: toml::Table,
}

impl RawPlugin {
    pub(super) fn validate(
        self,
        check: &mut Check,
        stage: crate::stage::Stage,
        span: std::ops::Range<usize>,
    ) -> PluginConfig {
        let key = format!("plugins.{stage}");
        let defaults = crate::runtime::Limits::for_stage(stage);
        let source = match (self.builtin, self.file) {
            (Some(b), None) => match crate::builtin::by_name(&b) {
                Some(found) if found.stage == stage => PluginSource::Builtin(b),
                Some(found) => {
                    check.at(
                        span.clone(),
                        format!("{key}.builtin"),
                        format!(
                            "default plugin {b:?} serves stage {}, not {stage}",
                            found.stage
                        ),
                    );
                    PluginSource::Builtin(b)
                }
                None => {
                    check.at(
                        span.clone(),
                        format!("{key}.builtin"),
                        format!("no default plugin called {b:?}"),
                    );
                    PluginSource::Builtin(b)
                }
            },
            (None, Some(f)) => PluginSource::File(f),
            (None, None) => PluginSource::Builtin(crate::builtin::default_for(stage).name.into()),
            (Some(_), Some(_)) => {
                check.at(span.clone(), key.clone(), "give builtin or file, not both");
                PluginSource::Builtin(crate::builtin::default_for(stage).name.into())
            }
        };
        let builtin = matches!(source, PluginSource::Builtin(_));
        let config = self
            .config
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect();
        PluginConfig {
            source,
            timeout: self
                .timeout_ms
                .map_or(defaults.timeout, Duration::from_millis),
            memory_bytes: self.memory_mib.map_or(defaults.memory_bytes, |m| m << 20),
            reuse_instances: self.reuse_instances.unwrap_or(builtin),
            config,
        }
    }
}

impl RawPlugins {
    /// `[plugins]`: each stage's plugin (a plugin file is read by `resolve`), and the
    /// bounds on tenants' plugins.
    pub(super) fn validate(self, check: &mut Check) -> Plugins {
        use crate::stage::Stage;
        let p = self;
        let max_calls_in_flight = match p.max_calls_in_flight {
            Some(v) if *v.get_ref() == 0 => {
                check.at(
                    v.span(),
                    "plugins.max_calls_in_flight",
                    "must be at least 1",
                );
                8
            }
            Some(v) => v.into_inner(),
            None => 8,
        };
        let tenant_threads = match p.tenant_threads {
            Some(v) if !(1..=256).contains(v.get_ref()) => {
                check.at(v.span(), "plugins.tenant_threads", "must be 1 to 256");
                1
            }
            Some(v) => v.into_inner() as usize,
            None => std::thread::available_parallelism().map_or(2, usize::from),
        };
        let tenant_threads_nice = match p.tenant_threads_nice {
            Some(v) if !(0..=19).contains(v.get_ref()) => {
                check.at(
                    v.span(),
                    "plugins.tenant_threads_nice",
                    "must be 0 (as the host) to 19 (the lowest priority)",
                );
                10
            }
            Some(v) => v.into_inner() as i32,
            None => 10,
        };
        let logs = p.logs.validate(check);
        let uploads = p.uploads.validate(check);
        let mut plugin = |raw: Option<Spanned<RawPlugin>>, stage: Stage| match raw {
            Some(s) => {
                let span = s.span();
                s.into_inner().validate(check, stage, span)
            }
            None => RawPlugin::default().validate(check, stage, 0..0),
        };
        Plugins {
            ingest: plugin(p.ingest, Stage::Ingest),
            route: plugin(p.route, Stage::Route),
            send: plugin(p.send, Stage::Send),
            bounce: plugin(p.bounce, Stage::Bounce),
            bill: plugin(p.bill, Stage::Bill),
            max_timeout: Duration::from_millis(p.max_timeout_ms.unwrap_or(1000)),
            max_memory_bytes: p.max_memory_mib.unwrap_or(128) << 20,
            max_upload_bytes: p
                .max_upload_bytes
                .unwrap_or(DEFAULT_MAX_UPLOAD_BYTES)
                .max(1),
            max_calls_in_flight,
            logs,
            uploads,
            tenant_threads,
            tenant_threads_nice,
        }
    }
}

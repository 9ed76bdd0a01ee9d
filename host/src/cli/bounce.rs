//! `sluice bounce parse | eval | bench`: the bounce stage on files.

use super::UsageError;
use crate::bounce_eval::{self, Manifest};
use crate::builtin;
use crate::mbox;
use crate::runtime::{Plugin, PluginSpec, Runtime, RuntimeConfig};
use crate::stage::{BounceInput, Stage};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub enum BounceCommand {
    /// Parse bounce e-mails (mbox files are split) and print one line per
    /// result: JSON Lines, or CSV with a header.
    Parse {
        #[command(flatten)]
        plugin: PluginArg,
        /// E-mail or mbox files, or directories (walked: every regular file
        /// whose name does not start with '.', symbolic links not followed).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also print, per recipient, the rule that decided each field.
        #[arg(long)]
        explain: bool,
        #[arg(long, value_enum, default_value_t = Output::Json)]
        output: Output,
        /// Files larger than this many bytes are skipped with a warning
        /// (they are read whole into memory).
        #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
        max_file_size: u64,
    },
    /// Score a bounce plugin against manifests: how often it finds each field
    /// (recipient, status, reply code, reason, hard/soft) that the manifest
    /// expects, dev and held-out families side by side.
    #[command(
        long_about = "Score a bounce plugin against manifests: how often it finds each \
        field (recipient, status, reply code, reason, hard/soft) the manifest expects, \
        dev and held-out families side by side.\n\n\
        A manifest is JSON Lines, one bounce e-mail per line with its expected results and \
        a path relative to the manifest; the families.jsonl beside it marks each family \
        (the MTA or provider that wrote the bounces) dev or heldout."
    )]
    Eval {
        #[command(flatten)]
        plugin: PluginArg,
        /// Manifest files (JSON Lines), each with a families.jsonl beside it.
        #[arg(required = true, value_name = "MANIFEST")]
        manifests: Vec<PathBuf>,
        /// Also print every row that disagrees, and the table per family.
        #[arg(long)]
        verbose: bool,
    },
    /// Bounce e-mails parsed per second through the Wasm plugin, one thread.
    Bench {
        #[command(flatten)]
        plugin: PluginArg,
        /// A directory of e-mails (searched recursively) or a manifest.
        corpus: PathBuf,
        /// Measure for at least this many seconds per mode.
        #[arg(long, default_value_t = 3)]
        secs: u64,
    },
}

/// How `bounce parse` prints its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One JSON object per line.
    Json,
    /// Comma-separated values with a header line (RFC 4180 quoting).
    Csv,
}

#[derive(Debug, Args)]
pub struct PluginArg {
    /// A bounce plugin component instead of the built-in default.
    #[arg(long, value_name = "FILE.wasm")]
    plugin: Option<PathBuf>,
}

pub fn run(cmd: BounceCommand) -> Result<ExitCode> {
    match cmd {
        BounceCommand::Parse {
            plugin,
            files,
            explain,
            output,
            max_file_size,
        } => parse(&plugin, &files, explain, output, max_file_size),
        BounceCommand::Eval {
            plugin,
            manifests,
            verbose,
        } => eval(&plugin, &manifests, verbose),
        BounceCommand::Bench {
            plugin,
            corpus,
            secs,
        } => bench(&plugin, &corpus, Duration::from_secs(secs)),
    }
}

fn load(arg: &PluginArg, reuse_instances: bool) -> Result<Plugin> {
    let (name, bytes) = match &arg.plugin {
        Some(file) => {
            let bytes = std::fs::read(file)
                .map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?;
            (file.display().to_string(), bytes)
        }
        None => {
            let b = builtin::default_for(Stage::Bounce);
            (b.name.to_owned(), b.wasm.to_vec())
        }
    };
    let mut spec = PluginSpec::for_stage(Stage::Bounce);
    spec.limits.reuse_instances = reuse_instances;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    runtime
        .load(Stage::Bounce, &name, &bytes, spec)
        .with_context(|| format!("{name} cannot be loaded as a bounce plugin"))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())).into())
}

/// Depth to which `bounce parse DIR` descends: deeper trees are a mistake
/// or an attack, not a mail store.
const MAX_DEPTH: usize = 32;

/// The regular files under `root` (itself if it is a file), sorted per
/// directory. Symbolic links to directories are not followed (a link loop
/// would never end) and hidden names are skipped (Maildir's `.Trash`
/// folders are read when named).
fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(root)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", root.display())))?;
    if !meta.is_dir() {
        return Ok(vec![root.to_owned()]);
    }
    let mut files = Vec::new();
    let mut dirs = vec![(root.to_owned(), 0usize)];
    while let Some((dir, depth)) = dirs.pop() {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&dir)
            .map_err(|e| UsageError(format!("cannot read {}: {e}", dir.display())))?
        {
            let entry =
                entry.with_context(|| format!("cannot read an entry of {}", dir.display()))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry
                .file_type()
                .with_context(|| format!("cannot read {}", entry.path().display()))?;
            entries.push((entry.path(), kind));
        }
        entries.sort_by(|a, b| b.0.cmp(&a.0));
        let mut here = Vec::new();
        for (path, kind) in entries {
            if kind.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    eprintln!(
                        "warning: {} is deeper than {MAX_DEPTH} directories: skipped",
                        path.display()
                    );
                } else {
                    dirs.push((path, depth + 1));
                }
            } else if kind.is_file() {
                here.push(path);
            }
        }
        here.reverse();
        files.extend(here);
    }
    Ok(files)
}

/// One field of CSV (RFC 4180). A value a spreadsheet would run as a
/// formula (`=`, `+`, `-`, `@`, tab, CR first) gets a leading `'`: a bounce's
/// text is written by whoever sent it.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The fields whose deciding rule the plugin reports.
const RULE_FIELDS: [&str; 5] = ["recipient", "replycode", "status", "reason", "hard"];

/// The rules the plugin's notes name for `recipient`: notes of the form
/// `rule <recipient>: field=rule; ...` (the default plugin writes them; a
/// plugin that does not gives none).
fn rules_for(notes: &[String], recipient: &str) -> Option<Vec<(String, String)>> {
    notes.iter().find_map(|n| {
        let rest = n
            .strip_prefix("rule ")?
            .strip_prefix(recipient)?
            .strip_prefix(": ")?;
        Some(
            rest.split("; ")
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    })
}

const CSV_HEADER: &str = "file,msg,recipient,status,replycode,reason,hardbounce,action,diagnostic,original_message_id,verp_token";

fn parse(
    arg: &PluginArg,
    roots: &[PathBuf],
    explain: bool,
    output: Output,
    max_file_size: u64,
) -> Result<ExitCode> {
    let plugin = load(arg, true)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if output == Output::Csv {
        write!(out, "{CSV_HEADER}")?;
        if explain {
            for f in RULE_FIELDS {
                write!(out, ",rule_{f}")?;
            }
        }
        writeln!(out)?;
    }
    let mut skipped = 0usize;
    for root in roots {
        for path in walk(root)? {
            let size = std::fs::metadata(&path)
                .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?
                .len();
            if size > max_file_size {
                eprintln!(
                    "warning: {} is {size} bytes, over --max-file-size {max_file_size}: skipped",
                    path.display()
                );
                skipped += 1;
                continue;
            }
            let bytes = read(&path)?;
            let file = path.display().to_string();
            for (i, message) in mbox::split(&bytes).into_iter().enumerate() {
                let answer = plugin
                    .bounce(&BounceInput::Email(message.to_vec()))
                    .with_context(|| format!("{file}, message {}", i + 1))?;
                let msg = i + 1;
                if answer.results.is_empty() {
                    match output {
                        Output::Json => {
                            let line = json!({"file": file, "msg": msg, "no_result": true, "notes": answer.notes});
                            writeln!(out, "{line}")?;
                        }
                        Output::Csv => {
                            write!(
                                out,
                                "{},{msg},,,,,,,{},,",
                                csv_field(&file),
                                csv_field(&answer.notes.join("; "))
                            )?;
                            if explain {
                                write!(out, ",,,,,")?;
                            }
                            writeln!(out)?;
                        }
                    }
                }
                for r in &answer.results {
                    let replycode = r.reply_code.map(|c| c.to_string()).unwrap_or_default();
                    let reason = bounce_eval::reason_name(r);
                    let rules = explain.then(|| rules_for(&answer.notes, &r.recipient));
                    match output {
                        Output::Json => {
                            let mut line = json!({
                                "file": file,
                                "msg": msg,
                                "recipient": r.recipient,
                                "status": r.status,
                                "replycode": replycode,
                                "reason": reason,
                                "hardbounce": r.hard,
                                "action": r.action,
                                "diagnostic": r.diagnostic,
                                "original_message_id": r.original_message_id,
                                "verp_token": r.verp_token,
                            });
                            if let Some(rules) = &rules {
                                line["rules"] = match rules {
                                    Some(rules) => rules
                                        .iter()
                                        .map(|(k, v)| (k.clone(), json!(v)))
                                        .collect::<serde_json::Map<_, _>>()
                                        .into(),
                                    None => serde_json::Value::Null,
                                };
                            }
                            writeln!(out, "{line}")?;
                        }
                        Output::Csv => {
                            let cells = [
                                file.as_str(),
                                &msg.to_string(),
                                &r.recipient,
                                &r.status,
                                &replycode,
                                &reason,
                                if r.hard { "true" } else { "false" },
                                &r.action,
                                &r.diagnostic,
                                r.original_message_id.as_deref().unwrap_or(""),
                                r.verp_token.as_deref().unwrap_or(""),
                            ]
                            .map(csv_field);
                            write!(out, "{}", cells.join(","))?;
                            if let Some(rules) = &rules {
                                for f in RULE_FIELDS {
                                    let rule = rules
                                        .as_ref()
                                        .and_then(|r| r.iter().find(|(k, _)| k == f))
                                        .map_or("", |(_, v)| v.as_str());
                                    write!(out, ",{}", csv_field(rule))?;
                                }
                            }
                            writeln!(out)?;
                        }
                    }
                }
            }
        }
    }
    out.flush()?;
    if skipped > 0 {
        eprintln!("{skipped} file(s) skipped");
    }
    Ok(ExitCode::SUCCESS)
}

fn eval(arg: &PluginArg, paths: &[PathBuf], verbose: bool) -> Result<ExitCode> {
    let manifests = paths
        .iter()
        .map(|p| Manifest::read(p).map_err(|e| UsageError(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let plugin = load(arg, true)?;
    let mut report: Option<bounce_eval::Report> = None;
    for manifest in &manifests {
        let one = bounce_eval::evaluate(manifest, |m| {
            plugin
                .bounce(&BounceInput::Email(m.bytes.clone()))
                .with_context(|| format!("{}, message {}", m.file, m.msg))
        })?;
        match &mut report {
            Some(r) => r.merge(one),
            None => report = Some(one),
        }
    }
    let report = report.expect("clap requires at least one manifest");
    if verbose {
        // Held-out families are scored, never listed: no rule is written
        // from them.
        let mut held_out_disagreeing = 0;
        for o in report.mismatches() {
            if o.row.split() == bounce_eval::Split::Heldout {
                held_out_disagreeing += 1;
                continue;
            }
            let got = o.got.as_ref().map(|g| {
                json!({"recipient": g.recipient, "status": g.status,
                    "reason": bounce_eval::reason_name(g), "hard": g.hard,
                    "diagnostic": g.diagnostic.chars().take(160).collect::<String>()})
            });
            let r = &o.row;
            let want = json!({"recipient": r.recipient, "status": r.status,
                "reason": r.reason, "hard": r.hardbounce, "no_result": r.no_result});
            println!("{}#{}\n  want {want}\n  got  {}", r.file, r.msg, json!(got));
        }
        println!("({held_out_disagreeing} held-out rows disagree; not listed)");
        let splits: std::collections::BTreeMap<String, bounce_eval::Split> = report
            .outcomes
            .iter()
            .map(|o| {
                (
                    o.row.family.clone().unwrap_or_else(|| "-".into()),
                    o.row.split(),
                )
            })
            .collect();
        println!("\n| family | split | n | rcpt | code | status | reason | hard |");
        for (family, s) in report.by_family() {
            println!(
                "| {family} | {} | {} | {} | {} | {} | {} | {} |",
                splits[&family], s.labelled, s.recipient, s.replycode, s.status, s.reason, s.hard
            );
        }
        println!();
    }
    println!("{}", report.side_by_side());
    Ok(ExitCode::SUCCESS)
}

/// The e-mails of a corpus: a manifest's messages, or every file under a
/// directory (mbox files split).
fn corpus(path: &Path) -> Result<Vec<Vec<u8>>> {
    if path.is_file() {
        let manifest = Manifest::read(path).map_err(|e| UsageError(e.to_string()))?;
        return Ok(manifest.messages.into_iter().map(|m| m.bytes).collect());
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_owned()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| UsageError(format!("cannot read {}: {e}", dir.display())))?;
        for entry in entries {
            let p = entry?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "eml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut messages = Vec::new();
    for f in files {
        let bytes = read(&f)?;
        messages.extend(mbox::split(&bytes).into_iter().map(<[u8]>::to_vec));
    }
    Ok(messages)
}

fn bench(arg: &PluginArg, path: &Path, at_least: Duration) -> Result<ExitCode> {
    let messages = corpus(path)?;
    if messages.is_empty() {
        return Err(UsageError(format!("{}: no e-mails found", path.display())).into());
    }
    let bytes: usize = messages.iter().map(Vec::len).sum();
    println!(
        "corpus: {} e-mails, {:.1} MiB, one thread",
        messages.len(),
        bytes as f64 / (1 << 20) as f64
    );
    let inputs: Vec<BounceInput> = messages.into_iter().map(BounceInput::Email).collect();
    for reuse in [false, true] {
        let plugin = load(arg, reuse)?;
        // One warm-up pass: page faults and the first instance are not the
        // steady state being measured.
        let mut results = 0;
        for i in &inputs {
            results += plugin.bounce(i).map_or(0, |o| o.results.len());
        }
        let started = Instant::now();
        let mut parsed = 0usize;
        // A call that misses its deadline (a busy machine can deschedule
        // the thread) is counted, not fatal: the figure is throughput.
        let mut failed = 0usize;
        while started.elapsed() < at_least {
            for i in &inputs {
                failed += usize::from(plugin.bounce(i).is_err());
            }
            parsed += inputs.len();
        }
        let took = started.elapsed();
        let failed = if failed > 0 {
            format!(", {failed} calls failed")
        } else {
            String::new()
        };
        println!(
            "{:<16} {:>9.0} e-mails/s  ({parsed} in {:.2} s, {:.1} µs each, {results} results per pass{failed})",
            if reuse {
                "reused instance"
            } else {
                "fresh instance"
            },
            parsed as f64 / took.as_secs_f64(),
            took.as_secs_f64(),
            took.as_secs_f64() * 1e6 / parsed as f64,
        );
    }
    Ok(ExitCode::SUCCESS)
}

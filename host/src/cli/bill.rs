//! `sluice bill`: rate qmail or Postfix logs offline and print per-tenant
//! totals.

use super::UsageError;
use crate::bill_logs::{
    Biller, DEFAULT_BATCH, DuplicatePlace, Logins, Matcher, Place, Summary, TenantTotals,
    load_tariffs,
};
use crate::builtin;
use crate::maillog::{self, Format, ReaderConfig, YearRule, open_input, read_lines};
use crate::runtime::{PluginSpec, Runtime, RuntimeConfig};
use crate::stage::Stage;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Qmail,
    Postfix,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct BillArgs {
    /// Which MTA wrote the logs.
    #[arg(long)]
    format: LogFormat,
    /// Tenants and their logins (addresses or domains), TOML.
    #[arg(long, value_name = "LOGINS.toml")]
    logins: PathBuf,
    /// Each tenant's tariff (inline or by file), TOML.
    #[arg(long, value_name = "TARIFFS.toml")]
    tariffs: PathBuf,
    /// A rater component to use instead of the built-in rater-tiered.
    #[arg(long, value_name = "FILE.wasm")]
    plugin: Option<PathBuf>,
    /// Report format on stdout.
    #[arg(long, value_enum, default_value = "json")]
    output: Output,
    /// Year of the first line of a syslog file whose dates have none
    /// (default: from each file's modification time).
    #[arg(long)]
    year: Option<i32>,
    /// Offset of syslog's local time from UTC, e.g. +04:00 (default +00:00).
    #[arg(long, value_name = "±HH:MM", allow_hyphen_values = true)]
    utc_offset: Option<String>,
    /// Host name for keys when the log has none (multilog, plain stamps).
    #[arg(long, default_value = "localhost")]
    host: String,
    /// A Postfix transport that feeds a content filter (repeatable; added to
    /// amavis, amavisfeed, lmtp-amavis, spamfilter, scan, dfilt).
    #[arg(long = "filter-transport", value_name = "NAME")]
    filter_transports: Vec<String>,
    /// Events per call of the rater (1 to 100000).
    #[arg(long, default_value_t = DEFAULT_BATCH as u64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch: u64,
    /// Log files, plain or gzip; `-` for stdin.
    #[arg(required = true, value_name = "LOG")]
    logs: Vec<PathBuf>,
}

fn parse_offset(text: &str) -> Result<i32, UsageError> {
    let bad = || {
        UsageError(format!(
            "--utc-offset {text:?}: expected ±HH:MM, e.g. +04:00"
        ))
    };
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

/// A one-line progress note on stderr, only when it is a terminal.
struct Progress {
    on: bool,
    last: Instant,
}

impl Progress {
    fn tick(&mut self, name: &str, done: u64, size: Option<u64>, lines: u64, transfers: u64) {
        if !self.on || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        let pct = size
            .filter(|&s| s > 0)
            .map(|s| format!("{:>3}% ", done.min(s) * 100 / s))
            .unwrap_or_default();
        eprint!("\r{name}: {pct}{lines} lines, {transfers} transfers   ");
    }

    fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}

pub fn run(args: BillArgs) -> Result<ExitCode> {
    let logins = Logins::load(&args.logins).map_err(|e| UsageError(e.to_string()))?;
    let tariffs = load_tariffs(&args.tariffs, &logins).map_err(|e| UsageError(e.to_string()))?;
    let utc_offset_secs = match &args.utc_offset {
        Some(t) => parse_offset(t)?,
        None => 0,
    };

    if args.logs.len() > usize::from(u16::MAX) {
        return Err(UsageError(format!(
            "{} logs given; at most {} in one run",
            args.logs.len(),
            u16::MAX
        ))
        .into());
    }
    let mut inputs = Vec::new();
    let mut seen = Vec::new();
    for path in &args.logs {
        if path.as_os_str() != "-" {
            let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            if seen.contains(&canonical) {
                eprintln!("warning: {path:?} is given twice; read once");
                continue;
            }
            seen.push(canonical);
        }
        inputs.push(open_input(path).map_err(|e| UsageError(e.to_string()))?);
    }

    let runtime = Runtime::new(RuntimeConfig {
        max_instances: 4,
        ..RuntimeConfig::default()
    })?;
    let mut spec = PluginSpec::for_stage(Stage::Bill);
    spec.limits.reuse_instances = true;
    let plugin = match &args.plugin {
        Some(path) => {
            let wasm = std::fs::read(path)
                .map_err(|e| UsageError(format!("cannot read plugin {path:?}: {e}")))?;
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            runtime
                .load(Stage::Bill, &name, &wasm, spec)
                .map_err(|e| UsageError(format!("plugin {path:?}: {e}")))?
        }
        None => {
            let b = builtin::default_for(Stage::Bill);
            runtime
                .load(Stage::Bill, b.name, b.wasm, spec)
                .context("loading the built-in rater")?
        }
    };
    let mut biller = Biller::new(plugin, Matcher::new(logins), tariffs, args.batch as usize)
        .map_err(|e| UsageError(e.to_string()))?;

    let mut filter_transports = ReaderConfig::default().filter_transports;
    filter_transports.extend(args.filter_transports.iter().cloned());
    let config = ReaderConfig {
        utc_offset_secs,
        host: args.host.clone(),
        filter_transports,
        ..ReaderConfig::default()
    };
    let format = match args.format {
        LogFormat::Qmail => Format::Qmail,
        LogFormat::Postfix => Format::Postfix,
    };
    let mut reader = maillog::reader(format, config);
    let mut progress = Progress {
        on: std::io::stderr().is_terminal(),
        last: Instant::now(),
    };
    let mut failure = None;
    let mut names = Vec::new();
    let mut place = Place { file: 0, line: 0 };
    let format_name = format_name(args.format);
    for (file, input) in inputs.into_iter().enumerate() {
        let year = match (args.year, input.modified) {
            (Some(y), _) => YearRule::Start(y),
            (None, Some(t)) => YearRule::from_mtime(t),
            (None, None) => YearRule::from_mtime(SystemTime::now()),
        };
        reader.begin_file(&input.name, year);
        names.push(input.name.clone());
        // At most 65,535 logs (checked above).
        place = Place {
            file: file as u16,
            line: 0,
        };
        let before = reader.report().counters.clone();
        let mut head = Head::default();
        let consumed = input.consumed.clone();
        read_lines(&input.name, input.reader, |line| {
            place.line += 1;
            head.keep(place.line, line);
            reader.line(line, &mut |t| {
                if failure.is_none()
                    && let Err(e) = biller.add(t, place)
                {
                    failure = Some(e);
                }
            });
            if place.line.is_multiple_of(8192) {
                let c = &reader.report().counters;
                progress.tick(
                    &input.name,
                    consumed.load(std::sync::atomic::Ordering::Relaxed),
                    input.size,
                    c.lines,
                    c.transfers,
                );
            }
            failure.is_none()
        })
        .map_err(|e| UsageError(e.to_string()))?;
        if failure.is_some() {
            break;
        }
        let after = &reader.report().counters;
        if after.lines > before.lines && after.matched == before.matched {
            progress.clear();
            return Err(UsageError(head.no_match(
                format_name,
                &input.name,
                after.lines - before.lines,
            ))
            .into());
        }
    }
    reader.finish(&mut |t| {
        if failure.is_none()
            && let Err(e) = biller.add(t, place)
        {
            failure = Some(e);
        }
    });
    progress.clear();
    if let Some(e) = failure {
        return Err(e.into());
    }
    let unmatched = biller.unmatched();
    let (duplicate_transfers, samples) = biller.duplicates();
    let name = |p: Place| names.get(usize::from(p.file)).cloned().unwrap_or_default();
    let duplicates: Vec<DuplicatePlace> = samples
        .iter()
        .map(|d| DuplicatePlace {
            key: d.key.clone(),
            file: name(d.at),
            line: d.at.line,
            first_file: name(d.first),
            first_line: d.first.line,
        })
        .collect();
    let rated = biller.finish()?;
    let report = reader.report();
    let summary = Summary {
        tenants: rated.tenants,
        rater_calls: rated.rater_calls,
        unmatched_transfers: unmatched,
        duplicate_transfers,
        duplicates,
        unmatched_lines: report.counters.lines - report.counters.matched,
        rounding: crate::billing::ROUNDING_RULE,
        log: report.counters.clone(),
        unparseable_lines: report.unparseable_samples.clone(),
    };
    note_duplicates(&summary);
    let mut out = std::io::stdout().lock();
    let written = match args.output {
        Output::Json => serde_json::to_writer_pretty(&mut out, &summary)
            .map_err(std::io::Error::from)
            .and_then(|_| writeln!(out)),
        Output::Csv => {
            note_counts(&summary);
            write_csv(&mut out, &summary.tenants)
        }
    };
    match written {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A closed pipe (`| head`) is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("writing the report"),
    }
}

fn format_name(f: LogFormat) -> &'static str {
    match f {
        LogFormat::Qmail => "qmail",
        LogFormat::Postfix => "postfix",
    }
}

/// Lines of a log quoted in an error: so many, each clipped to so many bytes.
const HEAD_LINES: usize = 3;
const HEAD_BYTES: usize = 200;

/// The first lines of a log, clipped, kept to quote them if none matched.
#[derive(Default)]
struct Head {
    lines: Vec<(u64, Vec<u8>, usize)>,
}

impl Head {
    fn keep(&mut self, lineno: u64, line: &[u8]) {
        if self.lines.len() < HEAD_LINES {
            let clip = &line[..line.len().min(HEAD_BYTES)];
            self.lines.push((lineno, clip.to_vec(), line.len()));
        }
    }

    /// The error for a log of which no line is in `format`.
    fn no_match(&self, format: &str, name: &str, lines: u64) -> String {
        let mut msg = format!(
            "--format {format}: none of the {lines} lines of {name:?} is a {format} log line \
             (another MTA's log, or not a mail log?); its first lines:"
        );
        for (n, bytes, len) in &self.lines {
            // Debug quoting shows control characters and NULs escaped;
            // invalid UTF-8 is shown as U+FFFD.
            let text = String::from_utf8_lossy(bytes);
            msg.push_str(&format!("\n  line {n}: {text:?}"));
            if len > &bytes.len() {
                msg.push_str(&format!(" … ({len} bytes)"));
            }
        }
        msg
    }
}

/// Skipped duplicates, on stderr: a run that read a log twice should say so
/// whatever the output format.
fn note_duplicates(s: &Summary) {
    if s.duplicate_transfers == 0 {
        return;
    }
    eprintln!(
        "warning: skipped {} duplicate transfers (read before in this run: the same log twice, \
         or overlapping rotations); not billed again",
        s.duplicate_transfers
    );
    for d in &s.duplicates {
        eprintln!(
            "  {}:{} repeats {}:{} ({:?})",
            d.file, d.line, d.first_file, d.first_line, d.key
        );
    }
}

/// The counts that CSV has no room for, on stderr.
fn note_counts(s: &Summary) {
    let c = &s.log;
    eprintln!(
        "{} lines ({} not in the log format), {} transfers, {} unmatched, {} duplicates skipped, \
         {} unparseable",
        c.lines,
        s.unmatched_lines,
        c.transfers,
        s.unmatched_transfers,
        s.duplicate_transfers,
        c.unparseable
    );
    for p in &s.unparseable_lines {
        eprintln!("  unparseable: {}:{}", p.file, p.line);
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn write_csv(out: &mut impl Write, tenants: &[TenantTotals]) -> std::io::Result<()> {
    writeln!(
        out,
        "tenant,currency,service,quantity,amount,amount_micros,transfers,bytes"
    )?;
    for t in tenants {
        let tenant = csv_field(&t.tenant);
        for s in &t.services {
            writeln!(
                out,
                "{tenant},{},{},{},{},{},,",
                t.currency,
                csv_field(&s.service),
                s.quantity,
                s.amount,
                s.amount_micros
            )?;
        }
        writeln!(
            out,
            "{tenant},{},total,,{},{},{},{}",
            t.currency, t.total, t.total_micros, t.transfers, t.bytes
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_offsets() {
        assert_eq!(parse_offset("+04:00").unwrap(), 14_400);
        assert_eq!(parse_offset("-03:30").unwrap(), -12_600);
        assert!(parse_offset("4").is_err());
        assert!(parse_offset("+25:00").is_err());
    }
}

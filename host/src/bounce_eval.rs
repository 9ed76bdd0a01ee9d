//! Scoring a bounce parser against a labelled corpus.
//!
//! A manifest is JSON Lines, one object per (file, message, recipient), in
//! the form of `tests/data/bounces/dev-manifest.jsonl`: `file` (relative to
//! the manifest), `msg` (1-based message of an mbox file, 0 for an empty
//! file), `recipient`, `status`, `replycode`, `reason`, `hardbounce`, or
//! `no_result: true` for a message in which nothing is to be found.
//!
//! The same code serves the corpus test and `sluice bounce eval`, so the
//! figures a developer sees are the ones the test floors hold.
//!
//! Generalisation is measured, not assumed: every row belongs to a family
//! (the MTA or provider that wrote the bounce), and a `families.jsonl`
//! beside the manifest marks each family `dev` (rules may be written from
//! it) or `heldout` (frozen: no rule is written from it). A row may also
//! carry its own `split`. Scores are reported per split, side by side.

use crate::mbox;
use crate::stage::{BounceOutput, BounceResult};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a manifest or one of its files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: not a manifest row: {source}")]
    Row {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error("{path}, line {line}: {file:?} has {found} message(s), the row names message {msg}")]
    NoSuchMessage {
        path: PathBuf,
        line: usize,
        file: String,
        msg: usize,
        found: usize,
    },
    #[error("{0} holds no rows")]
    Empty(PathBuf),
    #[error("{path}, line {line}: not a family row: {source}")]
    FamilyRow {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error("{path}, line {line}: family {family:?} is not listed in {families}")]
    UnknownFamily {
        path: PathBuf,
        line: usize,
        family: String,
        families: PathBuf,
    },
}

/// Which side of the dev/held-out line a family is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Rules may be written from these families.
    Dev,
    /// Frozen: no rule is written from these; they measure generalisation.
    Heldout,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Dev => "dev",
            Split::Heldout => "held-out",
        })
    }
}

/// One line of `families.jsonl`.
#[derive(Debug, Clone, Deserialize)]
struct FamilyRow {
    family: String,
    split: Split,
}

/// A `families.jsonl` read: its path and each family's split.
type Families = (PathBuf, HashMap<String, Split>);

/// The split of each family named by the `families.jsonl` beside a
/// manifest, if there is one.
fn read_families(dir: &Path) -> Result<Option<Families>, EvalError> {
    let path = dir.join("families.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(EvalError::Read { path, source }),
    };
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: FamilyRow = serde_json::from_str(line).map_err(|source| EvalError::FamilyRow {
            path: path.clone(),
            line: i + 1,
            source,
        })?;
        out.insert(row.family, row.split);
    }
    Ok(Some((path, out)))
}

/// One manifest row: what is expected for one recipient of one message.
#[derive(Debug, Clone, Deserialize)]
pub struct Row {
    pub file: String,
    pub msg: usize,
    #[serde(default)]
    pub family: Option<String>,
    pub recipient: Option<String>,
    pub status: Option<String>,
    pub replycode: Option<String>,
    pub reason: Option<String>,
    pub hardbounce: Option<bool>,
    #[serde(default)]
    pub no_result: bool,
    /// The row's own split; else its family's in `families.jsonl`; else dev.
    #[serde(default)]
    pub split: Option<Split>,
}

impl Row {
    pub fn split(&self) -> Split {
        self.split.unwrap_or(Split::Dev)
    }
}

/// One message named by the manifest, with its bytes.
#[derive(Debug, Clone)]
pub struct Message {
    pub file: String,
    pub msg: usize,
    pub bytes: Vec<u8>,
}

/// A manifest and the messages it names.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    pub rows: Vec<Row>,
    /// Every (file, message) the rows name, in manifest order.
    pub messages: Vec<Message>,
}

impl Manifest {
    /// Reads the manifest at `path` and every file it names (mbox files split).
    pub fn read(path: &Path) -> Result<Manifest, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|source| EvalError::Read {
            path: path.to_owned(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut rows = Vec::new();
        let mut lines = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let row: Row = serde_json::from_str(line).map_err(|source| EvalError::Row {
                path: path.to_owned(),
                line: i + 1,
                source,
            })?;
            rows.push(row);
            lines.push(i + 1);
        }
        if rows.is_empty() {
            return Err(EvalError::Empty(path.to_owned()));
        }
        if let Some((families_path, families)) = read_families(dir)? {
            for (row, &line) in rows.iter_mut().zip(&lines) {
                if row.split.is_some() {
                    continue;
                }
                let family = row.family.clone().unwrap_or_default();
                match families.get(&family) {
                    Some(split) => row.split = Some(*split),
                    None => {
                        return Err(EvalError::UnknownFamily {
                            path: path.to_owned(),
                            line,
                            family,
                            families: families_path,
                        });
                    }
                }
            }
        }
        let mut split: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        let mut messages = Vec::new();
        for (row, &line) in rows.iter().zip(&lines) {
            if !split.contains_key(&row.file) {
                let file = dir.join(&row.file);
                let bytes = std::fs::read(&file).map_err(|source| EvalError::Read {
                    path: file.clone(),
                    source,
                })?;
                let parts = mbox::split(&bytes)
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect();
                split.insert(row.file.clone(), parts);
            }
            let parts = &split[&row.file];
            if messages
                .iter()
                .any(|m: &Message| m.file == row.file && m.msg == row.msg)
            {
                continue;
            }
            let bytes = match row.msg {
                0 => Vec::new(),
                n => parts
                    .get(n - 1)
                    .cloned()
                    .ok_or_else(|| EvalError::NoSuchMessage {
                        path: path.to_owned(),
                        line,
                        file: row.file.clone(),
                        msg: n,
                        found: parts.len(),
                    })?,
            };
            messages.push(Message {
                file: row.file.clone(),
                msg: row.msg,
                bytes,
            });
        }
        Ok(Manifest {
            path: path.to_owned(),
            rows,
            messages,
        })
    }
}

/// How one labelled row fared.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub row: Row,
    /// The parser's result for the row's recipient, if it found it.
    pub got: Option<BounceResult>,
    /// For `no_result` rows: how many results the parser gave anyway.
    pub spurious: usize,
}

impl Outcome {
    pub fn status_ok(&self) -> bool {
        self.got
            .as_ref()
            .is_some_and(|g| Some(g.status.as_str()) == self.row.status.as_deref())
    }
    pub fn replycode_ok(&self) -> bool {
        let got = self
            .got
            .as_ref()
            .map(|g| g.reply_code.map(|c| c.to_string()).unwrap_or_default());
        got.is_some() && got.as_deref() == self.row.replycode.as_deref()
    }
    pub fn reason_ok(&self) -> bool {
        self.got
            .as_ref()
            .is_some_and(|g| Some(reason_name(g).as_str()) == self.row.reason.as_deref())
    }
    pub fn hard_ok(&self) -> bool {
        self.got
            .as_ref()
            .is_some_and(|g| Some(g.hard) == self.row.hardbounce)
    }
}

/// Sisimai's name of a result's reason (`userunknown`, ...).
pub fn reason_name(r: &BounceResult) -> String {
    match serde_json::to_value(r.reason) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{:?}", r.reason).to_ascii_lowercase(),
    }
}

/// Counts behind the accuracy table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scores {
    /// Messages parsed.
    pub messages: usize,
    /// Rows with a recipient to find.
    pub labelled: usize,
    pub recipient: usize,
    pub status: usize,
    pub replycode: usize,
    pub reason: usize,
    pub hard: usize,
    /// Messages in which nothing is to be found, and how many gave nothing.
    pub no_result: usize,
    pub no_result_ok: usize,
}

/// A figure of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Recipient,
    Status,
    ReplyCode,
    Reason,
    Hard,
}

impl Scores {
    /// Agreement with the manifest in basis points (1/100 %), over all
    /// labelled rows: a recipient not found counts as a disagreement.
    pub fn basis_points(&self, metric: Metric) -> u64 {
        let n = match metric {
            Metric::Recipient => self.recipient,
            Metric::Status => self.status,
            Metric::ReplyCode => self.replycode,
            Metric::Reason => self.reason,
            Metric::Hard => self.hard,
        };
        (n as u64 * 10_000)
            .checked_div(self.labelled as u64)
            .unwrap_or(0)
    }
}

impl std::ops::AddAssign for Scores {
    fn add_assign(&mut self, o: Scores) {
        self.messages += o.messages;
        self.labelled += o.labelled;
        self.recipient += o.recipient;
        self.status += o.status;
        self.replycode += o.replycode;
        self.reason += o.reason;
        self.hard += o.hard;
        self.no_result += o.no_result;
        self.no_result_ok += o.no_result_ok;
    }
}

/// `12.34 %` of basis points.
fn pct(bp: u64) -> String {
    format!("{}.{:02} %", bp / 100, bp % 100)
}

/// The metrics of the table, with their names.
const METRICS: [(&str, Metric); 5] = [
    ("recipient found", Metric::Recipient),
    ("reply code", Metric::ReplyCode),
    ("status", Metric::Status),
    ("reason", Metric::Reason),
    ("hard/soft", Metric::Hard),
];

impl Scores {
    fn count(&self, metric: Metric) -> usize {
        match metric {
            Metric::Recipient => self.recipient,
            Metric::Status => self.status,
            Metric::ReplyCode => self.replycode,
            Metric::Reason => self.reason,
            Metric::Hard => self.hard,
        }
    }
}

impl fmt::Display for Scores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "| metric | agree | of | % |")?;
        writeln!(f, "|---|---:|---:|---:|")?;
        for (name, metric, n) in [
            ("recipient found", Metric::Recipient, self.recipient),
            ("status", Metric::Status, self.status),
            ("reply code", Metric::ReplyCode, self.replycode),
            ("reason", Metric::Reason, self.reason),
            ("hard/soft", Metric::Hard, self.hard),
        ] {
            writeln!(
                f,
                "| {name} | {n} | {} | {} |",
                self.labelled,
                pct(self.basis_points(metric))
            )?;
        }
        writeln!(
            f,
            "| no result where none expected | {} | {} | |",
            self.no_result_ok, self.no_result
        )?;
        write!(f, "({} messages parsed)", self.messages)
    }
}

/// The outcome of every row and the totals.
#[derive(Debug, Clone)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub scores: Scores,
}

impl Report {
    /// Two reports as one (manifests evaluated one after the other).
    pub fn merge(&mut self, other: Report) {
        self.outcomes.extend(other.outcomes);
        self.scores += other.scores;
    }

    /// Totals per split.
    pub fn by_split(&self) -> BTreeMap<Split, Scores> {
        let mut out: BTreeMap<Split, Scores> = BTreeMap::new();
        for o in &self.outcomes {
            add(out.entry(o.row.split()).or_default(), o);
        }
        out
    }

    /// The accuracy table with dev and held-out families side by side (and
    /// all rows), each cell `agree / of (percent)`.
    pub fn side_by_side(&self) -> String {
        let splits = self.by_split();
        let dev = splits.get(&Split::Dev).copied().unwrap_or_default();
        let held = splits.get(&Split::Heldout).copied().unwrap_or_default();
        let all = self.scores;
        let cell = |s: &Scores, m: Metric| {
            format!(
                "{} / {} ({})",
                s.count(m),
                s.labelled,
                pct(s.basis_points(m))
            )
        };
        let families = |split: Split| {
            self.outcomes
                .iter()
                .filter(|o| o.row.split() == split)
                .filter_map(|o| o.row.family.as_deref())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        };
        let mut out = format!(
            "| metric | dev ({} families) | held-out ({} families) | all |\n|---|---:|---:|---:|\n",
            families(Split::Dev),
            families(Split::Heldout)
        );
        for (name, m) in METRICS {
            out += &format!(
                "| {name} | {} | {} | {} |\n",
                cell(&dev, m),
                cell(&held, m),
                cell(&all, m)
            );
        }
        out += &format!(
            "| no result where none expected | {} / {} | {} / {} | {} / {} |\n",
            dev.no_result_ok,
            dev.no_result,
            held.no_result_ok,
            held.no_result,
            all.no_result_ok,
            all.no_result
        );
        out += &format!("({} messages parsed)", all.messages);
        out
    }

    /// Rows where anything disagrees, for a developer to read.
    pub fn mismatches(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().filter(|o| {
            if o.row.no_result {
                o.spurious > 0
            } else {
                !(o.status_ok() && o.reason_ok() && o.hard_ok())
            }
        })
    }

    /// Totals per family (`family` → scores), for the table by source.
    pub fn by_family(&self) -> BTreeMap<String, Scores> {
        let mut out: BTreeMap<String, Scores> = BTreeMap::new();
        for o in &self.outcomes {
            let family = o.row.family.clone().unwrap_or_else(|| "-".into());
            add(out.entry(family).or_default(), o);
        }
        out
    }
}

fn add(s: &mut Scores, o: &Outcome) {
    if o.row.no_result {
        s.no_result += 1;
        s.no_result_ok += usize::from(o.spurious == 0);
        return;
    }
    s.labelled += 1;
    s.recipient += usize::from(o.got.is_some());
    s.status += usize::from(o.status_ok());
    s.replycode += usize::from(o.replycode_ok());
    s.reason += usize::from(o.reason_ok());
    s.hard += usize::from(o.hard_ok());
}

fn same_address(a: &str, b: &str) -> bool {
    let clean = |s: &str| s.trim().trim_matches(['<', '>']).to_ascii_lowercase();
    clean(a) == clean(b)
}

/// Runs `parse` on every message of `manifest` and scores the answers.
pub fn evaluate<E>(
    manifest: &Manifest,
    mut parse: impl FnMut(&Message) -> Result<BounceOutput, E>,
) -> Result<Report, E> {
    let mut answers: HashMap<(&str, usize), BounceOutput> = HashMap::new();
    for m in &manifest.messages {
        answers.insert((m.file.as_str(), m.msg), parse(m)?);
    }
    let mut scores = Scores {
        messages: manifest.messages.len(),
        ..Scores::default()
    };
    let mut outcomes = Vec::new();
    for row in &manifest.rows {
        let answer = &answers[&(row.file.as_str(), row.msg)];
        let got = row.recipient.as_deref().and_then(|want| {
            answer
                .results
                .iter()
                .find(|r| same_address(&r.recipient, want))
                .cloned()
        });
        let outcome = Outcome {
            row: row.clone(),
            got,
            spurious: if row.no_result {
                answer.results.len()
            } else {
                0
            },
        };
        add(&mut scores, &outcome);
        outcomes.push(outcome);
    }
    Ok(Report { outcomes, scores })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::Reason;

    fn result(recipient: &str, status: &str, reason: Reason, hard: bool) -> BounceResult {
        BounceResult {
            recipient: recipient.into(),
            status: status.into(),
            reply_code: Some(550),
            reason,
            hard,
            action: "failed".into(),
            diagnostic: String::new(),
            original_message_id: None,
            verp_token: None,
        }
    }

    fn manifest(dir: &Path, rows: &str, files: &[(&str, &str)]) -> Manifest {
        std::fs::create_dir_all(dir).unwrap();
        for (name, body) in files {
            std::fs::write(dir.join(name), body).unwrap();
        }
        let path = dir.join("m.jsonl");
        std::fs::write(&path, rows).unwrap();
        Manifest::read(&path).unwrap()
    }

    #[test]
    fn scores_found_agreeing_and_missing_rows() {
        let dir = std::env::temp_dir().join(format!("sluice-eval-{}", std::process::id()));
        let rows = r#"{"file":"a.eml","msg":1,"recipient":"X@example.org","status":"5.1.1","replycode":"550","reason":"userunknown","hardbounce":true}
{"file":"a.eml","msg":1,"recipient":"y@example.org","status":"4.2.2","replycode":"","reason":"mailboxfull","hardbounce":false}
{"file":"b.eml","msg":2,"recipient":null,"status":null,"replycode":null,"reason":null,"hardbounce":null,"no_result":true}
"#;
        let m = manifest(
            &dir,
            rows,
            &[
                ("a.eml", "Subject: a\n\nx\n"),
                (
                    "b.eml",
                    "From a@b Mon Jan 1 00:00:00 2024\nSubject: 1\n\n\nFrom a@b Mon Jan 1 00:00:00 2024\nSubject: 2\n\n",
                ),
            ],
        );
        assert_eq!(m.messages.len(), 2);
        let report = evaluate(&m, |msg| {
            Ok::<_, ()>(BounceOutput {
                results: if msg.file == "a.eml" {
                    vec![result(
                        "<x@example.org>",
                        "5.1.1",
                        Reason::Userunknown,
                        true,
                    )]
                } else {
                    Vec::new()
                },
                notes: Vec::new(),
            })
        })
        .unwrap();
        let s = report.scores;
        assert_eq!(
            (s.labelled, s.recipient, s.status, s.replycode),
            (2, 1, 1, 1)
        );
        assert_eq!(
            (s.reason, s.hard, s.no_result, s.no_result_ok),
            (1, 1, 1, 1)
        );
        assert_eq!(s.basis_points(Metric::Recipient), 5000);
        assert_eq!(report.mismatches().count(), 1);
        assert!(
            s.to_string()
                .contains("| recipient found | 1 | 2 | 50.00 % |")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn families_file_splits_rows_and_must_name_every_family() {
        let dir = std::env::temp_dir().join(format!("sluice-eval-split-{}", std::process::id()));
        let rows = r#"{"file":"a.eml","msg":1,"family":"mta-a","recipient":"x@example.org","status":"5.1.1","replycode":"550","reason":"userunknown","hardbounce":true}
{"file":"b.eml","msg":1,"family":"mta-b","recipient":"y@example.org","status":"5.2.2","replycode":"552","reason":"mailboxfull","hardbounce":false}
{"file":"b.eml","msg":1,"family":"mta-c","split":"heldout","recipient":"z@example.org","status":"5.2.2","replycode":"552","reason":"mailboxfull","hardbounce":false}
"#;
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("families.jsonl"),
            "{\"family\":\"mta-a\",\"split\":\"dev\"}\n{\"family\":\"mta-b\",\"split\":\"heldout\"}\n",
        )
        .unwrap();
        let m = manifest(
            &dir,
            rows,
            &[
                ("a.eml", "Subject: a\n\nx\n"),
                ("b.eml", "Subject: b\n\nx\n"),
            ],
        );
        let splits: Vec<Split> = m.rows.iter().map(Row::split).collect();
        assert_eq!(splits, [Split::Dev, Split::Heldout, Split::Heldout]);
        let report = evaluate(&m, |msg| {
            Ok::<_, ()>(BounceOutput {
                results: if msg.file == "a.eml" {
                    vec![result("x@example.org", "5.1.1", Reason::Userunknown, true)]
                } else {
                    Vec::new()
                },
                notes: Vec::new(),
            })
        })
        .unwrap();
        let by = report.by_split();
        assert_eq!((by[&Split::Dev].labelled, by[&Split::Dev].reason), (1, 1));
        assert_eq!(
            (by[&Split::Heldout].labelled, by[&Split::Heldout].reason),
            (2, 0)
        );
        let table = report.side_by_side();
        assert!(
            table.contains("| reason | 1 / 1 (100.00 %) | 0 / 2 (0.00 %) | 1 / 3 (33.33 %) |"),
            "{table}"
        );
        // A family the file does not list is an error naming it.
        std::fs::write(
            dir.join("families.jsonl"),
            "{\"family\":\"mta-a\",\"split\":\"dev\"}\n",
        )
        .unwrap();
        let e = Manifest::read(&dir.join("m.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("\"mta-b\""), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_row_naming_a_missing_message_is_an_error_that_says_where() {
        let dir = std::env::temp_dir().join(format!("sluice-eval-miss-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.eml"), "Subject: a\n\nx\n").unwrap();
        let path = dir.join("m.jsonl");
        std::fs::write(&path, "{\"file\":\"a.eml\",\"msg\":3,\"recipient\":\"a@b\",\"status\":\"\",\"replycode\":\"\",\"reason\":\"x\",\"hardbounce\":false}\n").unwrap();
        let e = Manifest::read(&path).unwrap_err().to_string();
        assert!(
            e.contains("line 1") && e.contains("\"a.eml\" has 1 message(s)"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

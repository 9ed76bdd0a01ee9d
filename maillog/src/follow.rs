//! Following a live log file: a log source that survives rotation and
//! restarts without billing a transfer twice or missing one.
//!
//! A [`Follower`] reads the complete lines appended to a log since it last
//! looked and joins them into transfers with a [`LogReader`]. Its checkpoint
//! — which file (device and inode), how far into it, and the reader's
//! half-joined state — is written atomically (temp file, fsync, rename) only
//! when the caller says the transfers it was handed are stored
//! ([`Follower::commit`]). A crash therefore re-reads at most what was not
//! committed, and since a transfer's key is stable across re-reads, the
//! ledger's unique key makes that harmless: at least once plus idempotent
//! storage is exactly once. A caller that failed to store a batch calls
//! [`Follower::rewind`] to go back to the last checkpoint.
//!
//! Rotation:
//! - the path names another file than the one being read (logrotate's
//!   rename and create): the old file is read to its end, then the new one
//!   from its start;
//! - the file shrank below the position (copytruncate): read again from its
//!   start;
//! - after a restart, a checkpoint whose file is no longer at the path is
//!   looked for by inode among the files of the same directory whose names
//!   start with the log's (`maillog.1`, `maillog-20261202`), and its rest is
//!   read first. A rotation that was compressed meanwhile cannot be read:
//!   the follower says so ([`Follower::take_warnings`]) and starts the new
//!   file from its start.
//!
//! Lines are bytes (real logs hold invalid UTF-8). A line still being
//! written (no newline yet) waits for the next poll; a file that was
//! rotated away ends its last line where the file ends.

use super::{Format, LogReader, ReaderConfig, Report, Transfer, YearRule, reader};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Bytes read from the log per system call.
const CHUNK: usize = 256 * 1024;

/// Lines longer than this are cut (a file without newlines must not take
/// all memory).
const MAX_LINE: usize = super::input::MAX_LINE;

/// Bytes at the start of a file that tell it from another with its inode.
const HEAD: u64 = 512;

/// Checkpoint layout; bumped when it changes incompatibly.
const CHECKPOINT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("cannot read log {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write checkpoint {path}: {source}")]
    WriteCheckpoint {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path} is unreadable: {reason}")]
    BadCheckpoint { path: PathBuf, reason: String },
}

/// A file, as opposed to a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// What is written to disk at each commit.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Checkpoint {
    version: u32,
    /// `qmail` or `postfix`: a checkpoint of another format is refused.
    format: String,
    /// The log's path when the checkpoint was written (for people).
    path: String,
    file: FileId,
    /// Bytes of `file` whose lines are in `reader`.
    offset: u64,
    /// A hash of the file's first `head_len` bytes: an inode number is
    /// reused when a log is deleted and re-created, the head is not.
    head: u64,
    head_len: u64,
    reader: serde_json::Value,
}

/// One file being read.
#[derive(Debug)]
struct Open {
    file: File,
    id: FileId,
    /// The first byte not yet handed to the reader.
    pos: u64,
    /// A rotated-away file: read to its end, then dropped.
    draining: bool,
}

/// What one [`Follower::poll`] produced.
#[derive(Debug, Default)]
pub struct Batch {
    /// Transfers completed by the lines read.
    pub transfers: Vec<Transfer>,
    /// Lines handed to the reader.
    pub lines: u64,
    /// True when the poll stopped at the end of what the log holds (the
    /// caller may sleep before the next one).
    pub caught_up: bool,
}

/// Follows one log file. Not async: run it on a blocking thread.
pub struct Follower {
    path: PathBuf,
    checkpoint_path: PathBuf,
    format: Format,
    config: ReaderConfig,
    reader: Box<dyn LogReader + Send>,
    /// A rotated file still to be finished, then the file at the path.
    files: Vec<Open>,
    buf: Vec<u8>,
    /// The calendar day the reader's year rule was made on.
    year_day: i64,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("path", &self.path)
            .field("checkpoint_path", &self.checkpoint_path)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Qmail => "qmail",
        Format::Postfix => "postfix",
    }
}

/// The hash of the first `len` bytes of `file`; None if it is shorter.
fn head_hash(file: &File, len: u64) -> Option<u64> {
    use std::hash::Hasher;
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0).ok()?;
    let mut h = super::hash::FxHasher::default();
    h.write(&buf);
    Some(h.finish())
}

fn today() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
        .div_euclid(86_400)
}

impl Follower {
    /// Follows `path`, resuming from the checkpoint at `checkpoint_path` if
    /// there is one. The log need not exist yet.
    pub fn open(
        path: &Path,
        format: Format,
        config: ReaderConfig,
        checkpoint_path: &Path,
    ) -> Result<Follower, FollowError> {
        let mut f = Follower {
            path: path.to_owned(),
            checkpoint_path: checkpoint_path.to_owned(),
            format,
            reader: reader(format, config.clone()),
            config,
            files: Vec::new(),
            buf: vec![0; CHUNK.max(MAX_LINE + 1)],
            year_day: today(),
            warnings: Vec::new(),
        };
        f.resume()?;
        Ok(f)
    }

    /// Loads the checkpoint (if any) and opens the files it points at.
    fn resume(&mut self) -> Result<(), FollowError> {
        self.reader = reader(self.format, self.config.clone());
        self.reader
            .begin_file(&self.path.display().to_string(), self.year_rule());
        self.files.clear();
        let Some(cp) = self.load_checkpoint()? else {
            return Ok(());
        };
        let bad = |reason: String| FollowError::BadCheckpoint {
            path: self.checkpoint_path.clone(),
            reason,
        };
        self.reader
            .restore_state(cp.reader)
            .map_err(|e| bad(format!("reader state: {e}")))?;
        // The year rule is today's, not the one saved.
        self.reader.set_year_rule(self.year_rule());
        let found = self
            .find(cp.file)?
            .filter(|(file, _, _)| head_hash(file, cp.head_len) == Some(cp.head));
        match found {
            Some((file, meta, at_path)) => {
                let truncated = meta.len() < cp.offset;
                if truncated {
                    self.warnings.push(format!(
                        "{} is shorter ({} bytes) than the checkpoint's position ({}): read from its start",
                        self.path.display(),
                        meta.len(),
                        cp.offset
                    ));
                }
                self.files.push(Open {
                    file,
                    id: cp.file,
                    pos: if truncated { 0 } else { cp.offset },
                    draining: !at_path,
                });
            }
            None => self.warnings.push(format!(
                "the file {} was reading (inode {}) is gone and no uncompressed rotation of it \
                 was found: lines written to it after byte {} are not billed; {} is read from its start",
                cp.path,
                cp.file.ino,
                cp.offset,
                self.path.display()
            )),
        }
        Ok(())
    }

    fn load_checkpoint(&self) -> Result<Option<Checkpoint>, FollowError> {
        let bytes = match std::fs::read(&self.checkpoint_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(FollowError::Read {
                    path: self.checkpoint_path.clone(),
                    source,
                });
            }
        };
        let bad = |reason: String| FollowError::BadCheckpoint {
            path: self.checkpoint_path.clone(),
            reason,
        };
        let cp: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if cp.version != CHECKPOINT_VERSION {
            return Err(bad(format!(
                "version {} (this build writes {CHECKPOINT_VERSION})",
                cp.version
            )));
        }
        if cp.format != format_name(self.format) {
            return Err(bad(format!(
                "written for a {} log, not {}",
                cp.format,
                format_name(self.format)
            )));
        }
        Ok(Some(cp))
    }

    /// The file `id`: at the path, or rotated beside it. The bool says
    /// whether it is still the file at the path.
    fn find(&self, id: FileId) -> Result<Option<(File, std::fs::Metadata, bool)>, FollowError> {
        if let Some((file, meta)) = self.open_path()?
            && FileId::of(&meta) == id
        {
            return Ok(Some((file, meta, true)));
        }
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let Some(stem) = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            return Ok(None);
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(None);
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == stem || !name.starts_with(&stem) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file()
                && FileId::of(&meta) == id
                && let Ok(file) = File::open(entry.path())
            {
                return Ok(Some((file, meta, false)));
            }
        }
        Ok(None)
    }

    /// The file now at the path, if there is one.
    fn open_path(&self) -> Result<Option<(File, std::fs::Metadata)>, FollowError> {
        let read_err = |source| FollowError::Read {
            path: self.path.clone(),
            source,
        };
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        let meta = file.metadata().map_err(read_err)?;
        Ok(Some((file, meta)))
    }

    fn year_rule(&self) -> YearRule {
        YearRule::from_mtime(SystemTime::now())
    }

    /// Reads up to about `max_lines` new lines and returns the transfers
    /// they complete. Nothing is saved until [`Follower::commit`].
    pub fn poll(&mut self, max_lines: u64) -> Result<Batch, FollowError> {
        let day = today();
        if day != self.year_day {
            self.year_day = day;
            self.reader.set_year_rule(self.year_rule());
        }
        let mut batch = Batch::default();
        while batch.lines < max_lines {
            if self.files.is_empty() {
                match self.open_path()? {
                    Some((file, meta)) => {
                        self.reader
                            .begin_file(&self.path.display().to_string(), self.year_rule());
                        self.files.push(Open {
                            file,
                            id: FileId::of(&meta),
                            pos: 0,
                            draining: false,
                        });
                    }
                    None => {
                        batch.caught_up = true;
                        break;
                    }
                }
            }
            let read = self.read_some(&mut batch, max_lines)?;
            if read {
                continue;
            }
            // At the end of the first file: is there more to read elsewhere?
            if !self.next_file()? {
                batch.caught_up = true;
                break;
            }
        }
        Ok(batch)
    }

    /// Hands the complete lines of the next chunk to the reader. False at
    /// the end of the file.
    fn read_some(&mut self, batch: &mut Batch, max_lines: u64) -> Result<bool, FollowError> {
        let open = &mut self.files[0];
        let n = loop {
            match open.file.read_at(&mut self.buf, open.pos) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(FollowError::Read {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        };
        if n == 0 {
            return Ok(false);
        }
        let data = &self.buf[..n];
        let mut consumed = 0usize;
        let transfers = &mut batch.transfers;
        let mut emit = |t: Transfer| transfers.push(t);
        for nl in memchr::memchr_iter(b'\n', data) {
            let line = &data[consumed..nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() {
                self.reader.line(line, &mut emit);
                batch.lines += 1;
            }
            consumed = nl + 1;
            if batch.lines >= max_lines {
                break;
            }
        }
        if consumed == 0 {
            if n < MAX_LINE {
                // A line still being written, or the unterminated last line of
                // a rotated-away file.
                if open.draining {
                    let line = data.strip_suffix(b"\r").unwrap_or(data);
                    self.reader.line(line, &mut emit);
                    batch.lines += 1;
                    consumed = n;
                } else {
                    return Ok(false);
                }
            } else {
                // One line longer than the limit: cut it.
                self.reader.line(&data[..MAX_LINE], &mut emit);
                batch.lines += 1;
                consumed = MAX_LINE;
            }
        }
        open.pos += consumed as u64;
        Ok(true)
    }

    /// At the end of the current file: moves on to the file now at the path
    /// if it is another one (rotation) or the same one shrunk (truncation).
    /// False when there is nothing more to read for now.
    fn next_file(&mut self) -> Result<bool, FollowError> {
        let current = &self.files[0];
        if current.draining {
            self.files.remove(0);
            if !self.files.is_empty() {
                self.reader
                    .begin_file(&self.path.display().to_string(), self.year_rule());
            }
            return Ok(true);
        }
        let Some((file, meta)) = self.open_path()? else {
            // Rotated away and not yet re-created: wait.
            return Ok(false);
        };
        let id = FileId::of(&meta);
        if id == current.id {
            if meta.len() < current.pos {
                self.warnings.push(format!(
                    "{} was truncated (now {} bytes, read up to {}): read from its start",
                    self.path.display(),
                    meta.len(),
                    current.pos
                ));
                self.files[0].pos = 0;
                return Ok(true);
            }
            return Ok(false);
        }
        // Renamed away and re-created. The old file's writer may have added
        // lines between our last read and the rename: read it to its end once
        // more before leaving it.
        self.files[0].draining = true;
        self.files.push(Open {
            file,
            id,
            pos: 0,
            draining: false,
        });
        Ok(true)
    }

    /// Saves the position and reader state reached so far; call it once
    /// the transfers returned by [`Follower::poll`] are stored.
    pub fn commit(&mut self) -> Result<(), FollowError> {
        let Some(open) = self.position() else {
            return Ok(());
        };
        let head_len = open.1.min(HEAD);
        let head = self
            .files
            .first()
            .and_then(|o| head_hash(&o.file, head_len))
            .unwrap_or(0);
        let cp = Checkpoint {
            version: CHECKPOINT_VERSION,
            format: format_name(self.format).into(),
            path: self.path.display().to_string(),
            file: open.0,
            offset: open.1,
            head,
            head_len,
            reader: self.reader.save_state(),
        };
        let write_err = |source| FollowError::WriteCheckpoint {
            path: self.checkpoint_path.clone(),
            source,
        };
        let tmp = self.checkpoint_path.with_extension("tmp");
        let bytes = serde_json::to_vec(&cp).unwrap_or_default();
        let mut f = File::create(&tmp).map_err(write_err)?;
        f.write_all(&bytes).map_err(write_err)?;
        f.sync_all().map_err(write_err)?;
        std::fs::rename(&tmp, &self.checkpoint_path).map_err(write_err)?;
        if let Some(dir) = self.checkpoint_path.parent()
            && !dir.as_os_str().is_empty()
            && let Ok(d) = File::open(dir)
        {
            // The rename is durable only once the directory is.
            d.sync_all().map_err(write_err)?;
        }
        Ok(())
    }

    /// The file and offset a checkpoint would record. While a rotated file is
    /// being finished it is that file's: after a restart its rest is found
    /// beside the log and read before the new file.
    fn position(&self) -> Option<(FileId, u64)> {
        self.files.first().map(|o| (o.id, o.pos))
    }

    /// Forgets everything since the last commit (the caller could not store
    /// the transfers it was handed): the next poll hands them out again.
    pub fn rewind(&mut self) -> Result<(), FollowError> {
        self.resume()
    }

    /// Counters of everything read, across restarts.
    pub fn report(&self) -> &Report {
        self.reader.report()
    }

    /// Things an operator should know (data that could not be read).
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    /// A small qmail-send log of `n` deliveries, message numbers from `first`.
    fn qmail_lines(first: u64, n: u64, t0: u64) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..n {
            let m = first + i;
            let t = t0 + i * 10;
            out.push(format!("{t}.000001 new msg {m}"));
            out.push(format!(
                "{t}.000002 info msg {m}: bytes 1000 from <a@example.com> qp 1 uid 2"
            ));
            out.push(format!(
                "{t}.000003 starting delivery {m}: msg {m} to remote r{m}@example.org"
            ));
            out.push(format!("{}.000004 delivery {m}: success: ok", t + 1));
            out.push(format!("{}.000005 end msg {m}", t + 1));
        }
        out
    }

    fn append(path: &Path, lines: &[String]) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
    }

    fn follower(dir: &Path) -> Follower {
        Follower::open(
            &dir.join("current"),
            Format::Qmail,
            ReaderConfig::default(),
            &dir.join("current.checkpoint"),
        )
        .unwrap()
    }

    fn drain(f: &mut Follower) -> Vec<String> {
        let mut keys = Vec::new();
        for _ in 0..100 {
            let b = f.poll(7).unwrap();
            keys.extend(b.transfers.into_iter().map(|t| t.recipient));
            if b.caught_up {
                break;
            }
        }
        keys
    }

    fn recipients(first: u64, n: u64) -> Vec<String> {
        (first..first + n)
            .map(|m| format!("r{m}@example.org"))
            .collect()
    }

    #[test]
    fn appended_lines_are_read_and_a_partial_line_waits() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = follower(dir.path());
        assert!(drain(&mut f).is_empty(), "no log yet");
        append(
            &dir.path().join("current"),
            &qmail_lines(1, 3, 1_700_000_000),
        );
        assert_eq!(drain(&mut f), recipients(1, 3));
        // Half of the `delivery … success` record: nothing until its newline.
        let lines = qmail_lines(4, 1, 1_700_000_100);
        append(&dir.path().join("current"), &lines[..3]);
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join("current"))
            .unwrap();
        write!(file, "{}", &lines[3][..30]).unwrap();
        assert!(drain(&mut f).is_empty());
        writeln!(file, "{}", &lines[3][30..]).unwrap();
        assert_eq!(drain(&mut f), recipients(4, 1));
    }

    #[test]
    fn a_restart_resumes_half_joined_messages_and_never_repeats_a_committed_transfer() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("current");
        let lines = qmail_lines(1, 4, 1_700_000_000);
        // Stop in the middle of message 3 (after its `starting delivery`).
        append(&log, &lines[..13]);
        let mut f = follower(dir.path());
        assert_eq!(drain(&mut f), recipients(1, 2));
        f.commit().unwrap();
        drop(f);
        append(&log, &lines[13..]);
        let mut f = follower(dir.path());
        assert_eq!(
            drain(&mut f),
            recipients(3, 2),
            "message 3 joined across the restart"
        );
        assert_eq!(
            f.report().counters.transfers,
            4,
            "counters survive the restart"
        );
    }

    #[test]
    fn what_was_not_committed_is_handed_out_again() {
        let dir = tempfile::tempdir().unwrap();
        append(
            &dir.path().join("current"),
            &qmail_lines(1, 2, 1_700_000_000),
        );
        let mut f = follower(dir.path());
        assert_eq!(drain(&mut f), recipients(1, 2));
        f.rewind().unwrap();
        assert_eq!(drain(&mut f), recipients(1, 2));
        drop(f);
        let mut f = follower(dir.path());
        assert_eq!(
            drain(&mut f),
            recipients(1, 2),
            "a crash before commit re-reads"
        );
    }

    #[test]
    fn rotation_by_rename_finishes_the_old_file_then_reads_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("current");
        append(&log, &qmail_lines(1, 2, 1_700_000_000));
        let mut f = follower(dir.path());
        assert_eq!(drain(&mut f), recipients(1, 2));
        // The writer adds a message, then the log is rotated and a new one starts.
        append(&log, &qmail_lines(3, 1, 1_700_000_100));
        std::fs::rename(&log, dir.path().join("current.1")).unwrap();
        append(&log, &qmail_lines(4, 2, 1_700_000_200));
        assert_eq!(drain(&mut f), recipients(3, 3));
    }

    #[test]
    fn a_rotation_while_stopped_is_found_beside_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("current");
        append(&log, &qmail_lines(1, 2, 1_700_000_000));
        let mut f = follower(dir.path());
        assert_eq!(drain(&mut f), recipients(1, 2));
        f.commit().unwrap();
        drop(f);
        append(&log, &qmail_lines(3, 1, 1_700_000_100));
        std::fs::rename(&log, dir.path().join("current-20261202")).unwrap();
        append(&log, &qmail_lines(4, 1, 1_700_000_200));
        let mut f = follower(dir.path());
        assert_eq!(drain(&mut f), recipients(3, 2));
        assert!(f.take_warnings().is_empty());
    }

    #[test]
    fn a_lost_rotation_is_reported_and_the_new_file_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("current");
        append(&log, &qmail_lines(1, 1, 1_700_000_000));
        let mut f = follower(dir.path());
        assert_eq!(drain(&mut f), recipients(1, 1));
        f.commit().unwrap();
        drop(f);
        std::fs::remove_file(&log).unwrap();
        append(&log, &qmail_lines(2, 1, 1_700_000_100));
        let mut f = follower(dir.path());
        let warnings = f.take_warnings();
        assert!(warnings[0].contains("is gone"), "{warnings:?}");
        assert_eq!(drain(&mut f), recipients(2, 1));
    }

    #[test]
    fn copytruncate_reads_the_file_again_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("current");
        append(&log, &qmail_lines(1, 3, 1_700_000_000));
        let mut f = follower(dir.path());
        assert_eq!(drain(&mut f), recipients(1, 3));
        File::create(&log).unwrap(); // truncates, same inode
        append(&log, &qmail_lines(4, 1, 1_700_000_100));
        assert_eq!(drain(&mut f), recipients(4, 1));
        assert!(f.take_warnings()[0].contains("truncated"));
    }

    #[test]
    fn a_checkpoint_of_another_format_or_garbage_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        append(
            &dir.path().join("current"),
            &qmail_lines(1, 1, 1_700_000_000),
        );
        let mut f = follower(dir.path());
        drain(&mut f);
        f.commit().unwrap();
        let err = Follower::open(
            &dir.path().join("current"),
            Format::Postfix,
            ReaderConfig::default(),
            &dir.path().join("current.checkpoint"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("written for a qmail log"), "{err}");
        std::fs::write(dir.path().join("current.checkpoint"), b"{not json").unwrap();
        let err = Follower::open(
            &dir.path().join("current"),
            Format::Qmail,
            ReaderConfig::default(),
            &dir.path().join("current.checkpoint"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("current.checkpoint is unreadable"),
            "{err}"
        );
    }
}

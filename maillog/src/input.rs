//! Opening log files (plain, gzip or stdin) and splitting them into lines of
//! bytes without allocating per line.

use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// A log that cannot be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot open log {path:?}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read log {name:?}: {source}")]
    Read { name: String, source: io::Error },
}

/// An opened log.
pub struct Input {
    /// The path as given, or `-` for stdin.
    pub name: String,
    /// Decompressed bytes.
    pub reader: Box<dyn Read + Send>,
    /// Size on disk (compressed), when it is a file.
    pub size: Option<u64>,
    /// Modification time, when it is a file.
    pub modified: Option<SystemTime>,
    /// Bytes read from disk so far (for progress).
    pub consumed: Arc<AtomicU64>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input").field("name", &self.name).finish()
    }
}

/// Counts the bytes that go through it.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Opens a log; `-` is stdin. Gzip is recognised by its magic bytes, not
/// the file name, so rotated `.gz` files and renamed ones both work.
pub fn open_input(path: &Path) -> Result<Input, InputError> {
    let consumed = Arc::new(AtomicU64::new(0));
    let (raw, size, modified): (Box<dyn Read + Send>, _, _) = if path == Path::new("-") {
        (Box::new(io::stdin()), None, None)
    } else {
        let open_err = |source| InputError::Open {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        if meta.is_dir() {
            return Err(open_err(io::Error::other("is a directory")));
        }
        (Box::new(file), Some(meta.len()), meta.modified().ok())
    };
    let mut buffered = BufReader::with_capacity(
        1 << 16,
        Counting {
            inner: raw,
            count: consumed.clone(),
        },
    );
    let name = path.display().to_string();
    let head = buffered.fill_buf().map_err(|source| InputError::Read {
        name: name.clone(),
        source,
    })?;
    let reader: Box<dyn Read + Send> = if head.starts_with(&GZIP_MAGIC) {
        Box::new(MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    Ok(Input {
        name,
        reader,
        size,
        modified,
        consumed,
    })
}

/// Lines longer than this are cut into pieces (a file with no newlines must
/// not take all memory).
pub const MAX_LINE: usize = 1 << 20;

/// Calls `f` with every line of `input` (without `\n` or `\r\n`; empty lines
/// skipped) until it returns false. One buffer is reused for the whole input.
pub fn read_lines(
    name: &str,
    mut input: impl Read,
    mut f: impl FnMut(&[u8]) -> bool,
) -> Result<(), InputError> {
    let mut buf = vec![0u8; MAX_LINE * 2];
    let (mut start, mut end) = (0usize, 0usize);
    loop {
        if end == buf.len() {
            if start == 0 {
                // One line fills the whole buffer: hand it out in one piece.
                if !f(&buf[..MAX_LINE]) {
                    return Ok(());
                }
                start = MAX_LINE;
            }
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        let n = match input.read(&mut buf[end..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(InputError::Read {
                    name: name.to_owned(),
                    source,
                });
            }
        };
        if n == 0 {
            if start < end {
                emit(&buf[start..end], &mut f);
            }
            return Ok(());
        }
        let chunk_end = end + n;
        for nl in memchr::memchr_iter(b'\n', &buf[end..chunk_end]) {
            let at = end + nl;
            if !emit(&buf[start..at], &mut f) {
                return Ok(());
            }
            start = at + 1;
        }
        end = chunk_end;
    }
}

fn emit(line: &[u8], f: &mut impl FnMut(&[u8]) -> bool) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.is_empty() || f(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        read_lines("t", data, |l| {
            out.push(l.to_vec());
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn crlf_missing_final_newline_and_empty_lines() {
        assert_eq!(
            lines(b"a\r\n\nb\nc"),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
    }

    #[test]
    fn a_line_without_newline_larger_than_the_buffer_is_cut() {
        let data = vec![b'x'; MAX_LINE * 3 + 5];
        let got = lines(&data);
        assert_eq!(got.iter().map(|l| l.len()).sum::<usize>(), data.len());
        assert!(got.iter().all(|l| l.len() <= MAX_LINE * 2));
    }
}

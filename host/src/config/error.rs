//! Configuration errors that say where: file, line, column, key.

use std::fmt;
use std::path::Path;

/// One thing wrong with a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or "embedded default pipeline").
    pub origin: String,
    /// 1-based line and column, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The dotted key, e.g. `relay[2].url`, when known.
    pub key: Option<String>,
    pub message: String,
    /// The offending line with a caret under the column, when known.
    pub snippet: Option<String>,
}

impl ConfigError {
    pub(super) fn io(path: &Path, e: std::io::Error) -> ConfigError {
        ConfigError {
            origin: path.display().to_string(),
            line: None,
            column: None,
            key: None,
            message: format!("cannot read the file: {e}"),
            snippet: None,
        }
    }

    /// From a TOML syntax or type error, which carries a byte span.
    pub(super) fn toml(origin: &str, text: &str, e: &toml::de::Error) -> ConfigError {
        let mut err = ConfigError {
            origin: origin.into(),
            line: None,
            column: None,
            key: None,
            message: e.message().trim().to_owned(),
            snippet: None,
        };
        if let Some(span) = e.span() {
            err.locate(text, span.start, span.end);
            let start = span.start.min(text.len());
            let key: String = text[start..span.end.min(text.len())]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
                .collect();
            if !key.is_empty() && err.message.contains(&format!("`{key}`")) {
                err.key = Some(key);
            }
        }
        err
    }

    /// An error about the value at byte range `span` of `text`.
    pub(super) fn at(
        origin: &str,
        text: &str,
        span: std::ops::Range<usize>,
        key: String,
        message: String,
    ) -> ConfigError {
        let mut err = ConfigError {
            origin: origin.into(),
            line: None,
            column: None,
            key: Some(key),
            message,
            snippet: None,
        };
        err.locate(text, span.start, span.end);
        err
    }

    fn locate(&mut self, text: &str, start: usize, end: usize) {
        let start = start.min(text.len());
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = text[line_start..start].chars().count() + 1;
        let line_text = text[line_start..].lines().next().unwrap_or("");
        let width = text[start..end.clamp(start, text.len())]
            .lines()
            .next()
            .map_or(1, |s| s.chars().count().max(1));
        self.line = Some(line);
        self.column = Some(column);
        self.snippet = Some(format!(
            "{line:>4} | {line_text}\n     | {}{}",
            " ".repeat(column - 1),
            "^".repeat(width)
        ));
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ": key `{k}`")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(s) = &self.snippet {
            write!(f, "\n{s}")?;
        }
        Ok(())
    }
}

/// Every error found in one file (validation collects them all before failing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub(super) fn one(e: ConfigError) -> ConfigErrors {
        ConfigErrors(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        if n > 1 {
            write!(f, "\n({n} errors)")?;
        }
        Ok(())
    }
}

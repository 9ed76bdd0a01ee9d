//! Tables and human units for the admin commands' terminal output: aligned columns,
//! counts as `12.3k`, ages as `5m 3s`, rates as `4.2/s`, times in UTC.
//!
//! Every cell passes through [`cell_text`]: what the API returns (a tenant's name, an
//! SMTP reply a remote server wrote) may hold escape sequences or line breaks, which
//! would rewrite the operator's terminal or break the columns; they are shown escaped,
//! and a cell is cut at [`MAX_CELL_CHARS`] (`--json` has the whole value).

use crate::maillog::syslog_time::civil_from_days;
use serde_json::Value;

/// The widest cell of a table, in characters.
pub const MAX_CELL_CHARS: usize = 60;

/// `s` with control characters escaped (`\n`, `\u{1b}`), cut to `max_chars`
/// characters (the last one `…`).
pub fn cell_text(s: &str, max_chars: usize) -> String {
    let mut out = String::new();
    // Where `out` may be cut to leave room for `…`: the end of the last whole piece
    // within `max_chars - 1` characters.
    let mut cut = 0;
    let mut n = 0;
    for c in s.chars() {
        let piece: String = match c {
            '\n' => "\\n".into(),
            '\r' => "\\r".into(),
            '\t' => "\\t".into(),
            // C0, DEL, C1 (CSI as U+009B), and the bidi overrides that reorder what follows.
            c if c.is_control()
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c) =>
            {
                c.escape_unicode().to_string()
            }
            c => c.into(),
        };
        n += piece.chars().count();
        if n > max_chars {
            out.truncate(cut);
            out.push('…');
            return out;
        }
        out.push_str(&piece);
        if n < max_chars {
            cut = out.len();
        }
    }
    out
}

/// Columns of text, padded to the widest cell; numbers right-aligned.
pub struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers; a header starting with `>` is right-aligned
    /// (the `>` is not shown).
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            right: headers.iter().map(|h| h.starts_with('>')).collect(),
            headers: headers.iter().map(|h| h.trim_start_matches('>')).collect(),
            rows: Vec::new(),
        }
    }

    /// A row; each cell is cleaned and cut (see the module's doc).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.iter().map(|c| cell_text(c, MAX_CELL_CHARS)).collect());
    }

    /// The table as lines; `none` is printed below the headers when there are no rows.
    pub fn render(&self, none: &str) -> String {
        let width = |i: usize| {
            self.rows
                .iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([self.headers[i].len()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut out = String::new();
            for (i, c) in cells.enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                let pad = w.saturating_sub(c.chars().count());
                if i > 0 {
                    out.push_str("  ");
                }
                if self.right.get(i).copied().unwrap_or(false) {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(c);
                } else {
                    out.push_str(c);
                    out.push_str(&" ".repeat(pad));
                }
            }
            out.trim_end().to_owned() + "\n"
        };
        let mut out = line(&mut self.headers.iter().copied());
        for r in &self.rows {
            out.push_str(&line(&mut r.iter().map(String::as_str)));
        }
        if self.rows.is_empty() {
            out.push_str(none);
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines, the values aligned; values cleaned and cut like cells.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k}:{} {}\n", " ".repeat(w - k.len()), cell_text(v, 200)))
        .collect()
}

/// A count: exact below 10,000, then `12.3k`, `4.5M`, `6.7G`.
pub fn count(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")];
    if n < 10_000 {
        return n.to_string();
    }
    let (div, unit) = UNITS
        .iter()
        .copied()
        .find(|(d, _)| n >= *d)
        .unwrap_or((1, ""));
    // One decimal, rounded down: never shows more than there is.
    let tenths = n / (div / 10);
    if tenths >= 1000 {
        format!("{}{unit}", tenths / 10)
    } else {
        format!("{}.{}{unit}", tenths / 10, tenths % 10)
    }
}

/// Events per second over a window of `secs` seconds: `0`, `0.02/s`, `4.2/s`, `120/s`.
pub fn rate(n: u64, secs: u64) -> String {
    if n == 0 || secs == 0 {
        return "0".into();
    }
    // Hundredths of an event per second, in integers.
    let h = n.saturating_mul(100) / secs;
    match h {
        0 => "<0.01/s".into(),
        1..=999 => format!("{}.{:02}/s", h / 100, h % 100),
        1000..=9999 => format!("{}.{}/s", h / 100, (h % 100) / 10),
        _ => format!("{}/s", count(h / 100)),
    }
}

/// A duration in milliseconds: `850ms`, `12s`, `5m 3s`, `2h 5m`, `3d 4h`.
pub fn duration_ms(ms: i64) -> String {
    if ms < 0 {
        return format!("-{}", duration_ms(ms.saturating_neg()));
    }
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A window's length: `1m`, `15m`, `1h`, `90s`.
pub fn window(secs: u64) -> String {
    match secs {
        0 => "0s".into(),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A time in UTC: `2026-12-07 20:44:01`.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        t / 3600,
        (t % 3600) / 60,
        t % 60
    )
}

/// Now, in ms since the epoch (for ages of the times the API gives).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A JSON value as a cell: strings as they are, `null` as `-`, lists joined by `,`.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A JSON time in ms as a UTC time, `-` when absent.
pub fn time(v: &Value) -> String {
    v.as_i64().map_or_else(|| "-".into(), utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_cuts_what_a_server_sends() {
        assert_eq!(cell_text("ok", 10), "ok");
        assert_eq!(cell_text("a\x1b[2Jb", 20), "a\\u{1b}[2Jb");
        assert_eq!(cell_text("line\r\nnext", 20), "line\\r\\nnext");
        assert_eq!(cell_text("\u{9b}31m", 20), "\\u{9b}31m");
        assert_eq!(cell_text("\u{202e}txt", 20), "\\u{202e}txt");
        assert_eq!(cell_text("abcdefghij", 5), "abcd…");
        assert_eq!(cell_text("abcde", 5), "abcde");
        assert_eq!(cell_text("\x1b\x1b", 5), "…");
    }

    #[test]
    fn columns_line_up_with_numbers_on_the_right() {
        let mut t = Table::new(&["ID", ">SENT", "URL"]);
        t.row(vec!["a".into(), "5".into(), "smtp://x".into()]);
        t.row(vec!["longer".into(), "12.3k".into(), "-".into()]);
        assert_eq!(
            t.render("(none)"),
            "ID       SENT  URL\na           5  smtp://x\nlonger  12.3k  -\n"
        );
        assert_eq!(
            Table::new(&["ID"]).render("(no relays)"),
            "ID\n(no relays)\n"
        );
    }

    #[test]
    fn human_units() {
        assert_eq!(count(9_999), "9999");
        assert_eq!(count(12_345), "12.3k");
        assert_eq!(count(4_560_000), "4.5M");
        assert_eq!(count(999_999_999), "999M");
        assert_eq!(count(123_456_789_012), "123G");
        assert_eq!(rate(0, 60), "0");
        assert_eq!(rate(1, 3600), "<0.01/s");
        assert_eq!(rate(90, 60), "1.50/s");
        assert_eq!(rate(6_000, 60), "100/s");
        assert_eq!(rate(1_234, 60), "20.5/s");
        assert_eq!(duration_ms(850), "850ms");
        assert_eq!(duration_ms(12_400), "12s");
        assert_eq!(duration_ms(303_000), "5m 3s");
        assert_eq!(duration_ms(7_500_000), "2h 5m");
        assert_eq!(duration_ms(280_800_000), "3d 6h");
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_796_676_241_000), "2026-12-07 20:44:01");
    }
}

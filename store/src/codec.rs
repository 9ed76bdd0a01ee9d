//! Column encodings shared by every table: JSON lists in TEXT, enums by name, unsigned
//! numbers in signed columns, and reading rows back with errors that name the column.

use std::fmt::Write as _;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::StoreError;
use super::types::{EventKind, RecipientState, RelayState};

/// Encodes a list of strings as the JSON array stored in TEXT columns.
pub(crate) fn list_to_text(list: &[String]) -> String {
    serde_json::Value::from(list.to_vec()).to_string()
}

/// Decodes a JSON array column.
pub(crate) fn list_from_text(context: &str, text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|_| corrupt(context, text))
}

pub(crate) fn corrupt(context: &str, value: &str) -> StoreError {
    StoreError::Corrupt {
        context: context.to_string(),
        value: value.to_string(),
    }
}

/// Reads one column, naming the operation and column when it fails.
pub(crate) fn col<'r, T>(row: &'r AnyRow, op: &str, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(column)
        .map_err(StoreError::db(format!("{op}: reading column {column}")))
}

/// Reads a TEXT column holding a JSON list.
pub(crate) fn get_list(row: &AnyRow, op: &str, column: &str) -> Result<Vec<String>, StoreError> {
    let text: String = col(row, op, column)?;
    list_from_text(&format!("{op}: column {column}"), &text)
}

/// Reads a BIGINT column that holds an unsigned 32-bit number.
pub(crate) fn get_u32(row: &AnyRow, op: &str, column: &str) -> Result<u32, StoreError> {
    let n: i64 = col(row, op, column)?;
    u32::try_from(n).map_err(|_| corrupt(&format!("{op}: column {column}"), &n.to_string()))
}

/// Reads a nullable BIGINT column that holds an unsigned 32-bit number.
pub(crate) fn get_opt_u32(row: &AnyRow, op: &str, column: &str) -> Result<Option<u32>, StoreError> {
    let n: Option<i64> = col(row, op, column)?;
    n.map(|n| {
        u32::try_from(n).map_err(|_| corrupt(&format!("{op}: column {column}"), &n.to_string()))
    })
    .transpose()
}

/// Reads a BIGINT column that holds a recipient index.
pub(crate) fn get_idx(row: &AnyRow, op: &str, column: &str) -> Result<i32, StoreError> {
    let n: i64 = col(row, op, column)?;
    i32::try_from(n).map_err(|_| corrupt(&format!("{op}: column {column}"), &n.to_string()))
}

pub(crate) fn get_state(row: &AnyRow, op: &str) -> Result<RecipientState, StoreError> {
    let s: String = col(row, op, "state")?;
    RecipientState::parse(&s).ok_or_else(|| corrupt(&format!("{op}: column state"), &s))
}

pub(crate) fn get_kind(row: &AnyRow, op: &str) -> Result<EventKind, StoreError> {
    let s: String = col(row, op, "kind")?;
    EventKind::parse(&s).ok_or_else(|| corrupt(&format!("{op}: column kind"), &s))
}

pub(crate) fn relay_state_str(state: RelayState) -> &'static str {
    match state {
        RelayState::Active => "active",
        RelayState::Draining => "draining",
    }
}

pub(crate) fn get_relay_state(row: &AnyRow, op: &str) -> Result<RelayState, StoreError> {
    let s: String = col(row, op, "state")?;
    match s.as_str() {
        "active" => Ok(RelayState::Active),
        "draining" => Ok(RelayState::Draining),
        _ => Err(corrupt(&format!("{op}: column state"), &s)),
    }
}

/// Reads a TEXT column holding a JSON value (event details).
pub(crate) fn get_json(
    row: &AnyRow,
    op: &str,
    column: &str,
) -> Result<serde_json::Value, StoreError> {
    let text: String = col(row, op, column)?;
    serde_json::from_str(&text).map_err(|_| corrupt(&format!("{op}: column {column}"), &text))
}

/// The domain of an address: after the last `@`, lower-cased; `None` when there is none.
pub(crate) fn domain_of(address: &str) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() {
        return None;
    }
    Some(domain.to_ascii_lowercase())
}

/// Lower-case hex of bytes (API key hashes).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Builds `$from, $from+1, ...` for an `IN (...)` list of `n` binds.
pub(crate) fn placeholders(from: usize, n: usize) -> String {
    let mut out = String::with_capacity(n * 6);
    for i in from..from + n {
        if i > from {
            out.push_str(", ");
        }
        push_mark(&mut out, i);
    }
    out
}

/// Appends `$n`. Statements of hundreds of rows are built on every group commit: one
/// buffer for all of them, not a string per mark.
fn push_mark(out: &mut String, n: usize) {
    let _ = write!(out, "${n}");
}

/// Bound parameters per statement: SQLite's smallest limit (older builds allow 999).
const MAX_PARAMS: usize = 999;

/// Rows per multi-row statement of `cols` columns, within [`MAX_PARAMS`].
pub(crate) fn rows_per_statement(cols: usize) -> usize {
    (MAX_PARAMS / cols.max(1)).max(1)
}

/// Bound parameters per statement where a whole batch should go in one: the limit of
/// the SQLite that sqlx bundles (3.32 and later: 32,766; PostgreSQL's is 65,535).
const MAX_BATCH_PARAMS: usize = 32_766;

/// Rows per multi-row statement of `cols` columns, within [`MAX_BATCH_PARAMS`]: the
/// ledgers' charges of a rated batch (up to 500 events, a few charges each) in one
/// statement rather than one per 71 rows (issue 17; on PostgreSQL each statement is a
/// round trip).
pub(crate) fn rows_per_batch_statement(cols: usize) -> usize {
    (MAX_BATCH_PARAMS / cols.max(1)).max(1)
}

/// `sql` as `conn`'s backend binds it fastest: unchanged for PostgreSQL; for SQLite
/// every `$N` becomes `?`. SQLite looks a named parameter up by a linear search on
/// every bind, which is quadratic for a multi-row statement of hundreds of
/// parameters (it was the largest single cost of its worker thread); `?` binds by
/// position. `sql` must name `$1, $2, …` once each, in order, and hold no `$` in text.
pub(crate) fn positional(conn: &sqlx::AnyConnection, sql: String) -> String {
    if conn.backend_name() != "SQLite" {
        return sql;
    }
    question_marks(&sql)
}

/// `sql` with every `$N` replaced by `?`.
fn question_marks(sql: &str) -> String {
    debug_assert!(numbered_in_order(sql), "parameters out of order in {sql}");
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        out.push('?');
        rest = rest[at + 1..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// Whether every `$` in `sql` is followed by the next number from 1 on.
fn numbered_in_order(sql: &str) -> bool {
    sql.split('$').skip(1).enumerate().all(|(i, part)| {
        let digits = part.len() - part.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        part[..digits].parse::<usize>() == Ok(i + 1)
    })
}

/// `($1, $2, …), ($n+1, …)`: `rows` tuples of `cols` numbered placeholders.
pub(crate) fn value_rows(rows: usize, cols: usize) -> String {
    let mut out = String::with_capacity(rows * (cols * 7 + 4));
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 1..=cols {
            if c > 1 {
                out.push_str(", ");
            }
            push_mark(&mut out, r * cols + c);
        }
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_is_after_the_last_at_and_lower_case() {
        assert_eq!(domain_of("a@b@Example.COM").as_deref(), Some("example.com"));
        assert_eq!(domain_of("nobody"), None);
        assert_eq!(domain_of("@example.com"), None);
        assert_eq!(domain_of("a@"), None);
    }

    #[test]
    fn hex_and_placeholders() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(placeholders(3, 3), "$3, $4, $5");
        assert_eq!(placeholders(9, 2), "$9, $10");
        assert_eq!(placeholders(1, 0), "");
    }

    #[test]
    fn lists_round_trip() {
        let list = vec!["a\"b".to_string(), "c".to_string()];
        assert_eq!(list_from_text("t", &list_to_text(&list)).unwrap(), list);
        assert!(list_from_text("t", "not json").is_err());
    }

    #[test]
    fn value_rows_number_their_placeholders_in_order() {
        assert_eq!(value_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(value_rows(1, 1), "($1)");
        let many = value_rows(111, 9);
        assert!(many.ends_with("($991, $992, $993, $994, $995, $996, $997, $998, $999)"));
        assert!(numbered_in_order(&many));
        assert!(!numbered_in_order("($1, $3)"));
        assert_eq!(
            question_marks("INSERT INTO t VALUES ($1, $2), ($3, $4) RETURNING x"),
            "INSERT INTO t VALUES (?, ?), (?, ?) RETURNING x"
        );
        assert_eq!(question_marks(&many).matches('?').count(), 999);
        assert_eq!(rows_per_statement(9) * 9, 999);
        assert_eq!(rows_per_statement(1000), 1);
    }
}

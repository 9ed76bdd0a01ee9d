//! TAI64N labels as daemontools' multilog writes them (`@4000000052fafd8d32984b1c`).
//!
//! multilog (like `tai64nlocal`) treats the label as UTC + 10 s: the 2^62
//! offset plus 10 (the TAI−UTC difference of 1970), never the leap seconds
//! added since. So the Unix time is `label − 2^62 − 10`.

/// Length of `@` + 16 hex digits of seconds + 8 of nanoseconds.
pub const LABEL_LEN: usize = 25;

const OFFSET: u64 = (1 << 62) + 10;

/// Milliseconds since the Unix epoch of a label at the start of `line`, or
/// `None` if it is not one.
pub fn parse_ms(line: &[u8]) -> Option<i64> {
    let label = line.get(..LABEL_LEN)?;
    if label[0] != b'@' {
        return None;
    }
    let secs = hex(&label[1..17])?;
    let nanos = hex(&label[17..25])?;
    if nanos >= 1_000_000_000 {
        return None;
    }
    let unix = i64::try_from(secs.checked_sub(OFFSET)?).ok()?;
    unix.checked_mul(1000)?
        .checked_add((nanos / 1_000_000) as i64)
}

fn hex(digits: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &d in digits {
        let n = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(n);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glidenote_label_matches_the_remote_servers_own_stamp() {
        // The remote server answered "250 ok 1392180611" to this delivery.
        let ms = parse_ms(b"@4000000052fafd8d38754cec delivery 9: success").unwrap();
        assert_eq!(ms / 1000, 1_392_180_611);
        assert_eq!(ms % 1000, 947);
    }

    #[test]
    fn malformed_labels_are_refused() {
        assert_eq!(parse_ms(b"@4000000052fafd8d3875"), None);
        assert_eq!(parse_ms(b"@4000000052fafd8dzz754cec"), None);
        assert_eq!(parse_ms(b"4000000052fafd8d38754cec "), None);
        assert_eq!(parse_ms(b"@0000000000000000ffffffff"), None);
    }
}

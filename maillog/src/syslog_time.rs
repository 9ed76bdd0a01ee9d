//! Timestamps of syslog lines: the classic `May  1 04:40:40` (no year, local
//! time), RFC 3339 (`2023-03-14T00:08:33.787870+01:00`) and qmail's plain
//! epoch stamps (`1177980040.081236`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Where classic syslog timestamps get their year.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum YearRule {
    /// The first line is in this year; each time the month goes back
    /// (December → January) the year goes forward.
    Start(i32),
    /// The log was last written on this date (its file's mtime): a line
    /// dated after it is from the year before. Handles a Dec→Jan wrap without
    /// reading ahead, for logs shorter than a year.
    Before { year: i32, month: u8, day: u8 },
}

impl YearRule {
    /// The rule for a file last modified at `t`.
    pub fn from_mtime(t: SystemTime) -> YearRule {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        YearRule::Before { year, month, day }
    }
}

/// Resolves classic timestamps of one file, in order.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Clock {
    rule: YearRule,
    year: i32,
    last_month: u8,
    /// Seconds east of UTC of the local time syslog wrote.
    utc_offset_secs: i32,
}

impl Clock {
    pub fn new(rule: YearRule, utc_offset_secs: i32) -> Clock {
        let year = match rule {
            YearRule::Start(y) => y,
            YearRule::Before { year, .. } => year,
        };
        Clock {
            rule,
            year,
            last_month: 0,
            utc_offset_secs,
        }
    }

    /// Milliseconds since the epoch of a classic timestamp.
    pub fn resolve(&mut self, t: &Classic) -> i64 {
        let year = match self.rule {
            YearRule::Start(_) => {
                if self.last_month != 0 && t.month < self.last_month {
                    self.year += 1;
                }
                self.last_month = t.month;
                self.year
            }
            YearRule::Before { year, month, day } => {
                if (t.month, t.day) > (month, day) {
                    year - 1
                } else {
                    year
                }
            }
        };
        let days = days_from_civil(year, t.month, t.day);
        let secs = days * 86_400 + i64::from(t.secs_of_day) - i64::from(self.utc_offset_secs);
        secs * 1000
    }
}

/// A classic syslog timestamp: month, day and time of day, no year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classic {
    pub month: u8,
    pub day: u8,
    pub secs_of_day: u32,
}

/// Length of `Mmm dd hh:mm:ss`.
pub const CLASSIC_LEN: usize = 15;

/// Parses `Mmm dd hh:mm:ss` (day space- or zero-padded) at the start of `b`.
pub fn parse_classic(b: &[u8]) -> Option<Classic> {
    let b = b.get(..CLASSIC_LEN)?;
    let month = match &b[..3] {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    };
    if b[3] != b' ' || b[6] != b' ' || b[9] != b':' || b[12] != b':' {
        return None;
    }
    let day = match (b[4], b[5]) {
        (b' ', d) => digit(d)?,
        (t, d) => digit(t)? * 10 + digit(d)?,
    };
    let h = two(&b[7..9])?;
    let m = two(&b[10..12])?;
    let s = two(&b[13..15])?;
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(Classic {
        month,
        day,
        secs_of_day: u32::from(h) * 3600 + u32::from(m) * 60 + u32::from(s),
    })
}

/// Parses an RFC 3339 timestamp (the whole of `b`) into ms since the epoch.
pub fn parse_rfc3339(b: &[u8]) -> Option<i64> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = i32::from(two(&b[0..2])?) * 100 + i32::from(two(&b[2..4])?);
    let (month, day) = (two(&b[5..7])?, two(&b[8..10])?);
    let (h, m, s) = (two(&b[11..13])?, two(&b[14..16])?, two(&b[17..19])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        for (i, &d) in frac[..n.min(3)].iter().enumerate() {
            ms += i64::from(d - b'0') * [100, 10, 1][i];
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), hh, hh2, b':', mm, mm2] => {
            let v = i64::from(two(&[*hh, *hh2])?) * 3600 + i64::from(two(&[*mm, *mm2])?) * 60;
            if *sign == b'-' { -v } else { v }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400
        + i64::from(h) * 3600
        + i64::from(m) * 60
        + i64::from(s)
        - offset;
    Some(secs * 1000 + ms)
}

/// Parses qmail's `seconds.micros` stamp (the whole of `b`) into ms.
pub fn parse_epoch(b: &[u8]) -> Option<i64> {
    let dot = memchr::memchr(b'.', b)?;
    let (secs, frac) = (&b[..dot], &b[dot + 1..]);
    if secs.is_empty() || secs.len() > 12 || frac.is_empty() || frac.len() > 9 {
        return None;
    }
    let mut s = 0i64;
    for &d in secs {
        s = s * 10 + i64::from(digit(d)?);
    }
    let mut ms = 0i64;
    for (i, &d) in frac.iter().enumerate() {
        let v = i64::from(digit(d)?);
        if i < 3 {
            ms += v * [100, 10, 1][i];
        }
    }
    Some(s * 1000 + ms)
}

fn digit(b: u8) -> Option<u8> {
    b.is_ascii_digit().then(|| b - b'0')
}

fn two(b: &[u8]) -> Option<u8> {
    Some(digit(b[0])? * 10 + digit(b[1])?)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_with_space_padded_day() {
        let t = parse_classic(b"May  1 04:40:40 saracen").unwrap();
        assert_eq!(
            (t.month, t.day, t.secs_of_day),
            (5, 1, 4 * 3600 + 40 * 60 + 40)
        );
        assert_eq!(parse_classic(b"Foo  1 04:40:40"), None);
        assert_eq!(parse_classic(b"May 1 04:40:40 "), None);
    }

    #[test]
    fn december_to_january_moves_the_year_forward() {
        let mut c = Clock::new(YearRule::Start(2023), 0);
        let dec = c.resolve(&parse_classic(b"Dec 31 23:59:59").unwrap());
        let jan = c.resolve(&parse_classic(b"Jan  1 00:00:01").unwrap());
        assert_eq!(dec, 1_704_067_199_000);
        assert_eq!(jan - dec, 2_000);
    }

    #[test]
    fn mtime_rule_puts_later_dates_in_the_previous_year() {
        let mut c = Clock::new(
            YearRule::Before {
                year: 2024,
                month: 1,
                day: 2,
            },
            0,
        );
        let dec = c.resolve(&parse_classic(b"Dec 31 23:59:59").unwrap());
        let jan = c.resolve(&parse_classic(b"Jan  1 00:00:01").unwrap());
        assert_eq!(dec, 1_704_067_199_000);
        assert_eq!(jan - dec, 2_000);
    }

    #[test]
    fn utc_offset_is_taken_off() {
        let mut c = Clock::new(YearRule::Start(2007), 4 * 3600);
        // The splogger stamp of this line in edgecases.syslog.log is 1177980040.
        assert_eq!(
            c.resolve(&parse_classic(b"May  1 04:40:40").unwrap()),
            1_177_980_040_000
        );
    }

    #[test]
    fn rfc3339_and_epoch() {
        assert_eq!(
            parse_rfc3339(b"2023-03-14T00:08:33.787870+01:00"),
            Some(1_678_748_913_787)
        );
        assert_eq!(
            parse_rfc3339(b"2023-03-13T23:08:33Z"),
            Some(1_678_748_913_000)
        );
        assert_eq!(parse_rfc3339(b"2023-03-14T00:08:33+0100"), None);
        assert_eq!(parse_epoch(b"1177980040.081236"), Some(1_177_980_040_081));
        assert_eq!(parse_epoch(b"1177980040"), None);
        assert_eq!(parse_epoch(b"11779x0040.081236"), None);
    }

    #[test]
    fn civil_round_trip() {
        for d in [-1, 0, 59, 11_016, 19_723, 20_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}

//! Billing periods: calendar months in UTC, named `YYYY-MM`. The bill stage's
//! `period_start_ms` is the start of one; the ledger keys its counters and invoices by
//! one. Here, not in the host's `billing`, so that the store crate and billing name the
//! same months without the store importing the host.

/// A period that is not `YYYY-MM` (1970 or later); the text quotes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("period {0:?} is not YYYY-MM")]
pub struct PeriodError(pub String);

const DAY_MS: i64 = 86_400_000;

/// The billing period (calendar month, UTC) holding `ms`, as `YYYY-MM`.
pub fn period_of(ms: i64) -> String {
    let (y, m, _) = civil_from_days(ms.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}")
}

/// `[start, end)` of a `YYYY-MM` period in milliseconds.
pub fn period_bounds(period: &str) -> Result<(i64, i64), PeriodError> {
    let bad = || PeriodError(period.to_owned());
    let (y, m) = period.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 || !(y.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (y, m): (i32, u8) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(1..=12).contains(&m) || y < 1970 {
        return Err(bad());
    }
    let start = days_from_civil(y, m, 1) * DAY_MS;
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    Ok((start, days_from_civil(ny, nm, 1) * DAY_MS))
}

// The two calendar conversions (H. Hinnant's algorithms) are the ones in
// `sluice-maillog`'s `syslog_time`, repeated (20 lines) because this crate must not
// depend on the log readers; the tests below pin them to known dates.

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
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
    fn periods_are_calendar_months_in_utc() {
        // 2026-12-31T23:59:59.999Z and the next millisecond.
        let (start, end) = period_bounds("2026-12").unwrap();
        assert_eq!(start, 1_796_083_200_000); // 2026-12-01T00:00:00Z
        assert_eq!(period_of(end - 1), "2026-12");
        assert_eq!(period_of(end), "2027-01");
        assert_eq!(period_of(start), "2026-12");
        assert_eq!(end - start, 31 * DAY_MS);
        assert_eq!(
            period_bounds("2028-02").map(|(s, e)| (e - s) / DAY_MS),
            Ok(29)
        );
        assert_eq!(period_of(0), "1970-01");
        assert_eq!(period_of(-1), "1969-12");
        for bad in [
            "2026-13", "2026-1", "26-01", "2026/01", "", "2026-00", "1969-12",
        ] {
            assert_eq!(period_bounds(bad), Err(PeriodError(bad.into())));
        }
        assert_eq!(
            PeriodError("x".into()).to_string(),
            "period \"x\" is not YYYY-MM"
        );
    }

    #[test]
    fn days_and_dates_convert_both_ways() {
        for (date, days) in [
            ((1970, 1, 1), 0),
            ((1969, 12, 31), -1),
            ((2000, 2, 29), 11_016),
            ((2026, 12, 1), 20_788),
        ] {
            assert_eq!(days_from_civil(date.0, date.1, date.2), days, "{date:?}");
            assert_eq!(civil_from_days(days), date);
        }
    }
}

//! Time for the emulator: an adjustable wall clock, plus the few calendar
//! computations the real server's Java stack performs on dates.
//!
//! The emulated server's default time zone is UTC. That matters in three
//! places, all reproduced here: SQL `DATE` columns read back as midnight of
//! their day (`startDate`, `endDate`), the security-code sweep compares SQL
//! `TIME` values (time of day only), and Jackson parses ISO-8601 strings
//! without an offset as UTC (Jackson's own default, whatever the JVM zone).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds in a day.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// The emulator's wall clock: the system clock plus an offset that tests
/// move forward (or set) so they need not sleep through a code's lifetime.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    /// Current time in epoch milliseconds.
    pub(crate) fn now_ms(&self) -> i64 {
        system_ms() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves the clock forward.
    pub(crate) fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(by, Ordering::Relaxed);
    }

    /// Makes "now" equal `at` (the clock keeps running from there).
    pub(crate) fn set(&self, at: SystemTime) {
        self.offset_ms
            .store(to_epoch_ms(at) - system_ms(), Ordering::Relaxed);
    }
}

fn system_ms() -> i64 {
    to_epoch_ms(SystemTime::now())
}

/// A `SystemTime` as signed epoch milliseconds.
pub(crate) fn to_epoch_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Signed epoch milliseconds as a `SystemTime`.
pub(crate) fn from_epoch_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// What a `java.util.Date` becomes after a round trip through an SQL `DATE`
/// column: midnight of its day in the server zone.
pub(crate) fn sql_date(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) * DAY_MS
}

/// What survives of a `java.util.Date` in an SQL `TIME` column: the second
/// of the day in the server zone.
pub(crate) fn sql_time_of_day(ms: i64) -> i64 {
    ms.div_euclid(1000).rem_euclid(86_400)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day number since 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Parses the date strings Jackson's `StdDateFormat` accepts for a
/// `java.util.Date`: a plain (optionally negative) number of epoch
/// milliseconds, or ISO-8601 `yyyy-MM-dd['T'HH:mm[:ss[.fff…]]][Z|±hh[[:]mm]]`
/// (no offset means UTC).
pub(crate) fn parse_std_date(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    parse_iso8601(text)
}

fn parse_iso8601(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        part.iter().all(u8::is_ascii_digit).then_some(())?;
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let year = num(0..4)?;
    (b.get(4) == Some(&b'-') && b.get(7) == Some(&b'-')).then_some(())?;
    let month = u32::try_from(num(5..7)?).ok()?;
    let day = u32::try_from(num(8..10)?).ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut ms = days_from_civil(year, month, day) * DAY_MS;
    if b.len() == 10 {
        return Some(ms);
    }
    (b.get(10) == Some(&b'T') && b.get(13) == Some(&b':')).then_some(())?;
    let hour = num(11..13)?;
    let minute = num(14..16)?;
    let mut i = 16;
    let mut second = 0;
    if b.get(i) == Some(&b':') {
        second = num(17..19)?;
        i = 19;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    ms += ((hour * 60 + minute) * 60 + second) * 1000;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        let mut end = start;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        if end == start {
            return None;
        }
        // Only milliseconds are kept; extra digits are dropped.
        let mut frac = String::from_utf8_lossy(&b[start..end.min(start + 3)]).into_owned();
        while frac.len() < 3 {
            frac.push('0');
        }
        ms += frac.parse::<i64>().ok()?;
        i = end;
    }
    match b.get(i) {
        None => Some(ms),
        Some(b'Z') if i + 1 == b.len() => Some(ms),
        Some(&sign @ (b'+' | b'-')) => {
            let oh = num(i + 1..i + 3)?;
            let rest = &b[i + 3..];
            let om = match rest {
                [] => 0,
                [b':', ..] if rest.len() == 3 => num(i + 4..i + 6)?,
                _ if rest.len() == 2 => num(i + 3..i + 5)?,
                _ => return None,
            };
            let offset = (oh * 60 + om) * 60_000;
            Some(if sign == b'+' {
                ms - offset
            } else {
                ms + offset
            })
        }
        Some(_) => None,
    }
}

/// A timestamp as `java.util.logging.SimpleFormatter` prints it by default,
/// e.g. `Jan 31, 2021 9:05:07 AM`.
pub(crate) fn jul_timestamp(ms: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day) = civil_from_days(ms.div_euclid(DAY_MS));
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let (h12, half) = match h {
        0 => (12, "AM"),
        1..=11 => (h, "AM"),
        12 => (12, "PM"),
        _ => (h - 12, "PM"),
    };
    let month = MONTHS[(month as usize).saturating_sub(1) % 12];
    format!("{month} {day:02}, {year} {h12}:{m:02}:{s:02} {half}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-800_000, -1, 0, 1, 18_658, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(18_658), (2021, 1, 31));
    }

    #[test]
    fn sql_types_truncate_in_utc() {
        let t = 1_611_000_000_123; // 2021-01-18T20:00:00.123Z
        assert_eq!(sql_date(t), 1_610_928_000_000);
        assert_eq!(sql_date(-1), -DAY_MS);
        assert_eq!(sql_time_of_day(t), 20 * 3600);
    }

    #[test]
    fn std_dates_parse() {
        assert_eq!(parse_std_date("1611000000000"), Some(1_611_000_000_000));
        assert_eq!(parse_std_date("-5"), Some(-5));
        assert_eq!(parse_std_date("2021-01-19"), Some(1_611_014_400_000));
        assert_eq!(
            parse_std_date("2021-01-19T00:00:00Z"),
            Some(1_611_014_400_000)
        );
        assert_eq!(parse_std_date("2021-01-19T01:30"), Some(1_611_019_800_000));
        assert_eq!(
            parse_std_date("2021-01-19T02:00:00.5+01:00"),
            Some(1_611_018_000_500)
        );
        assert_eq!(
            parse_std_date("2021-01-19T02:00:00.123456-0100"),
            Some(1_611_025_200_123)
        );
        for bad in [
            "",
            "yesterday",
            "2021-13-01",
            "2021-01-19T",
            "2021-01-19 10:00",
            "12a",
        ] {
            assert_eq!(parse_std_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn jul_format() {
        assert_eq!(jul_timestamp(1_612_083_907_000), "Jan 31, 2021 9:05:07 AM");
        assert_eq!(jul_timestamp(0), "Jan 01, 1970 12:00:00 AM");
        assert_eq!(jul_timestamp(13 * 3_600_000), "Jan 01, 1970 1:00:00 PM");
    }

    #[test]
    fn clock_moves() {
        let clock = Clock::default();
        let before = clock.now_ms();
        clock.advance(Duration::from_secs(300));
        assert!(clock.now_ms() >= before + 300_000);
        clock.set(from_epoch_ms(1_000));
        assert!((clock.now_ms() - 1_000).abs() < 5_000);
    }
}

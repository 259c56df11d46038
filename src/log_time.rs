//! The log lines' timestamp: `tracing-subscriber`'s `SystemTime` format
//! (RFC 3339 in UTC with microseconds, `2026-12-05T16:22:39.123456Z`),
//! with the date and time up to the second made once per second per
//! thread. Every log line has one (the access log: one per request), and
//! `tracing-subscriber` formats it field by field through `core::fmt`
//! each time: ≈ 0.3 µs of a proxied request's CPU on the benchmark
//! machine (docs/benchmarks.md, "Cutting the gateway's own work").

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// See the module doc. Outside the years 1970–9999 it hands over to
/// `tracing-subscriber`'s own formatter.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineTime;

/// `YYYY-MM-DDTHH:MM:SS`.
type Second = [u8; 19];

thread_local! {
    /// The second last formatted on this thread, and its text.
    static LAST: Cell<(u64, Second)> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// The first second of the year 10000.
const YEAR_10000: u64 = 253_402_300_800;

impl FormatTime for LineTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).ok();
        let Some(since) = since.filter(|d| d.as_secs() < YEAR_10000) else {
            return tracing_subscriber::fmt::time::SystemTime.format_time(w);
        };
        let secs = since.as_secs();
        let second = LAST
            .try_with(|last| {
                let (at, text) = last.get();
                if at == secs {
                    return text;
                }
                let text = second_text(secs);
                last.set((secs, text));
                text
            })
            .unwrap_or_else(|_| second_text(secs));
        let mut line = [0u8; 27];
        line[..19].copy_from_slice(&second);
        line[19] = b'.';
        let mut micros = since.subsec_micros();
        for at in (20..26).rev() {
            line[at] = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        line[26] = b'Z';
        // ASCII digits and separators only.
        w.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` after the Unix epoch (before the year
/// 10000).
fn second_text(secs: u64) -> Second {
    let (days, in_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, in_day / 3600);
    put(14, 2, in_day % 3600 / 60);
    put(17, 2, in_day % 60);
    out
}

/// Year, month and day of a day count since 1970-01-01 (the proleptic
/// Gregorian calendar; Howard Hinnant's `civil_from_days`, for days on or
/// after the epoch). Also the audit log's dates.
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_written_as_rfc_3339_in_utc() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00"),
            (68_169_600, "1972-02-29T00:00:00"),
            (951_827_696, "2000-02-29T12:34:56"),
            (1_709_251_199, "2024-02-29T23:59:59"),
            (1_796_055_759, "2026-11-30T16:22:39"),
            (4_107_542_400, "2100-03-01T00:00:00"),
            (YEAR_10000 - 1, "9999-12-31T23:59:59"),
        ] {
            assert_eq!(std::str::from_utf8(&second_text(secs)), Ok(want), "{secs}");
        }
    }

    /// Every day from 1970 to 2200 follows the one before it.
    #[test]
    fn days_follow_each_other_through_leap_years_and_centuries() {
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let (mut y, mut m, mut d) = (1970, 1, 1);
        for days in 0..84_000 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let month_len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > month_len {
                (d, m) = (1, m + 1);
            }
            if m > 12 {
                (m, y) = (1, y + 1);
            }
        }
    }

    fn formatted(timer: &impl FormatTime) -> String {
        let mut s = String::new();
        timer.format_time(&mut Writer::new(&mut s)).expect("format");
        s
    }

    /// The same text as `tracing-subscriber`'s formatter, read at the same
    /// moment (retried when a second boundary falls between the two).
    #[test]
    fn the_line_time_reads_as_tracing_subscribers_system_time() {
        let system = tracing_subscriber::fmt::time::SystemTime;
        for _ in 0..3 {
            let (ours, theirs) = (formatted(&LineTime), formatted(&system));
            assert_eq!(ours.len(), 27, "{ours}");
            assert_eq!(theirs.len(), 27, "{theirs}");
            assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
            if ours[..19] == theirs[..19] {
                // And again within the same second: from the cache.
                let again = formatted(&LineTime);
                assert!(again[..19] >= ours[..19], "{again} after {ours}");
                return;
            }
        }
        panic!("three second boundaries in a row");
    }
}

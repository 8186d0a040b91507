//! Timestamps in requests and documents: ISO 8601 / RFC 3339 with a UTC offset, as patronictl
//! sends them (`2026-05-01T10:00:00+02:00`, `2019-09-24T12:00+00`) and as PostgreSQL renders
//! them (`2024-08-28 19:39:26.352526+00:00`).
//!
//! Written here rather than with a date crate: the inputs are not all RFC 3339 (patronictl
//! sends minutes without seconds and offsets without minutes, PostgreSQL a space for the `T`),
//! and the output must match Python's `isoformat()` to the character; the civil-date arithmetic
//! is a few lines and is property-tested against round trips.

/// A point in time with the UTC offset it was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    /// Seconds since the Unix epoch (UTC).
    pub unix: i64,
    /// Sub-second part, in microseconds (Python's precision).
    pub micros: u32,
}

/// Why a timestamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampError {
    /// Not a date and time this parser reads.
    Unparsable,
    /// A valid date and time without a UTC offset: ambiguous.
    NoTimezone,
}

impl Timestamp {
    /// Milliseconds since the epoch (`None` before 1970).
    pub fn unix_ms(self) -> Option<u64> {
        u64::try_from(self.unix)
            .ok()?
            .checked_mul(1000)?
            .checked_add(u64::from(self.micros / 1000))
    }

    /// Whole seconds since the epoch.
    pub fn from_unix(unix: i64) -> Timestamp {
        Timestamp { unix, micros: 0 }
    }

    /// RFC 3339 in UTC, the way Python's `isoformat()` writes it:
    /// `2026-05-01T08:00:00+00:00` (`.ffffff` only when there are microseconds).
    pub fn to_rfc3339(self) -> String {
        let days = self.unix.div_euclid(86_400);
        let rem = self.unix.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let frac = if self.micros == 0 {
            String::new()
        } else {
            format!(".{:06}", self.micros)
        };
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}+00:00",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }

    /// Seconds since the epoch with microseconds, as Prometheus values are written
    /// (`1724873966.352526`), without floating-point rounding.
    pub fn epoch_text(self) -> String {
        if self.micros == 0 {
            self.unix.to_string()
        } else if self.unix < 0 {
            // -1.5 s is unix -2 + 500000 µs.
            let total = i128::from(self.unix) * 1_000_000 + i128::from(self.micros);
            let abs = total.unsigned_abs();
            format!("-{}.{:06}", abs / 1_000_000, abs % 1_000_000)
        } else {
            format!("{}.{:06}", self.unix, self.micros)
        }
    }
}

/// Parse `YYYY-MM-DD[T| ]HH:MM[:SS[.fraction]][ ](Z|UTC|±HH[[:]MM])`.
pub fn parse_timestamp(s: &str) -> Result<Timestamp, TimestampError> {
    use TimestampError::{NoTimezone, Unparsable};
    let s = s.trim();
    let b = s.as_bytes();
    let mut p = Cursor { b, i: 0 };
    let year = p.digits(4).ok_or(Unparsable)?;
    p.expect(b'-').ok_or(Unparsable)?;
    let month = p.digits(2).ok_or(Unparsable)?;
    p.expect(b'-').ok_or(Unparsable)?;
    let day = p.digits(2).ok_or(Unparsable)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(Unparsable);
    }
    let (mut hour, mut minute, mut second, mut micros) = (0, 0, 0, 0u32);
    let date_only = p.at_end();
    if !date_only {
        match p.next() {
            Some(b'T' | b't' | b' ') => {}
            _ => return Err(Unparsable),
        }
        hour = p.digits(2).ok_or(Unparsable)?;
        p.expect(b':').ok_or(Unparsable)?;
        minute = p.digits(2).ok_or(Unparsable)?;
        if p.peek() == Some(b':') {
            p.i += 1;
            second = p.digits(2).ok_or(Unparsable)?;
            if matches!(p.peek(), Some(b'.' | b',')) {
                p.i += 1;
                let start = p.i;
                while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                    p.i += 1;
                }
                let frac = &s[start..p.i];
                if frac.is_empty() || frac.len() > 9 {
                    return Err(Unparsable);
                }
                // Microseconds, truncated as Python does beyond six digits.
                let six: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
                micros = six.parse().map_err(|_| Unparsable)?;
            }
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err(Unparsable);
        }
    }
    if p.peek() == Some(b' ') {
        p.i += 1;
    }
    let rest = &s[p.i..];
    let offset_secs: i64 = match rest {
        "" => return Err(NoTimezone),
        "Z" | "z" | "UTC" | "utc" | "GMT" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(Unparsable),
            };
            let o = &rest[1..];
            if !o.is_ascii() {
                return Err(Unparsable);
            }
            let (h, m) = match o.len() {
                2 => (o, "00"),
                4 => (&o[..2], &o[2..]),
                5 if o.as_bytes()[2] == b':' => (&o[..2], &o[3..]),
                _ => return Err(Unparsable),
            };
            if !h.bytes().chain(m.bytes()).all(|c| c.is_ascii_digit()) {
                return Err(Unparsable);
            }
            let (h, m): (i64, i64) = (
                h.parse().map_err(|_| Unparsable)?,
                m.parse().map_err(|_| Unparsable)?,
            );
            if h > 23 || m > 59 {
                return Err(Unparsable);
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let local = days * 86_400 + hour * 3600 + minute * 60 + second;
    Ok(Timestamp {
        unix: local - offset_secs,
        micros,
    })
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }
    fn at_end(&self) -> bool {
        self.i >= self.b.len()
    }
    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }
    /// Exactly `n` ASCII digits.
    fn digits(&mut self, n: usize) -> Option<i64> {
        let d = self.b.get(self.i..self.i + n)?;
        if !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i += n;
        Some(d.iter().fold(0, |acc, c| acc * 10 + i64::from(c - b'0')))
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unix(s: &str) -> i64 {
        parse_timestamp(s).expect(s).unix
    }

    #[test]
    fn formats_patronictl_and_postgresql_write() {
        assert_eq!(unix("1970-01-01T00:00:00+00:00"), 0);
        assert_eq!(unix("2026-05-01T10:00:00+02:00"), 1_777_622_400);
        assert_eq!(unix("2026-05-01T08:00:00Z"), 1_777_622_400);
        assert_eq!(unix("2026-05-01 08:00:00 UTC"), 1_777_622_400);
        assert_eq!(unix("2026-05-01T03:30:00-0430"), 1_777_622_400);
        // Patroni's documentation example: minutes only, hour-only offset.
        assert_eq!(unix("2019-09-24T12:00+00"), 1_569_326_400);
        let pg = parse_timestamp("2024-08-28 19:39:26.352526+00:00").expect("pg");
        assert_eq!((pg.unix, pg.micros), (1_724_873_966, 352_526));
        assert_eq!(pg.epoch_text(), "1724873966.352526");
        let ns = parse_timestamp("2024-08-28T19:39:26.123456789+00:00").expect("ns");
        assert_eq!(ns.micros, 123_456);
        assert_eq!(unix("2024-02-29T00:00:00+00:00"), 1_709_164_800);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            "",
            "tomorrow",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T10:60Z",
            "2026-01-01T10:00:61Z",
            "2026-01-01T10:00:00+2400",
            "2026-01-01T10:00:00+02:0",
            "2026-01-01T10:00:00 +02:00 extra",
            "2026-01-01T10:00:00.Z",
            "26-01-01T10:00:00Z",
            "2026-01-01X10:00:00Z",
            "２０２６-01-01T10:00Z",
        ] {
            assert_eq!(
                parse_timestamp(bad),
                Err(TimestampError::Unparsable),
                "{bad:?}"
            );
        }
        for naive in ["2026-01-01T10:00:00", "2026-01-01 10:00", "2026-01-01"] {
            assert_eq!(
                parse_timestamp(naive),
                Err(TimestampError::NoTimezone),
                "{naive:?}"
            );
        }
    }

    #[test]
    fn renders_utc_like_python() {
        assert_eq!(
            Timestamp::from_unix(1_777_622_400).to_rfc3339(),
            "2026-05-01T08:00:00+00:00"
        );
        assert_eq!(
            Timestamp::from_unix(0).to_rfc3339(),
            "1970-01-01T00:00:00+00:00"
        );
        assert_eq!(
            Timestamp::from_unix(1_767_225_600).to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        let t = Timestamp {
            unix: 1_724_873_966,
            micros: 5,
        };
        assert_eq!(t.to_rfc3339(), "2024-08-28T19:39:26.000005+00:00");
        assert_eq!(
            Timestamp {
                unix: -2,
                micros: 500_000
            }
            .epoch_text(),
            "-1.500000"
        );
    }

    proptest! {
        #[test]
        fn round_trips(unix in -62_135_596_800i64..253_402_300_799, micros in 0u32..1_000_000) {
            let t = Timestamp { unix, micros };
            prop_assert_eq!(parse_timestamp(&t.to_rfc3339()), Ok(t));
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_timestamp(&s);
        }
    }
}

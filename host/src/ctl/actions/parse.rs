//! Reads the values of `--timeout` and `--scheduled`. Pure functions: no I/O.

use crate::ctl::CtlError;

/// `--timeout`: seconds, or with a unit (`500ms` rounds up, `30s`, `2min`, `1h`, `1d`).
pub(crate) fn parse_seconds(t: &str) -> Result<u64, CtlError> {
    let s = t.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        CtlError::Usage(format!(
            "--timeout {t}: expected seconds, e.g. 60, 60s or 2min"
        ))
    })?;
    let secs = match unit.trim() {
        "" | "s" => Some(n),
        "ms" => Some(n.div_ceil(1000)),
        "min" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    };
    match secs {
        Some(s) if s > 0 => Ok(s),
        _ => Err(CtlError::Usage(format!(
            "--timeout {t}: expected a positive number of seconds, e.g. 60, 60s or 2min"
        ))),
    }
}

/// `--scheduled`: `now` (or empty) → `None`; else an ISO 8601 time with a time zone, returned
/// as `YYYY-MM-DDTHH:MM:SS[.f]±HH:MM`. A time without a zone is refused rather than guessed.
pub(crate) fn parse_schedule(s: &str) -> Result<Option<String>, CtlError> {
    let t = s.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("now") {
        return Ok(None);
    }
    let bad = || {
        CtlError::Usage(format!(
            "--scheduled {s}: expected `now` or an ISO 8601 time with a time zone, e.g. 2026-05-01T03:00+00:00 or 2026-05-01T03:00:00Z"
        ))
    };
    let num = |x: &str, lo: u32, hi: u32| -> Option<u32> {
        (x.len() == 2 || x.len() == 4)
            .then(|| x.parse::<u32>().ok())
            .flatten()
            .filter(|v| (lo..=hi).contains(v))
    };
    let (date, rest) = t.split_at_checked(10).ok_or_else(bad)?;
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3
        || d[0].len() != 4
        || num(d[0], 1970, 9999).is_none()
        || num(d[1], 1, 12).is_none()
        || num(d[2], 1, 31).is_none()
    {
        return Err(bad());
    }
    let rest = rest.strip_prefix(['T', 't', ' ']).ok_or_else(bad)?;
    let zone_at = rest.find(['Z', 'z', '+', '-']).ok_or_else(bad)?;
    let (time, zone) = rest.split_at(zone_at);
    let (hms, frac) = match time.split_once('.') {
        Some((h, f)) if !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()) => (h, Some(f)),
        Some(_) => return Err(bad()),
        None => (time, None),
    };
    let p: Vec<&str> = hms.split(':').collect();
    let ok_time = match p.len() {
        2 | 3 => {
            num(p[0], 0, 23).is_some()
                && num(p[1], 0, 59).is_some()
                && p.get(2).is_none_or(|sec| num(sec, 0, 60).is_some())
                && p.iter().all(|x| x.len() == 2)
        }
        _ => false,
    };
    if !ok_time {
        return Err(bad());
    }
    let offset = if zone.eq_ignore_ascii_case("z") {
        "+00:00".to_string()
    } else {
        let (sign, hhmm) = zone.split_at(1);
        let digits: String = hhmm.chars().filter(|c| *c != ':').collect();
        let (hh, mm) = match digits.len() {
            2 => (&digits[..2], "00"),
            4 => (&digits[..2], &digits[2..]),
            _ => return Err(bad()),
        };
        if num(hh, 0, 23).is_none() || num(mm, 0, 59).is_none() {
            return Err(bad());
        }
        format!("{sign}{hh}:{mm}")
    };
    let secs = p.get(2).copied().unwrap_or("00");
    let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
    Ok(Some(format!(
        "{date}T{}:{}:{secs}{frac}{offset}",
        p[0], p[1]
    )))
}

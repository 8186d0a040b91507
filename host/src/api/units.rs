//! Patroni's value parsing: integers with memory units (`?lag=16MB`), durations in seconds
//! (`POST /restart {"timeout": "2min"}`), booleans (`parse_bool`) and Python truthiness.

use serde_json::Value;

/// Python truthiness of a JSON value, as Patroni applies `bool()` to tag values.
pub(super) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Leading integer as C `strtol(…, 0)`: `0x` hex, leading-zero octal, decimal; optional sign.
fn strtol(s: &str) -> Option<(i128, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    let negative = match b.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let digits_end = |from: usize, pred: fn(&u8) -> bool| {
        from + b
            .get(from..)
            .map_or(0, |rest| rest.iter().take_while(|c| pred(c)).count())
    };
    let (radix, start, end) = if b.get(i) == Some(&b'0')
        && b.get(i + 1) == Some(&b'x')
        && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    {
        (16, i + 2, digits_end(i + 2, u8::is_ascii_hexdigit))
    } else if b.get(i) == Some(&b'0') {
        (8, i, digits_end(i + 1, |c| (b'0'..=b'7').contains(c)))
    } else if b.get(i).is_some_and(u8::is_ascii_digit) {
        (10, i, digits_end(i, u8::is_ascii_digit))
    } else {
        return None;
    };
    let mut value: i128 = 0;
    for c in &b[start..end] {
        let d = i128::from(char::from(*c).to_digit(radix)?);
        value = value.checked_mul(i128::from(radix))?.checked_add(d)?;
    }
    Some((if negative { -value } else { value }, &s[end..]))
}

/// Leading floating-point number (`[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?`).
fn strtod(s: &str) -> Option<(f64, &str)> {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let int_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let frac_digits = if b.get(i) == Some(&b'.') {
        b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count()
    } else {
        0
    };
    if frac_digits > 0 {
        i += 1 + frac_digits;
    } else if int_digits == 0 {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'-' | b'+')) {
            j += 1;
        }
        let exp_digits = b
            .get(j..)
            .map_or(0, |r| r.iter().take_while(|c| c.is_ascii_digit()).count());
        if exp_digits > 0 {
            i = j + exp_digits;
        }
    }
    let value: f64 = s[..i].parse().ok()?;
    Some((value, &s[i..]))
}

/// Bytes per unit, and the next smaller unit's size used for rounding (as Patroni does).
fn memory_unit(unit: &str) -> Option<(f64, f64)> {
    const K: f64 = 1024.0;
    match unit {
        "TB" => Some((K * K * K * K, K * K * K)),
        "GB" => Some((K * K * K, K * K)),
        "MB" => Some((K * K, K)),
        "kB" => Some((K, 1.0)),
        "B" => Some((1.0, 1.0)),
        _ => None,
    }
}

/// Parses an integer, optionally with a memory unit (`B`, `kB`, `MB`, `GB`, `TB`, case-sensitive,
/// powers of 1024) when `with_units`; returns `None` when it can't (Patroni's `parse_int`).
fn parse_int_with_units(value: &str, with_units: bool) -> Option<i128> {
    let s = value.trim();
    let int_part = strtol(s);
    let rest = int_part.map_or(s, |(_, rest)| rest);
    let use_float =
        (int_part.is_none() && rest.starts_with('.')) || rest.starts_with(['.', 'e', 'E']);
    if use_float {
        let (val, unit) = strtod(s)?;
        let unit = unit.trim();
        if unit.is_empty() {
            return f64_to_i128(val);
        }
        if !with_units {
            return None;
        }
        let (mult, round_to) = memory_unit(unit)?;
        f64_to_i128(((val * mult) / round_to).round_ties_even() * round_to)
    } else {
        let (val, unit) = int_part?;
        let unit = unit.trim();
        if unit.is_empty() {
            return Some(val);
        }
        if !with_units {
            return None;
        }
        let (mult, _) = memory_unit(unit)?;
        // Integer times a power of 1024: exact, no rounding needed.
        val.checked_mul(mult as i128)
    }
}

fn f64_to_i128(f: f64) -> Option<i128> {
    let r = f.round_ties_even();
    (r.is_finite() && r.abs() < 1e36).then_some(r as i128)
}

/// `?lag=` value in bytes: plain bytes or with units (`16kB`, `64MB`, `1GB`); `None` if invalid.
pub(super) fn parse_lag_bytes(value: &str) -> Option<i128> {
    parse_int_with_units(value, true)
}

/// Patroni's `parse_int(value)` without a unit, applied to a JSON value.
pub(super) fn parse_int_value(v: &Value) -> Option<i64> {
    let parsed = match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => Some(i128::from(i)),
            None => n.as_f64().and_then(f64_to_i128),
        },
        Value::String(s) => parse_int_with_units(s, false),
        _ => None,
    };
    parsed.and_then(|p| i64::try_from(p).ok())
}

/// Seconds in a duration unit (Patroni's time units, case-sensitive).
fn time_unit(unit: &str) -> Option<f64> {
    match unit {
        "ms" => Some(0.001),
        "s" => Some(1.0),
        "min" => Some(60.0),
        "h" => Some(3600.0),
        "d" => Some(86_400.0),
        _ => None,
    }
}

/// A duration in whole seconds, as Patroni's `parse_int(value, 's')` reads it: a JSON number, or a
/// string with an optional unit (`ms`, `s`, `min`, `h`, `d`), rounded to the nearest second.
/// `None` when it is neither.
pub(super) fn parse_seconds(v: &Value) -> Option<i128> {
    match v {
        Value::Number(n) => n.as_f64().and_then(f64_to_i128),
        Value::String(s) => {
            let s = s.trim();
            let (value, unit) = strtod(s)?;
            let unit = unit.trim();
            let mult = if unit.is_empty() {
                1.0
            } else {
                time_unit(unit)?
            };
            f64_to_i128(value * mult)
        }
        _ => None,
    }
}

/// Patroni's `parse_bool`: JSON booleans, 0 and 1, and the strings `true`/`yes`/`on`/`1` and
/// `false`/`no`/`off`/`0` (any case). `None` otherwise.
pub(super) fn parse_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Some(true),
            "false" | "no" | "off" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

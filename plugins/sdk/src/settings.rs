//! The manifest's `[settings]` table, handed to `configure` as JSON.
//!
//! [`Table::parse`] reads the JSON object; take each setting with a typed accessor, then call
//! [`Table::finish`], which refuses any key nobody asked for. A misspelt key or a wrong type so
//! becomes an error that names the key, and Regent refuses to load the policy with that message
//! instead of silently ignoring the setting.
//!
//! ```
//! use regent_policy_sdk::settings::Table;
//! let mut t = Table::parse("zone-aware", r#"{"max_lag_bytes": 1048576}"#).unwrap();
//! assert_eq!(t.u64("max_lag_bytes").unwrap(), Some(1048576));
//! assert_eq!(t.bool("check_timeline").unwrap(), None); // not set: use your default
//! t.finish().unwrap();
//!
//! let mut t = Table::parse("zone-aware", r#"{"max_lag": 1}"#).unwrap();
//! t.u64("max_lag_bytes").unwrap();
//! assert_eq!(
//!     t.finish().unwrap_err(),
//!     "zone-aware: unknown setting `max_lag` (known settings: max_lag_bytes)"
//! );
//! ```
//!
//! This is a small JSON reader of its own rather than serde_json, which would add about 50 KB
//! to every component. A plugin that prefers serde can depend on serde_json directly.

/// A JSON value. Numbers keep their text until a typed accessor converts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl Value {
    /// `"a boolean"`, `"a string"`, ... for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "a table",
        }
    }
}

/// The settings object, with the keys not taken yet.
#[derive(Debug)]
pub struct Table {
    policy: String,
    entries: Vec<(String, Value)>,
    asked: Vec<String>,
}

impl Table {
    /// Parse the settings JSON, which must be an object. An empty string counts as `{}` (the
    /// manifest has no `[settings]`).
    pub fn parse(policy: &str, json: &str) -> Result<Table, String> {
        let entries = if json.trim().is_empty() {
            Vec::new()
        } else {
            match parse_json(json) {
                Ok(Value::Object(entries)) => entries,
                Ok(other) => {
                    return Err(format!(
                        "{policy}: settings must be a table, not {}",
                        other.kind()
                    ));
                }
                Err(e) => return Err(format!("{policy}: settings are not valid JSON: {e}")),
            }
        };
        Ok(Table {
            policy: policy.to_string(),
            entries,
            asked: Vec::new(),
        })
    }

    /// Take the raw value of `key`, if set (a JSON `null` counts as not set).
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.asked.push(key.to_string());
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        match self.entries.remove(i).1 {
            Value::Null => None,
            v => Some(v),
        }
    }

    /// `true` / `false`.
    pub fn bool(&mut self, key: &str) -> Result<Option<bool>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(v) => Err(self.wrong_type(key, "true or false", &v)),
        }
    }

    /// A non-negative integer.
    pub fn u64(&mut self, key: &str) -> Result<Option<u64>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.parse().map(Some).map_err(|_| {
                format!(
                    "{}: setting `{key}` must be a whole number from 0 to {}, not {n}",
                    self.policy,
                    u64::MAX
                )
            }),
            Some(v) => Err(self.wrong_type(key, "a whole number", &v)),
        }
    }

    /// A non-negative integer that fits in 32 bits.
    pub fn u32(&mut self, key: &str) -> Result<Option<u32>, String> {
        match self.u64(key)? {
            None => Ok(None),
            Some(n) => u32::try_from(n).map(Some).map_err(|_| {
                format!(
                    "{}: setting `{key}` must be a whole number from 0 to {}, not {n}",
                    self.policy,
                    u32::MAX
                )
            }),
        }
    }

    /// A string.
    pub fn string(&mut self, key: &str) -> Result<Option<String>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(key, "a string", &v)),
        }
    }

    /// One of `choices` (a string).
    pub fn choice(&mut self, key: &str, choices: &[&str]) -> Result<Option<String>, String> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) if choices.contains(&s.as_str()) => Ok(Some(s)),
            Some(s) => Err(format!(
                "{}: setting `{key}` must be one of {}, not \"{s}\"",
                self.policy,
                quoted(choices)
            )),
        }
    }

    /// The error for a value of the wrong type (also for a plugin's own checks).
    pub fn wrong_type(&self, key: &str, expected: &str, got: &Value) -> String {
        format!(
            "{}: setting `{key}` must be {expected}, not {}",
            self.policy,
            got.kind()
        )
    }

    /// Refuse the keys nobody took: they are typos or settings of another policy.
    pub fn finish(&self) -> Result<(), String> {
        match self.entries.first() {
            None => Ok(()),
            Some((key, _)) => {
                let known = if self.asked.is_empty() {
                    "this policy takes no settings".to_string()
                } else {
                    format!("known settings: {}", self.asked.join(", "))
                };
                Err(format!(
                    "{}: unknown setting `{key}` ({known})",
                    self.policy
                ))
            }
        }
    }
}

/// Parse `json` for `policy`, read it with `read`, then refuse the keys `read` did not take
/// ([`Table::finish`]): typed settings in one call.
///
/// ```
/// use regent_policy_sdk::settings;
/// let lag = |t: &mut settings::Table| t.u64("max_lag_bytes");
/// assert_eq!(settings::read("p", r#"{"max_lag_bytes": 5}"#, lag), Ok(Some(5)));
/// assert_eq!(
///     settings::read("p", r#"{"lag": 5}"#, lag).unwrap_err(),
///     "p: unknown setting `lag` (known settings: max_lag_bytes)"
/// );
/// ```
pub fn read<T>(
    policy: &str,
    json: &str,
    read: impl FnOnce(&mut Table) -> Result<T, String>,
) -> Result<T, String> {
    let mut table = Table::parse(policy, json)?;
    let value = read(&mut table)?;
    table.finish()?;
    Ok(value)
}

fn quoted(choices: &[&str]) -> String {
    let quoted: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
    quoted.join(", ")
}

/// Parse one JSON document (RFC 8259), with a message that says what is wrong and where.
pub fn parse_json(text: &str) -> Result<Value, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("trailing characters after the JSON value"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: u32,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        format!("{what} at byte {}", self.i)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &str, v: Value) -> Result<Value, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("unexpected character"))
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.ws();
        match self.s.get(self.i) {
            None => Err(self.err("unexpected end of input")),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => self.nested(|p| {
                let mut items = Vec::new();
                p.ws();
                if p.eat(b']') {
                    return Ok(Value::Array(items));
                }
                loop {
                    items.push(p.value()?);
                    p.ws();
                    if p.eat(b']') {
                        return Ok(Value::Array(items));
                    }
                    if !p.eat(b',') {
                        return Err(p.err("expected `,` or `]`"));
                    }
                }
            }),
            Some(b'{') => self.nested(|p| {
                let mut entries: Vec<(String, Value)> = Vec::new();
                p.ws();
                if p.eat(b'}') {
                    return Ok(Value::Object(entries));
                }
                loop {
                    p.ws();
                    if p.s.get(p.i) != Some(&b'"') {
                        return Err(p.err("expected a key in double quotes"));
                    }
                    let key = p.string()?;
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(p.err(&format!("duplicate key `{key}`")));
                    }
                    p.ws();
                    if !p.eat(b':') {
                        return Err(p.err("expected `:`"));
                    }
                    let v = p.value()?;
                    entries.push((key, v));
                    p.ws();
                    if p.eat(b'}') {
                        return Ok(Value::Object(entries));
                    }
                    if !p.eat(b',') {
                        return Err(p.err("expected `,` or `}`"));
                    }
                }
            }),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn nested(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<Value, String>,
    ) -> Result<Value, String> {
        self.depth += 1;
        if self.depth > 64 {
            return Err(self.err("nested too deeply"));
        }
        self.i += 1; // `[` or `{`
        let v = f(self)?;
        self.depth -= 1;
        Ok(v)
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.i;
        self.eat(b'-');
        let digits = |p: &mut Self| {
            let from = p.i;
            while let Some(b'0'..=b'9') = p.s.get(p.i) {
                p.i += 1;
            }
            p.i > from
        };
        if self.eat(b'0') {
            // no leading zeros
        } else if !digits(self) {
            return Err(self.err("expected a digit"));
        }
        if self.eat(b'.') && !digits(self) {
            return Err(self.err("expected a digit after `.`"));
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if !digits(self) {
                return Err(self.err("expected a digit in the exponent"));
            }
        }
        // The slice is ASCII digits and signs: valid UTF-8.
        let text = std::str::from_utf8(&self.s[start..self.i])
            .unwrap_or("0")
            .to_string();
        Ok(Value::Number(text))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .s
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.err("short \\u escape"))?;
        let mut n = 0;
        for &d in digits {
            let v = (d as char)
                .to_digit(16)
                .ok_or_else(|| self.err("bad \\u escape"))?;
            n = n * 16 + v;
        }
        self.i += 4;
        Ok(n)
    }

    fn string(&mut self) -> Result<String, String> {
        self.i += 1; // `"`
        let mut out = String::new();
        loop {
            let run = self.i;
            while let Some(&b) = self.s.get(self.i) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            // `text` was a &str and the run stops only at ASCII bytes: still valid UTF-8.
            out.push_str(
                std::str::from_utf8(&self.s[run..self.i]).map_err(|_| self.err("bad UTF-8"))?,
            );
            match self.s.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let Some(&e) = self.s.get(self.i) else {
                        return Err(self.err("unterminated string"));
                    };
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&hi) {
                                if !(self.eat(b'\\') && self.eat(b'u')) {
                                    return Err(self.err("lone surrogate in \\u escape"));
                                }
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err("lone surrogate in \\u escape"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            out.push(
                                char::from_u32(c)
                                    .ok_or_else(|| self.err("lone surrogate in \\u escape"))?,
                            );
                        }
                        _ => return Err(self.err("unknown escape")),
                    }
                }
                Some(_) => return Err(self.err("control character in string")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(pairs: &[(&str, Value)]) -> Value {
        Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn parses_json() {
        let v = parse_json(
            r#" {"a": true, "b": [1, -2.5e3, null], "c": {"d": "x\"\\\/\n\u00e9\ud83d\ude00"}} "#,
        )
        .unwrap();
        assert_eq!(
            v,
            obj(&[
                ("a", Value::Bool(true)),
                (
                    "b",
                    Value::Array(vec![
                        Value::Number("1".into()),
                        Value::Number("-2.5e3".into()),
                        Value::Null
                    ])
                ),
                ("c", obj(&[("d", Value::String("x\"\\/\né😀".into()))])),
            ])
        );
        assert_eq!(
            parse_json("\"héllo\"").unwrap(),
            Value::String("héllo".into())
        );
        assert_eq!(parse_json("[]").unwrap(), Value::Array(vec![]));
    }

    #[test]
    fn rejects_bad_json() {
        for bad in [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "[1,]",
            "01",
            "1.",
            "-",
            "tru",
            "\"abc",
            "\"\\x\"",
            "\"\\ud800\"",
            "{\"a\":1}x",
            "{a:1}",
            "{\"a\":1,\"a\":2}",
            "\"\u{1}\"",
        ] {
            assert!(parse_json(bad).is_err(), "accepted {bad:?}");
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(parse_json(&deep).unwrap_err().contains("nested too deeply"));
    }

    #[test]
    fn typed_accessors() {
        let mut t = Table::parse(
            "p",
            r#"{"n": 3, "big": 18446744073709551615, "b": false, "s": "x", "nothing": null}"#,
        )
        .unwrap();
        assert_eq!(t.u32("n").unwrap(), Some(3));
        assert_eq!(t.u64("big").unwrap(), Some(u64::MAX));
        assert_eq!(t.bool("b").unwrap(), Some(false));
        assert_eq!(t.string("s").unwrap(), Some("x".into()));
        assert_eq!(t.string("nothing").unwrap(), None);
        assert_eq!(t.u64("absent").unwrap(), None);
        t.finish().unwrap();
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let e = |json: &str, f: &dyn Fn(&mut Table) -> Result<(), String>| {
            let mut t = Table::parse("p", json).unwrap();
            f(&mut t).unwrap_err()
        };
        assert_eq!(
            e(r#"{"n": "three"}"#, &|t| t.u32("n").map(drop)),
            "p: setting `n` must be a whole number, not a string"
        );
        assert_eq!(
            e(r#"{"n": -1}"#, &|t| t.u64("n").map(drop)),
            "p: setting `n` must be a whole number from 0 to 18446744073709551615, not -1"
        );
        assert_eq!(
            e(r#"{"n": 4294967296}"#, &|t| t.u32("n").map(drop)),
            "p: setting `n` must be a whole number from 0 to 4294967295, not 4294967296"
        );
        assert_eq!(
            e(r#"{"b": 1}"#, &|t| t.bool("b").map(drop)),
            "p: setting `b` must be true or false, not a number"
        );
        assert_eq!(
            e(r#"{"m": "fast"}"#, &|t| t
                .choice("m", &["loop", "ok"])
                .map(drop)),
            "p: setting `m` must be one of \"loop\", \"ok\", not \"fast\""
        );
        let mut t = Table::parse("p", r#"{"check_timelin": true}"#).unwrap();
        t.bool("check_timeline").unwrap();
        assert_eq!(
            t.finish().unwrap_err(),
            "p: unknown setting `check_timelin` (known settings: check_timeline)"
        );
        let t = Table::parse("p", r#"{"x": 1}"#).unwrap();
        assert_eq!(
            t.finish().unwrap_err(),
            "p: unknown setting `x` (this policy takes no settings)"
        );
    }

    #[test]
    fn empty_is_no_settings_and_non_objects_are_refused() {
        Table::parse("p", "").unwrap().finish().unwrap();
        Table::parse("p", " {} ").unwrap().finish().unwrap();
        assert_eq!(
            Table::parse("p", "[1]").unwrap_err(),
            "p: settings must be a table, not an array"
        );
        assert_eq!(
            Table::parse("p", "{").unwrap_err(),
            "p: settings are not valid JSON: expected a key in double quotes at byte 1"
        );
    }
}

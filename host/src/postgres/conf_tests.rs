//! Round trips of what `conf.rs` writes through test oracles of the two parsers that read it,
//! written from PostgreSQL's sources:
//! - [`parse_guc_file`]: the configuration file scanner (`src/backend/utils/misc/guc-file.l`:
//!   the `STRING` token `\'([^'\\\n]|\\.|\'\')*\'` and `GUC_scanstr`, which turns `''` into `'`
//!   and reads the backslash escapes `\b \f \n \r \t`, octal `\ooo` and `\x` = `x`);
//! - [`parse_conninfo`]: libpq's `conninfo_parse` (`src/interfaces/libpq/fe-connect.c`):
//!   `keyword = value` pairs separated by white space, a value either bare (ends at white
//!   space, `\x` = `x`) or single-quoted (ends at the next unescaped `'`, `\x` = `x`).
//!
//! `tests/quoting.rs` has a real PostgreSQL read the same files.

use super::*;
use proptest::prelude::*;

/// C's `isspace` in the C locale, as libpq and the scanner use it.
fn c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn id_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn id_char(b: u8) -> bool {
    id_start(b) || b.is_ascii_digit()
}

/// The end of the longest `STRING` token starting at `s[at]` (a `'`), as flex matches it.
fn string_token_end(s: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    let mut accepted = None;
    while i < s.len() {
        match s[i] {
            b'\\' => match s.get(i + 1) {
                Some(&c) if c != b'\n' => i += 2,
                _ => break,
            },
            b'\'' => {
                accepted = Some(i + 1);
                if s.get(i + 1) == Some(&b'\'') {
                    i += 2;
                } else {
                    break;
                }
            }
            b'\n' => break,
            _ => i += 1,
        }
    }
    accepted
}

/// `GUC_scanstr`: the value of a `STRING` token (with its quotes). A C string: a NUL ends it.
fn guc_scanstr(tok: &[u8]) -> Vec<u8> {
    let s = &tok[1..];
    let len = s.len();
    let mut out = Vec::new();
    let mut i = 0;
    while i < len {
        let c = s[i];
        if c == b'\\' {
            i += 1;
            match s[i] {
                b'b' => out.push(0x08),
                b'f' => out.push(0x0c),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'0'..=b'7' => {
                    let mut k = 0;
                    let mut oct: u32 = 0;
                    while k < 3 && i + k < len && (b'0'..=b'7').contains(&s[i + k]) {
                        oct = (oct << 3) + u32::from(s[i + k] - b'0');
                        k += 1;
                    }
                    i += k - 1;
                    out.push(oct as u8);
                }
                other => out.push(other),
            }
        } else if c == b'\'' && s.get(i + 1) == Some(&b'\'') {
            i += 1;
            out.push(b'\'');
        } else {
            out.push(c);
        }
        i += 1;
    }
    // The closing quote was copied too.
    out.pop();
    if let Some(nul) = out.iter().position(|&b| b == 0) {
        out.truncate(nul);
    }
    out
}

/// The `name = value` pairs of a configuration file, or the scanner's syntax error.
fn parse_guc_file(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let s = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    // One token: (kind, start, end). Kinds: 'i' identifier, 's' string, '=' equals, 'n' EOL.
    let next = |i: &mut usize| -> Option<(char, usize, usize)> {
        loop {
            if *i >= s.len() {
                return None;
            }
            match s[*i] {
                b' ' | b'\t' | b'\r' => *i += 1,
                b'#' => {
                    while *i < s.len() && s[*i] != b'\n' {
                        *i += 1;
                    }
                }
                b'\n' => {
                    *i += 1;
                    return Some(('n', *i - 1, *i));
                }
                b'=' => {
                    *i += 1;
                    return Some(('=', *i - 1, *i));
                }
                b'\'' => {
                    let start = *i;
                    let end = string_token_end(s, start).unwrap_or(start + 1);
                    *i = end;
                    let kind = if end > start + 1 { 's' } else { '?' };
                    return Some((kind, start, end));
                }
                c if id_start(c) => {
                    let start = *i;
                    while *i < s.len() && (id_char(s[*i]) || b"-._:/".contains(&s[*i])) {
                        *i += 1;
                    }
                    return Some(('i', start, *i));
                }
                _ => {
                    *i += 1;
                    return Some(('?', *i - 1, *i));
                }
            }
        }
    };
    let err = |at: usize| format!("syntax error near byte {at}");
    while let Some((kind, start, end)) = next(&mut i) {
        match kind {
            'n' => continue,
            'i' => {}
            _ => return Err(err(start)),
        }
        let name = String::from_utf8_lossy(&s[start..end]).into_owned();
        let mut tok = next(&mut i);
        if matches!(tok, Some(('=', _, _))) {
            tok = next(&mut i);
        }
        let value = match tok {
            Some(('s', a, b)) => guc_scanstr(&s[a..b]),
            Some(('i', a, b)) => s[a..b].to_vec(),
            Some((_, a, _)) => return Err(err(a)),
            None => return Err("syntax error at end of file".into()),
        };
        match next(&mut i) {
            None | Some(('n', _, _)) => {}
            Some((_, a, _)) => return Err(err(a)),
        }
        let value = String::from_utf8(value).map_err(|e| format!("not UTF-8: {e}"))?;
        out.push((name, value));
    }
    Ok(out)
}

/// libpq's `conninfo_parse`: the keyword/value pairs of a connection string.
fn parse_conninfo(conninfo: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let s = conninfo.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if c_space(s[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < s.len() && s[i] != b'=' && !c_space(s[i]) {
            i += 1;
        }
        let name = String::from_utf8_lossy(&s[start..i]).into_owned();
        while i < s.len() && c_space(s[i]) {
            i += 1;
        }
        if s.get(i) != Some(&b'=') {
            return Err(format!("missing \"=\" after \"{name}\""));
        }
        i += 1;
        while i < s.len() && c_space(s[i]) {
            i += 1;
        }
        let mut value = Vec::new();
        if s.get(i) != Some(&b'\'') {
            while i < s.len() {
                if c_space(s[i]) {
                    i += 1;
                    break;
                }
                if s[i] == b'\\' {
                    i += 1;
                    if i < s.len() {
                        value.push(s[i]);
                        i += 1;
                    }
                } else {
                    value.push(s[i]);
                    i += 1;
                }
            }
        } else {
            i += 1;
            loop {
                match s.get(i) {
                    None => return Err("unterminated quoted string".into()),
                    Some(b'\\') => {
                        i += 1;
                        if i < s.len() {
                            value.push(s[i]);
                            i += 1;
                        }
                    }
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        }
        let value = String::from_utf8(value).map_err(|e| format!("not UTF-8: {e}"))?;
        out.push((name, value));
    }
    Ok(out)
}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Strings rich in what the parsers treat specially, and anything else.
fn nasty() -> impl Strategy<Value = String> {
    let special = prop_oneof![
        Just('\''),
        Just('\\'),
        Just(' '),
        Just('='),
        Just('"'),
        Just('\n'),
        Just('\r'),
        Just('\t'),
        Just('#'),
        Just('0'),
        Just('n'),
        Just('ü'),
        Just('€'),
        Just('\u{0b}'),
    ];
    let ch = prop_oneof![3 => special, 1 => any::<char>()];
    prop_oneof![
        prop::collection::vec(ch, 0..24).prop_map(|v| v.into_iter().collect()),
        any::<String>(),
    ]
    .prop_map(|s: String| s.replace('\0', ""))
}

fn upstream(host: &str) -> Upstream {
    Upstream {
        name: "pg-1".into(),
        host: host.into(),
        port: 5432,
        remote: false,
    }
}

#[test]
fn the_oracles_read_what_postgresql_documents() {
    // guc-file.l: '' and backslash escapes, comments, optional `=`.
    let text = "a = 'it''s'\nb 'x\\\\y\\'z' # c\n# only a comment\nc = '\\101\\n\\q'\n";
    assert_eq!(
        parse_guc_file(text),
        Ok(vec![
            ("a".into(), "it's".into()),
            ("b".into(), "x\\y'z".into()),
            ("c".into(), "A\nq".into()),
        ])
    );
    assert!(parse_guc_file("a = 'unterminated\n").is_err());
    assert!(parse_guc_file("a = 'two\nlines'\n").is_err());
    // libpq: quoted and bare values, \ escapes in both.
    assert_eq!(
        parse_conninfo("host=h password='a b\\'c\\\\' user=x\\ y"),
        Ok(vec![
            ("host".into(), "h".into()),
            ("password".into(), "a b'c\\".into()),
            ("user".into(), "x y".into()),
        ])
    );
    assert!(parse_conninfo("password='open").is_err());
}

#[test]
fn a_password_with_a_quote_and_a_backslash_survives_both_layers() {
    let password = "it's a \\ back\\slash";
    let ci = primary_conninfo(&upstream("10.0.0.1"), "replicator", Some(password), "pg-2");
    let line = conf_line("primary_conninfo", &ci).expect("no NUL");
    let parsed = parse_guc_file(&line).expect("postgresql.conf syntax");
    let value = get(&parsed, "primary_conninfo").expect("primary_conninfo");
    let pairs = parse_conninfo(value).expect("conninfo syntax");
    assert_eq!(get(&pairs, "password"), Some(password), "{line}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any parameter value (PostgreSQL's values are C strings: no NUL) reads back as written.
    #[test]
    fn a_conf_line_round_trips(value in nasty()) {
        let line = conf_line("some_parameter", &value).unwrap_or_default();
        prop_assert_eq!(
            parse_guc_file(&line),
            Ok(vec![("some_parameter".to_string(), value.clone())]),
            "line: {:?}", line
        );
    }

    /// primary_conninfo goes through libpq's parser inside the file's: every field, the
    /// password above all, reads back as configured.
    #[test]
    fn primary_conninfo_round_trips_through_both_parsers(
        password in nasty(),
        user in nasty(),
        name in nasty(),
        host in nasty(),
    ) {
        let ci = primary_conninfo(&upstream(&host), &user, Some(&password), &name);
        let line = conf_line("primary_conninfo", &ci).unwrap_or_default();
        let parsed = parse_guc_file(&line);
        prop_assert!(parsed.is_ok(), "line {:?}: {:?}", line, parsed);
        let parsed = parsed.unwrap_or_default();
        let value = get(&parsed, "primary_conninfo").unwrap_or_default();
        prop_assert_eq!(value, ci.as_str());
        let pairs = parse_conninfo(value);
        prop_assert!(pairs.is_ok(), "conninfo {:?}: {:?}", value, pairs);
        let pairs = pairs.unwrap_or_default();
        prop_assert_eq!(get(&pairs, "password"), Some(password.as_str()));
        prop_assert_eq!(get(&pairs, "user"), Some(user.as_str()));
        prop_assert_eq!(get(&pairs, "application_name"), Some(name.as_str()));
        prop_assert_eq!(get(&pairs, "host"), Some(host.as_str()));
        prop_assert_eq!(get(&pairs, "port"), Some("5432"));
    }

    /// A conninfo value alone (pg_basebackup's and pg_rewind's `-d`/`--source-server`).
    #[test]
    fn a_conninfo_value_round_trips(value in nasty()) {
        let ci = format!("user={} dbname=postgres", quote_conninfo(&value));
        let pairs = parse_conninfo(&ci);
        prop_assert!(pairs.is_ok(), "{:?}: {:?}", ci, pairs);
        let pairs = pairs.unwrap_or_default();
        prop_assert_eq!(get(&pairs, "user"), Some(value.as_str()));
    }
}

#[test]
fn conninfo_quoting() {
    assert_eq!(quote_conninfo("pg-1"), "pg-1");
    assert_eq!(quote_conninfo("it's"), "'it\\'s'");
    assert_eq!(quote_conninfo(""), "''");
}

/// PostgreSQL's SQL lexer (`scan.l`) on one string literal: `'...'` (standard: only `''` is
/// special, unless `standard_conforming_strings` is off, when backslashes escape as in
/// `E'...'`) or `E'...'` (`''`, `\\`, `\'`, `\b \f \n \r \t`, octal, `\xhh`, `\x` = `x`).
/// `Err` when the text is not exactly one literal.
fn parse_sql_literal(
    text: &str,
    standard_conforming_strings: bool,
) -> std::result::Result<String, String> {
    let (escapes, body) = match text.strip_prefix(['E', 'e']) {
        Some(rest) => (true, rest),
        None => (!standard_conforming_strings, text),
    };
    let s = body.as_bytes();
    if s.first() != Some(&b'\'') {
        return Err(format!("not a literal: {text:?}"));
    }
    let mut out = Vec::new();
    let mut i = 1;
    loop {
        match s.get(i) {
            None => return Err("unterminated literal".into()),
            Some(b'\'') if s.get(i + 1) == Some(&b'\'') => {
                out.push(b'\'');
                i += 2;
            }
            Some(b'\'') => {
                i += 1;
                break;
            }
            Some(b'\\') if escapes => {
                let c = *s.get(i + 1).ok_or("unterminated escape")?;
                i += 2;
                match c {
                    b'b' => out.push(0x08),
                    b'f' => out.push(0x0c),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'0'..=b'7' | b'x' | b'u' | b'U' => {
                        return Err(format!("numeric escape \\{} (not modelled)", c as char));
                    }
                    other => out.push(other),
                }
            }
            Some(&c) => {
                out.push(c);
                i += 1;
            }
        }
    }
    if i != s.len() {
        return Err(format!("text after the literal: {text:?}"));
    }
    String::from_utf8(out).map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// `CREATE ROLE ... PASSWORD <literal>` sets the password as configured, whatever the
    /// server's `standard_conforming_strings` (an operator may turn it off).
    #[test]
    fn a_sql_literal_round_trips_under_both_string_modes(value in nasty()) {
        let lit = quote_literal(&value);
        prop_assert_eq!(parse_sql_literal(&lit, true), Ok(value.clone()), "{}", lit);
        prop_assert_eq!(parse_sql_literal(&lit, false), Ok(value.clone()), "{}", lit);
    }
}

#[test]
fn a_value_with_nul_is_refused_naming_the_parameter() {
    assert_eq!(conf_string("a\0b"), None);
    let e = conf_line("primary_conninfo", "password=a\0b").expect_err("NUL");
    assert!(e.to_string().contains("primary_conninfo"), "{e}");
}

/// Each configured entry is one line of `pg_hba.conf`, or refused: an entry with a line break
/// would silently become two rules (the second one never configured as such).
#[test]
fn a_pg_hba_entry_is_one_line_or_refused() {
    let ok = hba_text(&[
        "local all all peer".into(),
        "host all all 10.0.0.0/8 scram-sha-256".into(),
    ])
    .expect("plain entries");
    assert_eq!(ok.lines().count(), 3, "{ok}");
    for bad in [
        "host all all 0.0.0.0/0 md5\nhost all all 0.0.0.0/0 trust",
        "local all all peer\r",
        "a\0b",
    ] {
        let e = hba_text(&[bad.into()]).expect_err(bad);
        assert!(e.to_string().contains("pg_hba"), "{e}");
    }
}

#[test]
fn settings_renamed_across_versions_are_written_as_the_server_knows_them() {
    let params = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // PostgreSQL 13+ refuses to start with wal_keep_segments.
    let mut p = params(&[("wal_keep_segments", "8"), ("wal_level", "hot_standby")]);
    let notes = across_versions(&mut p, 15);
    assert_eq!(
        p,
        params(&[("wal_keep_size", "128MB"), ("wal_level", "replica")])
    );
    assert_eq!(notes.len(), 2, "{notes:?}");
    // A value under the new name wins.
    let mut p = params(&[("wal_keep_segments", "8"), ("wal_keep_size", "1GB")]);
    across_versions(&mut p, 16);
    assert_eq!(p, params(&[("wal_keep_size", "1GB")]));
    // And back for an older server.
    let mut p = params(&[("wal_keep_size", "120MB")]);
    across_versions(&mut p, 12);
    assert_eq!(p, params(&[("wal_keep_segments", "8")]));
    // Nothing to do.
    let mut p = params(&[("wal_keep_size", "64MB"), ("wal_level", "logical")]);
    assert!(across_versions(&mut p, 15).is_empty());
    assert_eq!(
        p,
        params(&[("wal_keep_size", "64MB"), ("wal_level", "logical")])
    );
}

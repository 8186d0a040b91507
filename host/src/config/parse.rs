//! Parsing: YAML text into a document, then the unused-key warnings, deserialization and
//! validation of a whole (possibly merged) document; serde's errors become [`ConfigError`]s
//! that name the key path, its line in the text where it can be found (or the environment
//! variable that set it), and a fix. Pure: no filesystem access (`source.rs` reads the files).

use super::error::{TextPos, kind_of, one_line};
use super::{Config, ConfigError, keys};
use serde_yaml::Value;
use std::collections::BTreeMap;

/// A parsed and validated configuration plus one line per ignored key.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// One line per key Regent ignores, saying why and what to do.
    pub warnings: Vec<String>,
}

/// Parse and validate config text: unknown keys become warnings, everything else an error.
pub fn parse(yaml: &str) -> Result<Loaded, ConfigError> {
    let value = parse_document(yaml)?;
    finish(value, Some(yaml), &BTreeMap::new())
}

/// YAML text as a mapping, merge keys (`<<`) applied; a syntax error carries its position, and
/// anything but a mapping is refused.
pub(super) fn parse_document(yaml: &str) -> Result<Value, ConfigError> {
    let mut value: Value = serde_yaml::from_str(yaml).map_err(|e| syntax_error(&e))?;
    value.apply_merge().map_err(|e| syntax_error(&e))?;
    if !value.is_mapping() {
        return Err(not_a_mapping(&value));
    }
    Ok(value)
}

fn not_a_mapping(value: &Value) -> ConfigError {
    let found = match value {
        Value::Null => "an empty document".to_string(),
        other => format!("{} instead of key: value pairs", kind_of(other)),
    };
    ConfigError::WrongType {
        key: "(top level)".to_string(),
        message: format!(
            "found {found}, expected a mapping with the keys scope, name, restapi, etcd3 and postgresql"
        ),
        at: None,
        fix: "write the configuration as `key: value` lines (Patroni's postgres0.yml with an etcd3 section is a good start)".into(),
    }
}

/// Collect the warnings, deserialize and validate a whole document. `text` is the one text it
/// was read from, for positions in errors (`None` when merged from several); `origins` maps the
/// keys set by environment variables to the variable, named in warnings and errors.
pub(super) fn finish(
    mut value: Value,
    text: Option<&str>,
    origins: &BTreeMap<String, String>,
) -> Result<Loaded, ConfigError> {
    let Value::Mapping(map) = &mut value else {
        return Err(not_a_mapping(&value));
    };
    let warnings = keys::warnings(map, origins)?;

    let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        // A position in the file would point at the value the variable replaced.
        let text = text.filter(|_| env_origin(origins, &key).is_none());
        annotate(serde_error(text, key, &e.inner().to_string()), origins)
    })?;
    config.validate().map_err(|e| annotate(e, origins))?;
    let mut config = config;
    let mut warnings = warnings;
    config.bootstrap.dcs.fit_timing();
    if let Some(note) = &config.bootstrap.dcs.timing_adjusted {
        warnings.push(format!("bootstrap.dcs: {note}"));
    }
    Ok(Loaded { config, warnings })
}

/// The variable that set `key` or the key it lies under (`etcd3.hosts[1]` → the one that set
/// `etcd3.hosts`).
pub(super) fn env_origin<'a>(origins: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    origins
        .iter()
        .filter(|(path, _)| {
            key.strip_prefix(path.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
        .max_by_key(|(path, _)| path.len())
        .map(|(_, var)| var.as_str())
}

/// Name the variable in an error about a key an environment variable set.
fn annotate(e: ConfigError, origins: &BTreeMap<String, String>) -> ConfigError {
    let named = |key: &str| env_origin(origins, key).map(|var| format!("{key} (from {var})"));
    match e {
        ConfigError::WrongType {
            key,
            message,
            at,
            fix,
        } => match named(&key) {
            Some(key) => ConfigError::WrongType {
                key,
                message,
                at: None,
                fix,
            },
            None => ConfigError::WrongType {
                key,
                message,
                at,
                fix,
            },
        },
        ConfigError::Invalid {
            key,
            value,
            problem,
            fix,
        } => ConfigError::Invalid {
            key: named(&key).unwrap_or(key),
            value,
            problem,
            fix,
        },
        other => other,
    }
}

fn syntax_error(e: &serde_yaml::Error) -> ConfigError {
    let at = e.location().map(|l| TextPos {
        line: l.line(),
        column: l.column(),
    });
    let mut message = one_line(e);
    if let Some(p) = at {
        // libyaml puts the position in the text; it is shown once, in front.
        message = message.replacen(&format!(" at line {} column {}", p.line, p.column), "", 1);
    }
    ConfigError::Syntax { at, message }
}

/// Turn a serde error at `path` into `Missing` or `WrongType`.
fn serde_error(yaml: Option<&str>, path: String, message: &str) -> ConfigError {
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((field, _)) = rest.split_once('`')
    {
        let key = if path == "." {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        let example = missing_example(&key);
        return ConfigError::Missing { key, example };
    }
    let key = if path == "." {
        "(top level)".to_string()
    } else {
        path
    };
    let at = yaml.and_then(|y| locate_key(y, &key));
    ConfigError::WrongType {
        key,
        message: humanize_serde(message),
        at,
        fix: "change the value to what is expected (quote strings that look like numbers or booleans, e.g. password: \"1234\")".into(),
    }
}

/// Best-effort position of a dotted key path (`postgresql.authentication.superuser.username`,
/// list indexes ignored) in block-style YAML; `None` when it cannot be told (flow style, quoted
/// keys, anchors).
fn locate_key(yaml: &str, path: &str) -> Option<TextPos> {
    let lines: Vec<&str> = yaml.lines().collect();
    let content = |i: usize| -> Option<(usize, &str)> {
        let line = lines.get(i)?;
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') || t.starts_with("---") {
            None
        } else {
            Some((line.len() - t.len(), t))
        }
    };
    let mut from = 0;
    let mut parent_indent: Option<usize> = None;
    let mut found = None;
    for seg in path.split('.') {
        let seg = seg.split('[').next().unwrap_or(seg);
        // The block's indentation is that of its first content line.
        let (first, block_indent) =
            (from..lines.len()).find_map(|i| content(i).map(|(ind, _)| (i, ind)))?;
        if parent_indent.is_some_and(|p| block_indent <= p) {
            return None;
        }
        let mut hit = None;
        for i in first..lines.len() {
            let Some((ind, t)) = content(i) else { continue };
            if ind < block_indent {
                // A list under the parent may sit at the parent's indentation.
                if parent_indent == Some(ind) && t.starts_with('-') {
                    continue;
                }
                break;
            }
            if ind == block_indent
                && let Some(rest) = t.strip_prefix(seg)
                && rest.trim_start().starts_with(':')
            {
                hit = Some((i, ind));
                break;
            }
        }
        let (i, ind) = hit?;
        found = Some(TextPos {
            line: i + 1,
            column: ind + 1,
        });
        from = i + 1;
        parent_indent = Some(ind);
    }
    found
}

/// Replace Rust type names in serde's "expected ..." with words.
pub(super) fn humanize_serde(msg: &str) -> String {
    let mut m = one_line(msg);
    for (from, to) in [
        ("expected path string", "expected a path"),
        ("expected u64", "expected a whole number >= 0"),
        ("expected i64", "expected a whole number"),
        ("expected a borrowed string", "expected a string"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a mapping of keys"),
    ] {
        m = m.replace(from, to);
    }
    if let Some(i) = m.find("expected struct ") {
        m.truncate(i);
        m.push_str("expected a mapping of keys");
    }
    m
}

fn missing_example(key: &str) -> String {
    let (parent, leaf) = match key.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, key),
    };
    let value = match key {
        "scope" => "batman (the cluster name, the same on every node)",
        "name" => "pg-node1 (this node's name, unique in the cluster)",
        "restapi" => "{listen: 0.0.0.0:8008, connect_address: 10.0.0.11:8008}",
        "restapi.listen" => "0.0.0.0:8008",
        "restapi.authentication.username" | "ctl.authentication.username" => "admin",
        "restapi.authentication.password" | "ctl.authentication.password" => {
            "<a long random secret>"
        }
        "postgresql" => {
            "{listen: 0.0.0.0:5432, connect_address: 10.0.0.11:5432, data_dir: /var/lib/postgresql/16/main, authentication: {superuser: {username: postgres}, replication: {username: replicator}}}"
        }
        "postgresql.listen" => "0.0.0.0:5432",
        "postgresql.data_dir" => "/var/lib/postgresql/16/main",
        "postgresql.authentication" => {
            "{superuser: {username: postgres, password: ...}, replication: {username: replicator, password: ...}}"
        }
        "postgresql.authentication.superuser" => "{username: postgres, password: ...}",
        "postgresql.authentication.replication" => "{username: replicator, password: ...}",
        "postgresql.authentication.rewind" => "{username: rewind_user, password: ...}",
        _ if leaf == "username" => "postgres",
        _ => "<value> (see Patroni's postgres0.yml)",
    };
    match parent {
        Some(p) => format!("`{leaf}: {value}` under `{p}:`"),
        None => format!("`{leaf}: {value}` at the top level"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;
    use crate::config::{InitdbOption, SyncMode};
    use std::path::PathBuf;

    #[test]
    fn patroni_style_config_parses_without_warnings() {
        let l = parse(FIXTURE).expect("fixture is valid");
        assert_eq!(l.warnings, Vec::<String>::new());
        let c = &l.config;
        assert_eq!(c.scope, "batman");
        assert_eq!(c.name, "postgresql0");
        assert_eq!(c.dcs_prefix(), "/service/batman/");
        assert_eq!(
            c.etcd_endpoints(),
            vec!["127.0.0.1:2379", "127.0.0.2:2379", "127.0.0.3:2379"]
        );
        assert_eq!(c.restapi_connect(), "127.0.0.1:8008");
        assert_eq!(c.pg_connect(), "127.0.0.1:5432");
        let dcs = &c.bootstrap.dcs;
        assert_eq!((dcs.ttl, dcs.loop_wait, dcs.retry_timeout), (30, 10, 10));
        assert_eq!(dcs.synchronous_mode, SyncMode::Off);
        assert!(dcs.check_timeline);
        assert!(dcs.postgresql.use_pg_rewind);
        assert_eq!(dcs.postgresql.pg_hba.len(), 2);
        assert_eq!(
            dcs.postgresql.parameters.get("hot_standby"),
            Some(&Value::from("on"))
        );
        assert_eq!(c.bootstrap.initdb.len(), 2);
        assert!(
            matches!(&c.bootstrap.initdb[0], InitdbOption::Value(m) if m.get("encoding") == Some(&Value::from("UTF8")))
        );
        assert_eq!(
            c.bootstrap.initdb[1],
            InitdbOption::Flag("data-checksums".into())
        );
        assert_eq!(
            c.postgresql.authentication.superuser.password.as_deref(),
            Some("zalando")
        );
        assert_eq!(c.tags.failover_priority, Some(1));
        assert_eq!(c.tags.other.get("zone"), Some(&Value::from("eu-1")));
        assert!(c.tags.other.contains_key("clonefrom"));
        assert_eq!(c.run_dir(), PathBuf::from("/var/lib/postgresql/data"));
    }

    // ---- serde errors ----------------------------------------------------------------------

    #[test]
    fn wrong_type_names_the_key_path_and_line() {
        let text = edited(&[("postgresql.data_dir", Some("5"))]);
        let e = parse(&text).expect_err("integer data_dir");
        let ConfigError::WrongType { key, at, .. } = &e else {
            panic!("expected WrongType, got {e:?}");
        };
        assert_eq!(key, "postgresql.data_dir");
        let line = text
            .lines()
            .position(|l| l.trim_start().starts_with("data_dir:"))
            .expect("line present")
            + 1;
        assert_eq!(at.map(|p| p.line), Some(line));
        assert!(
            e.to_string()
                .starts_with("postgresql.data_dir: invalid type: integer `5`, expected a path"),
            "{e}"
        );

        let text = edited(&[(
            "postgresql.authentication.replication.username",
            Some("[a]"),
        )]);
        let e = parse(&text).expect_err("list username");
        let ConfigError::WrongType { key, at, .. } = &e else {
            panic!("expected WrongType, got {e:?}");
        };
        assert_eq!(key, "postgresql.authentication.replication.username");
        let lines: Vec<&str> = text.lines().collect();
        let line = at.expect("located").line;
        assert!(lines[line - 1].contains("username:"), "{line}: {text}");
        assert!(
            lines[..line - 1]
                .iter()
                .rev()
                .find(|l| l.trim_end().ends_with(':'))
                .is_some_and(|l| l.contains("replication")),
            "the replication username, not another one: line {line} in {text}"
        );

        let e = err_of(&[("bootstrap.dcs.ttl", Some("thirty"))]);
        assert!(matches!(&e, ConfigError::WrongType { key, .. } if key == "bootstrap.dcs.ttl"));
        assert!(
            e.to_string().contains("expected a whole number >= 0"),
            "{e}"
        );

        let e = err_of(&[("etcd3.hosts", Some("['10.0.0.1:2379', 2379]"))]);
        assert!(
            matches!(&e, ConfigError::WrongType { key, .. } if key == "etcd3.hosts[1]"),
            "{e:?}"
        );

        let e = err_of(&[("tags.nofailover", Some("maybe"))]);
        assert!(matches!(&e, ConfigError::WrongType { key, .. } if key == "tags.nofailover"));

        let e = err_of(&[("bootstrap.dcs", Some("fast"))]);
        assert!(matches!(&e, ConfigError::WrongType { key, .. } if key == "bootstrap.dcs"));
        assert!(!e.to_string().contains("struct"), "no Rust type names: {e}");
    }

    #[test]
    fn locate_key_follows_indentation() {
        let text = "scope: a\n# comment\nbootstrap:\n  dcs:\n    postgresql:\n      use_slots: x\n  initdb:\n  - data-checksums\npostgresql:\n  use_slots: y\n  data_dir: 5\n";
        let pos = |p: &str| locate_key(text, p).map(|t| (t.line, t.column));
        assert_eq!(pos("postgresql.use_slots"), Some((10, 3)));
        assert_eq!(pos("bootstrap.dcs.postgresql.use_slots"), Some((6, 7)));
        assert_eq!(pos("postgresql.data_dir"), Some((11, 3)));
        assert_eq!(pos("bootstrap.initdb[0]"), Some((7, 3)));
        assert_eq!(pos("bootstrap.data_dir"), None, "not inside bootstrap");
        assert_eq!(pos("scope.x"), None);
        assert_eq!(
            locate_key("postgresql: {data_dir: 5}\n", "postgresql.data_dir"),
            None
        );
    }

    #[test]
    fn missing_required_keys_are_named_with_an_example() {
        let e = err_of(&[("postgresql.data_dir", None)]);
        assert!(matches!(&e, ConfigError::Missing { key, .. } if key == "postgresql.data_dir"));
        assert_eq!(
            e.to_string(),
            "postgresql.data_dir: required key is missing; add `data_dir: /var/lib/postgresql/16/main` under `postgresql:`"
        );
        let e = err_of(&[("scope", None)]);
        assert!(matches!(&e, ConfigError::Missing { key, .. } if key == "scope"));
        let e = err_of(&[("postgresql.authentication.replication.username", None)]);
        assert!(
            matches!(&e, ConfigError::Missing { key, .. } if key == "postgresql.authentication.replication.username")
        );
        let e = err_of(&[("etcd3", None)]);
        assert!(matches!(&e, ConfigError::Missing { key, .. } if key == "etcd3"));
    }

    #[test]
    fn yaml_syntax_errors_carry_line_and_column() {
        let e = parse("scope: batman\nname: [unclosed\nrestapi: {}\n").expect_err("bad YAML");
        let ConfigError::Syntax { at, .. } = &e else {
            panic!("expected Syntax, got {e:?}");
        };
        let at = at.expect("position");
        assert!(at.line >= 2, "{at}");
        assert!(
            e.to_string()
                .starts_with("config is not valid YAML (at line"),
            "{e}"
        );

        let e = parse("scope: a\nscope: b\n").expect_err("duplicate key");
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
    }

    #[test]
    fn empty_or_non_mapping_document_is_rejected() {
        for text in ["", "# only a comment\n", "- a\n- b\n"] {
            let e = parse(text).expect_err("not a config");
            assert!(
                matches!(&e, ConfigError::WrongType { key, .. } if key == "(top level)"),
                "{e:?}"
            );
        }
    }
}

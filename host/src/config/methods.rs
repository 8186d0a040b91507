//! Patroni's named methods, read from the configuration: how a replica is created
//! (`postgresql.create_replica_methods`, each a section `postgresql.<method>`; `basebackup`
//! takes `postgresql.basebackup` options), how a new cluster is bootstrapped
//! (`bootstrap.method` and its section `bootstrap.<method>`), and the `post_bootstrap` script.
//! Pure: YAML values in, checked settings out; `postgres::methods` runs them.

use super::Config;
use super::ConfigError;
use super::error::kind_of;
use serde_yaml::Value;
use std::collections::BTreeMap;

/// One way to create a replica, in the order `create_replica_methods` lists them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ReplicaMethod {
    /// pg_basebackup from the clone source, with `postgresql.basebackup`'s options.
    Basebackup,
    /// A command (a backup tool's restore, a script).
    Command(CommandMethod),
}

/// A command method: `postgresql.<name>: {command, keep_data, no_params, no_leader, ...}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CommandMethod {
    /// The method's name, as listed.
    pub(crate) name: String,
    /// The command line, split the way a POSIX shell splits words (no shell runs it).
    pub(crate) argv: Vec<String>,
    /// A data directory the method failed to fill is left as it is (not emptied).
    pub(crate) keep_data: bool,
    /// No `--scope --role --datadir --connstring` arguments.
    pub(crate) no_params: bool,
    /// The method works without a member to copy from (from a backup repository): a new
    /// node may use it while the cluster has no leader.
    pub(crate) no_leader: bool,
    /// The section's other keys, passed as `--key=value` (Patroni passes `keep_data`,
    /// `no_leader` too unless `no_params` is set).
    pub(crate) extra: Vec<(String, String)>,
}

/// `bootstrap.method` other than `initdb`: a command creates the data directory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BootstrapMethod {
    /// The method's name.
    pub(crate) name: String,
    /// The command line, split as a POSIX shell splits words.
    pub(crate) argv: Vec<String>,
    /// No `--scope --datadir` arguments.
    pub(crate) no_params: bool,
    /// Keep the recovery settings and signal files the command left (a backup tool's
    /// point-in-time restore); otherwise they are removed before PostgreSQL starts.
    pub(crate) keep_existing_recovery_conf: bool,
    /// Recovery parameters to start with (`recovery_target_time`, `restore_command`, ...).
    pub(crate) recovery_conf: BTreeMap<String, String>,
    /// The section's other keys, passed as `--key=value`.
    pub(crate) extra: Vec<(String, String)>,
}

/// Everything the named methods need, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Methods {
    /// The replica creation methods in order (never empty: `[basebackup]` by default).
    pub(crate) replica: Vec<ReplicaMethod>,
    /// `postgresql.basebackup` as pg_basebackup arguments.
    pub(crate) basebackup_options: Vec<String>,
    /// A custom bootstrap, when `bootstrap.method` names one.
    pub(crate) bootstrap: Option<BootstrapMethod>,
    /// `bootstrap.post_bootstrap` (or `post_init`), split: run once after bootstrap with the
    /// superuser's connection string as last argument.
    pub(crate) post_bootstrap: Option<Vec<String>>,
}

impl Default for Methods {
    /// Replicas with pg_basebackup, clusters with initdb, no script.
    fn default() -> Methods {
        Methods {
            replica: vec![ReplicaMethod::Basebackup],
            basebackup_options: Vec::new(),
            bootstrap: None,
            post_bootstrap: None,
        }
    }
}

impl Methods {
    /// Some replica method works without a member to copy from.
    pub(crate) fn can_clone_without_leader(&self) -> bool {
        self.replica
            .iter()
            .any(|m| matches!(m, ReplicaMethod::Command(c) if c.no_leader))
    }
}

/// pg_basebackup options a method may not set: Regent sets them itself.
const BASEBACKUP_RESERVED: &[&str] = &[
    "pgdata",
    "format",
    "wal-method",
    "xlog-method",
    "gzip",
    "version",
    "dbname",
    "host",
    "port",
    "username",
    "password",
    "D",
    "F",
    "X",
    "d",
    "h",
    "p",
    "U",
];

/// A scalar as the text Patroni would pass (Python's `str`: `True`/`False` for booleans).
fn arg_text(v: &Value) -> String {
    match v {
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Null => "None".into(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

fn flag(map: &serde_yaml::Mapping, key: &str) -> bool {
    match map.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => super::values::parse_bool(s) == Some(true),
        Some(Value::Number(n)) => n.as_i64().is_some_and(|n| n != 0),
        _ => false,
    }
}

fn invalid(key: &str, value: &str, problem: &str, fix: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Split a command line as a POSIX shell would, without running a shell.
fn split_command(key: &str, command: &str) -> Result<Vec<String>, ConfigError> {
    match shlex::split(command) {
        Some(argv) if !argv.is_empty() => Ok(argv),
        _ => Err(invalid(
            key,
            &format!("{command:?}"),
            "not a command line (empty, or an unterminated quote)",
            "write the program and its arguments, e.g. /usr/bin/pgbackrest --stanza=main restore",
        )),
    }
}

/// A method's section as a mapping (missing or empty: an empty one).
fn section<'a>(
    key: &str,
    sections: &'a BTreeMap<String, Value>,
    name: &str,
) -> Result<Option<&'a serde_yaml::Mapping>, ConfigError> {
    match sections.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Mapping(m)) => Ok(Some(m)),
        Some(other) => Err(ConfigError::WrongType {
            key: format!("{key}.{name}"),
            message: format!(
                "expected a mapping (command: ..., keep_data: ...), found {}",
                kind_of(other)
            ),
            fix: format!(
                "write `{name}:` as a section, e.g. `{name}: {{command: /usr/local/bin/restore}}`"
            ),
            at: None,
        }),
    }
}

fn command_of(
    key: &str,
    m: Option<&serde_yaml::Mapping>,
    fallback: &str,
) -> Result<Vec<String>, ConfigError> {
    match m.and_then(|m| m.get("command")) {
        None => split_command(key, fallback),
        Some(Value::String(s)) => split_command(&format!("{key}.command"), s),
        Some(other) => Err(ConfigError::WrongType {
            key: format!("{key}.command"),
            message: format!("expected a command line, found {}", kind_of(other)),
            fix: "quote it as a string".into(),
            at: None,
        }),
    }
}

fn extra_args(m: Option<&serde_yaml::Mapping>, skip: &[&str]) -> Vec<(String, String)> {
    m.into_iter()
        .flat_map(|m| m.iter())
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| (k, arg_text(v)))
        .collect()
}

/// `postgresql.basebackup`: a list of flags and one-key maps, or one map, as pg_basebackup
/// long options.
fn basebackup_options(v: Option<&Value>) -> Result<Vec<String>, ConfigError> {
    const KEY: &str = "postgresql.basebackup";
    let mut out = Vec::new();
    let mut push = |k: &str, v: Option<&Value>| -> Result<(), ConfigError> {
        let k = k.trim_start_matches('-');
        if BASEBACKUP_RESERVED.contains(&k) {
            return Err(invalid(
                KEY,
                k,
                "Regent sets this pg_basebackup option itself",
                "remove it (the data directory, the WAL method and the connection come from the rest of the configuration)",
            ));
        }
        out.push(match v {
            None => format!("--{k}"),
            Some(v) => format!("--{k}={}", arg_text(v)),
        });
        Ok(())
    };
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(items)) => {
            for item in items {
                match item {
                    Value::String(s) => push(s, None)?,
                    Value::Mapping(m) => {
                        for (k, v) in m {
                            push(&arg_text(k), Some(v))?;
                        }
                    }
                    other => {
                        return Err(ConfigError::WrongType {
                            key: KEY.into(),
                            message: format!(
                                "expected option names or one-key maps, found {}",
                                kind_of(other)
                            ),
                            fix: "write e.g. `- verbose` or `- max-rate: 100M`".into(),
                            at: None,
                        });
                    }
                }
            }
        }
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                push(&arg_text(k), Some(v))?;
            }
        }
        Some(other) => {
            return Err(ConfigError::WrongType {
                key: KEY.into(),
                message: format!(
                    "expected a list or a mapping of options, found {}",
                    kind_of(other)
                ),
                fix: "write e.g. `basebackup: [verbose, {max-rate: 100M}]`".into(),
                at: None,
            });
        }
    }
    Ok(out)
}

impl Config {
    /// The named methods, checked: the first problem is returned.
    pub(crate) fn methods(&self) -> Result<Methods, ConfigError> {
        let pg = &self.postgresql;
        let mut replica = Vec::new();
        for name in &pg.create_replica_methods {
            if name == "basebackup" {
                replica.push(ReplicaMethod::Basebackup);
                continue;
            }
            let key = format!("postgresql.{name}");
            let m = section("postgresql", &pg.method_sections, name)?;
            let no_params = m.is_some_and(|m| flag(m, "no_params"));
            replica.push(ReplicaMethod::Command(CommandMethod {
                name: name.clone(),
                argv: command_of(&key, m, name)?,
                keep_data: m.is_some_and(|m| flag(m, "keep_data")),
                no_params,
                no_leader: m.is_some_and(|m| flag(m, "no_leader")),
                extra: if no_params {
                    extra_args(m, &["command", "no_params", "no_leader", "keep_data"])
                } else {
                    extra_args(m, &["command"])
                },
            }));
        }
        if replica.is_empty() {
            replica.push(ReplicaMethod::Basebackup);
        }
        let b = &self.bootstrap;
        let bootstrap = match b.method.as_deref().map(str::trim) {
            None | Some("") | Some("initdb") => None,
            Some(name) => {
                let key = format!("bootstrap.{name}");
                let m = section("bootstrap", &b.method_sections, name)?;
                if !m.is_some_and(|m| m.contains_key("command")) {
                    return Err(invalid(
                        "bootstrap.method",
                        name,
                        &format!("names a method without a `command` in {key}"),
                        &format!(
                            "add `{name}: {{command: /path/to/script}}` under bootstrap, or set method: initdb"
                        ),
                    ));
                }
                let recovery_conf = match m.and_then(|m| m.get("recovery_conf")) {
                    None | Some(Value::Null) => BTreeMap::new(),
                    Some(Value::Mapping(r)) => {
                        r.iter().map(|(k, v)| (arg_text(k), arg_text(v))).collect()
                    }
                    Some(other) => {
                        return Err(ConfigError::WrongType {
                            key: format!("{key}.recovery_conf"),
                            message: format!(
                                "expected a mapping of recovery parameters, found {}",
                                kind_of(other)
                            ),
                            fix:
                                "write e.g. `recovery_conf: {restore_command: 'cp /archive/%f %p'}`"
                                    .into(),
                            at: None,
                        });
                    }
                };
                Some(BootstrapMethod {
                    name: name.to_string(),
                    argv: command_of(&key, m, name)?,
                    no_params: m.is_some_and(|m| flag(m, "no_params")),
                    keep_existing_recovery_conf: m
                        .is_some_and(|m| flag(m, "keep_existing_recovery_conf")),
                    recovery_conf,
                    extra: extra_args(
                        m,
                        &[
                            "command",
                            "no_params",
                            "keep_existing_recovery_conf",
                            "recovery_conf",
                            "scope",
                            "datadir",
                        ],
                    ),
                })
            }
        };
        let post_bootstrap = match b.post_bootstrap.as_deref().or(b.post_init.as_deref()) {
            None => None,
            Some(c) if c.trim().is_empty() => None,
            Some(c) => Some(split_command("bootstrap.post_bootstrap", c)?),
        };
        Ok(Methods {
            replica,
            basebackup_options: basebackup_options(pg.basebackup.as_ref())?,
            bootstrap,
            post_bootstrap,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::parse_edited;

    fn methods(edits: &[(&str, Option<&str>)]) -> Result<Methods, ConfigError> {
        parse_edited(edits).and_then(|l| l.config.methods())
    }

    #[test]
    fn basebackup_is_the_default_and_command_methods_keep_patronis_arguments() {
        let m = methods(&[]).expect("defaults");
        assert_eq!(m.replica, vec![ReplicaMethod::Basebackup]);
        let m = methods(&[
            ("postgresql.create_replica_methods", Some("[pgbackrest, basebackup]")),
            (
                "postgresql.pgbackrest",
                Some(r#"{command: '/usr/bin/pgbackrest --stanza="my db" restore', keep_data: true, no_params: true, delta: true}"#),
            ),
            ("postgresql.basebackup", Some("[verbose, {max-rate: 100M}]")),
        ])
        .expect("methods");
        let ReplicaMethod::Command(c) = &m.replica[0] else {
            panic!("{m:?}")
        };
        assert_eq!(c.argv, ["/usr/bin/pgbackrest", "--stanza=my db", "restore"]);
        assert!(c.keep_data && c.no_params && !c.no_leader);
        assert_eq!(c.extra, vec![("delta".to_string(), "True".to_string())]);
        assert_eq!(m.replica[1], ReplicaMethod::Basebackup);
        assert_eq!(m.basebackup_options, ["--verbose", "--max-rate=100M"]);
        assert!(!m.can_clone_without_leader());
    }

    #[test]
    fn a_method_without_a_command_runs_its_name_and_no_leader_is_read() {
        let m = methods(&[
            (
                "postgresql.create_replica_methods",
                Some("[restore_script]"),
            ),
            ("postgresql.restore_script", Some("{no_leader: true}")),
        ])
        .expect("methods");
        let ReplicaMethod::Command(c) = &m.replica[0] else {
            panic!("{m:?}")
        };
        assert_eq!(c.argv, ["restore_script"]);
        assert_eq!(c.extra, vec![("no_leader".to_string(), "True".to_string())]);
        assert!(m.can_clone_without_leader());
    }

    #[test]
    fn bad_methods_are_refused_with_the_key_and_the_fix() {
        let e = methods(&[("postgresql.basebackup", Some("[{pgdata: /x}]"))])
            .expect_err("reserved option");
        assert!(
            e.to_string().contains("postgresql.basebackup = pgdata"),
            "{e}"
        );
        let e = methods(&[
            ("postgresql.create_replica_methods", Some("[x]")),
            ("postgresql.x", Some(r#"{command: "unterminated '"}"#)),
        ])
        .expect_err("bad command");
        assert!(e.to_string().contains("postgresql.x.command"), "{e}");
        let e = methods(&[("bootstrap.method", Some("restore"))]).expect_err("no command");
        assert!(
            e.to_string().contains("bootstrap.method = restore")
                && e.to_string().contains("bootstrap.restore"),
            "{e}"
        );
    }

    #[test]
    fn a_custom_bootstrap_and_post_bootstrap() {
        let m = methods(&[
            ("bootstrap.method", Some("restore")),
            (
                "bootstrap.restore",
                Some("{command: \"/usr/local/bin/restore --from 'last night'\", keep_existing_recovery_conf: true, recovery_conf: {recovery_target_action: promote}, target: x}"),
            ),
            ("bootstrap.post_init", Some("/usr/local/bin/after db")),
        ])
        .expect("methods");
        let b = m.bootstrap.expect("custom bootstrap");
        assert_eq!(b.argv, ["/usr/local/bin/restore", "--from", "last night"]);
        assert!(b.keep_existing_recovery_conf && !b.no_params);
        assert_eq!(b.recovery_conf["recovery_target_action"], "promote");
        assert_eq!(b.extra, vec![("target".to_string(), "x".to_string())]);
        assert_eq!(
            m.post_bootstrap,
            Some(vec!["/usr/local/bin/after".to_string(), "db".to_string()])
        );
    }
}

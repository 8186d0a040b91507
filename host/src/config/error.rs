//! Why a configuration cannot be used: [`ConfigError`], positions in the YAML text
//! ([`TextPos`]), and the helpers that keep every message on one line and show values alike
//! (quoted strings and paths, the kind of a YAML value). Pure: no filesystem access.

use serde_yaml::Value;
use std::fmt;
use std::path::{Path, PathBuf};

/// A position in the YAML text (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextPos {
    /// The line, from 1.
    pub(crate) line: usize,
    /// The column, from 1.
    pub(crate) column: usize,
}

impl fmt::Display for TextPos {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

fn at_suffix(at: &Option<TextPos>) -> String {
    at.map(|p| format!(" (at {p})")).unwrap_or_default()
}

/// Why a configuration cannot be used. Every message is one line naming the key path, the
/// offending value, what is allowed and a fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {}: {error}; check the path and that the user running Regent may read it", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        error: std::io::Error,
    },

    /// The text is not YAML.
    #[error("config is not valid YAML{}: {message}; fix the YAML there (indent with spaces, not tabs; quote values containing `: ` or ` #`)", at_suffix(.at))]
    Syntax {
        /// Where the parser stopped, when it says.
        at: Option<TextPos>,
        /// The parser's message, on one line, without the position.
        message: String,
    },

    /// A value has the wrong type or shape (from serde), e.g.
    /// postgresql.data_dir: invalid type: integer `5`, expected a path.
    #[error("{key}: {message}{}; {fix}", at_suffix(.at))]
    WrongType {
        /// The dotted key path (`postgresql.data_dir`, `etcd3.hosts[1]`), or `(top level)`.
        key: String,
        /// What was found and what is expected, in words (no Rust type names).
        message: String,
        /// Where the key is in the text, when it can be told.
        at: Option<TextPos>,
        /// How to fix it.
        fix: String,
    },

    /// A required key is absent.
    #[error("{key}: required key is missing; add {example}")]
    Missing {
        /// The dotted key path.
        key: String,
        /// A line to add, and where.
        example: String,
    },

    /// A value is well-typed but not allowed (from [`Config::validate`](super::Config::validate)).
    #[error("{key} = {value}: {problem}; {fix}")]
    Invalid {
        /// The dotted key path.
        key: String,
        /// The value as shown in the message (strings and paths quoted, secrets `(hidden)`).
        value: String,
        /// What is wrong with it.
        problem: String,
        /// How to fix it.
        fix: String,
    },

    /// A Patroni key Regent does not implement yet, whose absence would change what the
    /// cluster does (it is refused rather than ignored).
    #[error(
        "{key}: Patroni setting not supported by Regent yet, and ignoring it would change what the cluster does: {why}; remove it to run this node under Regent without it, or keep the node on Patroni (docs/patroni-compatibility.md lists every key)"
    )]
    NotSupported {
        /// The dotted key path, with the variable that set it.
        key: String,
        /// What would change.
        why: String,
    },

    /// A `PATRONI_*` environment variable's value cannot be used.
    #[error("environment variable {var}: {problem}; {fix}")]
    Variable {
        /// The variable.
        var: String,
        /// What is wrong with its value (secrets never shown).
        problem: String,
        /// How to fix it.
        fix: String,
    },

    /// An error in one of several places the configuration is read from: a file of a
    /// configuration directory, or `PATRONI_CONFIGURATION`.
    #[error("{place}: {inner}")]
    In {
        /// The file, or the variable.
        place: String,
        /// What is wrong there (not an error `source`: its message is part of this one).
        inner: Box<ConfigError>,
    },

    /// No configuration at all: no path, no `PATRONI_CONFIGURATION`, no `PATRONI_*` variable.
    #[error(
        "no configuration given; pass a config file or directory (e.g. regent run /etc/patroni.yml), or set PATRONI_CONFIGURATION to the YAML text, or set the PATRONI_* variables (PATRONI_SCOPE, PATRONI_NAME, PATRONI_RESTAPI_LISTEN, PATRONI_ETCD3_HOSTS, PATRONI_POSTGRESQL_LISTEN, PATRONI_POSTGRESQL_DATA_DIR, PATRONI_SUPERUSER_USERNAME, ...)"
    )]
    NoSource,

    /// The machine does not fit the configuration (from
    /// [`check_environment`](super::check_environment) /
    /// [`resolve_bin_dir`](super::resolve_bin_dir)).
    #[error("{key} = {value}: {problem}; {fix}")]
    Environment {
        /// The dotted key path.
        key: String,
        /// The value as shown in the message (a quoted path, or `(not set)`).
        value: String,
        /// What is wrong on this machine.
        problem: String,
        /// How to fix it.
        fix: String,
    },
}

pub(super) fn one_line(s: impl fmt::Display) -> String {
    s.to_string().replace(['\n', '\r'], " ")
}

pub(super) fn invalid(
    key: impl Into<String>,
    value: impl fmt::Display,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: one_line(value),
        problem: one_line(problem.into()),
        fix: one_line(fix.into()),
    }
}

pub(super) fn environment(
    key: impl Into<String>,
    value: impl fmt::Display,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Environment {
        key: key.into(),
        value: one_line(value),
        problem: one_line(problem.into()),
        fix: one_line(fix.into()),
    }
}

/// A string value as shown in messages: quoted, escapes visible.
pub(super) fn q(s: &str) -> String {
    format!("{s:?}")
}

/// A path as shown in messages.
pub(super) fn qp(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

pub(super) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use crate::config::test_support::*;

    #[test]
    fn error_messages_are_single_lines() {
        let errors = [
            err_of(&[("postgresql.data_dir", Some("5"))]),
            err_of(&[("postgresql.data_dir", None)]),
            err_of(&[("bootstrap.dcs.ttl", Some("4"))]),
            timing(10, 0, 5).expect_err("timing"),
            parse("a: [\n").expect_err("syntax"),
            err_of(&[("etcd3", None)]),
        ];
        for e in errors {
            let s = e.to_string();
            assert!(!s.contains('\n') && !s.is_empty(), "{s:?}");
        }
    }
}

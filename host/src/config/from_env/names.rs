//! The names Patroni reads from its environment and how their values convert: the tables
//! behind [`EnvConfig::from_vars`](super::EnvConfig::from_vars) (top-level keys, sections,
//! PostgreSQL roles, the DCS suffixes), the conversions (lists, mappings, lenient booleans,
//! integers), and the way back from a key to its variable for messages. Pure.

use super::PREFIX;
use crate::config::error::{one_line, q};
use crate::config::values::parse_bool;
use serde_yaml::Value;

/// How a variable's text becomes a YAML value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Conv {
    /// Kept as a string.
    Str,
    /// `on/off/yes/no/true/false/1/0`, any case.
    Bool,
    /// A whole number.
    Int,
    /// A YAML list, or a bare `a,b` read as `[a,b]`.
    List,
    /// A YAML mapping, braces optional.
    Dict,
}

pub(super) use Conv::{Bool, Dict, Int, List, Str};

// The tables list names separated by spaces; every value is a string unless `CONVERSIONS` or
// `DCS_CONVERSIONS` says otherwise.

/// Top-level keys: `PATRONI_<KEY>`.
pub(super) const TOP: &str = "name namespace scope thread_pool_size thread_stack_size";

/// Sections with named keys: `PATRONI_<SECTION>_<KEY>`. Regent uses neither `log` nor `raft`:
/// they are read (and removed) so that the ignored-key warnings can name them.
pub(super) const SECTIONS: [(&str, &str); 5] = [
    (
        "restapi",
        "listen connect_address certfile keyfile keyfile_password cafile ciphers verify_client \
         http_extra_headers https_extra_headers allowlist allowlist_include_members \
         request_queue_size server_tokens",
    ),
    ("ctl", "insecure cacert certfile keyfile keyfile_password"),
    (
        "postgresql",
        "listen connect_address proxy_address config_dir data_dir pgpass bin_dir",
    ),
    (
        "log",
        "type level traceback_level format dateformat static_fields max_queue_size dir mode \
         file_size file_num loggers deduplicate_heartbeat_logs",
    ),
    (
        "raft",
        "data_dir self_addr partner_addrs password bind_addr min_timeout max_timeout \
         connection_timeout append_entries_period connection_retry_time leader_fallback_timeout",
    ),
];

/// The keys of `SECTIONS` Regent reads as something other than a string.
pub(super) const CONVERSIONS: [(&str, Conv); 6] = [
    ("restapi.http_extra_headers", Dict),
    ("restapi.https_extra_headers", Dict),
    ("restapi.allowlist", List),
    ("restapi.allowlist_include_members", Bool),
    ("restapi.request_queue_size", Int),
    ("ctl.insecure", Bool),
];

/// Old names of log variables: `PATRONI_<OLD>` is read as `PATRONI_LOG_<NEW>` unless that is set.
pub(super) const OLD_LOG_NAMES: [(&str, &str); 3] = [
    ("LOGLEVEL", "LEVEL"),
    ("LOGFORMAT", "FORMAT"),
    ("LOG_DATEFMT", "DATEFORMAT"),
];

/// `PATRONI_POSTGRESQL_BIN_<PROGRAM>` → `postgresql.bin_name.<program>`.
pub(super) const BIN_NAMES: &str =
    "pg_ctl initdb pg_controldata pg_basebackup postgres pg_isready pg_rewind";

/// The keys of a PostgreSQL role: `PATRONI_<ROLE>_<KEY>` → `postgresql.authentication.<role>.<key>`.
pub(super) const ROLE_KEYS: &str = "username password sslmode sslcert sslkey sslpassword sslrootcert \
                         sslcrl sslcrldir gssencmode channel_binding sslnegotiation";

pub(super) const ROLES: [&str; 3] = ["replication", "superuser", "rewind"];

/// The suffixes of a DCS section: `PATRONI_<DCS>_<SUFFIX>` → `<dcs>.<suffix>`, for any `<DCS>`.
pub(super) const DCS_SUFFIXES: &str = "HOST HOSTS PORT USE_PROXIES PROTOCOL SRV SRV_SUFFIX URL PROXY CACERT \
    CERT KEY VERIFY TOKEN CHECKS DC CONSISTENCY REGISTER_SERVICE SERVICE_CHECK_INTERVAL \
    SERVICE_CHECK_TLS_SERVER_NAME SERVICE_TAGS NAMESPACE CONTEXT USE_ENDPOINTS SCOPE_LABEL \
    ROLE_LABEL POD_IP PORTS LABELS BYPASS_API_SERVICE RETRIABLE_HTTP_CODES KEY_PASSWORD USE_SSL \
    SET_ACLS GROUP DATABASE LEADER_LABEL_VALUE FOLLOWER_LABEL_VALUE STANDBY_LEADER_LABEL_VALUE \
    TMP_ROLE_LABEL AUTH_DATA BOOTSTRAP_LABELS";

/// The DCS suffixes whose values are not strings.
pub(super) const DCS_CONVERSIONS: [(&str, Conv); 15] = [
    ("PORT", Int),
    ("HOSTS", List),
    ("PORTS", List),
    ("CHECKS", List),
    ("SERVICE_TAGS", List),
    ("RETRIABLE_HTTP_CODES", List),
    ("LABELS", Dict),
    ("SET_ACLS", Dict),
    ("AUTH_DATA", Dict),
    ("BOOTSTRAP_LABELS", Dict),
    ("USE_PROXIES", Bool),
    ("REGISTER_SERVICE", Bool),
    ("USE_ENDPOINTS", Bool),
    ("BYPASS_API_SERVICE", Bool),
    ("VERIFY", Bool),
];

/// What `table` says about `name`: its conversion, strings by default.
pub(super) fn conversion(table: &[(&str, Conv)], name: &str) -> Conv {
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(Str, |(_, c)| *c)
}

/// The sections Regent reads: a value there that does not convert is an error. Elsewhere
/// (sections Regent ignores with a warning) it is kept as the string it was.
pub(super) const STRICT: [&str; 5] = ["restapi", "ctl", "postgresql", "etcd", "etcd3"];

/// `raw` as a YAML value of kind `conv`, or (what is wrong, how to fix it).
pub(super) fn convert(conv: Conv, raw: &str) -> Result<Value, (String, String)> {
    match conv {
        Str => Ok(Value::from(raw)),
        Bool => parse_bool(raw).map(Value::from).ok_or_else(|| {
            (
                format!("{} is not a boolean", q(raw)),
                "use true or false (also on/off, yes/no, 1/0)".into(),
            )
        }),
        Int => raw.trim().parse::<i64>().map(Value::from).map_err(|_| {
            (
                format!("{} is not a whole number", q(raw)),
                "write digits only, e.g. 2379".into(),
            )
        }),
        List => yaml_in(
            raw,
            |t| t.starts_with('-') || t.contains('['),
            ('[', ']'),
            |v| matches!(v, Value::Sequence(_)),
            "list",
            "write `a,b` or a YAML list such as `[a, b]`",
        ),
        Dict => yaml_in(
            raw,
            |t| t.starts_with('{'),
            ('{', '}'),
            |v| matches!(v, Value::Mapping(_)),
            "mapping",
            "write `Name: value, Other: value` or a YAML mapping in braces",
        ),
    }
}

/// `raw` read as YAML of one kind, wrapped in `brackets` first unless `bare` says it already
/// is written that way (Patroni's `_parse_list`/`_parse_dict`): the value, or what is wrong and
/// how to write it.
fn yaml_in(
    raw: &str,
    bare: impl Fn(&str) -> bool,
    (open, close): (char, char),
    is_kind: impl Fn(&Value) -> bool,
    kind: &str,
    fix: &str,
) -> Result<Value, (String, String)> {
    let t = raw.trim();
    let text = if bare(t) {
        t.to_string()
    } else {
        format!("{open}{t}{close}")
    };
    match serde_yaml::from_str::<Value>(&text) {
        Ok(v) if is_kind(&v) => Ok(v),
        Ok(_) => Err((format!("is not a {kind}"), fix.into())),
        Err(e) => Err((
            format!("is not a YAML {kind} ({})", one_line(e)),
            fix.into(),
        )),
    }
}

/// The variable that sets the key path `key` (`scope` → `PATRONI_SCOPE`), for messages about a
/// key missing from an environment-only configuration; `None` when no single variable does.
pub(crate) fn variable_for(key: &str) -> Option<String> {
    let parts: Vec<&str> = key.split('.').collect();
    let var = |s: &str| format!("{PREFIX}{}", s.to_ascii_uppercase());
    match parts.as_slice() {
        [k] if TOP.split_whitespace().any(|t| t == *k) => Some(var(k)),
        ["restapi"] => Some(var("restapi_listen")),
        ["etcd3"] => Some(var("etcd3_hosts")),
        [
            s @ ("restapi" | "ctl"),
            "authentication",
            k @ ("username" | "password"),
        ] => Some(var(&format!("{s}_{k}"))),
        ["postgresql", "authentication", role, k] if ROLES.contains(role) => {
            Some(var(&format!("{role}_{k}")))
        }
        ["postgresql", "authentication", role] if ROLES.contains(role) => {
            Some(var(&format!("{role}_username")))
        }
        [s, k] => SECTIONS
            .iter()
            .any(|(name, keys)| name == s && keys.split_whitespace().any(|n| n == *k))
            .then(|| var(&format!("{s}_{k}"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_for_missing_keys() {
        for (key, var) in [
            ("scope", Some("PATRONI_SCOPE")),
            ("name", Some("PATRONI_NAME")),
            ("restapi", Some("PATRONI_RESTAPI_LISTEN")),
            ("restapi.listen", Some("PATRONI_RESTAPI_LISTEN")),
            ("etcd3", Some("PATRONI_ETCD3_HOSTS")),
            ("postgresql.data_dir", Some("PATRONI_POSTGRESQL_DATA_DIR")),
            (
                "postgresql.authentication.replication.username",
                Some("PATRONI_REPLICATION_USERNAME"),
            ),
            (
                "postgresql.authentication.superuser",
                Some("PATRONI_SUPERUSER_USERNAME"),
            ),
            ("ctl.authentication.password", Some("PATRONI_CTL_PASSWORD")),
            ("postgresql", None),
            ("bootstrap.dcs.ttl", None),
        ] {
            assert_eq!(variable_for(key).as_deref(), var, "{key}");
        }
        // And each named variable is read back to that key.
        for key in ["scope", "restapi.listen", "postgresql.data_dir"] {
            let var = variable_for(key).expect("named");
            let e = super::super::EnvConfig::from_vars([(var.clone(), "v".to_string())]);
            assert_eq!(
                e.origins.get(key).map(String::as_str),
                Some(var.as_str()),
                "{key}"
            );
        }
    }

    #[test]
    fn conversions() {
        assert_eq!(convert(Int, " 8500 "), Ok(Value::from(8500)));
        assert!(convert(Int, "85OO").is_err());
        assert_eq!(convert(Bool, "Yes"), Ok(Value::from(true)));
        assert!(convert(Bool, "y").is_err());
        let list = |s: &str| serde_yaml::from_str::<Value>(s).expect("YAML");
        assert_eq!(convert(List, "a:1,b:2"), Ok(list("['a:1', 'b:2']")));
        assert_eq!(convert(List, "[a, b]"), Ok(list("[a, b]")));
        assert_eq!(convert(Dict, "a: 1"), Ok(list("{a: 1}")));
        assert!(convert(Dict, "a: [b").is_err());
        assert!(convert(Dict, "- a").is_err(), "a list is not a mapping");
        assert_eq!(
            convert(Str, " kept as is "),
            Ok(Value::from(" kept as is "))
        );
    }
}

//! The keys Regent knows: one table per section saying whether a key is used, a section to
//! descend into, a Patroni key Regent does not support (ignored, or refused when ignoring it
//! would change what the cluster does), or one read only from another place; and the walk
//! over the YAML document that turns every key Regent does not use into a warning, and every
//! refused one into an error. Pure: works on the parsed YAML value, no filesystem access.

use super::ConfigError;
use super::error::kind_of;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;

/// What Regent does with a key of the YAML file.
#[derive(Clone, Copy)]
enum Key {
    /// Used; its value (scalar, list, or free-form map such as `tags` or `parameters`) is not
    /// checked for unknown keys.
    Known,
    /// A mapping whose keys are checked against the table.
    Section(&'static [(&'static str, Key)]),
    /// A Patroni key Regent does not implement.
    Unsupported,
    /// A Patroni key Regent reads only from another place.
    Moved(&'static str),
    /// A Patroni key Regent does not implement and whose absence (for some values) changes
    /// what the cluster does: the check says, for a value, why ignoring it would matter.
    Refused(fn(&Value) -> Option<&'static str>),
}

use Key::{Known, Moved, Refused, Section, Unsupported};

/// Any value set: ignoring it changes what the cluster does.
macro_rules! always {
    ($why:expr) => {
        Refused(|_| Some($why))
    };
}

const STANDBY_CLUSTER: &[(&str, Key)] = &[
    ("host", Known),
    ("port", Known),
    ("primary_slot_name", Known),
    ("create_replica_methods", Known),
    ("restore_command", Known),
    ("archive_cleanup_command", Known),
    ("recovery_min_apply_delay", Known),
];

fn ssl_rootcert(v: &Value) -> Option<&'static str> {
    (v.as_str().map(str::trim) == Some("system")).then_some(
        "Regent's own connections to PostgreSQL cannot check against the system's CAs: the server certificate would go unchecked",
    )
}

const SSL_FILES: &str = "Regent's own connections to PostgreSQL do not apply it yet: they would connect without this key password or revocation check";

const TOP: &[(&str, Key)] = &[
    ("scope", Known),
    ("name", Known),
    ("namespace", Known),
    ("restapi", Section(RESTAPI)),
    ("etcd3", Section(ETCD)),
    ("etcd", Section(ETCD)),
    ("bootstrap", Section(BOOTSTRAP)),
    ("postgresql", Section(POSTGRESQL)),
    ("tags", Known),
    ("regent", Section(REGENT)),
    ("log", Unsupported),
    ("ctl", Section(CTL)),
    ("watchdog", Section(WATCHDOG)),
    (
        "citus",
        always!("Citus clusters need Patroni's coordinator and worker handling"),
    ),
    ("consul", Unsupported),
    ("zookeeper", Unsupported),
    ("exhibitor", Unsupported),
    ("kubernetes", Unsupported),
    ("raft", Unsupported),
    ("thread_pool_size", Unsupported),
    ("thread_stack_size", Unsupported),
    ("ttl", Moved("bootstrap.dcs.ttl")),
    ("loop_wait", Moved("bootstrap.dcs.loop_wait")),
    ("retry_timeout", Moved("bootstrap.dcs.retry_timeout")),
    (
        "maximum_lag_on_failover",
        Moved("bootstrap.dcs.maximum_lag_on_failover"),
    ),
    ("synchronous_mode", Moved("bootstrap.dcs.synchronous_mode")),
    ("check_timeline", Moved("bootstrap.dcs.check_timeline")),
];

const RESTAPI: &[(&str, Key)] = &[
    ("listen", Known),
    ("connect_address", Known),
    ("proxy_address", Unsupported),
    ("authentication", Section(BASIC_AUTH)),
    ("certfile", Known),
    ("keyfile", Known),
    ("keyfile_password", Known),
    ("cafile", Known),
    ("ciphers", Unsupported),
    ("verify_client", Known),
    ("allowlist", Known),
    ("allowlist_include_members", Known),
    ("http_extra_headers", Known),
    ("https_extra_headers", Known),
    ("request_queue_size", Unsupported),
    ("server_tokens", Unsupported),
    ("thread_pool_size", Unsupported),
];

const ETCD: &[(&str, Key)] = &[
    ("hosts", Known),
    ("host", Known),
    ("protocol", Known),
    ("url", Unsupported),
    ("proxy", Unsupported),
    ("srv", Unsupported),
    ("srv_suffix", Unsupported),
    ("use_proxies", Unsupported),
    ("username", Known),
    ("password", Known),
    ("cacert", Known),
    ("cert", Known),
    ("key", Known),
];

const BOOTSTRAP: &[(&str, Key)] = &[
    ("dcs", Section(DCS)),
    ("initdb", Known),
    ("pg_hba", Known),
    ("method", Known),
    ("users", Unsupported),
    ("post_bootstrap", Known),
    ("post_init", Known),
];

const DCS: &[(&str, Key)] = &[
    ("ttl", Known),
    ("loop_wait", Known),
    ("retry_timeout", Known),
    ("maximum_lag_on_failover", Known),
    ("synchronous_mode", Known),
    ("synchronous_node_count", Known),
    ("synchronous_mode_strict", Known),
    ("maximum_lag_on_syncnode", Known),
    ("check_timeline", Known),
    ("pause", Known),
    ("postgresql", Section(DCS_POSTGRESQL)),
    ("max_timelines_history", Unsupported),
    ("primary_start_timeout", Unsupported),
    ("master_start_timeout", Unsupported),
    ("primary_stop_timeout", Unsupported),
    ("master_stop_timeout", Unsupported),
    ("primary_race_backoff", Unsupported),
    ("failsafe_mode", Known),
    ("member_slots_ttl", Known),
    ("standby_cluster", Section(STANDBY_CLUSTER)),
    ("slots", Known),
    ("ignore_slots", Known),
];

const DCS_POSTGRESQL: &[(&str, Key)] = &[
    ("use_pg_rewind", Known),
    ("use_slots", Known),
    ("parameters", Known),
    ("pg_hba", Known),
    ("pg_ident", Unsupported),
    ("recovery_conf", Unsupported),
];

const POSTGRESQL: &[(&str, Key)] = &[
    ("listen", Known),
    ("connect_address", Known),
    ("data_dir", Known),
    ("bin_dir", Known),
    ("authentication", Section(AUTHENTICATION)),
    ("parameters", Known),
    ("pg_hba", Known),
    ("os_user", Known),
    (
        "use_pg_rewind",
        Moved("bootstrap.dcs.postgresql.use_pg_rewind"),
    ),
    ("use_slots", Moved("bootstrap.dcs.postgresql.use_slots")),
    ("proxy_address", Unsupported),
    ("config_dir", Unsupported),
    ("bin_name", Unsupported),
    ("pgpass", Unsupported),
    ("callbacks", Section(CALLBACKS)),
    ("create_replica_methods", Known),
    ("replica_method", Unsupported),
    ("basebackup", Known),
    ("recovery_conf", Unsupported),
    ("custom_conf", Unsupported),
    ("pg_ident", Unsupported),
    ("pg_ctl_timeout", Unsupported),
    ("use_unix_socket", Unsupported),
    ("use_unix_socket_repl", Unsupported),
    ("remove_data_directory_on_rewind_failure", Unsupported),
    ("remove_data_directory_on_diverged_timelines", Unsupported),
    ("pre_promote", Known),
    ("before_stop", Known),
    ("krbsrvname", Unsupported),
];

const CALLBACKS: &[(&str, Key)] = &[
    ("on_start", Known),
    ("on_stop", Known),
    ("on_restart", Known),
    ("on_reload", Known),
    ("on_role_change", Known),
];

const AUTHENTICATION: &[(&str, Key)] = &[
    ("superuser", Section(CREDENTIALS)),
    ("replication", Section(CREDENTIALS)),
    ("rewind", Section(CREDENTIALS)),
];

const CREDENTIALS: &[(&str, Key)] = &[
    ("username", Known),
    ("password", Known),
    ("sslmode", Known),
    ("sslkey", Known),
    ("sslpassword", always!(SSL_FILES)),
    ("sslcert", Known),
    ("sslrootcert", Refused(ssl_rootcert)),
    ("sslcrl", always!(SSL_FILES)),
    ("sslcrldir", always!(SSL_FILES)),
    ("sslnegotiation", Unsupported),
    ("gssencmode", Unsupported),
    ("channel_binding", Known),
];

const WATCHDOG: &[(&str, Key)] = &[
    ("mode", Known),
    ("device", Known),
    ("safety_margin", Known),
    ("driver", Unsupported),
];

const CTL: &[(&str, Key)] = &[
    ("authentication", Section(BASIC_AUTH)),
    ("insecure", Known),
    ("cacert", Known),
    ("certfile", Known),
    ("keyfile", Known),
    ("keyfile_password", Known),
];

const BASIC_AUTH: &[(&str, Key)] = &[("username", Known), ("password", Known)];

const REGENT: &[(&str, Key)] = &[
    ("run_dir", Known),
    ("policies_dir", Known),
    ("policies", Known),
    ("failed_loops_before_handover", Known),
];

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => "~".to_string(),
        other => format!("<{} as key>", kind_of(other)),
    }
}

/// The keys set by environment variables: dotted key path → variable.
type Origins = BTreeMap<String, String>;

/// `path` as shown in a warning: followed by the variables that set it or keys under it.
fn label(path: &str, origins: &Origins) -> String {
    let below = format!("{path}.");
    let vars: Vec<&str> = origins
        .iter()
        .filter(|(p, _)| *p == path || p.starts_with(&below))
        .map(|(_, v)| v.as_str())
        .collect();
    if vars.is_empty() {
        path.to_string()
    } else {
        format!("{path} (from {})", vars.join(", "))
    }
}

/// Check `map`'s keys against `table`, pushing one warning per key Regent ignores. Entries with a
/// null value (`tags:` with everything below commented out) are dropped so they mean "not set".
fn walk(
    map: &mut Mapping,
    table: &[(&str, Key)],
    prefix: &str,
    origins: &Origins,
    warnings: &mut Vec<String>,
    refused: &mut Vec<ConfigError>,
) {
    map.retain(|_, v| !v.is_null());
    // Patroni's named methods (`create_replica_methods: [pgbackrest]` + `pgbackrest: {...}`,
    // `bootstrap.method: clone` + `bootstrap.clone: {...}`).
    let method_names: Vec<String> = match prefix {
        "postgresql" => match map.get("create_replica_methods") {
            Some(Value::Sequence(s)) => s
                .iter()
                .filter_map(|v| v.as_str())
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        },
        "bootstrap" => map
            .get("method")
            .and_then(Value::as_str)
            .map(|m| vec![m.to_string()])
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    for (k, v) in map.iter_mut() {
        let name = key_text(k);
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let shown = label(&path, origins);
        match table.iter().find(|(n, _)| *n == name).map(|(_, kind)| *kind) {
            Some(Known) => {}
            Some(Section(sub)) => {
                if let Value::Mapping(m) = v {
                    walk(m, sub, &path, origins, warnings, refused);
                }
                // Anything else is a type error that deserialization reports with its path.
            }
            Some(Refused(check)) => match check(v) {
                Some(why) => refused.push(ConfigError::NotSupported {
                    key: shown,
                    why: why.into(),
                }),
                None => warnings.push(format!(
                    "{shown}: Patroni key not supported by Regent yet, ignored (harmless with this value)"
                )),
            },
            Some(Unsupported) => {
                warnings.push(format!("{shown}: Patroni key not supported by Regent yet, ignored"))
            }
            Some(Moved(target)) => warnings.push(format!(
                "{shown}: ignored, Regent reads this setting only from {target} (the cluster-wide dynamic configuration); move it there"
            )),
            // A method's section: read by `methods`.
            None if method_names.contains(&name) => {}
            None if shown != path => warnings.push(format!(
                "unknown key {shown} ignored (Regent does not use it; unset the variable)"
            )),
            None => warnings.push(format!(
                "unknown key {path} ignored (check its spelling and indentation)"
            )),
        }
    }
}

/// The first key of a dynamic configuration (the DCS `config` key, `PATCH /config`) that
/// Regent refuses, as [`warnings`] refuses it under `bootstrap.dcs`.
pub(super) fn refused_dynamic(doc: &Value) -> Option<ConfigError> {
    DCS.iter()
        .find_map(|(name, kind)| match (kind, doc.get(*name)) {
            (Refused(check), Some(v)) if !v.is_null() => {
                check(v).map(|why| ConfigError::NotSupported {
                    key: (*name).to_string(),
                    why: why.into(),
                })
            }
            _ => None,
        })
}

/// One warning per key of the whole document `map` that Regent does not use, in document
/// order, then one about a Patroni `etcd` (v2) section; null entries are dropped from `map`.
/// Keys set by environment variables (`origins`) are named with their variables. A Patroni key
/// Regent does not implement and whose absence would change what the cluster does is an
/// error ([`ConfigError::NotSupported`], the first in document order).
pub(super) fn warnings(map: &mut Mapping, origins: &Origins) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    let mut refused = Vec::new();
    walk(map, TOP, "", origins, &mut warnings, &mut refused);
    if let Some(e) = refused.into_iter().next() {
        return Err(e);
    }
    if map.contains_key("etcd") {
        if map.contains_key("etcd3") {
            warnings
                .push("etcd: ignored because etcd3 is also set; remove the etcd section".into());
        } else {
            warnings.push(
                "etcd: Regent always uses the etcd v3 API, whose keys are separate from the v2 keys Patroni's `etcd` section writes; rename the section to etcd3 (switch a running Patroni cluster to etcd3 before Regent joins it)"
                    .into(),
            );
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;
    use crate::config::{ConfigError, DynamicConfig, Tags};

    #[test]
    fn unknown_keys_warn_and_are_not_fatal() {
        let l = parse_edited(&[
            ("postgresql.foo", Some("1")),
            ("bogus", Some("x")),
            ("restapi.lsiten", Some("0.0.0.0:8008")),
            ("bootstrap.dcs.postgresql.use_slot", Some("true")),
        ])
        .expect("unknown keys are not fatal");
        assert_eq!(l.warnings.len(), 4, "{:?}", l.warnings);
        for k in [
            "postgresql.foo",
            "bogus",
            "restapi.lsiten",
            "bootstrap.dcs.postgresql.use_slot",
        ] {
            let prefix = format!("unknown key {k} ignored");
            assert!(
                l.warnings.iter().any(|w| w.starts_with(&prefix)),
                "no warning for {k}: {:?}",
                l.warnings
            );
        }
    }

    #[test]
    fn free_maps_take_any_key_without_warnings() {
        let l = parse_edited(&[
            ("tags.rack", Some("r12")),
            ("postgresql.parameters.wal_compression", Some("lz4")),
            (
                "bootstrap.dcs.postgresql.parameters.shared_buffers",
                Some("1GB"),
            ),
        ])
        .expect("valid");
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert_eq!(l.config.tags.other.get("rack"), Some(&Value::from("r12")));
        assert!(
            l.config
                .postgresql
                .parameters
                .contains_key("wal_compression")
        );
        assert_eq!(
            l.config
                .bootstrap
                .dcs
                .postgresql
                .parameters
                .get("shared_buffers"),
            Some(&Value::from("1GB"))
        );
    }

    #[test]
    fn known_patroni_keys_warn_as_not_supported() {
        let keys = [
            ("log", "{level: INFO}"),
            ("watchdog.driver", "default"),
            ("restapi.server_tokens", "minimal"),
            ("restapi.ciphers", "ECDHE-RSA-AES256-GCM-SHA384"),
            ("restapi.request_queue_size", "5"),
            ("bootstrap.users", "{admin: {password: x}}"),
            ("postgresql.pgpass", "/tmp/pgpass0"),
        ];
        let edits: Vec<(&str, Option<&str>)> = keys.iter().map(|(k, v)| (*k, Some(*v))).collect();
        let l = parse_edited(&edits).expect("unsupported keys are not fatal");
        assert_eq!(l.warnings.len(), keys.len(), "{:?}", l.warnings);
        for (k, _) in keys {
            let w = l
                .warnings
                .iter()
                .find(|w| w.starts_with(&format!("{k}: ")))
                .unwrap_or_else(|| panic!("no warning for {k}: {:?}", l.warnings));
            assert!(w.contains("not supported by Regent yet, ignored"), "{w}");
        }
        assert!(!l.warnings.iter().any(|w| w.contains("unknown key")));
    }

    #[test]
    fn patroni_keys_whose_absence_changes_the_cluster_are_refused() {
        for (key, value) in [
            (
                "postgresql.authentication.replication.sslrootcert",
                "system",
            ),
            ("postgresql.authentication.superuser.sslpassword", "pw"),
        ] {
            let e = parse_edited(&[(key, Some(value))]).expect_err(key);
            match &e {
                ConfigError::NotSupported { key: k, .. } => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
            let text = e.to_string();
            assert!(
                text.starts_with(&format!(
                    "{key}: Patroni setting not supported by Regent yet"
                )) && !text.contains('\n'),
                "{text}"
            );
        }
        // The watchdog is supported in every mode.
        for mode in ["off", "automatic", "required"] {
            let v = format!("{{mode: {mode}, device: /dev/watchdog0, safety_margin: 5}}");
            let l = parse_edited(&[("watchdog", Some(v.as_str()))]).expect("watchdog");
            assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        }
    }

    /// docs/patroni-compatibility.md lists every key of the tables with what Regent does.
    #[test]
    fn the_compatibility_table_lists_every_key_as_the_code_treats_it() {
        const DOC: &str = include_str!("../../../docs/patroni-compatibility.md");
        fn rows(table: &[(&str, Key)], prefix: &str, out: &mut Vec<(String, &'static str)>) {
            for (name, kind) in table {
                let path = format!("{prefix}{name}");
                let status = match kind {
                    Section(sub) => {
                        if path != "regent" {
                            rows(sub, &format!("{path}."), out);
                        }
                        continue;
                    }
                    Known => "supported",
                    Unsupported => "ignored",
                    Moved(_) => "moved",
                    Refused(_) => "refused",
                };
                out.push((path, status));
            }
        }
        let mut all = Vec::new();
        rows(TOP, "", &mut all);
        assert!(all.len() > 150, "{}", all.len());
        let missing: Vec<String> = all
            .iter()
            .filter(|(path, status)| !DOC.contains(&format!("| `{path}` | {status} |")))
            .map(|(path, status)| format!("{path} ({status})"))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/patroni-compatibility.md does not list: {missing:?}"
        );
    }

    #[test]
    fn misplaced_dynamic_keys_say_where_they_belong() {
        let l = parse_edited(&[
            ("ttl", Some("20")),
            ("postgresql.use_pg_rewind", Some("true")),
        ])
        .expect("valid");
        assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
        assert!(
            l.warnings
                .iter()
                .any(|w| w.starts_with("ttl: ignored") && w.contains("bootstrap.dcs.ttl"))
        );
        assert!(l.warnings.iter().any(|w| {
            w.starts_with("postgresql.use_pg_rewind: ignored")
                && w.contains("bootstrap.dcs.postgresql.use_pg_rewind")
        }));
        // And the misplaced value is not used.
        assert_eq!(l.config.bootstrap.dcs.ttl, 30);
    }

    #[test]
    fn etcd_v2_section_is_read_with_a_warning() {
        let l = parse_edited(&[("etcd3", None), ("etcd", Some("{host: '10.0.0.1:2379'}"))])
            .expect("valid");
        assert_eq!(l.config.etcd_endpoints(), vec!["10.0.0.1:2379"]);
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(l.warnings[0].starts_with("etcd: ") && l.warnings[0].contains("etcd3"));

        let both = parse_edited(&[("etcd", Some("{host: '10.9.9.9:2379'}"))]).expect("valid");
        assert_eq!(both.config.etcd_endpoints().len(), 3, "etcd3 wins");
        assert!(both.warnings[0].contains("ignored because etcd3 is also set"));
    }

    /// Patroni's script keys are read; a command that is empty or does not split into words
    /// is refused with the key's name.
    #[test]
    fn script_callbacks_are_read_and_checked() {
        let l = parse_edited(&[
            (
                "postgresql.callbacks",
                Some("{on_start: '/bin/cb start', on_role_change: \"'/opt/my cb.sh' -v\"}"),
            ),
            ("postgresql.pre_promote", Some("/bin/fence")),
            ("postgresql.before_stop", Some("/bin/drain")),
        ])
        .expect("valid");
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let pg = &l.config.postgresql;
        assert_eq!(pg.callbacks.on_start.as_deref(), Some("/bin/cb start"));
        assert_eq!(
            pg.callbacks.on_role_change.as_deref(),
            Some("'/opt/my cb.sh' -v")
        );
        assert_eq!(pg.callbacks.on_stop, None);
        assert_eq!(pg.pre_promote.as_deref(), Some("/bin/fence"));
        assert_eq!(pg.before_stop.as_deref(), Some("/bin/drain"));
        for (key, value) in [
            ("postgresql.callbacks.on_stop", "''"),
            ("postgresql.pre_promote", "'  '"),
            ("postgresql.before_stop", "\"'/bin/unclosed\""),
        ] {
            let e = err_of(&[(key, Some(value))]);
            assert_eq!(invalid_key(&e), key, "{e}");
        }
    }

    #[test]
    fn empty_sections_mean_unset() {
        let l = parse_edited(&[("tags", Some("~")), ("bootstrap.dcs", Some("~"))]).expect("valid");
        assert_eq!(l.config.tags, Tags::default());
        assert_eq!(l.config.bootstrap.dcs, DynamicConfig::default());
    }
}

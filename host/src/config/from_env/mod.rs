//! The configuration Patroni reads from its environment: each `PATRONI_*` variable it knows
//! becomes one key of a YAML document (`PATRONI_RESTAPI_LISTEN` → `restapi.listen`,
//! `PATRONI_SUPERUSER_PASSWORD` → `postgresql.authentication.superuser.password`,
//! `PATRONI_ETCD3_HOSTS` → `etcd3.hosts`), its value converted the way Patroni converts it
//! (lists, mappings, lenient booleans, integers); empty values are skipped.
//!
//! [`EnvConfig::from_vars`] is pure: name/value pairs in, the document, the text of
//! `PATRONI_CONFIGURATION` and the names it consumed out; `names.rs` holds the tables of names
//! and the value conversions. Only [`EnvConfig::capture`] reads the process environment and
//! only [`remove_consumed`] changes it.
//!
//! Invariant: every variable whose value can end up in the configuration is in
//! [`EnvConfig::consumed`], so that removing those names leaves no secret for a child process.

mod names;

pub(crate) use names::variable_for;

use super::ConfigError;
use names::{
    BIN_NAMES, CONVERSIONS, Conv, DCS_CONVERSIONS, DCS_SUFFIXES, Int, OLD_LOG_NAMES, ROLE_KEYS,
    ROLES, SECTIONS, STRICT, Str, TOP, conversion, convert,
};
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::fmt;

/// The prefix of every variable read here.
pub(super) const PREFIX: &str = "PATRONI_";

/// The variable holding a whole configuration as YAML text.
pub(crate) const CONFIGURATION: &str = "PATRONI_CONFIGURATION";

/// A variable whose value cannot be used.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct EnvProblem {
    /// The variable.
    pub(crate) var: String,
    /// What is wrong with its value.
    pub(crate) problem: String,
    /// How to fix it.
    pub(crate) fix: String,
}

impl EnvProblem {
    pub(crate) fn to_error(&self) -> ConfigError {
        ConfigError::Variable {
            var: self.var.clone(),
            problem: self.problem.clone(),
            fix: self.fix.clone(),
        }
    }
}

/// The configuration the `PATRONI_*` environment variables describe.
#[derive(Clone, Default, PartialEq)]
pub struct EnvConfig {
    /// The keys the variables set (empty: none).
    pub(crate) value: Mapping,
    /// Which variable set each key: dotted key path → variable name.
    pub(crate) origins: BTreeMap<String, String>,
    /// The text of `PATRONI_CONFIGURATION` when set and not empty.
    pub(crate) configuration: Option<String>,
    /// Every variable read, empty or not: the names to remove from the process environment.
    consumed: Vec<String>,
    /// Values that cannot be used, in the order read.
    pub(crate) problems: Vec<EnvProblem>,
}

impl fmt::Debug for EnvConfig {
    /// Names only: the values hold passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvConfig")
            .field("consumed", &self.consumed)
            .field("keys", &self.origins.keys().collect::<Vec<_>>())
            .field(
                "configuration",
                &self.configuration.as_ref().map(|_| "(set)"),
            )
            .finish()
    }
}

impl EnvConfig {
    /// Read this process's `PATRONI_*` variables (see [`EnvConfig::from_vars`]). A variable
    /// whose value is not UTF-8 is consumed and reported as a problem.
    pub fn capture() -> EnvConfig {
        let mut pairs = Vec::new();
        let mut not_utf8 = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().filter(|n| n.starts_with(PREFIX)) else {
                continue;
            };
            match value.into_string() {
                Ok(v) => pairs.push((name.to_string(), v)),
                Err(v) => {
                    not_utf8.push(name.to_string());
                    pairs.push((name.to_string(), v.to_string_lossy().into_owned()));
                }
            }
        }
        let mut env = EnvConfig::from_vars(pairs);
        for name in not_utf8 {
            if env.consumed.contains(&name) {
                env.problems.push(EnvProblem {
                    var: name,
                    problem: "the value is not valid UTF-8".into(),
                    fix: "set it to UTF-8 text".into(),
                });
            }
        }
        env
    }

    /// The configuration described by `vars` (name, value): the variables Patroni reads, under
    /// the keys Patroni puts them; other names are left alone.
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(vars: I) -> EnvConfig {
        let mut b = Builder {
            env: vars
                .into_iter()
                .filter(|(k, _)| k.starts_with(PREFIX))
                .collect(),
            out: EnvConfig::default(),
        };
        b.build();
        b.out
    }

    /// The names of the variables read (to remove from the environment).
    pub fn consumed(&self) -> &[String] {
        &self.consumed
    }

    /// No variable said anything: no key, no `PATRONI_CONFIGURATION`, no bad value.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty() && self.configuration.is_none() && self.problems.is_empty()
    }

    /// The variables that set keys or had bad values, sorted and without duplicates.
    pub(crate) fn used_vars(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .origins
            .values()
            .map(String::as_str)
            .chain(self.problems.iter().map(|p| p.var.as_str()))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Remove the variables `env` consumed from this process's environment, so that no child
/// (PostgreSQL, pg_basebackup, pg_rewind, the guard, an editor) inherits them.
///
/// # Safety
///
/// No other thread may run while this is called (none may read or write the environment):
/// call it at the start of `main`, before any runtime or thread is started.
pub unsafe fn remove_consumed(env: &EnvConfig) {
    for name in &env.consumed {
        // SAFETY: the caller guarantees that this process runs one thread only.
        unsafe { std::env::remove_var(name) };
    }
}

struct Builder {
    /// The `PATRONI_*` variables not read yet.
    env: BTreeMap<String, String>,
    out: EnvConfig,
}

impl Builder {
    /// Remove `PATRONI_<suffix>` from the variables not read yet; its value when not empty.
    fn take(&mut self, suffix: &str) -> Option<(String, String)> {
        let var = format!("{PREFIX}{}", suffix.to_ascii_uppercase());
        let value = self.env.remove(&var)?;
        self.out.consumed.push(var.clone());
        (!value.is_empty()).then_some((var, value))
    }

    fn set(&mut self, path: &[&str], value: Value, var: &str) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut map = &mut self.out.value;
        for p in parents {
            let entry = map
                .entry(Value::from(*p))
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            if !entry.is_mapping() {
                *entry = Value::Mapping(Mapping::new());
            }
            let Value::Mapping(m) = entry else { return };
            map = m;
        }
        map.insert(Value::from(*last), value);
        self.out.origins.insert(path.join("."), var.to_string());
    }

    /// Convert and set one variable's value; a value that does not convert is a problem in a
    /// section Regent reads, and kept as a string elsewhere.
    fn put(&mut self, path: &[&str], conv: Conv, var: &str, raw: &str) {
        match convert(conv, raw) {
            Ok(v) => self.set(path, v, var),
            Err((problem, fix)) if STRICT.contains(&path[0]) => {
                self.out.problems.push(EnvProblem {
                    var: var.to_string(),
                    problem,
                    fix,
                });
            }
            Err(_) => self.set(path, Value::from(raw), var),
        }
    }

    fn build(&mut self) {
        if let Some(text) = self.env.remove(CONFIGURATION) {
            self.out.consumed.push(CONFIGURATION.to_string());
            if !text.trim().is_empty() {
                self.out.configuration = Some(text);
            }
        }
        for key in TOP.split_whitespace() {
            if let Some((var, v)) = self.take(key) {
                self.set(&[key], Value::from(v), &var);
            }
        }
        for (old, new) in OLD_LOG_NAMES {
            let new_var = format!("{PREFIX}LOG_{new}");
            if let Some((_, v)) = self.take(old)
                && !self.env.contains_key(&new_var)
            {
                self.env.insert(new_var, v);
            }
        }
        for (section, keys) in SECTIONS {
            for key in keys.split_whitespace() {
                if let Some((var, v)) = self.take(&format!("{section}_{key}")) {
                    let conv = conversion(&CONVERSIONS, &format!("{section}.{key}"));
                    self.put(&[section, key], conv, &var, &v);
                }
            }
        }
        for program in BIN_NAMES.split_whitespace() {
            if let Some((var, v)) = self.take(&format!("POSTGRESQL_BIN_{program}")) {
                self.set(&["postgresql", "bin_name", program], Value::from(v), &var);
            }
        }
        for section in ["ctl", "restapi"] {
            for key in ["username", "password"] {
                if let Some((var, v)) = self.take(&format!("{section}_{key}")) {
                    self.set(&[section, "authentication", key], Value::from(v), &var);
                }
            }
        }
        for role in ROLES {
            for key in ROLE_KEYS.split_whitespace() {
                if let Some((var, v)) = self.take(&format!("{role}_{key}")) {
                    self.set(
                        &["postgresql", "authentication", role, key],
                        Value::from(v),
                        &var,
                    );
                }
            }
        }
        self.dcs_sections();
        for dcs in ["etcd", "etcd3"] {
            if self.out.value.contains_key(dcs) {
                for key in ["username", "password"] {
                    if let Some((var, v)) = self.take(&format!("{dcs}_{key}")) {
                        self.set(&[dcs, key], Value::from(v), &var);
                    }
                }
            }
        }
    }

    /// `PATRONI_<DCS>_<SUFFIX>` for every variable left whose suffix is a DCS key.
    fn dcs_sections(&mut self) {
        let names: Vec<String> = self.env.keys().cloned().collect();
        for var in names {
            let rest = &var[PREFIX.len()..];
            let Some((section, suffix)) = rest.split_once('_') else {
                continue;
            };
            if section.is_empty() || !DCS_SUFFIXES.split_whitespace().any(|s| s == suffix) {
                continue;
            }
            let conv = conversion(&DCS_CONVERSIONS, suffix);
            let Some((var, v)) = self.take(rest) else {
                continue;
            };
            let (section, key) = (section.to_ascii_lowercase(), suffix.to_ascii_lowercase());
            let conv = match (section.as_str(), suffix) {
                // Citus takes only its group (a number) and database from here.
                ("citus", "GROUP") => Int,
                ("citus", "DATABASE") => Str,
                ("citus", _) => continue,
                _ => conv,
            };
            self.put(&[&section, &key], conv, &var, &v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvConfig {
        EnvConfig::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn at<'a>(e: &'a EnvConfig, path: &str) -> Option<&'a Value> {
        let mut v = e.value.get(path.split('.').next()?)?;
        for p in path.split('.').skip(1) {
            v = v.get(p)?;
        }
        Some(v)
    }

    fn yaml(s: &str) -> Value {
        serde_yaml::from_str(s).expect("test YAML")
    }

    #[test]
    fn top_level_restapi_ctl_and_postgresql_keys() {
        let e = env(&[
            ("PATRONI_NAME", "pg1"),
            ("PATRONI_NAMESPACE", "/db/"),
            ("PATRONI_SCOPE", "batman"),
            ("PATRONI_RESTAPI_LISTEN", "0.0.0.0:8008"),
            ("PATRONI_RESTAPI_CONNECT_ADDRESS", "10.0.0.1:8008"),
            ("PATRONI_RESTAPI_CERTFILE", "/etc/c.pem"),
            ("PATRONI_RESTAPI_VERIFY_CLIENT", "none"),
            ("PATRONI_RESTAPI_USERNAME", "admin"),
            ("PATRONI_RESTAPI_PASSWORD", "s3cret"),
            ("PATRONI_CTL_INSECURE", "Yes"),
            ("PATRONI_CTL_CACERT", "/etc/ca.pem"),
            ("PATRONI_CTL_USERNAME", "ctl"),
            ("PATRONI_CTL_PASSWORD", "ctlpw"),
            ("PATRONI_POSTGRESQL_LISTEN", "0.0.0.0:5432"),
            ("PATRONI_POSTGRESQL_CONNECT_ADDRESS", "10.0.0.1:5432"),
            ("PATRONI_POSTGRESQL_DATA_DIR", "/var/lib/pg/data"),
            ("PATRONI_POSTGRESQL_BIN_DIR", "/usr/lib/postgresql/16/bin"),
            ("PATRONI_POSTGRESQL_PGPASS", "/tmp/pgpass"),
            ("PATRONI_POSTGRESQL_BIN_PG_CTL", "pg_ctl16"),
        ]);
        let want = yaml(
            r#"
name: pg1
namespace: /db/
scope: batman
restapi:
  listen: 0.0.0.0:8008
  connect_address: 10.0.0.1:8008
  certfile: /etc/c.pem
  verify_client: none
  authentication: {username: admin, password: s3cret}
ctl:
  insecure: true
  cacert: /etc/ca.pem
  authentication: {username: ctl, password: ctlpw}
postgresql:
  listen: 0.0.0.0:5432
  connect_address: 10.0.0.1:5432
  data_dir: /var/lib/pg/data
  bin_dir: /usr/lib/postgresql/16/bin
  pgpass: /tmp/pgpass
  bin_name: {pg_ctl: pg_ctl16}
"#,
        );
        assert_eq!(Value::Mapping(e.value.clone()), want);
        assert!(e.problems.is_empty());
        assert_eq!(e.consumed().len(), 19, "{:?}", e.consumed());
        assert_eq!(
            e.origins
                .get("restapi.authentication.password")
                .map(String::as_str),
            Some("PATRONI_RESTAPI_PASSWORD")
        );
    }

    #[test]
    fn role_credentials_go_under_postgresql_authentication() {
        let e = env(&[
            ("PATRONI_SUPERUSER_USERNAME", "postgres"),
            ("PATRONI_SUPERUSER_PASSWORD", "zalando"),
            ("PATRONI_SUPERUSER_SSLMODE", "verify-full"),
            ("PATRONI_REPLICATION_USERNAME", "replicator"),
            ("PATRONI_REPLICATION_PASSWORD", "rep-pass"),
            ("PATRONI_REPLICATION_CHANNEL_BINDING", "require"),
            ("PATRONI_REWIND_USERNAME", "rewind_user"),
            ("PATRONI_REWIND_SSLNEGOTIATION", "direct"),
            ("PATRONI_REWIND_GSSENCMODE", "disable"),
            ("PATRONI_REWIND_SSLCRLDIR", "/etc/crl"),
        ]);
        assert_eq!(
            at(&e, "postgresql.authentication"),
            Some(&yaml(
                r#"
replication: {username: replicator, password: rep-pass, channel_binding: require}
superuser: {username: postgres, password: zalando, sslmode: verify-full}
rewind: {username: rewind_user, gssencmode: disable, sslnegotiation: direct, sslcrldir: /etc/crl}
"#
            ))
        );
        assert_eq!(e.consumed().len(), 10);
    }

    #[test]
    fn dcs_sections_are_generic() {
        let e = env(&[
            ("PATRONI_ETCD3_HOSTS", "10.0.0.1:2379,10.0.0.2:2379"),
            ("PATRONI_ETCD3_PROTOCOL", "https"),
            ("PATRONI_ETCD3_CACERT", "/etc/etcd/ca.pem"),
            ("PATRONI_ETCD3_KEY_PASSWORD", "kp"),
            ("PATRONI_ETCD3_SRV_SUFFIX", "dc1"),
            ("PATRONI_ETCD3_USERNAME", "root"),
            ("PATRONI_ETCD3_PASSWORD", "rootpw"),
            ("PATRONI_CONSUL_PORT", "8500"),
            ("PATRONI_CONSUL_VERIFY", "off"),
            ("PATRONI_ETCD_USE_PROXIES", "1"),
            ("PATRONI_ETCD_HOSTS", "[a:1, b:2]"),
            ("PATRONI_KUBERNETES_LABELS", "application: patroni"),
            ("PATRONI_ZOOKEEPER_HOSTS", "- z1:2181\n- z2:2181"),
            ("PATRONI_CITUS_GROUP", "2"),
            ("PATRONI_CITUS_DATABASE", "citus"),
            ("PATRONI_CITUS_HOST", "ignored"),
        ]);
        assert_eq!(
            at(&e, "etcd3"),
            Some(&yaml(
                "{hosts: ['10.0.0.1:2379', '10.0.0.2:2379'], protocol: https, cacert: /etc/etcd/ca.pem, key_password: kp, srv_suffix: dc1, username: root, password: rootpw}"
            ))
        );
        assert_eq!(at(&e, "consul.port"), Some(&Value::from(8500)));
        assert_eq!(at(&e, "consul.verify"), Some(&Value::from(false)));
        assert_eq!(at(&e, "etcd.use_proxies"), Some(&Value::from(true)));
        assert_eq!(at(&e, "etcd.hosts"), Some(&yaml("['a:1', 'b:2']")));
        assert_eq!(
            at(&e, "kubernetes.labels"),
            Some(&yaml("{application: patroni}"))
        );
        assert_eq!(
            at(&e, "zookeeper.hosts"),
            Some(&yaml("['z1:2181', 'z2:2181']"))
        );
        assert_eq!(at(&e, "citus"), Some(&yaml("{group: 2, database: citus}")));
        assert!(
            e.consumed().iter().any(|c| c == "PATRONI_CITUS_HOST"),
            "read (and removed) although Patroni drops it"
        );
        assert!(e.problems.is_empty(), "{:?}", e.used_vars());
    }

    #[test]
    fn dcs_credentials_need_a_dcs_section_from_the_environment() {
        let e = env(&[
            ("PATRONI_ETCD3_USERNAME", "root"),
            ("PATRONI_ETCD3_PASSWORD", "pw"),
        ]);
        assert!(e.value.is_empty());
        assert!(
            e.consumed().is_empty(),
            "left in the environment, as Patroni leaves them"
        );
        // Credentials of other sections are not DCS keys.
        let e = env(&[
            ("PATRONI_CONSUL_HOST", "c:8500"),
            ("PATRONI_CONSUL_USERNAME", "u"),
        ]);
        assert_eq!(at(&e, "consul"), Some(&yaml("{host: 'c:8500'}")));
        assert_eq!(e.consumed(), ["PATRONI_CONSUL_HOST"]);
    }

    #[test]
    fn list_dict_bool_and_int_values() {
        let e = env(&[
            ("PATRONI_RESTAPI_ALLOWLIST", "10.0.0.0/8, 127.0.0.1"),
            ("PATRONI_RESTAPI_ALLOWLIST_INCLUDE_MEMBERS", "ON"),
            ("PATRONI_RESTAPI_REQUEST_QUEUE_SIZE", " 7 "),
            (
                "PATRONI_RESTAPI_HTTP_EXTRA_HEADERS",
                "X-Frame-Options: SAMEORIGIN, X-Other: 1",
            ),
            (
                "PATRONI_RESTAPI_HTTPS_EXTRA_HEADERS",
                "{Strict-Transport-Security: max-age=31536000}",
            ),
        ]);
        assert_eq!(
            at(&e, "restapi"),
            Some(&yaml(
                r#"
allowlist: [10.0.0.0/8, 127.0.0.1]
allowlist_include_members: true
request_queue_size: 7
http_extra_headers: {X-Frame-Options: SAMEORIGIN, X-Other: 1}
https_extra_headers: {Strict-Transport-Security: max-age=31536000}
"#
            ))
        );
        let e = env(&[("PATRONI_RESTAPI_ALLOWLIST", "- a\n- b")]);
        assert_eq!(at(&e, "restapi.allowlist"), Some(&yaml("[a, b]")));
        for (raw, want) in [
            ("on", true),
            ("Off", false),
            ("YES", true),
            ("no", false),
            ("true", true),
            ("FALSE", false),
            ("1", true),
            ("0", false),
        ] {
            let e = env(&[("PATRONI_CTL_INSECURE", raw)]);
            assert_eq!(at(&e, "ctl.insecure"), Some(&Value::from(want)), "{raw}");
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = env(&[
            ("PATRONI_ETCD3_PORT", "twenty"),
            ("PATRONI_CTL_INSECURE", "maybe"),
            ("PATRONI_RESTAPI_ALLOWLIST", "[unclosed"),
            ("PATRONI_RESTAPI_HTTP_EXTRA_HEADERS", "a: [unclosed"),
            ("PATRONI_SCOPE", "ok"),
        ]);
        let vars: Vec<&str> = e.problems.iter().map(|p| p.var.as_str()).collect();
        assert_eq!(
            vars,
            [
                "PATRONI_RESTAPI_HTTP_EXTRA_HEADERS",
                "PATRONI_RESTAPI_ALLOWLIST",
                "PATRONI_CTL_INSECURE",
                "PATRONI_ETCD3_PORT",
            ]
        );
        let msg = e.problems[2].to_error().to_string();
        assert!(
            msg.starts_with(
                "environment variable PATRONI_CTL_INSECURE: \"maybe\" is not a boolean;"
            ),
            "{msg}"
        );
        assert!(msg.contains("true or false"), "{msg}");
        assert!(
            e.problems[3]
                .to_error()
                .to_string()
                .contains("\"twenty\" is not a whole number")
        );
        assert_eq!(at(&e, "scope"), Some(&Value::from("ok")));
        assert!(at(&e, "ctl").is_none(), "a bad value sets nothing");
        // Sections Regent ignores keep a value that does not convert, as a string.
        let e = env(&[("PATRONI_CONSUL_PORT", "x")]);
        assert!(e.problems.is_empty());
        assert_eq!(at(&e, "consul.port"), Some(&Value::from("x")));
    }

    #[test]
    fn empty_values_are_skipped_but_consumed() {
        let e = env(&[
            ("PATRONI_SCOPE", ""),
            ("PATRONI_RESTAPI_PASSWORD", ""),
            ("PATRONI_ETCD3_HOSTS", ""),
            ("PATRONI_CONFIGURATION", "  \n"),
        ]);
        assert!(e.value.is_empty());
        assert!(e.is_empty());
        let mut consumed = e.consumed().to_vec();
        consumed.sort();
        assert_eq!(
            consumed,
            [
                "PATRONI_CONFIGURATION",
                "PATRONI_ETCD3_HOSTS",
                "PATRONI_RESTAPI_PASSWORD",
                "PATRONI_SCOPE"
            ]
        );
    }

    #[test]
    fn unknown_and_foreign_variables_are_left_alone() {
        let e = env(&[
            ("PATRONI_FOO", "x"),
            ("PATRONI_FOO_BAR", "x"),
            ("PATRONI_", "x"),
            ("PATRONI__HOST", "x"),
            ("PATRONICTL_CONFIG_FILE", "/etc/p.yml"),
            ("PGPASSWORD", "x"),
            ("REGENT_CONFIG", "/etc/r.yml"),
            ("SCOPE", "x"),
        ]);
        assert!(e.value.is_empty(), "{:?}", e.value);
        assert!(e.consumed().is_empty(), "{:?}", e.consumed());
        assert!(e.is_empty());
    }

    #[test]
    fn old_log_names_and_log_keys() {
        let e = env(&[
            ("PATRONI_LOGLEVEL", "DEBUG"),
            ("PATRONI_LOG_DATEFMT", "%H"),
            ("PATRONI_LOG_DATEFORMAT", "%Y"),
            ("PATRONI_LOG_DIR", "/var/log/patroni"),
        ]);
        assert_eq!(
            at(&e, "log"),
            Some(&yaml(
                "{level: DEBUG, dateformat: '%Y', dir: /var/log/patroni}"
            ))
        );
        assert_eq!(
            e.origins.get("log.level").map(String::as_str),
            Some("PATRONI_LOG_LEVEL")
        );
        for v in [
            "PATRONI_LOGLEVEL",
            "PATRONI_LOG_DATEFMT",
            "PATRONI_LOG_LEVEL",
        ] {
            assert!(e.consumed().iter().any(|c| c == v), "{v}");
        }
    }

    #[test]
    fn patroni_configuration_is_kept_as_text() {
        let e = env(&[
            ("PATRONI_CONFIGURATION", "scope: a\n"),
            ("PATRONI_NAME", "n"),
        ]);
        assert_eq!(e.configuration.as_deref(), Some("scope: a\n"));
        assert_eq!(at(&e, "name"), Some(&Value::from("n")));
        assert!(e.consumed().iter().any(|c| c == CONFIGURATION));
        assert!(!format!("{e:?}").contains("scope: a"), "Debug hides values");
    }

    #[test]
    fn debug_never_shows_values() {
        let e = env(&[("PATRONI_SUPERUSER_PASSWORD", "hunter2")]);
        let d = format!("{e:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("PATRONI_SUPERUSER_PASSWORD"), "{d}");
    }

    #[test]
    fn every_consumed_name_is_a_patroni_variable_and_every_key_has_its_variable() {
        let e = env(&[
            ("PATRONI_SCOPE", "s"),
            ("PATRONI_SUPERUSER_PASSWORD", "x"),
            ("PATRONI_ETCD3_HOSTS", "h:1"),
            ("PATRONI_ETCD3_PASSWORD", "p"),
            ("PATRONI_RAFT_PASSWORD", "r"),
            ("PATRONI_LOG_LEVEL", "INFO"),
            ("PATRONI_FOO", "left"),
        ]);
        let mut consumed = e.consumed().to_vec();
        consumed.sort();
        let mut from_origins: Vec<String> = e.origins.values().cloned().collect();
        from_origins.sort();
        assert_eq!(consumed, from_origins);
        assert!(!consumed.iter().any(|c| c == "PATRONI_FOO"));
    }
}

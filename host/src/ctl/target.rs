//! Where the cluster is: a Regent or Patroni configuration file (`-c`, `REGENT_CONFIG`, else
//! patronictl's `PATRONICTL_CONFIG_FILE` and default `~/.config/patroni/patronictl.yaml`),
//! `--dcs-url etcd3://HOST:PORT[/NAMESPACE]` and `--scope` (or the cluster named on the command
//! line), the REST credentials, and the PostgreSQL login `query` uses.
//!
//! A configuration file is read loosely, as patronictl reads it: only `scope`, `namespace`,
//! `etcd3`/`etcd`, `ctl.authentication` and `restapi.authentication` are looked at, so a
//! patronictl config file (etcd and scope only) works as well as a full node config. The
//! `PATRONI_*` variables (`PATRONI_ETCD3_HOSTS`, `PATRONI_SCOPE`, `PATRONI_RESTAPI_USERNAME`,
//! ...) are merged on top of it, or read alone without one, as patronictl reads them.

use super::CtlError;
use crate::config::{ConfigError, ConfigSource, EnvConfig, Etcd, dcs_prefix, split_host_port};
use serde_yaml::Value;
use std::path::{Path, PathBuf};

/// REST API Basic-auth credentials.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// The PostgreSQL login of the config file's `postgresql.authentication.superuser` (`query`).
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct PgLogin {
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
}

impl std::fmt::Debug for PgLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLogin")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The resolved cluster address.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Target {
    pub(crate) scope: String,
    pub(crate) namespace: String,
    /// `/<namespace>/<scope>/`.
    pub(crate) prefix: String,
    /// etcd endpoints, `host:port` each.
    pub(crate) endpoints: Vec<String>,
    /// Where the endpoints came from, for error messages (`--dcs-url`, `etcd3.hosts in FILE`).
    pub(crate) endpoints_from: String,
    /// TLS and user for etcd, from the file's etcd section (`--dcs-url` replaces the whole
    /// section, as patronictl's does).
    pub(crate) etcd_tls: Option<crate::dcs::EtcdTls>,
    pub(crate) etcd_user: Option<(String, String)>,
    /// How to call the members' REST APIs over HTTPS: `ctl.cacert` (else `restapi.cafile`),
    /// `ctl.certfile`/`keyfile`, `ctl.insecure`, as patronictl reads them.
    pub(crate) tls: crate::api::ClientOptions,
    pub(crate) auth: Option<Credentials>,
    pub(crate) superuser: PgLogin,
}

/// Where the config file's path came from, for the message when it cannot be read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConfigFrom {
    /// `-c`/`--config` or `REGENT_CONFIG`.
    #[default]
    Flag,
    /// `PATRONICTL_CONFIG_FILE`.
    PatronictlVariable,
    /// patronictl's default path, which existed.
    Default,
}

/// The config file when `-c`/`REGENT_CONFIG` name none, as patronictl finds it:
/// `PATRONICTL_CONFIG_FILE` (which must then exist), else
/// `$XDG_CONFIG_HOME/patroni/patronictl.yaml` (`$HOME/.config/...` without it), used only if it
/// exists. `var` reads the environment.
pub(crate) fn config_path(
    given: Option<PathBuf>,
    var: impl Fn(&str) -> Option<String>,
) -> Option<(PathBuf, ConfigFrom)> {
    if let Some(p) = given {
        return Some((p, ConfigFrom::Flag));
    }
    let set = |k: &str| var(k).filter(|v| !v.is_empty());
    if let Some(p) = set("PATRONICTL_CONFIG_FILE") {
        return Some((PathBuf::from(p), ConfigFrom::PatronictlVariable));
    }
    let dir = set("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| set("HOME").map(|h| Path::new(&h).join(".config")))?;
    let p = dir.join("patroni").join("patronictl.yaml");
    p.is_file().then_some((p, ConfigFrom::Default))
}

/// What the command line and the environment said.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Sources<'a> {
    pub(crate) config: Option<&'a Path>,
    pub(crate) config_from: ConfigFrom,
    pub(crate) dcs_url: Option<&'a str>,
    pub(crate) scope: Option<&'a str>,
    pub(crate) username: Option<&'a str>,
    pub(crate) password: Option<&'a str>,
    /// The `PATRONI_*` variables captured at start, merged on top of the file (or read alone
    /// without one), as patronictl does.
    pub(crate) env: Option<&'a EnvConfig>,
}

const DEFAULT_NAMESPACE: &str = "/service/";
const DEFAULT_ETCD_PORT: u16 = 2379;

/// Resolve the target: `--dcs-url` and `--scope` override the file; credentials from the flags
/// (or `REGENT_CTL_USERNAME`/`REGENT_CTL_PASSWORD`), else `ctl.authentication`, else
/// `restapi.authentication`.
pub(crate) fn resolve(src: &Sources) -> Result<Target, CtlError> {
    let (file, shown) = match read_document(src)? {
        Some((doc, shown)) => (Some(doc), Some(shown)),
        None => (None, None),
    };
    let doc = file.as_ref();

    let mut namespace = doc
        .and_then(|d| d.get("namespace"))
        .map(|v| scalar(v, "namespace", shown.as_deref()))
        .transpose()?
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let (access, endpoints_from) = match src.dcs_url {
        Some(url) => {
            let (eps, ns) = parse_dcs_url(url)?;
            if let Some(ns) = ns {
                namespace = ns;
            }
            (
                crate::dcs::EtcdAccess::plain(&eps),
                format!("--dcs-url {url}"),
            )
        }
        None => match (doc, shown.as_deref()) {
            (Some(d), Some(path)) => file_endpoints(d, path)?,
            _ => {
                return Err(CtlError::Usage(
                    "regent ctl does not know where the cluster is: pass -c FILE (a Regent or Patroni config; or set REGENT_CONFIG or PATRONICTL_CONFIG_FILE, or write ~/.config/patroni/patronictl.yaml), or --dcs-url etcd3://HOST:PORT with --scope NAME".into(),
                ));
            }
        },
    };
    let scope = match src.scope {
        Some(s) => s.to_string(),
        None => match doc.and_then(|d| d.get("scope")) {
            Some(v) => scalar(v, "scope", shown.as_deref())?,
            None => {
                let place = shown
                    .map(|p| format!("{p} has no `scope:`"))
                    .unwrap_or_else(|| "no config file was given".into());
                return Err(CtlError::Usage(format!(
                    "which cluster? {place}; pass --scope NAME (the cluster's `scope`)"
                )));
            }
        },
    };
    if scope.trim().is_empty() || scope.contains('/') {
        return Err(CtlError::Usage(format!(
            "scope {scope:?} is not a cluster name: it must be non-empty and without `/`"
        )));
    }
    let auth = credentials(src, doc, shown.as_deref())?;
    let tls = rest_tls(doc, shown.as_deref())?;
    let superuser = superuser(doc, shown.as_deref())?;
    Ok(Target {
        prefix: dcs_prefix(&namespace, &scope),
        namespace,
        scope,
        endpoints: access.endpoints,
        endpoints_from,
        etcd_tls: access.tls,
        etcd_user: access.user,
        tls,
        auth,
        superuser,
    })
}

/// The scope the config (or `--scope`) names, if any, before any cluster given on the command
/// line: a first positional equal to it is the cluster name (`restart demo pg2`).
pub(crate) fn configured_scope(src: &Sources) -> Result<Option<String>, CtlError> {
    if let Some(s) = src.scope {
        return Ok(Some(s.to_string()));
    }
    let Some((doc, shown)) = read_document(src)? else {
        return Ok(None);
    };
    doc.get("scope")
        .map(|v| scalar(v, "scope", Some(&shown)))
        .transpose()
}

/// `postgresql.authentication.superuser` of the config file (and `PATRONI_SUPERUSER_*`).
fn superuser(doc: Option<&Value>, file: Option<&str>) -> Result<PgLogin, CtlError> {
    let Some(su) = doc
        .and_then(|d| d.get("postgresql"))
        .and_then(|p| p.get("authentication"))
        .and_then(|a| a.get("superuser"))
    else {
        return Ok(PgLogin::default());
    };
    let get = |k: &str| {
        su.get(k)
            .map(|v| scalar(v, &format!("postgresql.authentication.superuser.{k}"), file))
            .transpose()
    };
    Ok(PgLogin {
        user: get("username")?,
        password: get("password")?,
    })
}

/// The configuration document, read as patronictl reads it: `-c PATH` (a file, or a directory
/// of YAML files) with the `PATRONI_*` variables merged on top; without `-c`,
/// `PATRONI_CONFIGURATION` or the variables alone, when they say anything. With its name for
/// messages.
fn read_document(src: &Sources) -> Result<Option<(Value, String)>, CtlError> {
    let none = EnvConfig::default();
    let env = src.env.unwrap_or(&none);
    match src.config {
        Some(path) => {
            if let Err(e) = std::fs::metadata(path) {
                let check = match src.config_from {
                    ConfigFrom::PatronictlVariable => "check PATRONICTL_CONFIG_FILE",
                    _ => "check the -c/--config path (or REGENT_CONFIG)",
                };
                return Err(CtlError::Usage(format!(
                    "cannot read config file {}: {e}; {check}",
                    path.display()
                )));
            }
        }
        None if env.is_empty() => return Ok(None),
        None => {}
    }
    let source = ConfigSource::choose(src.config, env.clone())
        .map_err(|e| CtlError::Usage(e.to_string()))?;
    let doc = source.document().map_err(|e| {
        CtlError::Usage(match e {
            // These name the file or the variable already.
            ConfigError::Io { .. } | ConfigError::In { .. } | ConfigError::Variable { .. } => {
                e.to_string()
            }
            other => format!("{source}: {other}"),
        })
    })?;
    Ok(Some((doc.value, source.to_string())))
}

fn scalar(v: &Value, key: &str, file: Option<&str>) -> Result<String, CtlError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(CtlError::Usage(format!(
            "{key} in {}: expected a string",
            file.unwrap_or("the config file")
        ))),
    }
}

/// The REST client's TLS settings from the file's `ctl` section, with `restapi.cafile` as
/// the CA when `ctl.cacert` is not set (as patronictl), read as a node reads them.
fn rest_tls(
    doc: Option<&Value>,
    file: Option<&str>,
) -> Result<crate::api::ClientOptions, CtlError> {
    let Some(doc) = doc else {
        return Ok(crate::api::ClientOptions::default());
    };
    let ctl: crate::config::Ctl = match doc.get("ctl") {
        None | Some(Value::Null) => Default::default(),
        Some(v) => serde_yaml::from_value(v.clone()).map_err(|e| {
            CtlError::Usage(format!("ctl in {}: {e}", file.unwrap_or("the config file")))
        })?,
    };
    let cafile = match doc.get("restapi").and_then(|r| r.get("cafile")) {
        None | Some(Value::Null) => None,
        Some(v) => Some(scalar(v, "restapi.cafile", file)?.into()),
    };
    Ok(crate::api::ClientOptions::tls_of(&ctl, cafile.as_ref()))
}

/// `etcd3` (preferred) or `etcd` from the file, each endpoint checked.
fn file_endpoints(doc: &Value, path: &str) -> Result<(crate::dcs::EtcdAccess, String), CtlError> {
    let (section, raw) = match (doc.get("etcd3"), doc.get("etcd")) {
        (Some(v), _) => ("etcd3", v),
        (None, Some(v)) => ("etcd", v),
        (None, None) => {
            return Err(CtlError::Usage(format!(
                "{path} has no etcd3 section: add `etcd3: {{hosts: [HOST:2379]}}`, or pass --dcs-url etcd3://HOST:PORT"
            )));
        }
    };
    let etcd: Etcd = serde_yaml::from_value(raw.clone()).map_err(|e| {
        CtlError::Usage(format!(
            "{section} in {path}: {e}; expected `{section}: {{hosts: [HOST:PORT, ...]}}`"
        ))
    })?;
    let access = etcd.access();
    let endpoints = &access.endpoints;
    if endpoints.is_empty() {
        return Err(CtlError::Usage(format!(
            "{section} in {path} lists no endpoint: set {section}.hosts: [HOST:PORT, ...]"
        )));
    }
    for ep in endpoints {
        check_endpoint(ep, &format!("{section}.hosts in {path}"))?;
    }
    Ok((access, format!("{section}.hosts in {path}")))
}

fn check_endpoint(ep: &str, from: &str) -> Result<(), CtlError> {
    if ep.contains("://") {
        return Err(CtlError::Usage(format!(
            "{from}: {ep:?} is a URL; write HOST:PORT (e.g. 10.0.0.1:2379)"
        )));
    }
    if split_host_port(ep).is_none() {
        return Err(CtlError::Usage(format!(
            "{from}: {ep:?} is not HOST:PORT (e.g. 10.0.0.1:2379)"
        )));
    }
    Ok(())
}

/// `etcd3://HOST[:PORT][,HOST[:PORT]...][/NAMESPACE]` → endpoints and the namespace, if given.
/// The scheme may be left out; `etcd://` is read as etcd v3 (Regent speaks only v3).
pub(crate) fn parse_dcs_url(url: &str) -> Result<(Vec<String>, Option<String>), CtlError> {
    let rest = match url.split_once("://") {
        Some(("etcd3" | "etcd", rest)) => rest,
        Some((scheme, _)) => {
            return Err(CtlError::Usage(format!(
                "--dcs-url {url}: regent ctl speaks etcd v3 only, not {scheme}; use etcd3://HOST:PORT[/NAMESPACE]"
            )));
        }
        None => url.trim_start_matches("//"),
    };
    let (hosts, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let mut endpoints = Vec::new();
    for h in hosts.split(',').map(str::trim) {
        let ep = if h.is_empty() {
            format!("localhost:{DEFAULT_ETCD_PORT}")
        } else if h.starts_with(':') {
            format!("localhost{h}")
        } else if split_host_port(h).is_some() {
            h.to_string()
        } else if h.contains(':') && !h.starts_with('[') {
            return Err(CtlError::Usage(format!(
                "--dcs-url {url}: {h:?} has no valid port; use etcd3://HOST:PORT"
            )));
        } else {
            format!("{h}:{DEFAULT_ETCD_PORT}")
        };
        check_endpoint(&ep, &format!("--dcs-url {url}"))?;
        endpoints.push(ep);
    }
    let namespace = path
        .map(str::trim)
        .filter(|p| !p.is_empty() && *p != "/")
        .map(str::to_string);
    Ok((endpoints, namespace))
}

fn credentials(
    src: &Sources,
    doc: Option<&Value>,
    file: Option<&str>,
) -> Result<Option<Credentials>, CtlError> {
    if src.username.is_some() || src.password.is_some() {
        return match (src.username, src.password) {
            (Some(u), Some(p)) => Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            })),
            _ => Err(CtlError::Usage(
                "--username and --password (REGENT_CTL_USERNAME, REGENT_CTL_PASSWORD) go together: give both".into(),
            )),
        };
    }
    let Some(doc) = doc else { return Ok(None) };
    for section in ["ctl", "restapi"] {
        let Some(auth) = doc.get(section).and_then(|s| s.get("authentication")) else {
            continue;
        };
        let get = |k: &str| {
            auth.get(k)
                .map(|v| scalar(v, &format!("{section}.authentication.{k}"), file))
                .transpose()
        };
        return match (get("username")?, get("password")?) {
            (Some(username), Some(password)) => Ok(Some(Credentials { username, password })),
            _ => Err(CtlError::Usage(format!(
                "{section}.authentication in {}: needs both username and password",
                file.unwrap_or("the config file")
            ))),
        };
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(yaml: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.yml");
        std::fs::write(&p, yaml).expect("write");
        (dir, p)
    }

    fn usage(e: CtlError) -> String {
        match e {
            CtlError::Usage(s) => s,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn patronictl_style_file() {
        let (_d, p) = file(
            "scope: batman\nnamespace: /db/\netcd3:\n  hosts: 10.0.0.1:2379, 10.0.0.2:2379\nrestapi:\n  authentication: {username: r, password: rp}\n",
        );
        let t = resolve(&Sources {
            config: Some(&p),
            ..Sources::default()
        })
        .expect("resolves");
        assert_eq!(t.scope, "batman");
        assert_eq!(t.prefix, "/db/batman/");
        assert_eq!(t.endpoints, vec!["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert!(t.endpoints_from.starts_with("etcd3.hosts in "));
        assert_eq!(t.auth.as_ref().map(|a| a.username.as_str()), Some("r"));
    }

    #[test]
    fn ctl_section_wins_and_flags_win_over_files() {
        let (_d, p) = file(
            "scope: s\netcd3: {host: 'h:1'}\nctl:\n  authentication: {username: c, password: cp}\nrestapi:\n  authentication: {username: r, password: rp}\n",
        );
        let src = Sources {
            config: Some(&p),
            ..Sources::default()
        };
        let t = resolve(&src).expect("resolves");
        assert_eq!(
            t.auth,
            Some(Credentials {
                username: "c".into(),
                password: "cp".into()
            })
        );
        let t = resolve(&Sources {
            username: Some("f"),
            password: Some("fp"),
            scope: Some("other"),
            dcs_url: Some("etcd3://e1:3000,e2/ns"),
            ..src
        })
        .expect("resolves");
        assert_eq!(t.auth.map(|a| a.username), Some("f".into()));
        assert_eq!(t.scope, "other");
        assert_eq!(t.prefix, "/ns/other/");
        assert_eq!(t.endpoints, vec!["e1:3000", "e2:2379"]);
        assert_eq!(t.endpoints_from, "--dcs-url etcd3://e1:3000,e2/ns");

        let e = usage(
            resolve(&Sources {
                username: Some("f"),
                ..src
            })
            .expect_err("password missing"),
        );
        assert!(e.contains("go together"), "{e}");
    }

    fn patroni_env(pairs: &[(&str, &str)]) -> EnvConfig {
        EnvConfig::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn patroni_variables_go_on_top_of_the_file() {
        let (_d, p) = file(
            "scope: from-file\nnamespace: /db/\nrestapi:\n  authentication: {username: r, password: rp}\n",
        );
        let env = patroni_env(&[
            ("PATRONI_ETCD3_HOSTS", "10.9.0.1:2379,10.9.0.2:2379"),
            ("PATRONI_SCOPE", "from-env"),
            ("PATRONI_RESTAPI_PASSWORD", "env-pw"),
        ]);
        let t = resolve(&Sources {
            config: Some(&p),
            env: Some(&env),
            ..Sources::default()
        })
        .expect("resolves");
        assert_eq!(t.scope, "from-env");
        assert_eq!(t.prefix, "/db/from-env/");
        assert_eq!(t.endpoints, vec!["10.9.0.1:2379", "10.9.0.2:2379"]);
        assert_eq!(
            t.auth,
            Some(Credentials {
                username: "r".into(),
                password: "env-pw".into()
            })
        );
        assert!(
            t.endpoints_from.ends_with("with the PATRONI_* variables"),
            "{}",
            t.endpoints_from
        );
    }

    #[test]
    fn patroni_variables_alone_find_the_cluster() {
        let env = patroni_env(&[
            ("PATRONI_ETCD3_HOSTS", "10.9.0.1:2379"),
            ("PATRONI_SCOPE", "s"),
            ("PATRONI_NAMESPACE", "/ns/"),
            ("PATRONI_CTL_USERNAME", "c"),
            ("PATRONI_CTL_PASSWORD", "cp"),
        ]);
        let t = resolve(&Sources {
            env: Some(&env),
            ..Sources::default()
        })
        .expect("resolves");
        assert_eq!(t.prefix, "/ns/s/");
        assert_eq!(t.endpoints, vec!["10.9.0.1:2379"]);
        assert_eq!(t.auth.map(|a| a.username), Some("c".into()));

        // PATRONI_CONFIGURATION without -c, as patronictl reads it.
        let env = patroni_env(&[(
            "PATRONI_CONFIGURATION",
            "scope: v\netcd3: {hosts: '10.9.0.3:2379'}\n",
        )]);
        let t = resolve(&Sources {
            env: Some(&env),
            ..Sources::default()
        })
        .expect("resolves");
        assert_eq!(
            (t.scope.as_str(), t.endpoints_from.as_str()),
            ("v", "etcd3.hosts in PATRONI_CONFIGURATION")
        );

        // A bad value is named.
        let env = patroni_env(&[("PATRONI_ETCD3_HOSTS", "[unclosed")]);
        let e = usage(
            resolve(&Sources {
                env: Some(&env),
                ..Sources::default()
            })
            .expect_err("bad list"),
        );
        assert!(e.contains("PATRONI_ETCD3_HOSTS"), "{e}");

        // Empty variables say nothing.
        let env = patroni_env(&[("PATRONI_SCOPE", "")]);
        let e = usage(
            resolve(&Sources {
                env: Some(&env),
                ..Sources::default()
            })
            .expect_err("nothing"),
        );
        assert!(e.contains("does not know where the cluster is"), "{e}");
    }

    #[test]
    fn patronictl_config_locations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let env = |pairs: &'static [(&'static str, &'static str)], home: &Path| {
            let home = home.display().to_string();
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
                    .or_else(|| (k == "HOME").then(|| home.clone()))
            }
        };
        // No file at the default path: none.
        assert_eq!(config_path(None, env(&[], &home)), None);
        let default = home.join(".config/patroni/patronictl.yaml");
        std::fs::create_dir_all(default.parent().expect("parent")).expect("mkdir");
        std::fs::write(&default, "scope: s\n").expect("write");
        assert_eq!(
            config_path(None, env(&[], &home)),
            Some((default.clone(), ConfigFrom::Default))
        );
        // XDG_CONFIG_HOME moves it; the variable and -c come first.
        assert_eq!(
            config_path(None, env(&[("XDG_CONFIG_HOME", "/nowhere")], &home)),
            None
        );
        assert_eq!(
            config_path(
                None,
                env(&[("PATRONICTL_CONFIG_FILE", "/etc/p.yml")], &home)
            ),
            Some((PathBuf::from("/etc/p.yml"), ConfigFrom::PatronictlVariable))
        );
        assert_eq!(
            config_path(
                Some(PathBuf::from("n.yml")),
                env(&[("PATRONICTL_CONFIG_FILE", "/etc/p.yml")], &home)
            ),
            Some((PathBuf::from("n.yml"), ConfigFrom::Flag))
        );
        // A missing file named by the variable is an error naming the variable.
        let missing = Path::new("/nonexistent/patronictl.yaml");
        let e = usage(
            resolve(&Sources {
                config: Some(missing),
                config_from: ConfigFrom::PatronictlVariable,
                ..Sources::default()
            })
            .expect_err("missing"),
        );
        assert!(e.contains("check PATRONICTL_CONFIG_FILE"), "{e}");
    }

    #[test]
    fn configured_scope_and_superuser() {
        let (_d, p) = file(
            "scope: demo\netcd3: {hosts: 'h:1'}\npostgresql:\n  authentication:\n    superuser: {username: postgres, password: pw}\n",
        );
        let src = Sources {
            config: Some(&p),
            ..Sources::default()
        };
        assert_eq!(
            configured_scope(&src).expect("reads"),
            Some("demo".to_string())
        );
        assert_eq!(
            configured_scope(&Sources {
                scope: Some("flag"),
                ..src
            })
            .expect("reads"),
            Some("flag".to_string())
        );
        assert_eq!(configured_scope(&Sources::default()).expect("none"), None);
        let t = resolve(&src).expect("resolves");
        assert_eq!(
            t.superuser,
            PgLogin {
                user: Some("postgres".into()),
                password: Some("pw".into())
            }
        );
        assert_eq!(t.namespace, "/service/");
        assert!(
            !format!("{:?}", t.superuser).contains("pw\""),
            "no password in Debug"
        );
    }

    #[test]
    fn dcs_urls() {
        assert_eq!(
            parse_dcs_url("etcd3://127.0.0.1:2379").expect("ok"),
            (vec!["127.0.0.1:2379".to_string()], None)
        );
        assert_eq!(
            parse_dcs_url("etcd3://:2399/custom").expect("ok"),
            (vec!["localhost:2399".to_string()], Some("/custom".into()))
        );
        assert_eq!(
            parse_dcs_url("myhost").expect("ok").0,
            vec!["myhost:2379".to_string()]
        );
        let e = usage(parse_dcs_url("consul://h:8500").expect_err("consul"));
        assert!(e.contains("etcd v3 only"), "{e}");
        let e = usage(parse_dcs_url("etcd3://h:port").expect_err("bad port"));
        assert!(e.contains("no valid port"), "{e}");
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = usage(resolve(&Sources::default()).expect_err("nothing given"));
        assert!(e.contains("-c FILE") && e.contains("--dcs-url"), "{e}");

        let e = usage(
            resolve(&Sources {
                dcs_url: Some("etcd3://h:1"),
                ..Sources::default()
            })
            .expect_err("no scope"),
        );
        assert!(e.contains("--scope NAME"), "{e}");

        let (_d, p) = file("scope: s\n");
        let e = usage(
            resolve(&Sources {
                config: Some(&p),
                ..Sources::default()
            })
            .expect_err("no etcd"),
        );
        assert!(e.contains("has no etcd3 section"), "{e}");

        let (_d, p) = file("scope: s\netcd3: {hosts: ['http://h:2379']}\n");
        let e = usage(
            resolve(&Sources {
                config: Some(&p),
                ..Sources::default()
            })
            .expect_err("URL"),
        );
        assert!(e.contains("is a URL; write HOST:PORT"), "{e}");

        let missing = Path::new("/nonexistent/regent.yml");
        let e = usage(
            resolve(&Sources {
                config: Some(missing),
                ..Sources::default()
            })
            .expect_err("missing file"),
        );
        assert!(e.contains("/nonexistent/regent.yml"), "{e}");
    }
}

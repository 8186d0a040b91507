//! Where the local configuration comes from, chosen as Patroni chooses: the path given (a file,
//! or a directory whose `*.yml`/`*.yaml` files are deep-merged in name order, later files
//! winning) with the `PATRONI_*` variables deep-merged on top (the environment wins); with no
//! path, or one that does not exist, the YAML text of `PATRONI_CONFIGURATION`; without that,
//! the variables alone.
//!
//! The choice is made once, at start ([`ConfigSource::choose`]), and [`ConfigSource::load`]
//! reads the same source again on every reload, with the variables captured at start (they are
//! gone from the process environment by then). Reads files, never writes; sees the environment
//! only through the captured [`EnvConfig`].

use super::from_env::{CONFIGURATION, EnvConfig, variable_for};
use super::parse::{finish, parse_document};
use super::{ConfigError, Loaded};
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the document is read from.
#[derive(Debug, Clone, PartialEq)]
enum Origin {
    /// A file or a directory, with the variables on top.
    Path(PathBuf),
    /// `PATRONI_CONFIGURATION`, alone.
    Variable,
    /// The `PATRONI_*` variables alone.
    Environment,
}

/// Where the configuration is read from: the source chosen at start and the variables
/// captured then.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    origin: Origin,
    env: EnvConfig,
    /// The path given that does not exist (so the variables are read instead).
    missing: Option<PathBuf>,
}

/// One merged YAML document, before deserialization.
pub(crate) struct Document {
    /// The document (a mapping).
    pub(crate) value: Value,
    /// Where it came from in the end (`PATRONI_CONFIGURATION` that is empty means the variables).
    origin: Origin,
    /// The one text it was read from, for positions in errors; `None` when merged from several.
    text: Option<String>,
    /// The keys set by environment variables: dotted key path → variable.
    origins: BTreeMap<String, String>,
    /// Warnings about the sources (a missing path, variables `PATRONI_CONFIGURATION` overrides).
    warnings: Vec<String>,
}

impl ConfigSource {
    /// Choose where to read: `path` when given and present (a file or a directory), else
    /// `PATRONI_CONFIGURATION`, else the variables in `env`. Fails when nothing says anything:
    /// no path (or a missing one) and no variable.
    pub fn choose(path: Option<&Path>, env: EnvConfig) -> Result<ConfigSource, ConfigError> {
        let mut missing = None;
        if let Some(p) = path {
            match std::fs::metadata(p) {
                Ok(_) => {
                    return Ok(ConfigSource {
                        origin: Origin::Path(p.to_path_buf()),
                        env,
                        missing,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !env.is_empty() => {
                    missing = Some(p.to_path_buf());
                }
                Err(error) => {
                    return Err(ConfigError::Io {
                        path: p.to_path_buf(),
                        error,
                    });
                }
            }
        }
        let origin = if env.configuration.is_some() {
            Origin::Variable
        } else if env.is_empty() {
            return Err(ConfigError::NoSource);
        } else {
            Origin::Environment
        };
        Ok(ConfigSource {
            origin,
            env,
            missing,
        })
    }

    /// Why the variables are read: no path was given, or it does not exist.
    fn why_variables(&self) -> String {
        match &self.missing {
            Some(p) => format!("config path {} does not exist", p.display()),
            None => "no config file was given".to_string(),
        }
    }

    /// Read the sources and merge them into one document (not checked further: `regent ctl`
    /// reads it loosely).
    pub(crate) fn document(&self) -> Result<Document, ConfigError> {
        let mut warnings = Vec::new();
        if self.missing.is_some() {
            let instead = match self.origin {
                Origin::Variable => CONFIGURATION,
                _ => "the PATRONI_* environment variables",
            };
            warnings.push(format!(
                "{}: reading {instead} instead, as Patroni does",
                self.why_variables()
            ));
        }
        match &self.origin {
            Origin::Path(path) => {
                let (mut value, text) = read_path(path, &mut warnings)?;
                if let Some(p) = self.env.problems.first() {
                    return Err(p.to_error());
                }
                deep_merge(&mut value, Value::Mapping(self.env.value.clone()));
                Ok(Document {
                    value,
                    origin: self.origin.clone(),
                    text,
                    origins: self.env.origins.clone(),
                    warnings,
                })
            }
            Origin::Variable => {
                let text = self.env.configuration.as_deref().unwrap_or_default();
                // An empty document falls back to the variables, as in Patroni.
                let empty = match serde_yaml::from_str::<Value>(text) {
                    Ok(Value::Null) => true,
                    Ok(Value::Mapping(m)) => m.is_empty(),
                    _ => false,
                };
                if empty {
                    return self.variables_alone(warnings);
                }
                let value = parse_document(text).map_err(|e| in_place(CONFIGURATION, e))?;
                let ignored = self.env.used_vars();
                if !ignored.is_empty() {
                    warnings.push(format!(
                        "{} ignored: {CONFIGURATION} is the whole configuration when no config file is given (as in Patroni); put these settings in it",
                        ignored.join(", ")
                    ));
                }
                Ok(Document {
                    value,
                    origin: Origin::Variable,
                    text: Some(text.to_string()),
                    origins: BTreeMap::new(),
                    warnings,
                })
            }
            Origin::Environment => self.variables_alone(warnings),
        }
    }

    fn variables_alone(&self, warnings: Vec<String>) -> Result<Document, ConfigError> {
        if let Some(p) = self.env.problems.first() {
            return Err(p.to_error());
        }
        Ok(Document {
            value: Value::Mapping(self.env.value.clone()),
            origin: Origin::Environment,
            text: None,
            origins: self.env.origins.clone(),
            warnings,
        })
    }

    /// Read, merge, parse and validate (no environment checks; see
    /// [`check_environment`](super::check_environment)). The warnings start with those about
    /// the sources.
    pub fn load(&self) -> Result<Loaded, ConfigError> {
        let doc = self.document()?;
        let loaded = finish(doc.value, doc.text.as_deref(), &doc.origins);
        let mut loaded = match (loaded, &doc.origin) {
            (Ok(l), _) => l,
            (Err(e), Origin::Path(_)) => return Err(e),
            (Err(e), Origin::Variable) if self.missing.is_some() => {
                return Err(in_place(
                    format!("{CONFIGURATION} ({})", self.why_variables()),
                    e,
                ));
            }
            (Err(e), Origin::Variable) => return Err(in_place(CONFIGURATION, e)),
            (Err(e), Origin::Environment) => {
                return Err(missing_variable(e, &self.why_variables()));
            }
        };
        let mut warnings = doc.warnings;
        warnings.append(&mut loaded.warnings);
        loaded.warnings = warnings;
        Ok(loaded)
    }
}

impl fmt::Display for ConfigSource {
    /// The source as named in messages: the path, `PATRONI_CONFIGURATION`, or the variables.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::Path(p) if self.env.value.is_empty() => write!(f, "{}", p.display()),
            Origin::Path(p) => write!(f, "{} with the PATRONI_* variables", p.display()),
            Origin::Variable => f.write_str(CONFIGURATION),
            Origin::Environment => f.write_str("the PATRONI_* environment variables"),
        }
    }
}

/// Read, parse and validate the config file or directory at `path`, without the environment
/// (no environment checks either; see [`check_environment`](super::check_environment)).
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    ConfigSource::choose(Some(path), EnvConfig::default())?.load()
}

fn in_place(place: impl fmt::Display, e: ConfigError) -> ConfigError {
    ConfigError::In {
        place: place.to_string(),
        inner: Box::new(e),
    }
}

/// In a configuration made of variables alone, a missing key is fixed by setting its variable.
fn missing_variable(e: ConfigError, why: &str) -> ConfigError {
    match e {
        ConfigError::Missing { key, example } => match variable_for(&key) {
            Some(var) => ConfigError::Missing {
                key,
                example: format!(
                    "{var} to the environment (the configuration comes from the PATRONI_* variables alone: {why})"
                ),
            },
            None => ConfigError::Missing { key, example },
        },
        other => other,
    }
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_path_buf(),
        error,
    })
}

/// The document at `path`: the file, or the directory's `*.yml`/`*.yaml` files merged in name
/// order; with the text when it is a single file.
fn read_path(
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<(Value, Option<String>), ConfigError> {
    let io = |error| ConfigError::Io {
        path: path.to_path_buf(),
        error,
    };
    if !std::fs::metadata(path).map_err(io)?.is_dir() {
        let text = read_text(path)?;
        let value = parse_document(&text)?;
        return Ok((value, Some(text)));
    }
    let files = yaml_files(path)?;
    if files.is_empty() {
        warnings.push(format!(
            "config directory {} holds no *.yml or *.yaml file",
            path.display()
        ));
    }
    let mut merged = Value::Mapping(Mapping::new());
    for file in files {
        let text = read_text(&file)?;
        let value = parse_document(&text).map_err(|e| in_place(file.display(), e))?;
        deep_merge(&mut merged, value);
    }
    Ok((merged, None))
}

/// The regular files (or links to them) named `*.yml` or `*.yaml` in `dir`, sorted by name.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let io = |error| ConfigError::Io {
        path: dir.to_path_buf(),
        error,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let yaml = name
            .to_str()
            .is_some_and(|n| n.ends_with(".yml") || n.ends_with(".yaml"));
        let path = entry.path();
        // `metadata` follows links, as Patroni's check does.
        if yaml && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Merge `overlay` into `base`: mappings key by key, recursively; a null in `overlay` removes
/// the key; anything else in `overlay` replaces what `base` has (lists are not concatenated).
fn deep_merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(&k);
                    continue;
                }
                match b.get_mut(&k) {
                    Some(existing) if existing.is_mapping() && v.is_mapping() => {
                        deep_merge(existing, v)
                    }
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    fn env(pairs: &[(&str, &str)]) -> EnvConfig {
        EnvConfig::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn yaml(s: &str) -> Value {
        serde_yaml::from_str(s).expect("test YAML")
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    fn load_with(path: Option<&Path>, e: EnvConfig) -> Result<Loaded, ConfigError> {
        ConfigSource::choose(path, e)?.load()
    }

    #[test]
    fn deep_merge_recurses_replaces_and_deletes() {
        let mut base = yaml("{a: {b: 1, c: [1, 2], d: {e: 1}}, f: x, g: keep}");
        deep_merge(
            &mut base,
            yaml("{a: {b: 2, c: [3], d: {h: 2}}, f: {now: map}, g: ~, new: 1}"),
        );
        assert_eq!(
            base,
            yaml("{a: {b: 2, c: [3], d: {e: 1, h: 2}}, f: {now: map}, new: 1}")
        );
        // A scalar over a mapping replaces it.
        let mut base = yaml("{a: {b: 1}}");
        deep_merge(&mut base, yaml("{a: 5}"));
        assert_eq!(base, yaml("{a: 5}"));
    }

    #[test]
    fn environment_wins_over_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "p.yml", &edited(&[("etcd3", None)]));
        let l = load_with(
            Some(&file),
            env(&[
                ("PATRONI_NAME", "from-env"),
                ("PATRONI_ETCD3_HOSTS", "10.1.0.1:2379,10.1.0.2:2379"),
                ("PATRONI_SUPERUSER_PASSWORD", "env-secret"),
                ("PATRONI_RESTAPI_ALLOWLIST_INCLUDE_MEMBERS", "on"),
            ]),
        )
        .expect("valid with etcd3 from the environment");
        let c = &l.config;
        assert_eq!(c.name, "from-env");
        assert_eq!(c.scope, "batman", "the file's keys stay");
        assert_eq!(c.etcd_endpoints(), vec!["10.1.0.1:2379", "10.1.0.2:2379"]);
        assert_eq!(
            c.postgresql.authentication.superuser.password.as_deref(),
            Some("env-secret")
        );
        assert_eq!(
            c.postgresql.authentication.superuser.username, "postgres",
            "merged key by key, not replaced"
        );
        assert!(c.restapi.allowlist_include_members);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);

        // Without the variables the same file lacks etcd3.
        let e = load(&file).expect_err("no etcd3");
        assert!(
            matches!(&e, ConfigError::Missing { key, .. } if key == "etcd3"),
            "{e}"
        );
    }

    #[test]
    fn directory_files_merge_in_name_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "10-base.yml", FIXTURE);
        write(
            dir.path(),
            "20-name.yaml",
            "name: second\ntags: {zone: eu-2}\n",
        );
        write(dir.path(), "30-name.yml", "name: third\n");
        write(dir.path(), "README", "name: not-yaml-by-name\n");
        write(dir.path(), "99-notes.txt", "name: txt\n");
        std::fs::create_dir(dir.path().join("50-dir.yml")).expect("mkdir");
        let l = load(dir.path()).expect("valid");
        assert_eq!(l.config.name, "third");
        assert_eq!(l.config.tags.other.get("zone"), Some(&Value::from("eu-2")));
        assert_eq!(l.config.scope, "batman");

        // Name order, not creation order: a file created last but named first loses.
        write(
            dir.path(),
            "00-first.yml",
            "name: zeroth\nscope: other\ntags: {rack: r0}\n",
        );
        let l = load(dir.path()).expect("valid");
        assert_eq!(
            (l.config.name.as_str(), l.config.scope.as_str()),
            ("third", "batman")
        );
        assert_eq!(
            l.config.tags.other.get("rack"),
            Some(&Value::from("r0")),
            "what no later file sets stays"
        );

        // And the variables win over every file.
        let l = load_with(Some(dir.path()), env(&[("PATRONI_NAME", "env")])).expect("valid");
        assert_eq!(l.config.name, "env");
    }

    #[test]
    fn a_bad_file_in_a_directory_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "10-base.yml", FIXTURE);
        let bad = write(dir.path(), "20-bad.yml", "name: [unclosed\n");
        let e = load(dir.path()).expect_err("bad YAML");
        assert!(
            matches!(&e, ConfigError::In { place, inner } if *place == bad.display().to_string() && matches!(**inner, ConfigError::Syntax { .. })),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("{}: config is not valid YAML", bad.display()))
        );

        write(dir.path(), "20-bad.yml", "- a list\n");
        let e = load(dir.path()).expect_err("not a mapping");
        assert!(e.to_string().contains("20-bad.yml: (top level)"), "{e}");

        let empty = tempfile::tempdir().expect("tempdir");
        let e = load(empty.path()).expect_err("nothing in it");
        assert!(
            matches!(&e, ConfigError::Missing { key, .. } if key == "scope"),
            "{e}"
        );
    }

    #[test]
    fn patroni_configuration_only_without_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "p.yml", FIXTURE);
        let text = edited(&[("name", Some("from-variable"))]);
        let vars = || {
            env(&[
                ("PATRONI_CONFIGURATION", &text),
                ("PATRONI_SCOPE", "env-scope"),
            ])
        };

        let l = load_with(Some(&file), vars()).expect("file");
        assert_eq!(l.config.name, "postgresql0", "the file, not the variable");
        assert_eq!(l.config.scope, "env-scope", "with the variables on top");

        let l = load_with(None, vars()).expect("variable");
        assert_eq!(l.config.name, "from-variable");
        assert_eq!(
            l.config.scope, "batman",
            "no variables on top of it, as in Patroni"
        );
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(
            l.warnings[0].starts_with(
                "PATRONI_SCOPE ignored: PATRONI_CONFIGURATION is the whole configuration"
            ),
            "{:?}",
            l.warnings
        );
        let src = ConfigSource::choose(None, vars()).expect("chosen");
        assert_eq!(src.to_string(), "PATRONI_CONFIGURATION");

        // A path that does not exist: the variable, with a warning (Patroni's rule).
        let missing = dir.path().join("nope.yml");
        let l = load_with(Some(&missing), vars()).expect("variable");
        assert_eq!(l.config.name, "from-variable");
        assert!(
            l.warnings[0]
                .contains("nope.yml does not exist: reading PATRONI_CONFIGURATION instead"),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn bad_patroni_configuration_names_the_variable() {
        let e = load_with(
            None,
            env(&[("PATRONI_CONFIGURATION", "scope: a\nname: [oops\n")]),
        )
        .expect_err("bad YAML");
        let s = e.to_string();
        assert!(
            s.starts_with("PATRONI_CONFIGURATION: config is not valid YAML (at line"),
            "{s}"
        );
        let e = load_with(None, env(&[("PATRONI_CONFIGURATION", "just text")]))
            .expect_err("not a mapping");
        assert!(
            e.to_string()
                .starts_with("PATRONI_CONFIGURATION: (top level)"),
            "{e}"
        );
        let text = edited(&[("bootstrap.dcs.ttl", Some("ten"))]);
        let e = load_with(None, env(&[("PATRONI_CONFIGURATION", &text)])).expect_err("ttl");
        let s = e.to_string();
        assert!(
            s.starts_with("PATRONI_CONFIGURATION: bootstrap.dcs.ttl: "),
            "{s}"
        );
        assert!(
            s.contains("(at line"),
            "positions are in the variable's text: {s}"
        );
    }

    #[test]
    fn the_environment_alone() {
        let full = env(&[
            ("PATRONI_SCOPE", "envonly"),
            ("PATRONI_NAME", "n1"),
            ("PATRONI_RESTAPI_LISTEN", "127.0.0.1:8008"),
            ("PATRONI_ETCD3_HOSTS", "127.0.0.1:2379"),
            ("PATRONI_POSTGRESQL_LISTEN", "127.0.0.1:5432"),
            ("PATRONI_POSTGRESQL_DATA_DIR", "/var/lib/postgresql/data"),
            ("PATRONI_SUPERUSER_USERNAME", "postgres"),
            ("PATRONI_REPLICATION_USERNAME", "replicator"),
            ("PATRONI_LOG_LEVEL", "DEBUG"),
        ]);
        let src = ConfigSource::choose(None, full.clone()).expect("chosen");
        assert_eq!(src.to_string(), "the PATRONI_* environment variables");
        let l = src.load().expect("valid");
        assert_eq!(l.config.scope, "envonly");
        assert_eq!(l.config.etcd_endpoints(), vec!["127.0.0.1:2379"]);
        assert_eq!(
            l.warnings,
            vec!["log (from PATRONI_LOG_LEVEL): Patroni key not supported by Regent yet, ignored"]
        );

        let partial = env(&[("PATRONI_NAME", "n1")]);
        let e = load_with(None, partial).expect_err("no scope");
        assert_eq!(
            e.to_string(),
            "scope: required key is missing; add PATRONI_SCOPE to the environment (the configuration comes from the PATRONI_* variables alone: no config file was given)"
        );

        let e = load_with(None, EnvConfig::default()).expect_err("nothing");
        assert!(matches!(e, ConfigError::NoSource), "{e:?}");
        assert!(e.to_string().contains("PATRONI_CONFIGURATION"), "{e}");

        // An empty PATRONI_CONFIGURATION document means the variables, as in Patroni.
        let mut with_empty: Vec<(String, String)> =
            vec![("PATRONI_CONFIGURATION".into(), "{}".into())];
        with_empty.push(("PATRONI_SCOPE".into(), "s".into()));
        let e = load_with(None, EnvConfig::from_vars(with_empty)).expect_err("no name");
        assert!(e.to_string().contains("PATRONI_NAME"), "{e}");
    }

    #[test]
    fn a_missing_path_without_variables_is_an_io_error() {
        let missing = Path::new("/nonexistent/regent.yml");
        let e = load(missing).expect_err("missing");
        assert!(
            matches!(&e, ConfigError::Io { path, .. } if path == missing),
            "{e:?}"
        );
        let l = load_with(Some(missing), env(&[("PATRONI_CONFIGURATION", FIXTURE)]))
            .expect("falls back");
        assert_eq!(l.config.name, "postgresql0");
        let e = load_with(Some(missing), env(&[("PATRONI_NAME", "n")])).expect_err("no scope");
        assert!(
            e.to_string().ends_with(
                "add PATRONI_SCOPE to the environment (the configuration comes from the PATRONI_* variables alone: config path /nonexistent/regent.yml does not exist)"
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_values_and_wrong_types_name_the_variable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "p.yml", FIXTURE);
        let e = load_with(Some(&file), env(&[("PATRONI_CTL_INSECURE", "maybe")]))
            .expect_err("bad boolean");
        assert!(
            e.to_string()
                .starts_with("environment variable PATRONI_CTL_INSECURE: "),
            "{e}"
        );

        let e = load_with(
            Some(&file),
            env(&[("PATRONI_RESTAPI_ALLOWLIST", "[{a: b}]")]),
        )
        .expect_err("not strings");
        let ConfigError::WrongType { key, at, .. } = &e else {
            panic!("expected WrongType, got {e:?}");
        };
        assert_eq!(key, "restapi.allowlist[0] (from PATRONI_RESTAPI_ALLOWLIST)");
        assert_eq!(
            *at, None,
            "no position in the file for a value from the environment"
        );

        let e = load_with(
            Some(&file),
            env(&[("PATRONI_ETCD3_HOSTS", "10.0.0.1:2379,10.0.0.2")]),
        )
        .expect_err("no port");
        let s = e.to_string();
        assert!(s.starts_with("etcd3.hosts"), "{s}");
        assert!(s.contains("(from PATRONI_ETCD3_HOSTS)"), "{s}");
    }

    #[test]
    fn warnings_name_the_variables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "p.yml", FIXTURE);
        let l = load_with(
            Some(&file),
            env(&[
                ("PATRONI_RESTAPI_CIPHERS", "HIGH"),
                ("PATRONI_FOO_HOST", "x"),
                ("PATRONI_ETCD3_PORT", "2379"),
            ]),
        )
        .expect("valid");
        for w in [
            "restapi.ciphers (from PATRONI_RESTAPI_CIPHERS): Patroni key not supported by Regent yet, ignored",
            "unknown key etcd3.port (from PATRONI_ETCD3_PORT) ignored (Regent does not use it; unset the variable)",
            "unknown key foo (from PATRONI_FOO_HOST) ignored (Regent does not use it; unset the variable)",
        ] {
            assert!(l.warnings.iter().any(|x| x == w), "{w}\n{:?}", l.warnings);
        }
        assert_eq!(l.warnings.len(), 3, "{:?}", l.warnings);
    }

    #[test]
    fn a_reload_reads_the_file_again_with_the_captured_variables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "p.yml", FIXTURE);
        let src = ConfigSource::choose(Some(&file), env(&[("PATRONI_NAME", "env-name")]))
            .expect("chosen");
        assert_eq!(src.load().expect("valid").config.name, "env-name");
        write(
            dir.path(),
            "p.yml",
            &edited(&[("name", Some("edited")), ("tags.rack", Some("r9"))]),
        );
        let again = src.load().expect("valid");
        assert_eq!(
            again.config.tags.other.get("rack"),
            Some(&Value::from("r9"))
        );
        assert_eq!(again.config.name, "env-name", "the variables still win");
    }

    #[test]
    fn display_names_the_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "p.yml", FIXTURE);
        let plain = ConfigSource::choose(Some(&file), EnvConfig::default()).expect("file");
        assert_eq!(plain.to_string(), file.display().to_string());
        let with = ConfigSource::choose(Some(&file), env(&[("PATRONI_NAME", "x")])).expect("file");
        assert_eq!(
            with.to_string(),
            format!("{} with the PATRONI_* variables", file.display())
        );
    }

    #[test]
    fn load_reads_a_file_or_names_it_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("regent.yml");
        std::fs::write(&path, FIXTURE).expect("write");
        let l = load(&path).expect("loads");
        assert_eq!(l.config.name, "postgresql0");

        let missing = dir.path().join("nope.yml");
        let e = load(&missing).expect_err("no file");
        assert!(matches!(&e, ConfigError::Io { path, .. } if *path == missing));
        let s = e.to_string();
        assert!(
            s.contains(&missing.display().to_string()) && s.contains("os error"),
            "{s}"
        );
    }
}

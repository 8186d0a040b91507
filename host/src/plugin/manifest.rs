//! Policy manifests: `policies/NAME.toml`.
//!
//! ```toml
//! name = "zone-aware"                       # must equal the file name (NAME.toml)
//! component = "zone-aware.wasm"             # relative to this file
//! hooks = ["rank-candidates", "check-health"]  # optional: a subset of what the policy describes
//! capabilities = ["sql-probe"]              # optional
//! deadline_ms = 50                          # optional, per call; must fit the lease (budget.rs)
//! memory_mb = 32                            # optional, per instance
//!
//! [settings]                                # handed to `configure` as JSON
//! prefer_zone = "eu-1"
//!
//! [[probes]]                                # run before `check-health` (needs `sql-probe`)
//! name = "replication"
//! sql = "select count(*) from pg_stat_replication"
//! timeout_ms = 500
//! ```

use super::{DEFAULT_DEADLINE, DEFAULT_MEMORY_MB, DEFAULT_PROBE_TIMEOUT, PolicyError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A hook of the `policy` world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Hook {
    RankCandidates,
    CheckHealth,
    OnEvent,
}

impl Hook {
    pub(crate) const ALL: [Hook; 3] = [Hook::RankCandidates, Hook::CheckHealth, Hook::OnEvent];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Hook::RankCandidates => "rank-candidates",
            Hook::CheckHealth => "check-health",
            Hook::OnEvent => "on-event",
        }
    }

    fn parse(s: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.as_str() == s)
    }
}

/// A host capability a policy may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Capability {
    SqlProbe,
}

/// A SQL probe run before `check-health`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Probe {
    pub(crate) name: String,
    pub(crate) sql: String,
    pub(crate) timeout: Duration,
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Manifest {
    /// The manifest file; `None` for a bare component loaded by `regent policy check`.
    pub(crate) path: Option<PathBuf>,
    pub(crate) name: String,
    /// The component, resolved against the manifest's directory.
    pub(crate) component: PathBuf,
    /// `None`: every hook the policy describes.
    pub(crate) hooks: Option<Vec<Hook>>,
    pub(crate) capabilities: Vec<Capability>,
    /// The `[settings]` table as JSON (an empty object when absent).
    pub(crate) settings: serde_json::Value,
    pub(crate) probes: Vec<Probe>,
    pub(crate) deadline: Duration,
    pub(crate) memory_mb: u64,
    /// The manifest text, to tell whether a reload changed anything.
    #[serde(skip)]
    pub(crate) source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Option<String>,
    component: Option<String>,
    hooks: Option<Vec<String>>,
    capabilities: Option<Vec<String>>,
    settings: Option<toml::Table>,
    probes: Option<Vec<RawProbe>>,
    deadline_ms: Option<i64>,
    memory_mb: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    name: Option<String>,
    sql: Option<String>,
    timeout_ms: Option<i64>,
}

const MAX_DEADLINE_MS: i64 = 10_000;
const MAX_MEMORY_MB: i64 = 4096;

fn err(path: &Path, key: &str, problem: impl Into<String>, fix: impl Into<String>) -> PolicyError {
    PolicyError::Manifest {
        path: path.to_path_buf(),
        key: key.to_string(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `text` with its `component` set to `file`: a pushed manifest names the component a node
/// writes beside it, never a path of the pusher's (nor one a node would read outside its own
/// directory).
pub(crate) fn with_component(text: &str, file: &str) -> Result<String, String> {
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| format!("invalid TOML: {}", e.message().trim()))?;
    table.insert("component".into(), toml::Value::String(file.into()));
    toml::to_string(&table).map_err(|e| format!("cannot write the manifest back: {e}"))
}

impl Manifest {
    /// Read and validate a manifest file.
    pub(crate) fn load(path: &Path) -> Result<Manifest, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Io {
            path: path.to_path_buf(),
            message: format!("cannot read the policy manifest: {e}"),
        })?;
        Manifest::parse(path, &text)
    }

    /// Validate manifest text; `path` names the file in errors and anchors `component`.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Manifest, PolicyError> {
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let (key, fix) = toml_error_hint(&e, text);
            let at = e
                .span()
                .map(|s| {
                    format!(
                        " at line {}",
                        text.as_bytes()[..s.start.min(text.len())]
                            .iter()
                            .filter(|&&b| b == b'\n')
                            .count()
                            + 1
                    )
                })
                .unwrap_or_default();
            err(
                path,
                &key,
                format!("invalid TOML{at}: {}", e.message().trim()),
                fix,
            )
        })?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let name = raw.name.ok_or_else(|| {
            err(
                path,
                "name",
                "missing",
                format!("add `name = \"{stem}\"` (the file name without .toml)"),
            )
        })?;
        if !valid_name(&name) {
            return Err(err(
                path,
                "name",
                format!("{name:?} is not a valid policy name"),
                "use 1-64 lowercase letters, digits, `-` or `_`",
            ));
        }
        if name != stem {
            return Err(err(
                path,
                "name",
                format!("is {name:?} but the file is {stem}.toml"),
                format!("rename the file to {name}.toml or set `name = \"{stem}\"`"),
            ));
        }
        let component = raw.component.ok_or_else(|| {
            err(
                path,
                "component",
                "missing",
                format!("add `component = \"{name}.wasm\"` (a path relative to the manifest)"),
            )
        })?;
        if component.trim().is_empty() {
            return Err(err(
                path,
                "component",
                "is empty",
                "name the .wasm file, relative to the manifest",
            ));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let component = base.join(component);

        let hooks = match raw.hooks {
            None => None,
            Some(list) => {
                let mut hooks = Vec::new();
                for h in &list {
                    let hook = Hook::parse(h).ok_or_else(|| {
                        err(
                            path,
                            "hooks",
                            format!("unknown hook {h:?}"),
                            "use rank-candidates, check-health and/or on-event",
                        )
                    })?;
                    if hooks.contains(&hook) {
                        return Err(err(
                            path,
                            "hooks",
                            format!("{h:?} is listed twice"),
                            "list each hook once",
                        ));
                    }
                    hooks.push(hook);
                }
                Some(hooks)
            }
        };

        let mut capabilities = Vec::new();
        for c in raw.capabilities.unwrap_or_default() {
            match c.as_str() {
                "sql-probe" => {
                    if !capabilities.contains(&Capability::SqlProbe) {
                        capabilities.push(Capability::SqlProbe)
                    }
                }
                other => {
                    return Err(err(
                        path,
                        "capabilities",
                        format!("unknown capability {other:?}"),
                        "the only capability is \"sql-probe\"",
                    ));
                }
            }
        }

        let mut probes = Vec::new();
        for (i, p) in raw.probes.unwrap_or_default().into_iter().enumerate() {
            let key = format!("probes[{i}]");
            let pname = p.name.ok_or_else(|| {
                err(
                    path,
                    &format!("{key}.name"),
                    "missing",
                    "give every probe a name",
                )
            })?;
            if !valid_name(&pname) {
                return Err(err(
                    path,
                    &format!("{key}.name"),
                    format!("{pname:?} is not a valid probe name"),
                    "use lowercase letters, digits, `-` or `_`",
                ));
            }
            if probes.iter().any(|q: &Probe| q.name == pname) {
                return Err(err(
                    path,
                    &format!("{key}.name"),
                    format!("probe {pname:?} is defined twice"),
                    "give each probe its own name",
                ));
            }
            let sql = p.sql.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
                err(
                    path,
                    &format!("{key}.sql"),
                    "missing or empty",
                    "give the read-only statement to run",
                )
            })?;
            let timeout = match p.timeout_ms {
                None => DEFAULT_PROBE_TIMEOUT,
                Some(ms) if (1..=60_000).contains(&ms) => Duration::from_millis(ms as u64),
                Some(ms) => {
                    return Err(err(
                        path,
                        &format!("{key}.timeout_ms"),
                        format!("{ms} is out of range"),
                        "use 1 to 60000 milliseconds",
                    ));
                }
            };
            probes.push(Probe {
                name: pname,
                sql,
                timeout,
            });
        }
        if !probes.is_empty() && !capabilities.contains(&Capability::SqlProbe) {
            return Err(err(
                path,
                "probes",
                "probes need the sql-probe capability",
                "add `capabilities = [\"sql-probe\"]` or remove the [[probes]]",
            ));
        }

        let deadline = match raw.deadline_ms {
            None => DEFAULT_DEADLINE,
            Some(ms) if (1..=MAX_DEADLINE_MS).contains(&ms) => Duration::from_millis(ms as u64),
            Some(ms) => {
                return Err(err(
                    path,
                    "deadline_ms",
                    format!("{ms} is out of range"),
                    format!("use 1 to {MAX_DEADLINE_MS} milliseconds (default 50)"),
                ));
            }
        };
        let memory_mb = match raw.memory_mb {
            None => DEFAULT_MEMORY_MB,
            Some(mb) if (1..=MAX_MEMORY_MB).contains(&mb) => mb as u64,
            Some(mb) => {
                return Err(err(
                    path,
                    "memory_mb",
                    format!("{mb} is out of range"),
                    format!("use 1 to {MAX_MEMORY_MB} MiB (default 32)"),
                ));
            }
        };
        let settings = match raw.settings {
            None => serde_json::Value::Object(Default::default()),
            Some(t) => toml_to_json(toml::Value::Table(t)),
        };
        Ok(Manifest {
            path: Some(path.to_path_buf()),
            name,
            component,
            hooks,
            capabilities,
            settings,
            probes,
            deadline,
            memory_mb,
            source: text.to_string(),
        })
    }

    /// A manifest for a bare component: every hook, no settings, no capabilities.
    pub(crate) fn for_component(path: &Path) -> Manifest {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("policy")
            .to_string();
        Manifest {
            path: None,
            name: stem,
            component: path.to_path_buf(),
            hooks: None,
            capabilities: Vec::new(),
            settings: serde_json::Value::Object(Default::default()),
            probes: Vec::new(),
            deadline: DEFAULT_DEADLINE,
            memory_mb: DEFAULT_MEMORY_MB,
            source: String::new(),
        }
    }

    pub(crate) fn grants(&self, c: Capability) -> bool {
        self.capabilities.contains(&c)
    }

    /// The file errors should name: the manifest, or the component when there is none.
    pub(crate) fn file(&self) -> &Path {
        self.path.as_deref().unwrap_or(&self.component)
    }
}

/// Which key a TOML error is about, and a fix.
fn toml_error_hint(e: &toml::de::Error, text: &str) -> (String, String) {
    let msg = e.message();
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some(end) = rest.find('`')
    {
        return (
            rest[..end].to_string(),
            "remove it; valid keys are name, component, hooks, capabilities, settings, probes, \
             deadline_ms, memory_mb (and name, sql, timeout_ms in [[probes]])"
                .into(),
        );
    }
    if let Some(rest) = msg.strip_prefix("missing field `")
        && let Some(end) = rest.find('`')
    {
        return (rest[..end].to_string(), "add it".into());
    }
    // The key is the one on the line the error points at.
    let key = e
        .span()
        .and_then(|span| {
            let start = span.start.min(text.len());
            let line_start = text.get(..start)?.rfind('\n').map(|i| i + 1).unwrap_or(0);
            let line = text.get(line_start..)?.lines().next()?;
            let (k, _) = line.split_once('=')?;
            let k = k.trim().trim_matches('"');
            (!k.is_empty() && !k.starts_with('[')).then(|| k.to_string())
        })
        .unwrap_or_else(|| "(syntax)".into());
    let fix = match msg.split_once("expected ") {
        Some((_, expected)) if msg.starts_with("invalid type") => format!("give {expected}"),
        _ => "fix the TOML at the position shown".into(),
    };
    (key, fix)
}

fn toml_to_json(v: toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(J::Number)
            .unwrap_or(J::Null),
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            J::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

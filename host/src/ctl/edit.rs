//! `edit-config`: turn `-s path=value`, `-p guc=value`, `--apply FILE`, `--replace FILE` or an
//! editor session into a new dynamic configuration, show the change as a unified diff, and
//! refuse a configuration the nodes could not use. The caller writes it with a CAS on the
//! `config` key's mod_revision.
//!
//! Values are YAML, read as patronictl reads them: `-s synchronous_mode=on` stores `true`
//! (YAML 1.1 booleans: yes/no/on/off/true/false in any of their usual spellings), `-s ttl=`
//! (an empty value) deletes the key. Paths are dotted, except under `postgresql.parameters`,
//! where the rest of the path is one parameter name (`-p pg_stat_statements.max=1000`).

use super::CtlError;
use crate::config::{DynamicChange, TimingFit, check_dynamic_change};
use serde_json::{Map, Value};
use std::io::Read;

/// The configuration as YAML, keys sorted (as `show-config` prints it).
pub(crate) fn to_yaml(v: &Value) -> String {
    match v {
        Value::Object(m) if m.is_empty() => "{}\n".into(),
        _ => serde_yaml::to_string(v).unwrap_or_else(|_| format!("{v}\n")),
    }
}

/// A `-s`/`-p` value: YAML, with YAML 1.1 booleans; empty means "delete".
pub(crate) fn yaml_value(raw: &str) -> Result<Value, String> {
    let t = raw.trim();
    const TRUE: [&str; 9] = [
        "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE",
    ];
    const FALSE: [&str; 9] = [
        "no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE",
    ];
    if TRUE.contains(&t) {
        return Ok(Value::Bool(true));
    }
    if FALSE.contains(&t) {
        return Ok(Value::Bool(false));
    }
    if t.is_empty() {
        return Ok(Value::Null);
    }
    let y: serde_yaml::Value = serde_yaml::from_str(t).map_err(|e| e.to_string())?;
    serde_json::to_value(y).map_err(|e| e.to_string())
}

/// Apply `path=value` assignments (`-p` ones get the `postgresql.parameters.` prefix).
pub(crate) fn apply_assignments(
    config: &Value,
    set: &[String],
    pg: &[String],
) -> Result<Value, CtlError> {
    let mut out = config.clone();
    if !out.is_object() {
        out = Value::Object(Map::new());
    }
    let pairs = set
        .iter()
        .map(|s| (s.as_str(), false))
        .chain(pg.iter().map(|s| (s.as_str(), true)));
    for (pair, is_pg) in pairs {
        let flag = if is_pg { "-p" } else { "-s" };
        let Some((path, raw)) = pair.split_once('=') else {
            return Err(CtlError::Usage(format!(
                "{flag} {pair:?}: expected PATH=VALUE (e.g. {flag} {})",
                if is_pg {
                    "max_connections=200"
                } else {
                    "loop_wait=5"
                }
            )));
        };
        let path = path.trim();
        let full = if is_pg {
            format!("postgresql.parameters.{path}")
        } else {
            path.to_string()
        };
        let value = yaml_value(raw).map_err(|e| {
            CtlError::Usage(format!(
                "{flag} {pair:?}: the value is not valid YAML ({e}); quote it, e.g. {path}='\"{}\"'",
                raw.trim()
            ))
        })?;
        let mut segments: Vec<&str> = full.split('.').collect();
        if segments.iter().any(|s| s.trim().is_empty()) {
            return Err(CtlError::Usage(format!(
                "{flag} {pair:?}: the path {full:?} has an empty segment"
            )));
        }
        if segments.len() > 2 && segments[0] == "postgresql" && segments[1] == "parameters" {
            let param = segments[2..].join(".");
            segments.truncate(2);
            set_path(&mut out, &segments, &param, value);
        } else {
            let (last, parents) = segments.split_last().unwrap_or((&"", &[]));
            set_path(&mut out, parents, last, value);
        }
    }
    Ok(out)
}

/// Set (or, for `null`, delete) `parents.key`, creating objects on the way and dropping the
/// objects a deletion leaves empty.
fn set_path(root: &mut Value, parents: &[&str], key: &str, value: Value) {
    let Some(obj) = root.as_object_mut() else {
        return;
    };
    match parents.split_first() {
        None => {
            if value.is_null() {
                obj.remove(key);
            } else {
                obj.insert(key.to_string(), value);
            }
        }
        Some((first, rest)) => {
            if value.is_null() && !obj.get(*first).is_some_and(Value::is_object) {
                return;
            }
            let child = obj
                .entry(first.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            set_path(child, rest, key, value);
            if child.as_object().is_some_and(Map::is_empty) {
                obj.remove(*first);
            }
        }
    }
}

/// Merge `patch` into `target` (JSON merge patch: objects merge, `null` deletes, anything else
/// replaces), as `--apply` and `PATCH /config` do.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else if v.is_object() && t.get(k).is_some_and(Value::is_object) {
                if let Some(child) = t.get_mut(k) {
                    merge_patch(child, v);
                }
            } else {
                let mut fresh = Value::Null;
                merge_patch(&mut fresh, v);
                t.insert(k.clone(), fresh);
            }
        }
    }
}

/// Parse a configuration document (YAML or JSON); it must be a mapping (empty means `{}`).
pub(crate) fn parse_document(text: &str, origin: &str) -> Result<Value, CtlError> {
    let y: serde_yaml::Value = serde_yaml::from_str(text)
        .map_err(|e| CtlError::Usage(format!("{origin} is not valid YAML: {e}")))?;
    let v = serde_json::to_value(y).map_err(|e| {
        CtlError::Usage(format!(
            "{origin} cannot be stored as JSON: {e} (keys must be strings)"
        ))
    })?;
    match v {
        Value::Null => Ok(Value::Object(Map::new())),
        Value::Object(_) => Ok(v),
        other => Err(CtlError::Usage(format!(
            "{origin} must be a YAML mapping of configuration keys, not {other}"
        ))),
    }
}

/// Read `--apply`/`--replace` input: a file, or stdin for `-`.
pub(crate) fn read_input(name: &str, flag: &str) -> Result<String, CtlError> {
    if name == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CtlError::Usage(format!("{flag} -: cannot read stdin: {e}")))?;
        Ok(s)
    } else {
        std::fs::read_to_string(name)
            .map_err(|e| CtlError::Usage(format!("{flag} {name}: cannot read the file: {e}")))
    }
}

/// A unified diff of two YAML texts.
pub(crate) fn diff(before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header("before", "after")
        .to_string()
}

/// Refuse a configuration the nodes would refuse, with the rule `PATCH /config` applies
/// ([`check_dynamic_change`]): wrong types, a `ttl` out of range, a key Regent refuses, unless
/// `before` already had the same problem. Timing that breaks `loop_wait + 2 × retry_timeout <=
/// ttl` is taken, as Patroni takes it: the nodes run with fitted values, and the returned
/// [`TimingFit`] is the warning to show. Keys Regent does not know are kept as they are.
pub(crate) fn validate(before: &Value, config: &Value) -> Result<Option<TimingFit>, CtlError> {
    match check_dynamic_change(Some(before), config) {
        Ok(DynamicChange::Valid(d)) => Ok(d.timing_adjusted),
        Ok(DynamicChange::KeepsProblem(e)) => {
            eprintln!("warning: the configuration keeps a problem it already had: {e}");
            Ok(None)
        }
        Err(e) => Err(CtlError::Usage(format!(
            "the new configuration is refused, nothing was written: {e}"
        ))),
    }
}

/// Let the operator edit `text` in `$EDITOR` (else `editor`, else `vi`); returns the new text.
pub(crate) fn run_editor(text: &str, scope: &str) -> Result<String, CtlError> {
    let editor = match std::env::var("EDITOR") {
        Ok(e) if !e.trim().is_empty() => e,
        _ => ["editor", "vi"]
            .iter()
            .find(|e| on_path(e))
            .map(|e| e.to_string())
            .ok_or_else(|| {
                CtlError::Usage(
                    "no editor: set EDITOR, or use -s/-p, --apply FILE or --replace FILE".into(),
                )
            })?,
    };
    edit_with(&editor, text, scope)
}

/// Edit `text` in a private temporary file with the shell command `editor`.
fn edit_with(editor: &str, text: &str, scope: &str) -> Result<String, CtlError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let safe_scope: String = scope
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = std::env::temp_dir().join(format!(
        "{safe_scope}-config-{}-{stamp}.yaml",
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(text.as_bytes())
    };
    write().map_err(|e| {
        CtlError::Failed(format!(
            "cannot write the temporary file {}: {e}",
            path.display()
        ))
    })?;
    // Through the shell, so EDITOR may carry arguments ("code --wait").
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("regent-ctl")
        .arg(&path)
        .status();
    let result = match status {
        Ok(s) if s.success() => std::fs::read_to_string(&path)
            .map_err(|e| CtlError::Failed(format!("cannot read back {}: {e}", path.display()))),
        Ok(s) => Err(CtlError::Failed(format!(
            "the editor ({editor}) exited with {s}; nothing was changed"
        ))),
        Err(e) => Err(CtlError::Failed(format!(
            "cannot start the editor ({editor}): {e}"
        ))),
    };
    let _ = std::fs::remove_file(&path);
    result
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(config: Value, s: &[&str], p: &[&str]) -> Value {
        let s: Vec<String> = s.iter().map(|x| x.to_string()).collect();
        let p: Vec<String> = p.iter().map(|x| x.to_string()).collect();
        apply_assignments(&config, &s, &p).expect("valid assignments")
    }

    #[test]
    fn dotted_paths_yaml_values_and_deletion() {
        let base = json!({"ttl": 30, "postgresql": {"parameters": {"work_mem": "4MB"}, "use_slots": true}});
        let v = set(
            base.clone(),
            &[
                "loop_wait=5",
                "synchronous_mode=on",
                "postgresql.use_pg_rewind=yes",
                "tags.zone='a'",
                "ttl=",
                "slots.s1={type: physical}",
            ],
            &[
                "max_connections=200",
                "pg_stat_statements.max=1000",
                "work_mem=",
            ],
        );
        assert_eq!(
            v,
            json!({
                "loop_wait": 5,
                "synchronous_mode": true,
                "postgresql": {
                    "parameters": {"max_connections": 200, "pg_stat_statements.max": 1000},
                    "use_slots": true,
                    "use_pg_rewind": true
                },
                "tags": {"zone": "a"},
                "slots": {"s1": {"type": "physical"}}
            })
        );
        // Deleting the last parameter drops the emptied objects; deleting nothing is a no-op.
        let v = set(
            json!({"postgresql": {"parameters": {"a": 1}}}),
            &["nothing.here="],
            &["a="],
        );
        assert_eq!(v, json!({}));
    }

    #[test]
    fn bad_assignments_are_usage_errors() {
        for (s, want) in [
            ("loop_wait", "expected PATH=VALUE"),
            ("a..b=1", "empty segment"),
            ("a=[1", "not valid YAML"),
        ] {
            let e = apply_assignments(&json!({}), &[s.to_string()], &[]).expect_err(s);
            assert!(
                matches!(&e, CtlError::Usage(m) if m.contains(want)),
                "{s}: {e}"
            );
        }
    }

    #[test]
    fn merge_patch_semantics() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": 3, "pause": true});
        merge_patch(
            &mut t,
            &json!({"a": {"b": null, "e": {"f": null, "g": 1}}, "d": [1], "pause": null}),
        );
        assert_eq!(t, json!({"a": {"c": 2, "e": {"g": 1}}, "d": [1]}));
    }

    #[test]
    fn documents_and_yaml_round_trip() {
        let v = parse_document(
            "ttl: 30\npostgresql:\n  parameters:\n    wal_level: replica\n",
            "x",
        )
        .expect("ok");
        assert_eq!(v["postgresql"]["parameters"]["wal_level"], "replica");
        assert_eq!(parse_document("", "x").expect("empty"), json!({}));
        assert!(parse_document("- 1\n", "f.yml").is_err());
        let y = to_yaml(&json!({"ttl": 30, "loop_wait": 1, "postgresql": {"use_slots": true}}));
        assert_eq!(y, "loop_wait: 1\npostgresql:\n  use_slots: true\nttl: 30\n");
        assert_eq!(to_yaml(&json!({})), "{}\n");
    }

    #[test]
    fn diff_is_unified() {
        let d = diff("loop_wait: 1\nttl: 30\n", "loop_wait: 2\nttl: 30\n");
        assert!(d.starts_with("--- before\n+++ after\n@@"), "{d}");
        assert!(d.contains("\n-loop_wait: 1\n+loop_wait: 2\n"), "{d}");
    }

    #[test]
    fn validation_refuses_what_nodes_cannot_use() {
        let before = json!({"ttl": 30, "loop_wait": 10, "retry_timeout": 10});
        let fit = validate(
            &before,
            &json!({"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "custom_key": 1}),
        )
        .expect("fine");
        assert_eq!(fit, None);
        let e = validate(&before, &json!({"ttl": "thirty"})).expect_err("type");
        assert!(e.to_string().contains("ttl"), "{e}");
        assert!(e.to_string().contains("nothing was written"), "{e}");
        let e = validate(
            &before,
            &json!({"ttl": 4, "loop_wait": 1, "retry_timeout": 1}),
        )
        .expect_err("min");
        assert!(e.to_string().contains("at least 5"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = validate(&before, &json!({"synchronous_node_count": 0})).expect_err("refused");
        assert!(e.to_string().contains("synchronous_node_count"), "{e}");
        // A problem the configuration already had does not block a change, as with PATCH.
        let none = json!({"synchronous_node_count": 0});
        let paused = json!({"synchronous_node_count": 0, "pause": true});
        assert_eq!(validate(&none, &paused).expect("kept"), None);
        // Quorum commit is taken (issue 15.2).
        let quorum = json!({"synchronous_mode": "quorum"});
        assert_eq!(validate(&before, &quorum).expect("quorum"), None);
    }

    /// Issue 12 item 8: timing that breaks loop_wait + 2 × retry_timeout <= ttl is taken, as
    /// Patroni (and `PATCH /config`) takes it; the fit is the warning the nodes log.
    #[test]
    fn timing_patroni_takes_is_taken_with_the_nodes_warning() {
        let before = json!({"ttl": 30, "loop_wait": 10, "retry_timeout": 10});
        let fit = validate(
            &before,
            &json!({"ttl": 20, "loop_wait": 2, "retry_timeout": 10}),
        )
        .expect("accepted, as Patroni accepts it")
        .expect("fitted");
        assert_eq!(
            (fit.effective.loop_wait, fit.effective.retry_timeout),
            (1, 9)
        );
        assert_eq!(
            fit.warning(),
            "the cluster's configuration: loop_wait 2 + 2 × retry_timeout 10 exceeds ttl 20: running with loop_wait 1 and retry_timeout 9 (as Patroni does); set them so that loop_wait + 2 × retry_timeout <= ttl to silence this"
        );
        let fit = validate(
            &before,
            &json!({"ttl": 10, "loop_wait": 5, "retry_timeout": 3}),
        )
        .expect("accepted")
        .expect("fitted");
        assert_eq!(fit.effective.loop_wait, 4);
    }

    #[test]
    fn editor_edits_a_temporary_copy() {
        let out = edit_with(
            "sed -i 's/loop_wait: 1/loop_wait: 2/'",
            "loop_wait: 1\n",
            "my/scope",
        )
        .expect("edited");
        assert_eq!(out, "loop_wait: 2\n");
        let e = edit_with("false", "x: 1\n", "s").expect_err("editor fails");
        assert!(e.to_string().contains("nothing was changed"), "{e}");
        let leftovers = std::fs::read_dir(std::env::temp_dir())
            .expect("tmp")
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("my_scope-config-{}-", std::process::id()))
            })
            .count();
        assert_eq!(leftovers, 0, "the temporary file is removed");
    }
}

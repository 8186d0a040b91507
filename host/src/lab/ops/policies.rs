//! The lab's policies: where to copy them from, that every named one is there and loads and
//! passes its self-test, and copying them into the lab directory. Writes only into the lab's
//! policy directory.

use crate::lab::LabError;
use std::path::{Path, PathBuf};

/// The policy directory to copy from: `--policies-dir`, else `./policies` when it exists.
pub(crate) fn source_policies(given: Option<&Path>) -> Result<Option<PathBuf>, LabError> {
    match given {
        Some(d) if d.is_dir() => Ok(Some(d.to_path_buf())),
        Some(d) => Err(LabError::Usage(format!(
            "--policies-dir {}: no such directory; point it at a directory of policy manifests (NAME.toml) and components, e.g. the repository's policies/",
            d.display()
        ))),
        None => Ok(std::env::current_dir()
            .ok()
            .map(|d| d.join("policies"))
            .filter(|d| d.is_dir())),
    }
}

/// The policy names in `dir` (its `*.toml` manifests).
fn available_policies(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(Result::ok)
                .filter_map(|e| {
                    let p = e.path();
                    (p.extension()? == "toml")
                        .then(|| p.file_stem()?.to_str().map(str::to_string))
                        .flatten()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every named policy must have its manifest in `dir`.
pub(crate) fn check_policies(
    names: &[String],
    dir: &Path,
    source: Option<&Path>,
) -> Result<(), LabError> {
    for n in names {
        if !dir.join(format!("{n}.toml")).is_file() {
            let have = available_policies(dir);
            return Err(LabError::Usage(format!(
                "policy {n}: no {n}.toml in {}{}; the policies there are: {}; pass --policies-dir with the directory that holds it",
                dir.display(),
                source
                    .map(|s| format!(" (copied from {})", s.display()))
                    .unwrap_or_default(),
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            )));
        }
    }
    Ok(())
}

/// Every named policy in `dir` must load and pass its self-test, as `regent policy check`
/// checks it (so that no node refuses it later).
pub(crate) fn load_policies(names: &[String], dir: &Path) -> Result<(), LabError> {
    for n in names {
        let manifest = dir.join(format!("{n}.toml"));
        // On a thread of its own: a guest's WASI streams must not block on an async worker.
        let checked = std::thread::scope(|s| {
            s.spawn(|| crate::plugin::check(&manifest))
                .join()
                .unwrap_or_else(|_| {
                    Err(crate::plugin::PolicyError::Load {
                        name: n.clone(),
                        message: "checking it panicked".into(),
                    })
                })
        });
        checked.map_err(|e| {
            LabError::Usage(format!(
                "policy {n} ({}) cannot be used: {e}",
                manifest.display()
            ))
        })?;
    }
    Ok(())
}

/// Copy the manifests and components of `from` into the lab's policy directory (a file being
/// replaced is written beside it and renamed into place, so a node never reads half of it).
pub(crate) fn copy_policies(from: &Path, to: &Path) -> Result<(), LabError> {
    let err = |e: std::io::Error| {
        LabError::Failed(format!(
            "cannot copy the policies from {} to {}: {e}",
            from.display(),
            to.display()
        ))
    };
    std::fs::create_dir_all(to).map_err(err)?;
    for entry in std::fs::read_dir(from).map_err(err)? {
        let p = entry.map_err(err)?.path();
        let Some(name) = p.file_name() else { continue };
        if p.is_file() && p.extension().is_some_and(|e| e == "toml" || e == "wasm") {
            let tmp = to.join(format!(".{}.tmp", name.to_string_lossy()));
            std::fs::copy(&p, &tmp)
                .and_then(|_| std::fs::rename(&tmp, to.join(name)))
                .map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_policies_must_be_in_the_directory() {
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::write(tmp.path().join("zone-aware.toml"), "").expect("write");
        std::fs::write(tmp.path().join("zone-aware.wasm"), "").expect("write");
        check_policies(&["zone-aware".into()], tmp.path(), None).expect("there");
        let e = check_policies(&["sync-only".into()], tmp.path(), None).expect_err("missing");
        let msg = e.to_string();
        assert!(
            msg.contains("no sync-only.toml in")
                && msg.contains("the policies there are: zone-aware"),
            "{msg}"
        );
        let to = tmp.path().join("copy");
        copy_policies(tmp.path(), &to).expect("copy");
        assert_eq!(available_policies(&to), ["zone-aware"]);
        assert!(to.join("zone-aware.wasm").is_file());
    }
}

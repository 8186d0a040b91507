//! `regent policy new` and `regent policy build`: from nothing to a checked policy component.
//!
//! [`new`] writes a standalone crate (its own `[workspace]`, so it builds anywhere): a useful
//! policy (prefer a `dc` tag), its manifest, unit tests, a README, and beside them the policy
//! SDK with the WIT this Regent speaks ([`files`]). [`build`] compiles such a crate for
//! `wasm32-wasip2` (adding the target with rustup when it is missing), installs the component
//! as `DIR/NAME.wasm` next to `DIR/NAME.toml`, and checks the pair as `regent policy check`
//! does. Both print the next commands.
//!
//! Invariants: `new` writes nothing when it refuses (a bad name, an existing directory), and
//! never overwrites a file; `build` replaces `NAME.wasm` through a rename, so a Regent watching
//! the directory never reads a half-written component.

mod files;

use super::{PolicyError, Report};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target policies are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Why `policy new` or `policy build` failed; each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a policy's (nothing was written).
    #[error(
        "`{name}` cannot name a policy: {why}; use lowercase letters, digits and `-`, starting with a letter (e.g. `prefer-dc`)"
    )]
    Name {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// `policy new` would write into an existing directory (nothing was written).
    #[error("{0} already exists: choose another name or --dir, or remove it")]
    Exists(PathBuf),
    /// `policy build` was pointed at something that is not a policy crate.
    #[error(
        "{path}: {problem}; run `regent policy build DIR` on a crate made by `regent policy new`"
    )]
    NotAPolicyCrate {
        /// The file looked for.
        path: PathBuf,
        /// What is missing or wrong.
        problem: String,
    },
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A tool (cargo, rustc, rustup) could not run or failed.
    #[error("{0}")]
    Tool(String),
    /// The component was built but does not pass `policy check`.
    #[error("the component was built but does not pass the check: {0}")]
    Check(#[from] PolicyError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError + '_ {
    move |source| ScaffoldError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A crate written by [`new`].
#[derive(Debug)]
pub struct Created {
    /// The policy's name.
    pub name: String,
    /// The crate's directory.
    pub dir: PathBuf,
    /// The files written, relative to `dir`.
    pub files: Vec<&'static str>,
}

impl fmt::Display for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = self.dir.display();
        writeln!(f, "created the policy crate {dir}:")?;
        for file in &self.files {
            writeln!(f, "  {}", file.replace("__NAME__", &self.name))?;
        }
        writeln!(f, "next:")?;
        writeln!(
            f,
            "  cargo test --manifest-path {dir}/Cargo.toml   # its unit tests"
        )?;
        writeln!(
            f,
            "  regent policy build {dir}                     # build {}.wasm and check it",
            self.name
        )
    }
}

/// Check that `name` can be a policy's name (and a crate's): `[a-z][a-z0-9-]*`, no trailing
/// or double `-`, not `builtin` (the lab's name for the built-in rules).
pub fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let refuse = |why| {
        Err(ScaffoldError::Name {
            name: name.to_string(),
            why,
        })
    };
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return refuse("it must start with a lowercase letter");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return refuse("it holds a character other than a-z, 0-9 and `-`");
    }
    if name.ends_with('-') || name.contains("--") {
        return refuse("a `-` must separate two words");
    }
    if name.len() > 64 {
        return refuse("it is longer than 64 characters");
    }
    if name == "builtin" {
        return refuse("`builtin` names Regent's built-in rules");
    }
    Ok(())
}

/// `my-dc` → `MyDc`: the policy's Rust type.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// Write the crate of a new policy `name` into `dir/name` (which must not exist).
pub fn new(name: &str, dir: &Path) -> Result<Created, ScaffoldError> {
    check_name(name)?;
    let root = dir.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let ty = type_name(name);
    let mut written = Vec::new();
    let lock = [files::LOCK];
    for file in files::TEMPLATE.iter().chain(&lock).chain(files::SDK) {
        let path = root.join(file.path.replace("__NAME__", name));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let text = file.text.replace("__NAME__", name).replace("__TYPE__", &ty);
        std::fs::write(&path, text).map_err(io(&path))?;
        if !file.path.starts_with("sdk/") {
            written.push(file.path);
        }
    }
    written.push("sdk/ (the policy SDK and its WIT)");
    let dir = std::path::absolute(&root).map_err(io(&root))?;
    Ok(Created {
        name: name.to_string(),
        dir,
        files: written,
    })
}

/// A component built and checked by [`build`].
#[derive(Debug)]
pub struct Built {
    /// The crate's directory (absolute).
    pub dir: PathBuf,
    /// The policy's name.
    pub name: String,
    /// What `policy check` says of `NAME.toml`.
    pub report: Report,
}

impl fmt::Display for Built {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (dir, name) = (self.dir.display(), &self.name);
        write!(f, "{}", self.report)?;
        writeln!(f, "next, try it in a local lab (every node runs {name}):")?;
        writeln!(
            f,
            "  regent lab up --dir /tmp/lab-{name} --policies-dir {dir} --policies {name}"
        )?;
        writeln!(f, "  regent lab status --dir /tmp/lab-{name}")?;
        writeln!(
            f,
            "or in a cluster: copy {name}.toml and {name}.wasm into its regent.policies_dir and \
             add {name} to regent.policies"
        )
    }
}

/// Build the policy crate in `dir` for `wasm32-wasip2`, install `DIR/NAME.wasm`, and check it
/// with `DIR/NAME.toml`. Cargo's progress goes to stderr.
pub fn build(dir: &Path) -> Result<Built, ScaffoldError> {
    let dir = std::path::absolute(dir).map_err(io(dir))?;
    let cargo_toml = dir.join("Cargo.toml");
    if !cargo_toml.is_file() {
        return Err(ScaffoldError::NotAPolicyCrate {
            path: cargo_toml,
            problem: "no Cargo.toml here".into(),
        });
    }
    let meta = metadata(&cargo_toml)?;
    let manifest = dir.join(format!("{}.toml", meta.name));
    if !manifest.is_file() {
        return Err(ScaffoldError::NotAPolicyCrate {
            path: manifest,
            problem: format!("the crate `{}` has no manifest of that name", meta.name),
        });
    }
    ensure_target()?;
    let status = Command::new(cargo())
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(&cargo_toml)
        .status()
        .map_err(|e| ScaffoldError::Tool(format!("cannot run cargo: {e}; install Rust")))?;
    if !status.success() {
        return Err(ScaffoldError::Tool(format!(
            "cargo build --release --target {TARGET} failed ({status}): fix the errors above"
        )));
    }
    let built = meta
        .target_directory
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", meta.name.replace('-', "_")));
    let dest = dir.join(format!("{}.wasm", meta.name));
    install(&built, &dest)?;
    let report = super::check(&manifest)?;
    Ok(Built {
        dir,
        name: meta.name,
        report,
    })
}

/// What `cargo metadata` says of the crate.
struct Meta {
    name: String,
    target_directory: PathBuf,
}

/// `CARGO` when cargo runs us (`cargo run`, tests), else `cargo` from `PATH`.
fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn metadata(cargo_toml: &Path) -> Result<Meta, ScaffoldError> {
    let out = Command::new(cargo())
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(cargo_toml)
        .output()
        .map_err(|e| ScaffoldError::Tool(format!("cannot run cargo: {e}; install Rust")))?;
    if !out.status.success() {
        return Err(ScaffoldError::NotAPolicyCrate {
            path: cargo_toml.to_path_buf(),
            problem: format!(
                "cargo metadata failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        ScaffoldError::Tool(format!("cargo metadata printed something unexpected: {e}"))
    })?;
    let name = v["packages"][0]["name"].as_str();
    let target = v["target_directory"].as_str();
    match (name, target) {
        (Some(name), Some(target)) => Ok(Meta {
            name: name.to_string(),
            target_directory: PathBuf::from(target),
        }),
        _ => Err(ScaffoldError::NotAPolicyCrate {
            path: cargo_toml.to_path_buf(),
            problem: "not a package (a workspace without a package?)".into(),
        }),
    }
}

/// Make sure the standard library for [`TARGET`] is installed: add it with rustup if not.
fn ensure_target() -> Result<(), ScaffoldError> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| ScaffoldError::Tool(format!("cannot run rustc: {e}; install Rust")))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if sysroot.join("lib/rustlib").join(TARGET).is_dir() {
        return Ok(());
    }
    eprintln!("regent: adding the {TARGET} target (rustup target add {TARGET})");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map_err(|e| {
            ScaffoldError::Tool(format!(
                "the {TARGET} target is not installed and rustup cannot run ({e}): install \
                 the target's standard library for {} by hand",
                sysroot.display()
            ))
        })?;
    if !status.success() {
        return Err(ScaffoldError::Tool(format!(
            "`rustup target add {TARGET}` failed ({status}): add the target by hand"
        )));
    }
    Ok(())
}

/// Copy `from` to `to` through a temporary file beside `to` and a rename.
fn install(from: &Path, to: &Path) -> Result<(), ScaffoldError> {
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = to.with_file_name(format!(".{name}.tmp"));
    std::fs::copy(from, &tmp).map_err(io(from))?;
    std::fs::rename(&tmp, to).map_err(io(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["my-dc", "a", "rack2-aware"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("My-dc", "lowercase letter"),
            ("2dc", "lowercase letter"),
            ("my_dc", "other than"),
            ("my-", "separate"),
            ("a--b", "separate"),
            ("builtin", "built-in"),
        ] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(type_name("my-dc"), "MyDc");
        assert_eq!(type_name("rack2-aware"), "Rack2Aware");
    }

    #[test]
    fn new_writes_the_crate_and_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let created = new("my-dc", tmp.path()).expect("new");
        let root = tmp.path().join("my-dc");
        assert_eq!(created.dir, root);
        let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("lib.rs");
        assert!(lib.contains("impl Policy for MyDc {"), "{lib}");
        assert!(lib.contains("const NAME: &'static str = \"my-dc\";"));
        assert!(!lib.contains("__"), "a placeholder is left: {lib}");
        let manifest = std::fs::read_to_string(root.join("my-dc.toml")).expect("manifest");
        assert!(
            manifest.contains("component = \"my-dc.wasm\""),
            "{manifest}"
        );
        assert!(root.join("sdk/wit/policy.wit").is_file());
        assert!(root.join("sdk/src/policy.rs").is_file());
        let text = created.to_string();
        assert!(text.contains("regent policy build "), "{text}");

        let e = new("my-dc", tmp.path()).unwrap_err();
        assert!(matches!(e, ScaffoldError::Exists(_)), "{e}");
        let e = new("My", tmp.path()).unwrap_err();
        assert!(matches!(e, ScaffoldError::Name { .. }), "{e}");
        assert!(!tmp.path().join("My").exists(), "nothing written");
    }

    #[test]
    fn build_refuses_a_directory_without_a_crate() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let e = build(tmp.path()).unwrap_err();
        assert!(e.to_string().contains("no Cargo.toml here"), "{e}");
    }
}

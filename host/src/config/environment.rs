//! Environment checks: whether this machine can run a configuration (the data directory's
//! parent exists; a bin directory holds every PostgreSQL program Regent runs), and where
//! that bin directory is. Reads the filesystem and `PATH`, never writes.

use super::error::{environment, qp};
use super::{Config, ConfigError};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The PostgreSQL programs Regent runs; a bin directory must hold all of them.
pub(crate) const PG_BINARIES: [&str; 6] = [
    "postgres",
    "initdb",
    "pg_ctl",
    "pg_basebackup",
    "pg_rewind",
    "pg_controldata",
];

/// Where Debian and Ubuntu install PostgreSQL: `<root>/<major>/bin`.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";

/// Check, without changing anything, that this machine can run `cfg`: the data directory's parent
/// exists, and a bin directory with all of [`PG_BINARIES`] is found (see [`resolve_bin_dir`]).
pub fn check_environment(cfg: &Config) -> Result<(), ConfigError> {
    check_data_dir(cfg)?;
    resolve_bin_dir(cfg)?;
    Ok(())
}

fn check_data_dir(cfg: &Config) -> Result<(), ConfigError> {
    let data = &cfg.postgresql.data_dir;
    let key = "postgresql.data_dir";
    let owner = cfg.postgresql.os_user.as_deref().unwrap_or("postgres");
    let parent = match data.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => {
            return Err(environment(
                key,
                qp(data),
                "has no parent directory",
                "use an absolute path, e.g. postgresql.data_dir: /var/lib/postgresql/16/main",
            ));
        }
    };
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(environment(
                key,
                qp(data),
                format!("the parent {} exists but is not a directory", qp(parent)),
                "move that file away or choose another postgresql.data_dir",
            ));
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            // Created with the data directory, as the PostgreSQL OS user (as initdb does under
            // Patroni), when the node bootstraps or clones; a file in the way is named now.
            let mut up = parent;
            while let Some(next) = up.parent() {
                match std::fs::metadata(next) {
                    Ok(m) if m.is_dir() => return Ok(()),
                    Ok(_) => {
                        return Err(environment(
                            key,
                            qp(data),
                            format!(
                                "{} is a file, so the data directory cannot be created",
                                qp(next)
                            ),
                            format!(
                                "move that file away, or create the directory: mkdir -p {p} && chown {owner}: {p}",
                                p = parent.display()
                            ),
                        ));
                    }
                    Err(_) => up = next,
                }
            }
            return Ok(());
        }
        Err(e) => {
            return Err(environment(
                key,
                qp(data),
                format!(
                    "cannot inspect the parent directory {}: {e}",
                    parent.display()
                ),
                format!(
                    "make {} accessible to the user running Regent",
                    parent.display()
                ),
            ));
        }
    }
    match std::fs::metadata(data) {
        Ok(m) if !m.is_dir() => Err(environment(
            key,
            qp(data),
            "exists but is not a directory",
            "move that file away or choose another postgresql.data_dir",
        )),
        _ => Ok(()),
    }
}

/// The directory holding the PostgreSQL programs: `postgresql.bin_dir` if set, else the
/// directory of `initdb` on `PATH`, else the newest `/usr/lib/postgresql/<version>/bin`; it must
/// contain every program in [`PG_BINARIES`].
pub(crate) fn resolve_bin_dir(cfg: &Config) -> Result<PathBuf, ConfigError> {
    find_bin_dir(cfg.postgresql.bin_dir.as_deref())
}

/// [`resolve_bin_dir`] for a `postgresql.bin_dir` value (`None`: not set), without a whole
/// configuration (`regent lab` finds the programs before it writes one).
pub(crate) fn find_bin_dir(bin_dir: Option<&Path>) -> Result<PathBuf, ConfigError> {
    resolve_bin_dir_in(bin_dir, std::env::var_os("PATH"), Path::new(DEBIAN_PG_ROOT))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn first_missing_binary(dir: &Path) -> Option<&'static str> {
    PG_BINARIES
        .into_iter()
        .find(|b| !is_executable(&dir.join(b)))
}

/// `<root>/<version>/bin` directories, newest version first.
fn debian_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut found: Vec<(Vec<u64>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version: Option<Vec<u64>> = name.split('.').map(|p| p.parse().ok()).collect();
            let bin = e.path().join("bin");
            version.filter(|_| bin.is_dir()).map(|v| (v, bin))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().map(|(_, p)| p).collect()
}

fn resolve_bin_dir_in(
    configured: Option<&Path>,
    path_var: Option<OsString>,
    debian_root: &Path,
) -> Result<PathBuf, ConfigError> {
    let key = "postgresql.bin_dir";
    let debian = debian_bin_dirs(debian_root);
    let example = debian
        .iter()
        .find(|d| first_missing_binary(d).is_none())
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| format!("{DEBIAN_PG_ROOT}/15/bin"));
    let needs = PG_BINARIES.join(", ");

    if let Some(dir) = configured {
        if !dir.is_dir() {
            return Err(environment(
                key,
                qp(dir),
                "is not an existing directory",
                format!(
                    "install the PostgreSQL server package or point postgresql.bin_dir at its bin directory, e.g. {example}"
                ),
            ));
        }
        return match first_missing_binary(dir) {
            None => Ok(dir.to_path_buf()),
            Some(bin) => Err(environment(
                key,
                qp(dir),
                format!(
                    "has no executable {bin} (searched {}; Regent needs {needs})",
                    dir.display()
                ),
                format!(
                    "point postgresql.bin_dir at the PostgreSQL server's bin directory, e.g. {example}, or install the server package"
                ),
            )),
        };
    }

    // The directory of the first `initdb` on PATH, and where it really lives if it is a link.
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path_var) = path_var
        && let Some(initdb) = std::env::split_paths(&path_var)
            .filter(|d| d.is_absolute())
            .map(|d| d.join("initdb"))
            .find(|p| is_executable(p))
    {
        if let Some(dir) = initdb.parent() {
            candidates.push(dir.to_path_buf());
        }
        if let Ok(real) = std::fs::canonicalize(&initdb)
            && let Some(dir) = real.parent()
            && !candidates.iter().any(|c| c == dir)
        {
            candidates.push(dir.to_path_buf());
        }
    }
    candidates.extend(debian);

    if let Some(dir) = candidates
        .iter()
        .find(|d| first_missing_binary(d).is_none())
    {
        return Ok(dir.clone());
    }
    let problem = match candidates.first() {
        Some(best) => format!(
            "searched the directory of initdb on PATH and {DEBIAN_PG_ROOT}/<version>/bin, but none holds all of {needs}: {} has no executable {}",
            best.display(),
            first_missing_binary(best).unwrap_or("?"),
        ),
        None => format!(
            "initdb is not on PATH and no {DEBIAN_PG_ROOT}/<version>/bin exists, so the PostgreSQL programs were not found"
        ),
    };
    Err(environment(
        key,
        "(not set)",
        problem,
        format!(
            "install the PostgreSQL server package, or set postgresql.bin_dir to the directory holding {needs}, e.g. {example}"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::config::test_support::*;
    use std::os::unix::fs::PermissionsExt;

    fn config_with(data_dir: &Path, bin_dir: Option<&Path>) -> Config {
        let mut c = parse(FIXTURE).expect("valid").config;
        c.postgresql.data_dir = data_dir.to_path_buf();
        c.postgresql.bin_dir = bin_dir.map(Path::to_path_buf);
        c
    }

    fn fake_bin_dir(dir: &Path, except: &[&str]) {
        std::fs::create_dir_all(dir).expect("mkdir");
        for b in PG_BINARIES.iter().filter(|b| !except.contains(b)) {
            let p = dir.join(b);
            std::fs::write(&p, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
    }

    fn env_parts(e: &ConfigError) -> (&str, &str) {
        match e {
            ConfigError::Environment { key, problem, .. } => (key, problem),
            other => panic!("expected Environment, got {other:?}"),
        }
    }

    #[test]
    fn missing_data_dir_parents_are_left_for_the_os_user_to_create() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let parent = tmp.path().join("pg");
        // Patroni (through initdb) creates missing parents; so does the node when it
        // bootstraps or clones.
        let c = config_with(&parent.join("16").join("data"), None);
        check_data_dir(&c).expect("missing parents are created later");
        assert!(!parent.exists(), "checks create nothing");
        // A file in the way cannot become a directory: named now, with the fix.
        std::fs::write(&parent, "").expect("file");
        let e = check_data_dir(&c).expect_err("a file stands where a parent must go");
        assert_eq!(env_parts(&e).0, "postgresql.data_dir");
        let s = e.to_string();
        assert!(s.contains("is a file") && s.contains("mkdir -p"), "{s}");
        std::fs::remove_file(&parent).expect("rm");
        let c = config_with(&parent.join("data"), None);

        std::fs::create_dir(&parent).expect("mkdir");
        check_data_dir(&c).expect("parent exists now");
        assert!(!parent.join("data").exists(), "checks create nothing");

        std::fs::write(parent.join("data"), "").expect("file");
        let e = check_data_dir(&c).expect_err("data_dir is a file");
        assert!(env_parts(&e).1.contains("not a directory"));
    }

    #[test]
    fn bin_dir_without_binaries_is_rejected() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        let none = tmp.path().join("none");
        let e = resolve_bin_dir_in(Some(&empty), None, &none).expect_err("empty dir");
        let (key, problem) = env_parts(&e);
        assert_eq!(key, "postgresql.bin_dir");
        assert!(problem.contains("has no executable postgres"), "{problem}");
        assert!(problem.contains(&empty.display().to_string()), "{problem}");
        assert!(e.to_string().contains("/usr/lib/postgresql/15/bin"), "{e}");

        let partial = tmp.path().join("partial");
        fake_bin_dir(&partial, &["pg_rewind"]);
        let e = resolve_bin_dir_in(Some(&partial), None, &none).expect_err("no pg_rewind");
        assert!(
            env_parts(&e).1.contains("has no executable pg_rewind"),
            "{e}"
        );

        // Present but not executable counts as missing.
        let p = partial.join("pg_rewind");
        std::fs::write(&p, "").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = resolve_bin_dir_in(Some(&partial), None, &none).expect_err("not executable");
        assert!(env_parts(&e).1.contains("pg_rewind"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(
            resolve_bin_dir_in(Some(&partial), None, &none).expect("complete"),
            partial
        );

        let e = resolve_bin_dir_in(Some(&none), None, &none).expect_err("no such dir");
        assert!(env_parts(&e).1.contains("not an existing directory"), "{e}");
    }

    #[test]
    fn bin_dir_is_found_on_path_then_newest_debian_version() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let debian = tmp.path().join("usr-lib-postgresql");
        fake_bin_dir(&debian.join("9.6/bin"), &[]);
        fake_bin_dir(&debian.join("10/bin"), &[]);
        fake_bin_dir(&debian.join("16/bin"), &["pg_controldata"]);
        std::fs::create_dir_all(debian.join("common/bin")).expect("mkdir");
        assert_eq!(
            resolve_bin_dir_in(None, None, &debian).expect("found"),
            debian.join("10/bin"),
            "newest complete version; 10 > 9.6 numerically"
        );

        let on_path = tmp.path().join("opt-pg/bin");
        fake_bin_dir(&on_path, &[]);
        let path_var =
            std::env::join_paths([tmp.path().join("nothing"), on_path.clone()]).expect("join");
        assert_eq!(
            resolve_bin_dir_in(None, Some(path_var), &debian).expect("found"),
            on_path,
            "initdb on PATH wins"
        );

        let e = resolve_bin_dir_in(None, None, &tmp.path().join("none")).expect_err("nothing");
        let (key, problem) = env_parts(&e);
        assert_eq!(key, "postgresql.bin_dir");
        assert!(problem.contains("initdb is not on PATH"), "{problem}");

        let only_partial = tmp.path().join("partial-root");
        fake_bin_dir(&only_partial.join("15/bin"), &["pg_basebackup"]);
        let e = resolve_bin_dir_in(None, None, &only_partial).expect_err("incomplete");
        assert!(
            env_parts(&e).1.contains("has no executable pg_basebackup"),
            "{e}"
        );
    }

    #[test]
    fn check_environment_passes_on_a_prepared_machine() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bin = tmp.path().join("bin");
        fake_bin_dir(&bin, &[]);
        let c = config_with(&tmp.path().join("data"), Some(&bin));
        check_environment(&c).expect("ready");
        assert_eq!(resolve_bin_dir(&c).expect("bin"), bin);

        let c = config_with(&tmp.path().join("missing/data"), Some(&bin));
        check_environment(&c).expect("a missing parent is created with the data directory");
        let c = config_with(&tmp.path().join("data"), Some(&tmp.path().join("nobin")));
        assert!(check_environment(&c).is_err());
    }
}
